"""`clsf sweep`: one engine, a grid of config values (x seeds), every point an ordinary run.

    clsf sweep --engine torch --grid batch_size=16,32,64 optim.name=rmsprop,adam --seeds 0,1

A grid item with one value is simply a fixed setting. Points are validated before anything trains,
so a bad value stops the sweep at once instead of after hours.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import yaml

from clsf.config import Config, apply, flatten, nest, validate
from clsf.errors import UserError
from clsf.experiments import runner
from clsf.report.format import pm
from clsf.run.folder import Folder


def _split_values(text: str) -> list[str]:
    """'16,32,[28, 28]' -> ['16', '32', '[28, 28]']: commas inside brackets stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def parse_grid(items: list[str]) -> dict[str, list]:
    """['batch_size=16,32', 'optim.name=adam,sgd'] -> {'batch_size': [16, 32], 'optim.name': ['adam', 'sgd']}."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw:
            raise UserError(f"grid item '{item}' is not KEY=V1,V2,...; write e.g. batch_size=16,32,64.")
        if key in ("engine", "seed"):
            raise UserError(f"'{key}' cannot be a grid key; use {'clsf compare' if key == 'engine' else '--seeds'} for it.")
        if key in grid:
            raise UserError(f"grid key '{key}' is given twice; list all its values in one item.")
        values = []
        for v in _split_values(raw):
            try:
                values.append(yaml.safe_load(v) if v.strip() else None)
            except yaml.YAMLError:
                values.append(v)
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"grid item '{item}' repeats a value; list each once.")
        grid[key] = values
    return grid


SHORT = {"batch_size": "bs", "epochs": "ep", "lr": "lr", "weight_decay": "wd", "label_smoothing": "ls",
         "dropout": "drop", "momentum": "mom", "crop_padding": "crop", "warmup_epochs": "warm"}


def _name(point: dict, seed: int, index: int) -> str:
    """A short folder name for a grid point: bs32-sgd-s0 (the full keys are in its config.yaml and
    the folder's plan.json). A key without a short form shows its value alone when it names a choice
    (optim.name, model.name, schedules), else its last dotted part: "blocks2"."""
    parts = []
    for k, v in point.items():
        last = k.rsplit(".", 1)[-1]
        short = SHORT.get(last, "" if last in ("name", "schedule", "precision", "mode") else last)
        parts.append(f"{short}{v}")
    text = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-".join(parts))
    return f"{text}-s{seed}" if text and len(text) <= 80 else f"point{index:03d}-s{seed}"


def plan_sweep(cfg: Config, grid: dict[str, list], seeds: list[int]) -> tuple[dict, list[tuple[str, Config]]]:
    fixed = {k: v[0] for k, v in grid.items() if len(v) == 1}
    swept = {k: v for k, v in grid.items() if len(v) > 1}
    base = copy.deepcopy(cfg)
    for k, v in fixed.items():
        apply(base, nest(k, v))
    validate(base)
    plan = {"kind": "sweep", "model": base.model.name, "data": base.data.name, "engine": base.engine,
            "grid": swept, "swept": list(swept), "seeds": seeds, "base": runner.base_config(base), "runs": []}
    jobs, points = [], []
    for index, values in enumerate(itertools.product(*swept.values())):
        point = dict(zip(swept, values))
        c = copy.deepcopy(base)
        for k, v in point.items():
            apply(c, nest(k, v))
        try:
            validate(c)
        except UserError as e:
            raise UserError(f"grid point {point}: {e}") from None
        flat = flatten(c.to_dict())
        point = {k: flat[k] for k in point}
        points.append((point, c))  # as the config holds it: '1e-3' (a YAML string) becomes 0.001
        for s in seeds:
            name = _name(point, s, index)
            plan["runs"].append({"name": name, "seed": s, "point": point})
            r = copy.deepcopy(c)
            r.seed, r.run_name = s, name
            jobs.append((name, r))
    names = [r["name"] for r in plan["runs"]]
    if len(set(names)) < len(names):  # two points that shorten alike (e.g. model.name and optim.name): number them
        points_per_seed = len(seeds)
        for i, (r, (_, c)) in enumerate(zip(plan["runs"], jobs)):
            r["name"] = c.run_name = f"point{i // points_per_seed:03d}-s{r['seed']}"
        jobs = [(c.run_name, c) for _, c in jobs]
    if any(k.startswith("model.") or k in SHAPE_KEYS for k in swept):
        check_models(base, points)
    return plan, jobs


SHAPE_KEYS = ("batch_size", "data.image_size", "data.channels")  # what a model's build and memory bound read


def check_models(base: Config, points: list[tuple[dict, Config]], what: str = "grid point") -> None:
    """Build every point's model spec (no framework) against the data's shape: a model a point
    cannot build, or one too big for this machine, is refused before the first point trains."""
    from clsf.data import load_dataset
    from clsf.run.setup import build_spec

    d = base.data
    ds = load_dataset(d.name, d.data_dir, d.channels, d.image_size, d.skip_bad, d.stream)
    for point, c in points:
        h, w, ch = ds.image_shape
        if c.data.image_size:
            h, w = c.data.image_size
        try:
            build_spec(c, (h, w, c.data.channels or ch), ds.num_classes)
        except UserError as e:
            raise UserError(f"{what} {point}: {e}") from None


def sweep(cfg: Config, grid: dict[str, list], seeds: list[int], out: str | Path | None = None, executor=None) -> Path:
    """Train every grid point x seed that is not finished yet (`executor`: on a cluster,
    clsf.experiments.cluster), then write the sweep report."""
    if not grid:
        raise UserError("a sweep needs --grid KEY=V1,V2 ...; e.g. --grid batch_size=16,32 optim.name=adam,rmsprop.")
    plan, jobs = plan_sweep(cfg, grid, seeds)
    folder = Path(out) if out else runner.default_folder(cfg, "sweep", plan)
    for _, c in jobs:
        c.runs_dir = str(Folder(folder).runs)
    if executor is not None:
        executor.connect()  # a cluster that cannot run them: said before the folder is made
    with runner.open_folder(folder, plan):
        print(f"sweep folder {folder}: {len(jobs) // len(seeds)} grid points x {len(seeds)} seeds, engine {cfg.engine} "
              f"(run the same command again to continue it)")
        failed = runner.train_all(folder, jobs, "sweep", executor)
        summary = runner.finish(folder)
    for t in summary["points"][:10]:
        if t["test_acc"][0] is not None:
            print(f"  test_acc {pm(t['test_acc'], digits=4)}  {t['train_s'][0]:7.1f} s  "
                  + "  ".join(f"{k}={v}" for k, v in t["point"].items()))
    runner.raise_failed(folder, "sweep", failed)
    return folder
