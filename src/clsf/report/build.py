"""`clsf report`: one run, several runs, or a compare/sweep/tune folder -> report.html + report.md.

One run: results, curves, the per-epoch metrics, confusion matrix, per-class accuracy, the most
confident mistakes, config and environment. Several runs: their table, only the config keys that
differ, overlaid curves. A compare, sweep or tune folder: its own summary first, then the runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from clsf.errors import UserError
from clsf import plots
from clsf.report.format import fmt, pm
from clsf.report.page import Page
from clsf.report.runs import RunRecord, differing_keys, read_run
from clsf.run.files import fresh_path
from clsf.run.rundir import RunDir, find_runs
from clsf.report.summary import compare_summary, sweep_summary
from clsf.run.folder import Folder

MISTAKES_SHOWN = 24


RUN_COLUMNS = ["run", "engine", "model", "seed", "epochs", "test_acc", "test_loss", "best_val_acc", "train_s",
               "images_per_s", "peak_mem_mb", "status"]


def _run_rows(records: list[RunRecord]) -> list[list[str]]:
    digits = {"train_s": 1, "images_per_s": 0, "peak_mem_mb": 0}
    return [[fmt(r.row()[c], digits.get(c, 4)) for c in RUN_COLUMNS] for r in records]


def gan_page(rec: RunRecord) -> Page:
    """A GAN run: its losses and sample quality per epoch, and its sample grids."""
    c, f = rec.config, rec.final or {}
    page = Page(f"{rec.label}: GAN / {c['engine']} / {Path(str(c['data']['name'])).name}")
    keys = ["d_loss", "g_loss", "d_acc_real", "d_acc_fake", "confident", "class_entropy", "frechet"]
    page.table(["status", "epochs"] + keys, [[rec.row()["status"], len(rec.metrics)] + [fmt(f.get(k)) for k in keys]])
    if f.get("confident") is not None:
        page.text("With a judge (a digit classifier): confident is the share of samples it puts above 0.9 "
                  "probability — a classifier can be sure of noise too, so read it beside class_entropy (how "
                  "evenly the samples spread over the classes; ln 10 = 2.30 is all ten alike) and the Fréchet "
                  "distance of the samples' features from real test images' (lower is closer; noise stays far).")
    if rec.metrics:
        page.heading("Curves")
        page.image("gan-history", plots.plot_columns(rec.metrics, [["d_loss", "g_loss"], ["d_acc_real", "d_acc_fake"],
                                                                   ["frechet"]], None, page.title),
                   "losses, discriminator accuracy and (with a judge) the Fréchet distance per epoch")
    run = RunDir(rec.path)
    if run.quality_csv.is_file():  # the judge's scores at every sample grid, between epochs too
        import csv

        with open(run.quality_csv, newline="") as fh:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
        if rows:
            page.image("gan-quality", plots.plot_columns(rows, [["confident"], ["class_entropy"], ["frechet"]], None,
                                                         page.title, x="step"),
                       "the judge's scores of the fixed latent batch's samples at every sample grid")
    grids = run.sample_grids()
    if grids:
        page.heading("Samples")
        progress = run.progress_png
        if progress.is_file():
            page.image("gan-progress", progress.read_bytes(), "the first row of every sample grid, oldest at the top")
        page.image("gan-last", grids[-1].read_bytes(), f"samples at {grids[-1].stem} (one fixed latent batch)")
    page.heading("Config")  # a GAN trains by gan.*: the classifier's model and optimizer sections say nothing of it
    page.pre(yaml.safe_dump({k: v for k, v in c.items() if k not in ("model", "optim")}, sort_keys=False))
    return page


def run_page(rec: RunRecord) -> Page:
    if rec.env.get("kind") == "gan":
        return gan_page(rec)
    c, f = rec.config, rec.final
    page = Page(f"{rec.label}: {c['model']['name']} / {c['engine']} / {Path(str(c['data']['name'])).name}")
    row = rec.row()
    page.table(["status", "test_acc", "test_loss", "epochs", "train_s", "images_per_s (median epoch)", "peak_mem_mb"],
               [[row["status"], fmt(row["test_acc"]), fmt(row["test_loss"]), row["epochs"], fmt(row["train_s"], 1),
                 fmt(row["images_per_s"], 0), fmt(row["peak_mem_mb"], 0)]])
    if rec.metrics:
        page.heading("Curves")
        page.image("history", plots.plot_history(rec.metrics, None, page.title), "loss and accuracy per epoch")
        page.heading("Metrics per epoch")
        cols = [k for k in rec.metrics[0] if any(r.get(k) is not None for r in rec.metrics)]
        page.table(cols, [[fmt(r.get(k), 1 if k in ("seconds", "peak_mem_mb") else 0 if k == "images_per_s" else 4)
                           if k != "lr" else f"{r[k]:.2e}" for k in cols] for r in rec.metrics])
    if f is not None:
        names = f["class_names"]
        page.heading("Test set")
        page.image("confusion", plots.plot_confusion(np.array(f["confusion"]), names, None, page.title),
                   "confusion matrix (rows: true class; colour: fraction of the true class)")
        per = f.get("per_class") or {}  # runs from before per-class precision and F1 show accuracy alone
        if f.get("macro_f1") is not None:
            page.text(f"Test accuracy {fmt(f['test_acc'], 4)}, balanced accuracy {fmt(f['balanced_acc'], 4)} (the mean of "
                      f"the classes' recalls), macro-F1 {fmt(f['macro_f1'], 4)}.")
        page.table(["class", "recall (test accuracy)", "precision", "F1", "images"],
                   [[n, fmt(a, 3), fmt(per.get(n, {}).get("precision"), 3), fmt(per.get(n, {}).get("f1"), 3),
                     int(np.sum(f["confusion"][i]))] for i, (n, a) in enumerate(f["per_class_acc"].items())])
        pred = rec.predictions()
        if pred is not None and "mistake_images" in pred and len(pred["mistake_index"]):
            k = min(MISTAKES_SHOWN, len(pred["mistake_index"]))
            idx = pred["mistake_index"][:k]
            logits = pred["logits"][idx].astype(np.float64)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            page.image("mistakes", plots.plot_mistakes(pred["mistake_images"][:k], [names[i] for i in pred["labels"][idx]],
                                                       [names[i] for i in p.argmax(1)], p.max(1)),
                       f"the {k} most confident mistakes on the test set: true class, then predicted class and its probability")
    page.heading("Config")
    page.pre(yaml.safe_dump(c, sort_keys=False))
    e = rec.env
    if e:
        page.heading("Environment")
        items = [("engine", e.get("engine")), ("device", e.get("device")), ("python", e.get("python")),
                 ("platform", e.get("platform")), ("cpu_count", e.get("cpu_count")), ("threads", json.dumps(e.get("threads"))),
                 ("git_commit", e.get("git_commit")), ("started", e.get("started")),
                 ("data", json.dumps({k: v for k, v in e.get("data", {}).items() if k != "class_names"}))]
        items += [(f"package {k}", v) for k, v in e.get("packages", {}).items()]
        items += [(f"resumed after epoch {r['after_epoch']}", f"{r['time']} on {r['device']}, changed {json.dumps(r['changed'])}")
                  for r in e.get("resumes", [])]
        page.table(["key", "value"], [[k, fmt(v)] for k, v in items])
    return page


def runs_section(page: Page, records: list[RunRecord]) -> None:
    page.heading(f"Runs ({len(records)})")
    page.table(RUN_COLUMNS, _run_rows(records))
    keys = differing_keys(records)
    page.heading("Config keys that differ")
    if keys and len(keys) > len(records):  # many keys: a row per key, so the table grows down, not right
        page.table(["key"] + [r.label for r in records], [[k] + [fmt(r.flat.get(k)) for r in records] for k in keys])
    elif keys:
        page.table(["run"] + keys, [[r.label] + [fmt(r.flat.get(k)) for k in keys] for r in records])
    else:
        page.text("none: every run has the same config")
    if any(r.metrics for r in records):
        page.heading("Curves")
        page.image("curves", plots.plot_runs([(r.label, r.metrics) for r in records]), "every run, overlaid")


def _over_seeds(seeds: list) -> str:
    return (f"mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1
            else f"one seed ({seeds[0]}): no spread to judge by")


def _step0(diffs: dict, engine: str, i: int) -> str:
    if i == 0:
        return "reference"
    return "-" if diffs.get(engine) is None else f"{diffs[engine]:.2g}"


def compare_section(page: Page, plan: dict, records: dict[str, RunRecord]) -> dict:
    s = compare_summary(plan, records)
    page.text(s["verdict"], css="verdict")
    page.table(["engine", "runs", "test_acc", "test_loss", "train_s", "images/s", "peak_mem_mb", "step-0 max |Δlogit|"],
               [[e, f"{p['finished']}/{p['of']}", pm(p["test_acc"], digits=4), pm(p["test_loss"], digits=4),
                 pm(p["train_s"], digits=1), pm(p["images_per_s"], digits=0), pm(p["peak_mem_mb"], digits=0),
                 _step0(s["step0_max_abs_logit_diff"], e, i)]
                for i, (e, p) in enumerate(s["engines"].items())],
               caption=f"{_over_seeds(plan['seeds'])}; images/s is each run's median epoch")
    init = ("each engine from its own initial weights (--independent-init)" if plan.get("independent_init") else
            f"every engine from {plan['engines'][0]}'s initial weights for the same seed; the step-0 column is the largest "
            f"difference of their logits on the same images before any training")
    page.text(f"Same recipe, split and batch order for every engine; {init}.")
    groups = {e: [records[r["name"]].metrics for r in plan["runs"] if r["engine"] == e and r["name"] in records
                  and records[r["name"]].metrics] for e in plan["engines"]}
    if any(groups.values()):
        page.image("compare_curves", plots.plot_bands(groups, None, "mean over seeds, band min..max"),
                   "one colour per engine: the mean over seeds, the band from the lowest to the highest seed")
    return s


def sweep_section(page: Page, plan: dict, records: dict[str, RunRecord]) -> dict:
    s = sweep_summary(plan, records)
    keys = s["keys"]
    page.table(keys + ["test_acc", "test_loss", "train_s", "runs"],
               [[fmt(t["point"].get(k)) for k in keys] + [pm(t["test_acc"], digits=4), pm(t["test_loss"], digits=4),
                                                         pm(t["train_s"], digits=1), f"{t['finished']}/{t['of']}"]
                for t in s["points"]],
               caption=f"engine {plan['engine']}; {_over_seeds(plan['seeds'])}; best first")
    done = [(t["point"], t["test_accs"]) for t in s["points"] if t["test_accs"]]
    if done and keys:
        grid = {k: list(dict.fromkeys(r["point"][k] for r in plan["runs"])) for k in keys}  # values in grid order
        page.image("sweep", plots.plot_sweep(grid, done), "test accuracy against each swept key (dots: runs; line: mean)")
    return s


def experiment_page(folder: Path, storage: str | None = None) -> tuple[Page, dict]:
    """A compare, sweep or tune folder's page (`storage`: a tune study's URL, if not the folder's own)."""
    from clsf.report.study import study_section

    f = Folder(folder)
    plan = json.loads(f.plan.read_text())
    names = [r["name"] for r in plan["runs"]] if "runs" in plan else \
        sorted(p.name for p in f.runs.glob("*") if p.is_dir())  # a tune's trials: whatever ran here
    records = {n: read_run(f.run(n), n) for n in names if RunDir.is_run(f.run(n))}
    title = f"{plan['kind']}: {plan['model']} on {Path(str(plan['data'])).name}"
    page = Page(title)
    if plan["kind"] == "tune":
        summary = study_section(page, plan, folder, records, storage)
    else:
        summary = (compare_section if plan["kind"] == "compare" else sweep_section)(page, plan, records)
    if records:
        runs_section(page, list(records.values()))
    return page, summary


