"""A compare, sweep or tune folder: the one place that knows its file names (as RunDir knows a
run's). Commands and reports ask it for paths; none spells them.

    FOLDER/plan.json          what was asked and the runs it implies (a later command must plan alike)
    FOLDER/runs/NAME/         each run's directory
    FOLDER/configs/NAME.yaml  the config each run was started from (tune: the base config too)
    FOLDER/configs/NAME.trial.json  a tune trial's study, trial id and pruner (`clsf train --trial`)
    FOLDER/logs/NAME.log      each run's own lines (a Ray tune worker's: worker-I.log)
    FOLDER/logs/NAME.json     how its last process ended: exit_code, error (`clsf train --outcome`)
    FOLDER/summary.json       what the report was built from
    FOLDER/study.db           a tune's Optuna study, unless it was given another database
    FOLDER/.lock              held while a command works in the folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Folder:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @staticmethod
    def holds_plan(path: Path) -> bool:
        """Whether `path` is such a folder (it has its plan)."""
        return (Path(path) / "plan.json").is_file()

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def study(self) -> Path:
        return self.path / "study.db"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def configs(self) -> Path:
        return self.path / "configs"

    def run(self, name: str) -> Path:
        return self.runs / name

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def config(self, name: str) -> Path:
        return self.configs / f"{name}.yaml"

    def trial(self, name: str) -> Path:
        return self.configs / f"{name}.trial.json"

    def outcome(self, name: str) -> Path:
        return self.logs / f"{name}.json"
