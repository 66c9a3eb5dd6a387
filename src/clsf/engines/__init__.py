"""Three engines behind one contract (`base.Engine`): keras_fit, tf_loop, torch_loop."""

from __future__ import annotations

from clsf.config import Config
from clsf.errors import UserError
from clsf.frameworks import import_tf, require
from clsf.models.spec import ModelSpec


def create_engine(cfg: Config, spec: ModelSpec, steps_per_epoch: int):
    """The engine `cfg.engine` names, built from the spec; the one factory everything uses."""
    if cfg.engine == "torch":
        require("torch")
        from clsf.engines.torch_loop import TorchEngine as E
    elif cfg.engine in ("keras", "tf"):
        import_tf()
        if cfg.engine == "keras":
            from clsf.engines.keras_fit import KerasFitEngine as E
        else:
            from clsf.engines.tf_loop import TFLoopEngine as E
    else:
        raise UserError(f"engine '{cfg.engine}' is not known; use keras, tf or torch.")
    return E(cfg, spec, steps_per_epoch)
