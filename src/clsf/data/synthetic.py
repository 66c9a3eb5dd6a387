"""Seeded synthetic images for tests: each class is a fixed random pattern plus noise, so a model
can learn it (a loss that falls is a meaningful test) and the same seed gives the same bytes."""

from __future__ import annotations

import hashlib

import numpy as np

from clsf.data.base import Dataset, check_arrays
from clsf.errors import UserError

DEFAULTS = {"train": 512, "test": 128, "size": (32, 32, 3), "classes": 10, "seed": 0}


def parse_synthetic(name: str) -> dict:
    """'synthetic' or 'synthetic:train=256,test=64,size=28x28x1,classes=4,seed=1'."""
    opts = dict(DEFAULTS)
    if ":" in name:
        for item in filter(None, name.split(":", 1)[1].split(",")):
            key, _, value = item.partition("=")
            try:
                if key == "size":
                    opts["size"] = tuple(int(v) for v in value.lower().split("x"))
                    if len(opts["size"]) != 3 or opts["size"][2] not in (1, 3) or min(opts["size"]) < 1:
                        raise ValueError
                elif key in ("train", "test", "classes", "seed"):
                    opts[key] = int(value)
                    if opts[key] < (1 if key == "train" else 0):
                        raise ValueError
                else:
                    raise KeyError(key)
            except (ValueError, KeyError):
                raise UserError(
                    f"bad synthetic option '{item}'; use synthetic:train=N,test=N,size=HxWxC,classes=K,seed=S "
                    "with N, H, W >= 1 (test=0 allowed), C = 1 or 3."
                ) from None
    if opts["classes"] < 2:
        raise UserError("synthetic data needs classes >= 2.")
    return opts


def make_synthetic(name: str = "synthetic") -> Dataset:
    o = parse_synthetic(name)
    rng = np.random.default_rng(o["seed"])
    h, w, c = o["size"]
    templates = rng.uniform(40, 215, size=(o["classes"], h, w, c))  # one pattern per class
    splits = {}
    for split in ("train", "test"):
        n = o[split]
        y = np.arange(n) % o["classes"]
        rng.shuffle(y)
        x = templates[y] + rng.normal(0, 40, size=(n, h, w, c))
        splits[split] = check_arrays(np.clip(x, 0, 255).astype(np.uint8), y, o["classes"], "synthetic")
    digest = hashlib.sha256()
    for s in splits.values():
        digest.update(s.x.tobytes())
        digest.update(s.y.tobytes())
    return Dataset("synthetic", splits, [f"class{i}" for i in range(o["classes"])], name, digest.hexdigest())
