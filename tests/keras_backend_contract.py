"""Worker for test_keras_backends: the engine contract of one Keras-backend engine, in a process of
its own (Keras holds one backend per process). Prints one JSON object of what it measured.

    python tests/keras_backend_contract.py ENGINE TMP_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

DATA = "synthetic:train=96,test=24,size=10x10x3,classes=3"


def main(engine: str, tmp: str) -> None:
    from helpers import tiny_config

    from clsf.errors import UserError
    from clsf.models.transfer import load_npz
    from clsf.run import rundir
    from clsf.run.train import train

    root = Path(tmp)

    def cfg(name, *extra, epochs=2):
        return tiny_config(engine, root, DATA, "data.hflip=true", "data.crop_padding=1", "model.args.dropout=0.3",
                           "optim.name=adam", "optim.schedule=cosine", *extra, epochs=epochs, run_name=name, batch_size=16)

    out = {}
    # with the weight average (optim.ema): a resume continues it, and the others' evaluate reads it
    whole = train(cfg("whole", "optim.ema=0.9"), quiet=True)  # 64 train images: 4 steps an epoch
    cut = train(cfg("cut", "optim.ema=0.9"), quiet=True, stop_after_steps=2)  # inside epoch 1
    out["cut_meta"] = {k: rundir.checkpoint_meta(cut)[k] for k in ("epoch", "step")}
    train(resume=cut, quiet=True, stop_after=1)  # at the end of epoch 1
    train(resume=cut, quiet=True, stop_after_steps=6)  # inside epoch 2
    train(resume=cut, quiet=True)
    out["whole_rows"], out["cut_rows"] = rundir.read_metrics(whole), rundir.read_metrics(cut)
    with np.load(whole / "predictions.npz") as za, np.load(cut / "predictions.npz") as zb:
        out["logits_diff"] = float(np.abs(za["logits"] - zb["logits"]).max())
    out["final"] = json.loads((whole / "final.json").read_text())
    out["averaged"] = (whole / "checkpoints" / "last" / "train_weights.npz").exists()
    # transfer: the trunk stays as init_from left it while frozen, then (where the backend allows) trains
    unfreeze = ["unfreeze_after=1"] if engine != "keras-jax" else []
    frozen = train(cfg("frozen", f"init_from={whole}", "freeze=trunk", *unfreeze, epochs=2), quiet=True, stop_after=1)
    a, b = load_npz(whole / "checkpoints" / "last" / "weights.npz"), load_npz(frozen / "checkpoints" / "last" / "weights.npz")
    head = list(a)[-1]
    out["trunk_moved_frozen"] = max(float(np.abs(a[k][p] - b[k][p]).max()) for k in a if k != head for p in a[k])
    out["head_moved_frozen"] = max(float(np.abs(a[head][p] - b[head][p]).max()) for p in a[head])
    train(resume=frozen, quiet=True)
    c = load_npz(frozen / "checkpoints" / "last" / "weights.npz")
    out["trunk_moved_after"] = max(float(np.abs(b[k][p] - c[k][p]).max()) for k in b if k != head for p in b[k])
    if not unfreeze:
        try:
            train(cfg("unfreeze", f"init_from={whole}", "freeze=trunk", "unfreeze_after=1"), quiet=True)
        except UserError as e:
            out["unfreeze_refused"] = str(e)
    # precision=auto where the CPU has bf16 units: what the engine resolves it to (env.json)
    import clsf.engines.precision as precision

    precision.cpu_has_bf16 = lambda: True
    auto = train(cfg("auto", "precision=auto", epochs=1), quiet=True)
    out["auto_precision"] = json.loads((auto / "env.json").read_text())["precision"]
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
