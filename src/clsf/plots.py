"""Every picture clsf draws, from metrics rows, confusion matrices and saved predictions (no framework
import). Each function saves to `out` and returns the path, or returns PNG bytes when `out` is None."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import numpy as np

from clsf.errors import UserError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path | None, dpi: int = 100):
    """A figure to `out` whole (a temporary name, then a rename), or its PNG bytes when `out` is None;
    a path that cannot be written is one line (a full disk is left to whoever holds the run)."""
    import io

    plt = _plt()
    if out is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        plt.close(fig)
        return buf.getvalue()
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
        tmp.replace(out)  # whole or not at all, like every file clsf writes
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk: said by whoever holds the run (its checkpoint intact)
        raise UserError(f"cannot write {out} ({e.strerror or e}); choose another path.") from None
    finally:
        plt.close(fig)
        with contextlib.suppress(OSError):  # no .part left behind (and none to remove where none was made)
            tmp.unlink(missing_ok=True)
    return out


def plot_history(rows: list[dict], out: Path | None, title: str = ""):
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in rows], "o-", label=f"train_{metric}")
        val = [r.get(f"val_{metric}") for r in rows]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], "s-", label=f"val_{metric}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _axes_for(ax, epochs, accuracy=metric == "acc")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}[metric])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_columns(rows: list[dict], groups: list[list[str]], out: Path | None, title: str = "", x: str = "epoch"):
    """Curves of any columns against `x` (an epoch, a step), one panel per group of columns (e.g. a
    GAN's [d_loss, g_loss] and [frechet]); columns with no values are left out."""
    plt = _plt()
    groups = [[c for c in g if any(r.get(c) is not None for r in rows)] for g in groups]
    groups = [g for g in groups if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for c in group:
            ax.plot(*_curve(rows, c, x), "o-", ms=3, label=c)
        ax.set_xlabel(x)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _axes_for(ax, [r[x] for r in rows])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_confusion(cm: np.ndarray, class_names: list[str], out: Path | None, title: str = ""):
    plt = _plt()
    k = len(class_names)
    size = max(4.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, out)


def _curve(rows: list[dict], metric: str, x: str = "epoch") -> tuple[list[int], list[float]]:
    pts = [(r[x], r[metric]) for r in rows if r.get(metric) is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def _axes_for(ax, xs, accuracy: bool = False) -> None:
    """One point on the x axis gets room around it (not matplotlib's +-4% of a single value, which
    reads 0.96..1.04); an accuracy axis with one point spans 0..1."""
    xs = sorted(set(xs))
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 0.5, xs[0] + 0.5)
        ax.set_xticks(xs)
        if accuracy:
            ax.set_ylim(0, 1)


STYLES = ("-", "--", ":", "-.")  # with tab10's colours: 40 runs told apart without a colour ramp


def plot_runs(runs: list[tuple[str, list[dict]]], out: Path | None = None, title: str = ""):
    """Overlaid curves of several runs: accuracy (val, else train) and loss (val solid, train dotted).
    Every run gets a colour and a line style and a legend entry, beside the plots when there are many."""
    plt = _plt()
    many = len(runs) > 8
    fig, axes = plt.subplots(1, 2, figsize=(13 if many else 11, 4 + 0.12 * max(0, len(runs) - 24)))
    colors = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(runs):
        c, style = colors(i % 10), STYLES[(i // 10) % len(STYLES)]
        acc = "val_acc" if any(r.get("val_acc") is not None for r in rows) else "train_acc"
        axes[0].plot(*_curve(rows, acc), style, marker="o", color=c, ms=3, label=label)
        axes[1].plot(*_curve(rows, "val_loss"), style, marker="o", color=c, ms=3, label=label)
        axes[1].plot(*_curve(rows, "train_loss"), ":", color=c, alpha=0.6)
    with_val = [any(r.get("val_acc") is not None for r in rows) for _, rows in runs]
    axes[0].set_ylabel("validation accuracy" if all(with_val) else "training accuracy" if not any(with_val)
                       else "accuracy (validation; training where a run has no validation split)")
    axes[1].set_ylabel("loss (validation: markers; training: dotted)")
    for i, ax in enumerate(axes):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _axes_for(ax, [r["epoch"] for _, rows in runs for r in rows], accuracy=i == 0)
        ax.grid(alpha=0.3)
    if many:  # beside the plots, in columns, rather than over the curves
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 + len(runs) // 25, frameon=False)
    else:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_bands(groups: dict[str, list[list[dict]]], out: Path | None = None, title: str = ""):
    """One colour per group (engine): the mean over its runs (seeds) as a line, min..max as a band."""
    plt = _plt()
    metrics = [m for m in ("train_loss", "val_loss", "val_acc")
               if any(r.get(m) is not None for runs in groups.values() for rows in runs for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (name, runs) in enumerate(groups.items()):
            n = min((len(rows) for rows in runs), default=0)  # epochs every seed has
            if n == 0:
                continue
            v = np.array([[rows[e].get(metric, np.nan) for e in range(n)] for rows in runs], dtype=float)  # (seeds, epochs)
            epochs = np.arange(1, n + 1)
            color = plt.get_cmap("tab10")(i)
            # a style per group too: engines that agree to the bit (keras and tf) stay visible on top of each other
            ax.plot(epochs, np.nanmean(v, 0), ("-", "--", ":", "-.")[i % 4], marker="os^D"[i % 4], color=color, ms=4,
                    mfc="none", label=f"{name} ({len(runs)} seeds)")
            if len(runs) > 1:
                ax.fill_between(epochs, np.nanmin(v, 0), np.nanmax(v, 0), color=color, alpha=0.2, lw=0)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _axes_for(ax, [r["epoch"] for runs in groups.values() for rows in runs for r in rows], accuracy=metric.endswith("acc"))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_sweep(grid: dict[str, list], points: list[tuple[dict, list[float]]], out: Path | None = None, title: str = ""):
    """Test accuracy against each swept key (values in grid order), one panel per key. Nothing is
    averaged over the other keys: each combination of their values is its own line (its seeds'
    mean) and colour, with every seed's dot in that colour, and the legend names it. `points` holds
    (grid point {key: value}, [test_acc of each seed])."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(grid), figsize=(4.6 * len(grid) + 1.6, 3.8), squeeze=False)
    rng = np.random.default_rng(0)
    colors = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], grid):
        values = [repr(v) for v in grid[key]]
        others = [k for k in grid if k != key]
        groups = list(dict.fromkeys(tuple(repr(p[k]) for k in others) for p, _ in points))  # in grid order
        for g, group in enumerate(groups):
            c = colors(g % 10)
            means = []
            for x, value in enumerate(values):
                accs = [a for p, seeds in points if repr(p[key]) == value and tuple(repr(p[k]) for k in others) == group
                        for a in seeds]
                ax.scatter(x + rng.uniform(-0.08, 0.08, len(accs)), accs, s=14, alpha=0.7, color=c)
                means.append(np.mean(accs) if accs else np.nan)
            label = ", ".join(f"{k}={v.strip(chr(39))}" for k, v in zip(others, group)) or "mean over seeds"
            ax.plot(range(len(values)), means, STYLES[(g // 10) % len(STYLES)], marker="s", color=c, label=label)
        ax.set_xticks(range(len(values)), [v.strip("'") for v in values], rotation=20)
        ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_xlabel(key)
        ax.set_ylabel("test_acc (dots: seeds; lines: their mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="the other keys" if others else None, title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_mistakes(images: np.ndarray, true: list[str], pred: list[str], conf: np.ndarray, out: Path | None = None,
                  cols: int = 8, title: str = ""):
    """Misclassified images, each titled with its true class, the predicted class and its probability."""
    plt = _plt()
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45, rows * 1.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, c in zip(axes.flat, images, true, pred, conf):
        gray = img.shape[-1] == 1
        ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{t}\n→ {p} {c:.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_study(trials: list[dict], objective: str, direction: str, out: Path | None = None, title: str = ""):
    """A tune study: each trial's value by trial number (complete: dots; pruned: hollow at its last
    reported value; failed: a cross at the bottom) and the best complete value so far."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    pick = max if direction == "maximize" else min
    best, so_far = None, []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] == "COMPLETE":
            best = t["value"] if best is None else pick(best, t["value"])
        so_far.append((t["number"], best))
    done = [(t["number"], t["value"]) for t in trials if t["state"] == "COMPLETE"]
    pruned = [(t["number"], t["intermediate"][max(t["intermediate"])]) for t in trials
              if t["state"] == "PRUNED" and t["intermediate"]]
    if done:
        ax.scatter(*zip(*done), s=22, color="tab:blue", label="complete", zorder=3)
    if pruned:
        ax.scatter(*zip(*pruned), s=22, facecolors="none", edgecolors="tab:orange", label="pruned (last value)", zorder=3)
    failed = [t["number"] for t in trials if t["state"] == "FAIL"]
    if failed:
        low = min([v for _, v in done + pruned], default=0.0)
        ax.scatter(failed, [low] * len(failed), marker="x", color="tab:red", label="failed (lost or crashed)", zorder=3)
    steps = [(n, b) for n, b in so_far if b is not None]
    if steps:
        ax.step(*zip(*steps), where="post", color="black", lw=1.2, label=f"best so far ({direction})")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_trial_curves(trials: list[dict], objective: str, out: Path | None = None, title: str = ""):
    """Every trial's per-epoch objective (what the pruner saw): complete trials in colour, pruned ones
    grey ending in a cross at the epoch they were stopped."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = plt.get_cmap("tab10")
    shown = 0
    for t in sorted(trials, key=lambda t: t["number"]):
        if not t["intermediate"]:
            continue
        epochs = sorted(t["intermediate"])
        values = [t["intermediate"][e] for e in epochs]
        if t["state"] == "PRUNED":
            ax.plot(epochs, values, "-", color="0.6", lw=1)
            ax.plot(epochs[-1], values[-1], "x", color="tab:red", ms=7)
        else:
            ax.plot(epochs, values, STYLES[(shown // 10) % len(STYLES)], color=colors(shown % 10), lw=1.2,
                    marker="o", ms=3, label=f"trial {t['number']}" if shown < 20 else None)
            shown += 1
    ax.plot([], [], "x-", color="0.6", mec="tab:red", label="pruned")
    ax.set_xlabel("epoch")
    ax.set_ylabel(objective)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_importances(importances: dict[str, float], objective: str, out: Path | None = None, title: str = ""):
    """Horizontal bars: each parameter's share of the objective's variance (Optuna's fANOVA)."""
    plt = _plt()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(items)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for {objective} (sums to 1)")
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)
