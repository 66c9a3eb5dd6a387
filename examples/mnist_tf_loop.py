"""The classic TF MNIST custom loop with clsf's pieces: data, model from the spec, a GradientTape step
under tf.function, metrics by hand. python examples/mnist_tf_loop.py [DATA] [EPOCHS]"""

import argparse
import sys

import numpy as np
import tensorflow as tf

from clsf import get_spec, load_dataset
from clsf.errors import UserError
from clsf.models.keras import build_keras

p = argparse.ArgumentParser(description="the classic TensorFlow MNIST custom loop on clsf's data and model")
p.add_argument("data", nargs="?", default="mnist", help="mnist (found through $CLSF_DATA), a path, or synthetic")
p.add_argument("epochs", nargs="?", type=int, default=2)
data, epochs = vars(p.parse_args()).values()
try:
    ds = load_dataset(data)
except UserError as e:  # one line and the usage, not a traceback
    sys.exit(f"{e}\nusage: python examples/mnist_tf_loop.py [DATA] [EPOCHS]  (e.g. path/to/mnist.npz)")
x_train, y_train = ds["train"].x.astype("float32") / 255, ds["train"].y  # (N, H, W, C) in 0..1, (N,) int64
x_test, y_test = ds["test"].x.astype("float32") / 255, ds["test"].y
model = build_keras(get_spec("mnist-mlp", ds.num_classes, ds.image_shape))  # outputs logits
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # softmax lives in the loss
optimizer = tf.keras.optimizers.Adam(1e-3)

@tf.function  # one graph for the step; the batch size may change (the last batch), see tf.mode in the README
def train_step(x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)  # (B, K)
        loss = loss_fn(y, logits)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss, tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == y, tf.int32))

for epoch in range(epochs):
    order = np.random.default_rng(epoch).permutation(len(y_train))
    loss_sum, correct = 0.0, 0  # the metrics, kept by hand
    for i in range(0, len(order), 32):
        idx = order[i:i + 32]
        loss, right = train_step(x_train[idx], y_train[idx])
        loss_sum, correct = loss_sum + float(loss) * len(idx), correct + int(right)
    logits = np.concatenate([model(x_test[i:i + 1000], training=False).numpy() for i in range(0, len(x_test), 1000)])
    print(f"epoch {epoch + 1}: train_loss {loss_sum / len(order):.4f} train_acc {correct / len(order):.4f} "
          f"test_acc {(logits.argmax(1) == y_test).mean():.4f}")
