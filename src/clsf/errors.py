"""User-facing errors.

A `UserError` is bad input the user can fix (a path, a format, a config value). The CLI prints its
message as one line and exits with code 2, without a traceback. Its message names the problem and
the fix, in one sentence.
"""


class UserError(Exception):
    """Bad input that the user can fix; the CLI reports it in one line and exits 2."""
