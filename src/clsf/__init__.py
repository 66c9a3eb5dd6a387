"""clsf: one model spec, five training engines (Keras fit on TensorFlow, JAX and PyTorch, a TF custom loop, a PyTorch loop).

The command line is a thin layer over these functions, importable from `clsf` directly:

    import clsf
    cfg = clsf.build_config(flags={"engine": "torch", "epochs": 5}, overrides=["optim.lr=3e-4"])
    run = clsf.train(cfg)                        # a run directory
    clsf.evaluate(run, engine="keras")           # the same weights evaluated by the other framework
    clsf.compare(cfg, ["keras", "torch"], [0, 1])
    clsf.export(run, "onnx")
    clsf.predict(run, ["photos/"], top_k=1)      # [{"path": ..., "top": [{"class": ..., "p": ...}]}]
    clsf.write_report([run])

They are imported on first use, so `import clsf` loads no framework. `COMMANDS` names the function
behind each command of `clsf --help`. No name here is also a subpackage's (clsf.exports, clsf.inference,
clsf.gans): importing a subpackage rebinds its name on `clsf`, which would turn a function into a module.
"""

__version__ = "0.1.0"

_API = {  # name -> "module" (the function of that name) or "module:function"
    "build_config": "clsf.config", "train": "clsf.integrations", "evaluate": "clsf.run.evaluate",
    "compare": "clsf.experiments.compare", "sweep": "clsf.experiments.sweep", "tune": "clsf.experiments.tune", "export": "clsf.exports",
    "write_report": "clsf.report.build", "get_spec": "clsf.models.zoo", "load_dataset": "clsf.data",
    "gan": "clsf.gans.train", "predict": "clsf.inference", "save_sample_grid": "clsf.report.grid",
    "list_engines": "clsf.engines:names", "list_recipes": "clsf.recipes:names", "list_models": "clsf.models.zoo:names",
    "model_summary": "clsf.models.summary:format_summary", "import_model": "clsf.run.imported",
}
COMMANDS = {  # `clsf COMMAND` -> the function it calls
    "data info": "load_dataset", "data show": "save_sample_grid", "engines": "list_engines",
    "recipes": "list_recipes", "models list": "list_models", "models show": "get_spec", "models summary": "model_summary",
    "models import": "import_model", "train": "train",
    "gan": "gan", "compare": "compare", "sweep": "sweep", "tune": "tune", "report": "write_report", "evaluate": "evaluate",
    "export": "export", "predict": "predict",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, _, attr = _API[name].partition(":")
        return getattr(importlib.import_module(module), attr or name)
    raise AttributeError(f"module 'clsf' has no attribute '{name}'")
