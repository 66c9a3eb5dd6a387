"""clsf: one model spec, three training engines (Keras fit, TF custom loop, PyTorch)."""

__version__ = "0.1.0"
