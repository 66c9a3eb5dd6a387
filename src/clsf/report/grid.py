"""A labelled grid of sample images (what the seed scripts' show_samples drew on screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_sample_grid(x: np.ndarray, y: np.ndarray, class_names: list[str], out: Path,
                     rows: int = 4, cols: int = 8, seed: int = 0, title: str | None = None) -> Path:
    """A rows x cols grid of images (a seeded draw from x (N, H, W, C) uint8), each titled with its
    class name, saved as a PNG at `out`; what `clsf data show` draws. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(rows * cols, len(y))
    idx = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx):
        img = x[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(class_names[y[i]], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from clsf.plots import save_figure

    return save_figure(fig, Path(out))
