"""GAN training: the classic MNIST generator/discriminator pair, one step per framework (steps.py), one loop (train.py)."""
