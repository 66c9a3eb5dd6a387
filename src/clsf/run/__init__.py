"""Run directories, checkpoints, TensorBoard files and the shared training loop."""
