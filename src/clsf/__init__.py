"""clsf: one model spec, three training engines (Keras fit, TF custom loop, PyTorch).

The command line is a thin layer over these functions, importable from `clsf` directly:

    import clsf
    cfg = clsf.build_config(flags={"engine": "torch", "epochs": 5}, overrides=["optim.lr=3e-4"])
    run = clsf.train(cfg)                        # a run directory
    clsf.evaluate(run, engine="keras")           # the same weights evaluated by the other framework
    clsf.compare(cfg, ["keras", "torch"], [0, 1])
    clsf.export(run, "onnx")
    clsf.write_report([run])

They are imported on first use, so `import clsf` loads no framework.
"""

__version__ = "0.1.0"

_API = {
    "build_config": "clsf.config", "train": "clsf.run.train", "evaluate": "clsf.run.evaluate",
    "compare": "clsf.experiments.compare", "sweep": "clsf.experiments.sweep", "export": "clsf.export",
    "write_report": "clsf.report.build", "get_spec": "clsf.models.zoo", "load_dataset": "clsf.data",
    "gan": "clsf.gan.train",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'clsf' has no attribute '{name}'")
