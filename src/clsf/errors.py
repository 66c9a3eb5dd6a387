"""Errors the command line turns into one line and a documented exit code (no traceback).

  2  UserError: bad input the user can fix (a path, a format, a config value, a flag on resume).
  3  NonFiniteLoss: training produced a NaN/inf loss; the run stopped, its last good checkpoint kept.
  4  RunsFailed: some runs of a compare or sweep failed; the others finished (logs/ says why).
  5  DiskFull: a write failed for lack of space; the last good checkpoint is intact, resume when freed.
  6  PeerLost: in a run of several processes, another process died or stopped answering; this one
     stopped too (checkpoints/last is intact; resume with any number of processes).
 130 interrupted (Ctrl-C); the run resumes with `clsf train --resume RUN_DIR`.
Each message names the problem and the fix in one sentence.
"""

EXIT_CODES = {0: "success", 2: "bad input (the message names it and the fix)",
              3: "training stopped on a non-finite loss (checkpoints/last holds the last good epoch)",
              4: "some runs of a compare or sweep failed; the rest finished (see the folder's logs/)",
              5: "the disk is full (checkpoints/last is intact; free space and resume)",
              6: "another process of a multi-process run died or timed out (checkpoints/last is intact; resume)",
              130: "interrupted (resume with clsf train --resume RUN_DIR)",
              141: "the output's reader closed it early (e.g. `| head`); nothing else went wrong"}


class ClsfError(Exception):
    exit_code = 1


class UserError(ClsfError):
    """Bad input that the user can fix; the CLI reports it in one line and exits 2."""

    exit_code = 2


class NonFiniteLoss(ClsfError):
    """Training produced a NaN/inf loss; the run stops at once, keeping the last good checkpoint."""

    exit_code = 3

    def __init__(self, epoch: int, step: int, global_step: int, value: float, fix: str = "optim.lr"):
        self.epoch, self.step, self.global_step, self.value = epoch, step, global_step, value
        kept = ("checkpoints/last holds the last good epoch" if epoch else
                "no epoch finished, so only the initial weights (checkpoints/init) are kept")
        super().__init__(
            f"the training loss became {value} at epoch {epoch + 1}, step {step + 1} (global step "
            f"{global_step + 1}); the run stopped there and {kept} — lower {fix}, "
            + ("set optim.clip_norm, " if fix == "optim.lr" else "") + "or check the inputs for NaNs."
        )


class RunsFailed(ClsfError):
    """Some runs of a compare or sweep failed; the others finished and the report covers them."""

    exit_code = 4


class DiskFull(ClsfError):
    """A write failed for lack of space; nothing half-written is left and the last checkpoint stands."""

    exit_code = 5


class PeerLost(ClsfError):
    """A process of a multi-process run died or stopped answering within dist_timeout_s."""

    exit_code = 6

    def __init__(self, cause: str):
        super().__init__(
            f"{cause}; the run stopped and checkpoints/last holds its last checkpoint — continue with "
            "clsf train --resume RUN_DIR (the run printed above; any number of processes at an epoch's end), "
            "after reading the failed process's output.")
