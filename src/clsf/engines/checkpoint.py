"""A checkpoint folder's files: the one place their names are spelled.

    FOLDER/weights.npz        the model's weights, framework-neutral ("layer/name" arrays; a weight
                              average's, with optim.ema)
    FOLDER/state.npz          the engine's training state (optimizer slots, step): Keras engines
    FOLDER/state.pt           the same from the torch engine (read with torch's tensor-only loader)
    FOLDER/train_weights.npz  with optim.ema: the weights being trained, beside their average
    FOLDER/averaging.json     with optim.ema: the average's update count
    FOLDER/logits.npz         checkpoints/init only: the initial model's logits (the mistake checks')
    FOLDER/generator.npz, discriminator.npz   a GAN's two networks, framework-neutral
    FOLDER/meta.json          the RunState (clsf.run.state), written last: a folder without it is incomplete

A checkpoint an engine cannot read is refused in one line (missing_state, damaged_state).

The run directory (clsf.run.rundir) makes, swaps and copies these folders; engines, techniques and
the GAN read and write only the paths a Checkpoint gives them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clsf.errors import UserError


@dataclass(frozen=True)
class Checkpoint:
    folder: Path

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))

    def __fspath__(self) -> str:  # a path like any other for open(), shutil and Path()
        return os.fspath(self.folder)

    def __str__(self) -> str:
        return str(self.folder)

    @property
    def weights(self) -> Path:
        return self.folder / "weights.npz"

    def state(self, kind: str) -> Path:
        """The engine's training state; `kind`: "npz" (Keras engines, the TF GAN) or "pt" (torch)."""
        return self.folder / f"state.{kind}"

    @property
    def train_weights(self) -> Path:
        return self.folder / "train_weights.npz"

    @property
    def averaging(self) -> Path:
        return self.folder / "averaging.json"

    @property
    def logits(self) -> Path:
        return self.folder / "logits.npz"

    @property
    def generator(self) -> Path:
        return self.folder / "generator.npz"

    @property
    def discriminator(self) -> Path:
        return self.folder / "discriminator.npz"

    @property
    def meta(self) -> Path:
        return self.folder / "meta.json"

    def exists(self) -> bool:
        return self.folder.exists()


def missing_state(path: Path) -> UserError:
    """A resume asked for the training state and the checkpoint has only weights."""
    return UserError(f"{path} (the optimizer state) is missing, so the run cannot continue exactly; "
                     "restore it, or resume with --weights-only to go on from the weights with a fresh optimizer "
                     "(recorded in env.json).")


def damaged_state(path: Path, why: str) -> UserError:
    return UserError(f"{path} could not be read as clsf training state ({why[:120]}); restore it from a copy, "
                     "or resume with --weights-only.")
