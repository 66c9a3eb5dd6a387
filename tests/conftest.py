import os

import pytest

# TensorFlow chooses oneDNN or Eigen once per process, at import, and clsf by the first network's
# width (clsf.engines.tf_kernels.choose_tf_kernels): the suite builds narrow and wide networks in one
# process, in random order, so its processes (and the commands they start) run Eigen's kernels, as
# TF's own default does on this kind of CPU. test_precision.py tests the choice in fresh processes.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and no $CLSF_DATA, so nothing leaks between tests."""
    monkeypatch.setenv("CLSF_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CLSF_DATA", raising=False)


@pytest.fixture
def tiny_run(tmp_path):
    """tiny_run(engine, *overrides, **flags) -> a finished run directory on synthetic data."""
    from helpers import tiny_config

    from clsf.run.train import train

    def make(engine, *overrides, data="synthetic:train=120,test=40,size=12x12x3,classes=3", **flags):
        return train(tiny_config(engine, tmp_path / "runs", data, *overrides, **flags), quiet=True)

    return make
