"""One GAN step per framework, the classic recipe: the discriminator learns fake=1 / real=0 on a
batch of generated and real images (labels with a little uniform noise), then the generator learns
to make the discriminator say "real" (0). Binary cross-entropy on logits, separate Adam optimizers.

All randomness (latent vectors, label noise) comes in from the loop as numpy arrays, so a run is a
function of (seed, epoch) and resumes exactly, in either framework.
"""

from __future__ import annotations


import numpy as np

from clsf.config import Config, OptimConfig
from clsf.engines.checkpoint import Checkpoint
from clsf.errors import UserError
from clsf.models.zoo import get_spec


def specs(cfg: Config, image_shape):
    return get_spec("gan-generator", input_shape=(cfg.gan.latent,)), get_spec("gan-discriminator", input_shape=image_shape)


class TorchGAN:
    def __init__(self, cfg: Config, image_shape):
        import torch

        from clsf.engines.torch_optim import KerasRule
        from clsf.models.torch import build_torch

        torch.manual_seed(cfg.seed)
        self.device = "cpu"  # the step builds its tensors on the host
        self.g_spec, self.d_spec = specs(cfg, image_shape)
        self.g, self.d = build_torch(self.g_spec), build_torch(self.d_spec)
        self.g_opt = KerasRule(self.g.parameters(), OptimConfig(name="adam", lr=cfg.gan.g_lr, beta1=cfg.gan.beta1))
        self.d_opt = KerasRule(self.d.parameters(), OptimConfig(name="adam", lr=cfg.gan.d_lr, beta1=cfg.gan.beta1))

    def step(self, real, z, z2, noise):
        """real (B, H, W, C) in 0..1, z and z2 (B, latent), noise (2B, 1); -> d_loss, g_loss, d_acc_real, d_acc_fake."""
        import torch
        import torch.nn.functional as F

        real = torch.from_numpy(real).permute(0, 3, 1, 2)
        fake = self.g(torch.from_numpy(z)).detach()  # (B, C, H, W); no generator gradient in the D step
        labels = torch.cat([torch.ones(len(z), 1), torch.zeros(len(real), 1)]) + torch.from_numpy(noise)
        logits = self.d(torch.cat([fake, real]))  # (2B, 1)
        d_loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        g_logits = self.d(self.g(torch.from_numpy(z2)))
        g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.zeros(len(z2), 1))  # "real" is 0
        self.g_opt.zero_grad(set_to_none=True)
        self.d.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()  # the discriminator's gradients from this pass are dropped
        with torch.no_grad():
            acc_fake = float((logits[: len(z)] > 0).float().mean())
            acc_real = float((logits[len(z):] < 0).float().mean())
        return float(d_loss.detach()), float(g_loss.detach()), acc_real, acc_fake

    def generate(self, z: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.g.eval()(torch.from_numpy(z)).permute(0, 2, 3, 1).numpy()  # (N, H, W, C) in 0..1

    def save(self, ckpt: Checkpoint) -> None:
        from clsf.engines.torch_loop import save_torch
        from clsf.models.transfer import save_npz, torch_weights

        save_npz(ckpt.generator, torch_weights(self.g, self.g_spec))
        save_npz(ckpt.discriminator, torch_weights(self.d, self.d_spec))
        save_torch({"g": self.g.state_dict(), "d": self.d.state_dict(), "g_opt": self.g_opt.state_dict(),
                    "d_opt": self.d_opt.state_dict()}, ckpt.state("pt"))

    def environment(self) -> dict:
        import torch

        return {"threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}}

    def load(self, ckpt: Checkpoint) -> None:
        import pickle

        import torch

        path = ckpt.state("pt")
        try:  # weights_only: tensors and plain containers only, never code
            state = torch.load(path, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise UserError(f"{path} could not be read as a clsf GAN checkpoint ({str(e).splitlines()[0][:120]}); "
                            "resume from a checkpoint clsf wrote, or start the run again.") from None
        if not isinstance(state, dict) or not {"g", "d", "g_opt", "d_opt"} <= set(state):
            raise UserError(f"{path} is not a clsf GAN checkpoint (it lacks the generator, discriminator "
                            "or optimizer state); resume from a checkpoint clsf wrote.")
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])


class TFGAN:
    def __init__(self, cfg: Config, image_shape):
        from clsf.engines.tf_kernels import import_tf_for

        self.g_spec, self.d_spec = specs(cfg, image_shape)
        tf = import_tf_for([self.g_spec, self.d_spec])  # the generator's 1-channel image layer: Eigen's kernels
        import keras

        from clsf.engines.keras_common import make_optimizer
        from clsf.models.keras import build_keras

        keras.utils.set_random_seed(cfg.seed)
        self.device = "gpu:0" if tf.config.list_logical_devices("GPU") else "cpu"
        self.g, self.d = build_keras(self.g_spec), build_keras(self.d_spec)
        self.g_opt = make_optimizer(OptimConfig(name="adam", lr=cfg.gan.g_lr, beta1=cfg.gan.beta1), cfg.gan.g_lr)
        self.d_opt = make_optimizer(OptimConfig(name="adam", lr=cfg.gan.d_lr, beta1=cfg.gan.beta1), cfg.gan.d_lr)
        self.g_opt.build(self.g.trainable_variables)
        self.d_opt.build(self.d.trainable_variables)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        g, d, g_opt, d_opt = self.g, self.d, self.g_opt, self.d_opt
        h, w, c = image_shape
        latent = self.g_spec.input_shape[0]

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None, latent], tf.float32),
                                      tf.TensorSpec([None, latent], tf.float32), tf.TensorSpec([None, 1], tf.float32)])
        def step(real, z, z2, noise):
            fake = g(z, training=True)
            labels = tf.concat([tf.ones([tf.shape(z)[0], 1]), tf.zeros([tf.shape(real)[0], 1])], 0) + noise
            with tf.GradientTape() as tape:
                logits = d(tf.concat([fake, real], 0), training=True)  # (2B, 1)
                d_loss = bce(labels, logits)
            d_opt.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
            with tf.GradientTape() as tape:
                g_loss = bce(tf.zeros([tf.shape(z2)[0], 1]), d(g(z2, training=True), training=True))  # "real" is 0
            g_opt.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))
            n = tf.shape(z)[0]
            acc_fake = tf.reduce_mean(tf.cast(logits[:n] > 0, tf.float32))
            acc_real = tf.reduce_mean(tf.cast(logits[n:] < 0, tf.float32))
            return d_loss, g_loss, acc_real, acc_fake

        self._step = step

    def step(self, real, z, z2, noise):
        return tuple(float(v) for v in self._step(real, z, z2, noise))

    def generate(self, z: np.ndarray) -> np.ndarray:
        return self.g(z, training=False).numpy()

    def _variables(self):
        return [("g", self.g.variables), ("d", self.d.variables), ("g_opt", self.g_opt.variables), ("d_opt", self.d_opt.variables)]

    def save(self, ckpt: Checkpoint) -> None:
        from clsf.models.transfer import keras_weights, save_npz

        save_npz(ckpt.generator, keras_weights(self.g, self.g_spec))
        save_npz(ckpt.discriminator, keras_weights(self.d, self.d_spec))
        np.savez(ckpt.state("npz"), **{f"{part}/{i}": v.numpy() for part, vs in self._variables() for i, v in enumerate(vs)})

    def environment(self) -> dict:
        import tensorflow as tf

        return {"threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
                            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "auto"}}

    def load(self, ckpt: Checkpoint) -> None:
        with np.load(ckpt.state("npz")) as z:
            expected = sum(len(vs) for _, vs in self._variables())
            if len(z.files) != expected:
                raise UserError(f"{ckpt.state('npz')} holds {len(z.files)} variables but this GAN has {expected}; "
                                "resume from a checkpoint clsf wrote with the same settings.")
            for part, vs in self._variables():
                for i, v in enumerate(vs):
                    v.assign(z[f"{part}/{i}"])


GANS = {"torch": TorchGAN, "tf": TFGAN}  # the engines a GAN trains in: one step class per framework
