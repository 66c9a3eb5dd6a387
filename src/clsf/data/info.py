"""Text description of a dataset for `clsf data info`."""

from __future__ import annotations

import numpy as np

from clsf.data.base import Dataset


def describe(ds: Dataset) -> str:
    splits = list(ds.splits)
    lines = [
        f"dataset   {ds.name}",
        f"source    {ds.source}",
        f"sha256    {ds.checksum}",
        f"images    {'x'.join(map(str, ds.image_shape))} uint8 (NHWC), labels int64, {ds.num_classes} classes",
    ]
    lines += [f"note      {k}: {v}" for k, v in ds.notes.items()]
    width = max(len(c) for c in ds.class_names + ["class"])
    lines.append("")
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>7}" for s in splits))
    counts = {s: np.bincount(ds[s].y, minlength=ds.num_classes) for s in splits}
    for i, name in enumerate(ds.class_names):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{counts[s][i]:>7}" for s in splits))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{len(ds[s]):>7}" for s in splits))
    return "\n".join(lines)
