"""Build src/clsf/data/assets/cifar10-sample.zip from the CIFAR-10 JPEG archive.

Usage: python tools/make_sample.py ../shared/data/cifar10-jpeg.tar.gz [TRAIN_PER_CLASS TEST_PER_CLASS]
Takes a seeded random pick of each class's JPEG files as they are (no re-encoding) and stores them
uncompressed (JPEG does not deflate) as train/<class>/NNNN.jpg and test/<class>/NNNN.jpg.
"""

import random
import sys
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

src = sys.argv[1]
per_class = {"train": int(sys.argv[2]) if len(sys.argv) > 2 else 200,
             "test": int(sys.argv[3]) if len(sys.argv) > 3 else 50}
members = defaultdict(list)
with tarfile.open(src) as tf:
    for m in tf.getmembers():
        parts = m.name.split("/")
        if m.isfile() and len(parts) == 4 and parts[1] in per_class:
            members[(parts[1], parts[2])].append(m)
    out = Path(__file__).resolve().parents[1] / "src/clsf/data/assets/cifar10-sample.zip"
    rng = random.Random(0)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for (split, cls), ms in sorted(members.items()):
            for m in sorted(rng.sample(sorted(ms, key=lambda m: m.name), per_class[split]), key=lambda m: m.name):
                info = zipfile.ZipInfo(f"{split}/{cls}/{Path(m.name).name}", date_time=(2020, 1, 1, 0, 0, 0))
                zf.writestr(info, tf.extractfile(m).read())
print(out, out.stat().st_size)
