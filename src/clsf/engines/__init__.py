"""The engine registry: the one list of engines that the CLI, config validation, compare, export,
the launcher and the tests read. A new engine is one file (a `base.Engine` subclass) and one
`register` line here; nothing else names engines.

Entries name their class as "module:Class" and are imported only when used, so reading the list
imports no framework.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from clsf.errors import UserError

# config imports this module for the engine names, so it imports nothing that imports config: the
# annotations "Config", "ModelSpec" and "Engine" below are names only (clsf.config, clsf.models.spec,
# clsf.engines.base)


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:Class", imported on first use
    summary: str  # one line for `clsf engines` and --help
    requires: str  # the package the engine needs; refused in one line naming the extra when missing
    exports: tuple[str, ...] = ()  # `clsf export` formats this engine's framework writes
    launcher: str | None = None  # how `--nproc N` starts it: "torchrun", "tf_config"; None: one process only
    keras_backend: str | None = None  # the Keras backend it runs Keras on: one per process (None: no Keras)


ENGINES: dict[str, EngineEntry] = {}


def register(name: str, target: str, summary: str, requires: str, exports: tuple[str, ...] = (),
             launcher: str | None = None, keras_backend: str | None = None) -> None:
    """Add (or replace) an engine; `target` is "module:Class" of a `clsf.engines.base.Engine`."""
    ENGINES[name] = EngineEntry(name, target, summary, requires, exports, launcher, keras_backend)


# exports of TensorFlow's formats go through `tf`: its model is not compiled (fit's compiled model,
# with clsf's counting train_step attached, does not deserialize from a .keras file)
register("keras", "clsf.engines.keras_fit:KerasFitEngine", "Keras compile + fit (TensorFlow backend)", "tensorflow",
         keras_backend="tensorflow")
register("tf", "clsf.engines.tf_loop:TFLoopEngine", "TensorFlow loop: tf.data + GradientTape + tf.function",
         "tensorflow", ("savedmodel", "keras"), "tf_config", keras_backend="tensorflow")
register("torch", "clsf.engines.torch_loop:TorchEngine", "PyTorch loop", "torch", ("onnx", "torchscript"), "torchrun")
register("keras-jax", "clsf.engines.keras_backends:KerasJaxEngine", "Keras compile + fit on the JAX backend", "jax",
         keras_backend="jax")
register("keras-torch", "clsf.engines.keras_backends:KerasTorchEngine", "Keras compile + fit on the PyTorch backend",
         "torch", keras_backend="torch")


def names() -> list[str]:
    """The registered engines' names, in registry order (`clsf engines` describes each)."""
    return list(ENGINES)


def entry(name: str) -> EngineEntry:
    if name not in ENGINES:
        raise UserError(f"engine '{name}' is not known; use one of {', '.join(ENGINES)}.")
    return ENGINES[name]


def engine_class(name: str) -> type[Engine]:
    """The engine's class, its framework imported (quietly, once) or refused naming the extra; the
    process's allocator set to keep freed memory (clsf.frameworks.keep_freed_memory)."""
    from clsf.frameworks import keep_freed_memory

    e = entry(name)
    keep_freed_memory()
    if e.requires == "tensorflow":
        from clsf.frameworks import import_tf

        import_tf()
    elif e.requires:
        from clsf.frameworks import require

        require(e.requires)
    module, _, cls = e.target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(cfg: Config, spec: ModelSpec, steps_per_epoch: int) -> Engine:
    """The engine `cfg.engine` names, built from the spec; the one factory everything uses."""
    if entry(cfg.engine).requires == "tensorflow":
        from clsf.engines.tf_kernels import import_tf_for

        import_tf_for([spec])  # oneDNN or Eigen, by the network
    return engine_class(cfg.engine)(cfg, spec, steps_per_epoch)


def engine_for_format(fmt: str) -> str:
    """The first registered engine whose framework writes export format `fmt`."""
    for e in ENGINES.values():
        if fmt in e.exports:
            return e.name
    raise UserError(f"format '{fmt}' is not known; use one of {', '.join(export_formats())}.")


def export_formats() -> list[str]:
    return list(dict.fromkeys(f for e in ENGINES.values() for f in e.exports))
