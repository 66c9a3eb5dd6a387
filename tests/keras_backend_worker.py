"""Worker for test_parity's Keras-backend rows: in a process of its own (Keras holds one backend
per process), train each case's config with the engine named on the command line from the
initial weights given, and write its weights and epoch losses.

    python tests/keras_backend_worker.py ENGINE CASES.json OUT_DIR
CASES.json: [{"key": str, "overrides": [...], "epochs": int, "n": int, "init": path/to/init.npz,
              "sabotage": null | "adam-eps" | "bn-defaults"}, ...]
"""

import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


@contextlib.contextmanager
def sabotage(what: str | None):
    """For test_parity's teeth: a rule changed on purpose for one case."""
    import dataclasses

    import keras

    from clsf.engines import keras_backends

    real_opt, real_bn = keras_backends.make_optimizer, keras.layers.BatchNormalization.__init__
    if what == "adam-eps":  # Adam's epsilon moved
        keras_backends.make_optimizer = lambda o, lr: real_opt(dataclasses.replace(o, eps=o.eps * 10), lr)
    elif what == "bn-defaults":  # Keras' batch-norm defaults instead of the spec's momentum and epsilon
        def init(self, *args, momentum=0.99, epsilon=1e-3, **kwargs):
            real_bn(self, *args, **kwargs)

        keras.layers.BatchNormalization.__init__ = init
    try:
        yield
    finally:
        keras_backends.make_optimizer, keras.layers.BatchNormalization.__init__ = real_opt, real_bn


def main(engine_name: str, cases_file: str, out_dir: str) -> None:
    from test_parity import X, Y, train_case

    from clsf.frameworks import import_keras
    from clsf.models.transfer import load_npz, save_npz

    import_keras({"keras-jax": "jax", "keras-torch": "torch"}[engine_name])
    out = Path(out_dir)
    for case in json.loads(Path(cases_file).read_text()):
        t = time.perf_counter()
        with sabotage(case.get("sabotage")):
            weights, losses = train_case(engine_name, case["overrides"], case["epochs"], X[:case["n"]], Y[:case["n"]],
                                         load_npz(case["init"]))
        save_npz(out / f"{case['key']}.npz", weights)
        (out / f"{case['key']}.json").write_text(json.dumps({"losses": losses, "seconds": time.perf_counter() - t}))


if __name__ == "__main__":
    main(*sys.argv[1:])
