"""A fourth engine in numpy alone, registered by tests/test_core.py with one `register` line: a
softmax regression on the normalised pixels, trained by SGD with momentum on clsf's data plan. It
shows that an engine is one file and one registry line: train, resume, evaluate and report run
through it with no other file changed. Its model is SPEC's (a model file the tests give it): it keeps
the engine contract, writing that spec's neutral weights."""

from __future__ import annotations


import numpy as np

from clsf.data.order import epoch_plan
from clsf.engines.base import Engine, Meter
from clsf.models.spec import output_shape


SPEC = "layers:\n  - {type: flatten}\n  - {type: dense, name: logits, units: num_classes}\n"  # softmax regression


class NumpyEngine(Engine):
    name = "numpy"

    def __init__(self, cfg, spec, steps_per_epoch):
        super().__init__(cfg, spec, steps_per_epoch)
        self.world = self.detect_world()
        self.device = "cpu"
        d, k = int(np.prod(spec.input_shape)), output_shape(spec)[0]
        rng = np.random.default_rng(cfg.seed)
        self.w = rng.normal(0, 0.01, (d, k)).astype(np.float64)  # (D, K)
        self.b = np.zeros(k)
        self.vw, self.vb = np.zeros_like(self.w), np.zeros_like(self.b)  # momentum: the training state
        self.step = 0

    def _x(self, x_u8: np.ndarray) -> np.ndarray:  # (N, H, W, C) uint8 -> (N, D) float64, normalised
        a, b = self.pre.affine(x_u8.shape[-1])
        return (x_u8 * a + b).reshape(len(x_u8), -1)

    def train_epoch(self, x, y, epoch, meter: Meter, first_step=0):
        order = epoch_plan(len(x), self.pre, self.cfg.seed, epoch).order
        bs, lr, m = self.cfg.batch_size, self.cfg.optim.lr, self.cfg.optim.momentum
        for step in range(first_step, meter.n_steps):
            idx = order[step * bs:(step + 1) * bs]
            xb, yb = self._x(x[idx]), y[idx]
            z = xb @ self.w + self.b  # (B, K) logits
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            loss = float(-np.log(p[np.arange(len(yb)), yb] + 1e-12).mean())
            g = p.copy()
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            self.vw = m * self.vw - lr * (xb.T @ g)  # Keras' momentum rule
            self.vb = m * self.vb - lr * g.sum(0)
            self.w += self.vw
            self.b += self.vb
            self.step += 1
            meter.add(step, loss, int((z.argmax(1) == yb).sum()))
            if meter.stop_requested:
                break

    def predict_logits(self, x):
        out = [self._x(x[i:i + self.cfg.eval_batch_size]) @ self.w + self.b for i in range(0, len(x), self.cfg.eval_batch_size)]
        return np.concatenate(out).astype(np.float32)

    def features(self, x):
        return self._x(x).astype(np.float32)

    def save(self, ckpt):  # the neutral layout of its spec, SPEC: Flatten then Dense "logits"
        np.savez(ckpt.weights, **{"logits/kernel": self.w, "logits/bias": self.b})
        np.savez(ckpt.state("npz"), vw=self.vw, vb=self.vb, step=self.step)

    def load(self, ckpt, training_state=True, only=None):
        with np.load(ckpt.weights) as z:
            self.w, self.b = z["logits/kernel"], z["logits/bias"]
        if training_state and ckpt.state("npz").exists():
            with np.load(ckpt.state("npz")) as z:
                self.vw, self.vb, self.step = z["vw"], z["vb"], int(z["step"])

    def global_step(self):
        return self.step

    def set_global_step(self, step):
        self.step = step

    def unfreeze(self):
        pass
