"""The numbers a compare or a sweep stands on, from its run directories only.

A compare folder's plan.json lists its runs ({name, engine, seed}); a sweep's lists them with
their grid point. Means and standard deviations are over seeds (sample std, ddof=1); accuracies are
reported in points (percent).
"""

from __future__ import annotations

import math

import numpy as np

from clsf.report.runs import RunRecord

AGREE_POINTS = 1.0  # engines "agree" when their mean test accuracies lie within 1 point...
# ...or within twice the seed-to-seed standard deviation, i.e. indistinguishable from reseeding


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def compare_summary(plan: dict, records: dict[str, RunRecord]) -> dict:
    """Per engine: mean ± std over seeds of test accuracy/loss, training seconds, images/s and peak
    memory; the spread between engines; the step-0 logit difference to the first engine; a verdict."""
    engines, seeds = plan["engines"], plan["seeds"]
    by = {(r["engine"], r["seed"]): records.get(r["name"]) for r in plan["runs"]}
    per_engine = {}
    for e in engines:
        rows = [rec.row() for s in seeds if (rec := by.get((e, s))) is not None and rec.final is not None]
        per_engine[e] = {"finished": len(rows), "of": len(seeds),
                         **{k: mean_std([r[k] for r in rows]) for k in ("test_acc", "test_loss", "train_s", "images_per_s", "peak_mem_mb")}}
    # step 0: every engine's logits on the same probe images, before any training
    step0 = {}
    for e in engines[1:]:
        diffs = []
        for s in seeds:
            a, b = by.get((engines[0], s)), by.get((e, s))
            la, lb = (a.init_logits() if a else None), (b.init_logits() if b else None)
            if la is not None and lb is not None and la.shape == lb.shape:
                diffs.append(float(np.abs(la - lb).max()))
        step0[e] = max(diffs) if diffs else None
    done = [e for e in engines if per_engine[e]["finished"]]
    means = [per_engine[e]["test_acc"][0] for e in done]
    spread = 100 * (max(means) - min(means)) if len(means) > 1 else None
    variances = [per_engine[e]["test_acc"][1] ** 2 for e in done if per_engine[e]["test_acc"][1] is not None]
    seed_std = 100 * math.sqrt(np.mean(variances)) if variances else None  # pooled over engines
    total = sum(p["finished"] for p in per_engine.values())
    if total < len(engines) * len(seeds):
        verdict = f"incomplete: {total} of {len(engines) * len(seeds)} runs finished; run the same command again to finish the rest"
    elif spread is None:
        verdict = "one engine only: nothing to compare"
    elif seed_std is None and spread > AGREE_POINTS:  # one seed: no measure of the noise to hold the spread against
        verdict = (f"cannot decide: spread of test accuracy {spread:.2f} points with one seed per engine, so no "
                   "seed-to-seed std to judge it by; run with more seeds (--seeds 0,1,2; from Python, seeds=[0, 1, 2])")
    else:
        std_text = f"seed-to-seed std {seed_std:.2f} points" if seed_std is not None else "one seed, so no seed-to-seed std"
        agree = spread <= AGREE_POINTS or spread <= 2 * seed_std
        verdict = (f"engines {'agree' if agree else 'differ'}: spread of mean test accuracy {spread:.2f} points, {std_text}")
    return {"engines": per_engine, "spread_points": spread, "seed_std_points": seed_std, "step0_max_abs_logit_diff": step0,
            "independent_init": plan.get("independent_init", False), "verdict": verdict}


def sweep_summary(plan: dict, records: dict[str, RunRecord]) -> dict:
    """One row per grid point (mean ± std over seeds), best mean test accuracy first."""
    points = {}
    for r in plan["runs"]:
        key = repr(sorted(r["point"].items()))
        p = points.setdefault(key, {"point": r["point"], "rows": [], "of": 0})
        p["of"] += 1
        rec = records.get(r["name"])
        if rec is not None and rec.final is not None:
            p["rows"].append(rec.row())
    table = []
    for p in points.values():
        rows = p["rows"]
        table.append({"point": p["point"], "finished": len(rows), "of": p["of"], "test_accs": [r["test_acc"] for r in rows],
                      **{k: mean_std([r[k] for r in rows]) for k in ("test_acc", "test_loss", "train_s")}})
    table.sort(key=lambda t: -1 if t["test_acc"][0] is None else t["test_acc"][0], reverse=True)
    return {"keys": plan["swept"], "points": table}
