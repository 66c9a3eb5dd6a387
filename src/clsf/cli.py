"""Command line: the `clsf` program -- its parser, one line per error with its exit code, --outcome.

The subcommands live in clsf.commands, each module's parsers beside its commands, which parse
arguments and call library functions; nothing else. Every ClsfError becomes one line on stderr and
its exit code (clsf.errors.EXIT_CODES: 2 bad input, 3 non-finite loss, 5 disk full, 6 a lost peer,
130 interrupted); output cut off by its reader (`| head`) ends quietly with 141.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clsf.commands import catalog, data, experiments, train, use
from clsf.errors import ClsfError


class _Parser(argparse.ArgumentParser):
    """argparse with clsf's error form: one line naming the problem and where help is (exit 2)."""

    def error(self, message):
        where = self.prog.partition(" ")[2]  # the subcommand, e.g. "models summary"
        self.exit(2, f"clsf: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from clsf.errors import EXIT_CODES
    parser = _Parser(
        prog="clsf", description=__import__("clsf").__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items()))
    parser.add_argument("--version", action="version", version=f"clsf {__import__('clsf').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for commands in (data, catalog, train, experiments, use):  # each module adds its parsers, beside its commands
        commands.add(sub)
    return parser


def _write_outcome(path: str | None, code: int, error: str | None) -> None:
    """--outcome FILE: the exit status and the error line, for the process that started this one."""
    if path:
        from clsf.run.files import write_json

        try:
            write_json(Path(path), {"exit_code": code, "error": error})
        except OSError as e:  # the exit status still says it
            print(f"clsf: warning: --outcome {path} could not be written ({e.strerror or e})", file=sys.stderr)


def run() -> int:
    """The `clsf` program: main(), then Ctrl-C ignored while the interpreter shuts down. The command is
    done by then; a SIGINT in that moment (a tune worker dying just as its trial's process exits) would
    otherwise end in a traceback from the interpreter's exit handlers."""
    import signal

    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path's undecodable bytes print as \xNN, never as a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # KEY=VALUE after a flag: argparse takes one run of positionals
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what --nproc runs again in each process
    outcome = getattr(args, "outcome", None)
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # here, so that a reader gone early is met below and not at the interpreter's exit
        _write_outcome(outcome, code, None)
        return code
    except ClsfError as e:
        if str(e):  # empty: the failure was already said (a process of this launch printed its own line)
            print(f"clsf: error: {e}", file=sys.stderr)
        _write_outcome(outcome, e.exit_code, str(e) or None)
        return e.exit_code
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):  # a command that said how far it got (and how to go on) said enough
            print("clsf: interrupted", file=sys.stderr)
        _write_outcome(outcome, 130, "interrupted")
        return 130
    except BrokenPipeError:  # the reader left (`clsf evaluate RUN | head -1`): not an error to report
        import os

        # stdout now goes nowhere, so the interpreter's last flush of it cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13)
    except Exception as e:  # a crash: its traceback follows on stderr, and the starter learns what it was
        _write_outcome(outcome, 1, f"{type(e).__name__}: {str(e).strip()[:300]}")
        raise
