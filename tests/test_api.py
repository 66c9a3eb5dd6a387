"""The library API: `import clsf` is light, and every documented name resolves to the function the CLI uses."""

import subprocess
import sys

import pytest


def test_import_clsf_loads_no_framework_and_every_name_resolves():
    code = ("import sys, clsf; assert not any(m in sys.modules for m in ('tensorflow', 'torch', 'keras', 'matplotlib')); "
            "fns = [getattr(clsf, n) for n in clsf.__all__]; assert all(callable(f) for f in fns); print(len(fns))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and int(r.stdout) >= 8, r.stderr
    import clsf

    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        clsf.trian


@pytest.mark.torch
def test_the_docstring_example_runs(tmp_path):
    import clsf

    cfg = clsf.build_config(flags={"engine": "torch", "epochs": 1, "runs_dir": str(tmp_path),
                                   "data": {"name": "synthetic:train=60,test=20,size=8x8x3,classes=2"}},
                            overrides=["model.args.widths=[4, 4]", "model.args.dense=8"])
    run = clsf.train(cfg, quiet=True)
    assert clsf.evaluate(run)["test_images"] == 20
    assert clsf.write_report([run]).name == "report.html"
