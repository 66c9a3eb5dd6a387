"""Worker: a run's checkpoints/last in ENGINE (a process of its own, as clsf runs Keras on JAX or
PyTorch), its logits on the uint8 images of IMAGES.npy written to OUT.npy.

    python tests/engine_logits.py ENGINE RUN IMAGES.npy OUT.npy
"""

import sys

import numpy as np


def main(engine: str, run: str, images: str, out: str) -> None:
    from clsf.engines import entry
    from clsf.frameworks import import_keras
    from clsf.run.rundir import RunDir
    from clsf.run.setup import checkpoint_engine

    backend = entry(engine).keras_backend
    if backend not in (None, "tensorflow"):
        import_keras(backend)
    r = RunDir.open(run, None)
    cfg = r.validate("last")
    cfg.engine = engine
    np.save(out, checkpoint_engine(r, cfg, "last").predict_logits(np.load(images)))


if __name__ == "__main__":
    main(*sys.argv[1:])
