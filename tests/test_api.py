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


def _cli_commands() -> set[str]:
    """Every leaf command of `clsf --help`: "train", "data info", "models summary", ..."""
    import argparse

    from clsf.cli import build_parser

    def leaves(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return {prefix.strip()}
        return set().union(*(leaves(p, f"{prefix} {name}") for name, p in subs[0].choices.items()))

    return leaves(build_parser(), "")


def test_every_command_has_a_function_of_the_api_that_stays_one_after_every_submodule_is_imported():
    # importing a subpackage binds its name on the package: a function named like one (clsf.export was,
    # beside clsf/export/) became a module on the second use. Every submodule imported first, in a fresh process:
    code = ("import importlib, pkgutil, sys, clsf\n"
            "for m in pkgutil.walk_packages(clsf.__path__, 'clsf.'):\n"
            "    if not m.name.startswith(('clsf.__main__', 'clsf.engines.', 'clsf.distributed.torch', 'clsf.gans.steps')):\n"
            "        importlib.import_module(m.name)\n"
            "bad = [n for n in clsf.__all__ if not callable(getattr(clsf, n)) or getattr(clsf, n) is not getattr(clsf, n)]\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])
    import clsf

    assert set(clsf.COMMANDS) == _cli_commands()  # a new command needs its function here
    assert set(clsf.COMMANDS.values()) <= set(clsf.__all__)
    for name in clsf.__all__:
        assert getattr(clsf, name).__doc__, f"clsf.{name} has no docstring for the API reference"


@pytest.mark.torch
def test_predict_as_a_function_gives_what_the_command_prints(tmp_path, capsys):
    import json

    import numpy as np

    import clsf
    from clsf.cli import main
    from helpers import png_bytes

    cfg = clsf.build_config(flags={"engine": "torch", "epochs": 1, "runs_dir": str(tmp_path),
                                   "data": {"name": "synthetic:train=40,test=10,size=8x8x3,classes=3"}},
                            overrides=["model.args.widths=[4, 4]", "model.args.dense=8"])
    run = clsf.train(cfg, quiet=True)
    for i in range(3):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"{i}.png").write_bytes(png_bytes(np.full((8, 8, 3), 60 * i, np.uint8)))
    got = clsf.predict(run, [str(tmp_path / "imgs")], top_k=2)
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "imgs"), "--top-k", "2", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [g["path"] for g in got] == [p["path"] for p in printed] and len(got) == 3
    for g, p in zip(got, printed):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in p["top"]]
        assert [round(t["p"], 6) for t in g["top"]] == [t["p"] for t in p["top"]]
