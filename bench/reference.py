"""The naive reference loops: `seed-cnn` trained the way the user's documents train it, so clsf's
speed is also stated as a ratio to what a user would otherwise have written, measured beside it.

What makes them naive is the data handling the documents use, not the model or the optimizer
(Adam here; clsf's engines run their default RMSprop, an update of about the same cost — the
optimizer is ~5% of a step, bench/step_profile.py):
  - the images become float64 in [0, 1] up front (`x / 255.0`): 8 bytes per pixel, cast per batch;
  - keras: `model.fit(x, y, batch_size=B)` on those arrays, `model.evaluate(x_test, y_test)`;
  - tf: `tf.data.Dataset.from_tensor_slices((x, y)).shuffle(200).batch(B)` and a `tf.function`
    GradientTape step; evaluation is the model called on the whole split at once;
  - torch: `TensorDataset` + `DataLoader(shuffle=True, num_workers=2)` (collated sample by
    sample), evaluation is the model called on the whole split at once.
Each loop has `prepare(x_uint8)` (the documents' conversion, done once per run and timed apart),
`train(x, y)` (one epoch over x) and `evaluate(x, y)`, which return seconds; warm-up is the
caller's job.
"""

from __future__ import annotations

import time

import numpy as np


def keras_model(softmax: bool):
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(100, activation="relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax" if softmax else None)])


def as_float64(x_uint8):
    return x_uint8 / 255.0  # (N, 32, 32, 3) float64, the documents' first line


class KerasFit:
    prepare = staticmethod(as_float64)

    def __init__(self, batch_size: int):
        import keras

        self.model, self.batch_size = keras_model(softmax=True), batch_size
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def train(self, x, y):
        t0 = time.perf_counter()
        self.model.fit(x, y, batch_size=self.batch_size, epochs=1, verbose=0)
        return time.perf_counter() - t0

    def evaluate(self, x, y):
        t0 = time.perf_counter()
        self.model.evaluate(x, y, verbose=0)
        return time.perf_counter() - t0


class TFLoop:
    prepare = staticmethod(as_float64)

    def __init__(self, batch_size: int):
        import keras
        import tensorflow as tf

        self.model, self.batch_size = keras_model(softmax=False), batch_size
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.optimizer = keras.optimizers.Adam()
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        self.step = step

    def train(self, x, y):
        import tensorflow as tf

        t0 = time.perf_counter()
        for xb, yb in tf.data.Dataset.from_tensor_slices((x, y)).shuffle(200).batch(self.batch_size):
            self.step(xb, yb)
        return time.perf_counter() - t0

    def evaluate(self, x, y):
        t0 = time.perf_counter()
        logits = self.model(x, training=False)  # the whole split in one call
        float(np.mean(np.argmax(logits, 1) == y))
        return time.perf_counter() - t0


class TorchLoop:
    def __init__(self, batch_size: int):
        import torch
        from torch import nn

        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 100), nn.ReLU(), nn.Dropout(0.2), nn.Linear(100, 10))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU: every batch copied from host memory
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batch_size = batch_size

    @staticmethod
    def prepare(x_uint8):
        import torch

        return torch.from_numpy(as_float64(x_uint8).transpose(0, 3, 1, 2)).float()  # (N, 3, 32, 32), a copy

    def train(self, x, y):
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.from_numpy(y)),
                                             batch_size=self.batch_size, shuffle=True, num_workers=2)
        self.model.train()
        for xb, yb in loader:
            xb, yb = xb.to(self.device), yb.to(self.device)
            self.optimizer.zero_grad()
            F.cross_entropy(self.model(xb), yb).backward()
            self.optimizer.step()
        return time.perf_counter() - t0

    def evaluate(self, x, y):
        import torch

        t0 = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            logits = self.model(x.to(self.device))  # the whole split in one call
        float((logits.argmax(1).cpu().numpy() == y).mean())
        return time.perf_counter() - t0


LOOPS = {"keras": KerasFit, "tf": TFLoop, "torch": TorchLoop}
