"""`clsf compare`: the same recipe through several engines and seeds, side by side.

Each (seed, engine) is an ordinary run in its own process, with the same config, split and batch
order. By default every engine starts from the first engine's initial weights for that seed (its
checkpoints/init), and each run records its step-0 logits on the same probe images, so the report
can show the engines computed the same function before training began.
"""

from __future__ import annotations

import copy
from pathlib import Path

from clsf.config import Config, validate
from clsf.engines import names as engine_names
from clsf.errors import UserError
from clsf.experiments import runner
from clsf.run.rundir import RunDir
from clsf.report.format import pm
from clsf.run.folder import Folder


def parse_engines(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in engines if e not in engine_names()]
    if bad or not engines:
        raise UserError(f"--engines '{text}' names {'no engine' if not engines else ', '.join(bad)}; use a comma list of {', '.join(engine_names())}.")
    if len(set(engines)) != len(engines):
        raise UserError(f"--engines '{text}' names an engine twice; list each once.")
    return engines


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds '{text}' is not a comma list of integers; write e.g. --seeds 0,1,2.") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds '{text}' must list distinct integers >= 0, e.g. --seeds 0,1,2.")
    return seeds


def plan_compare(cfg: Config, engines: list[str], seeds: list[int], independent_init: bool) -> dict:
    plan = {"kind": "compare", "model": cfg.model.name, "data": cfg.data.name, "engines": engines, "seeds": seeds,
            "independent_init": independent_init, "base": runner.base_config(cfg)}
    # seed outer, engine inner: the engines of one seed run back to back, so a machine that slows
    # down over the hour slows every engine alike
    plan["runs"] = [{"name": f"{e}-s{s}", "engine": e, "seed": s} for s in seeds for e in engines]
    return plan


def compare(cfg: Config, engines: list[str], seeds: list[int], out: str | Path | None = None,
            independent_init: bool = False, executor=None) -> Path:
    """Train every (seed, engine) run that is not finished yet (`executor`: on a cluster,
    clsf.experiments.cluster), then write the compare report."""
    if cfg.init_from:
        raise UserError("init_from cannot be given to compare (it transfers the first engine's initial weights itself); drop it.")
    plan = plan_compare(cfg, engines, seeds, independent_init)
    folder = Path(out) if out else runner.default_folder(cfg, "compare", plan)
    jobs = []
    for r in plan["runs"]:
        c = copy.deepcopy(cfg)
        c.engine, c.seed, c.runs_dir, c.run_name = r["engine"], r["seed"], str(Folder(folder).runs), r["name"]
        if not independent_init and r["engine"] != engines[0]:
            c.init_from = str(RunDir(Folder(folder).run(f"{engines[0]}-s{r['seed']}")).checkpoint("init"))
        jobs.append((r["name"], validate(c)))
    if executor is not None:
        executor.connect()  # a cluster that cannot run them: said before the folder is made
    with runner.open_folder(folder, plan):
        print(f"compare folder {folder}: {len(engines)} engines x {len(seeds)} seeds "
              f"(run the same command again to continue it)")
        failed = runner.train_all(folder, jobs, "compare", executor)
        summary = runner.finish(folder)
    for e, p in summary["engines"].items():
        if p["test_acc"][0] is not None:
            print(f"  {e:<6} test_acc {pm(p['test_acc'], digits=4)}   train {pm(p['train_s'], digits=1)} s   "
                  f"({p['finished']}/{p['of']} runs)")
    print(summary["verdict"])
    runner.raise_failed(folder, "compare", failed)
    return folder