def _labels(records: list[RunRecord]) -> None:
    """Unique names: the folder name, else as many folders above it as tell the runs apart (a compare's
    or sweep's folder, not the runs/ inside it: compare-a/keras-s0 and compare-b/keras-s0)."""
    def parts(r):
        return [p for p in r.path.parts if p != "runs"]

    for depth in range(1, max(len(parts(r)) for r in records) + 1):
        labels = ["/".join(parts(r)[-depth:]) for r in records]
        if len(set(labels)) == len(labels):
            break
    for r, label in zip(records, labels):
        r.label = label


def write_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write report.html and report.md; return the HTML path. One run or one compare/sweep folder
    reports into itself unless `out` says otherwise; several runs go to `out` (default ./clsf-report,
    or the next free clsf-report-N: an earlier report is never replaced unasked)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise UserError(f"'{p}' does not exist; pass run directories or folders that hold them.")
    if len(paths) == 1 and Folder.holds_plan(paths[0]):
        page, _ = experiment_page(paths[0])
        return page.write(out or paths[0])
    if len(paths) == 1 and RunDir.is_run(paths[0]):
        return run_page(read_run(paths[0])).write(out or paths[0])
    runs = []
    for p in paths:
        found = find_runs(p)
        if not found:
            raise UserError(f"{p} holds no clsf run directories; pass a run or a folder of runs.")
        runs += [r for r in found if r not in runs]
    records = [read_run(r) for r in runs]
    _labels(records)
    page = Page(f"{len(records)} runs")
    runs_section(page, records)
    return page.write(out or fresh_path(Path("clsf-report")))  # an --out given on purpose may replace one
