"""The core's promises: an engine is one file and one registry line; a run's model is one
checkpoint for every command; layers point down; the loop's functions stay short."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from clsf.cli import main
from clsf.engines import ENGINES, register
from clsf.run.rundir import RunDir
from helpers import tiny_config

SRC = Path(__file__).resolve().parents[1] / "src" / "clsf"
DATA = "synthetic:train=120,test=40,size=6x6x3,classes=3"


@pytest.fixture
def numpy_engine(tmp_path):
    """The fake engine, registered for the test and removed after it; its model file's path."""
    import fake_engine

    register("numpy", "fake_engine:NumpyEngine", "softmax regression in numpy (a test's engine)", "numpy")
    (tmp_path / "softmax.yaml").write_text(fake_engine.SPEC)
    yield str(tmp_path / "softmax.yaml")
    ENGINES.pop("numpy")


def _metrics(run):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "peak_mem_mb")} for r in RunDir(run).metrics()]


def test_a_fourth_engine_trains_resumes_evaluates_and_reports(numpy_engine, tmp_path, capsys):
    from clsf.report.build import write_report
    from clsf.run.evaluate import evaluate
    from clsf.run.train import train

    cfg = lambda name: tiny_config("numpy", tmp_path, DATA, "optim.name=sgd", "optim.lr=0.05", epochs=3, run_name=name,
                                   small=[f"model.name={numpy_engine}"])
    whole = train(cfg("whole"), quiet=True)
    cut = train(cfg("cut"), quiet=True, stop_after=1)
    assert RunDir(cut).final() is None and RunDir(cut).meta()["epoch"] == 1
    train(resume=cut, quiet=True)
    assert _metrics(cut) == _metrics(whole) and len(_metrics(whole)) == 3  # resumed to the bit
    final = RunDir(whole).final()
    report = evaluate(whole)
    assert report["test_acc"] == final["test_acc"] and report["agreement"]["max_abs_logit_diff"] == 0
    assert report["weights"] == "checkpoints/last (epoch 3)" and final["test_acc"] > 0.5  # it learned something
    html = write_report([whole])
    assert "numpy" in Path(html).read_text()
    assert main(["train", "--engine", "numpy", "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path), "--quiet",
                 "--model", numpy_engine]) == 0


def test_the_fake_engines_resume_has_teeth(numpy_engine, tmp_path, monkeypatch):
    """Drop the optimizer state from its checkpoint and the resumed run no longer matches."""
    import fake_engine

    from clsf.run.train import train

    cfg = lambda name: tiny_config("numpy", tmp_path, DATA, "optim.name=sgd", "optim.lr=0.05", epochs=3, run_name=name,
                                   small=[f"model.name={numpy_engine}"])
    whole = train(cfg("whole"), quiet=True)
    real = fake_engine.NumpyEngine.save
    monkeypatch.setattr(fake_engine.NumpyEngine, "save", lambda self, ckpt: (real(self, ckpt), ckpt.state("npz").unlink()))
    cut = train(cfg("cut"), quiet=True, stop_after=1)
    train(resume=cut, quiet=True)
    assert _metrics(cut)[0] == _metrics(whole)[0] and _metrics(cut)[1:] != _metrics(whole)[1:]


@pytest.mark.torch
def test_a_run_and_its_export_predict_alike_and_say_which_checkpoint(tmp_path, capsys):
    """After a resume (so best and last can differ), evaluate, predict and export all use the run's
    model, checkpoints/last, and say so; the export's labels are the run's."""
    from helpers import png_bytes

    from clsf.run.train import train

    cfg = tiny_config("torch", tmp_path, "synthetic:train=150,test=40,size=12x12x3,classes=3", "optim.lr=0.01",
                      epochs=3, run_name="r")
    run = train(cfg, quiet=True, stop_after=2)
    train(resume=run, quiet=True)
    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        (images / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "checkpoints/last (epoch 3)" in capsys.readouterr().out
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert "checkpoints/last (epoch 3)" in capsys.readouterr().out

    def labels(source):
        assert main(["predict", source, str(images), "--format", "json", "--top-k", "1"]) == 0
        out, err = capsys.readouterr()
        return [r["top"][0]["class"] for r in json.loads(out)], err

    from_run, said = labels(str(run))
    assert "checkpoints/last (epoch 3)" in said
    assert labels(str(tmp_path / "onnx"))[0] == from_run
    assert main(["predict", str(run), str(images), "--checkpoint", "best"]) == 0
    assert "checkpoints/best (epoch" in capsys.readouterr().err


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_import_circles():
    """Modules of clsf import each other in one direction: no module reaches itself through its imports
    (any import counts, inside functions too, as a reader of the code sees them)."""
    mods = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in SRC.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}

    def reaches(start):
        seen, stack = set(), list(graph[start])
        while stack:
            m = stack.pop()
            if m not in seen:
                seen.add(m)
                stack += graph[m]
        return seen

    circles = sorted(m for m in graph if m in reaches(m))
    assert not circles, circles


@pytest.mark.parametrize("low", ["config", "metrics", "data", "models", "techniques", "engines", "run", "plots"])
def test_layers_point_down(low):
    """The core never imports the commands built on it, nor the integrations that plug into it."""
    high = ("clsf.cli", "clsf.commands", "clsf.report", "clsf.experiments", "clsf.gans", "clsf.exports", "clsf.inference",
            "clsf.distributed.launch", "clsf.integrations")
    files = [SRC / f"{low}.py"] if (SRC / f"{low}.py").exists() else sorted((SRC / low).rglob("*.py"))
    bad = {f"{f.relative_to(SRC)} imports {m}" for f in files for m in _imports(f) if m.startswith(high)}
    assert not bad


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(SRC)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p in sorted(SRC.rglob("*.py"))
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 80]
    assert not long


def test_shared_code_does_not_compare_engine_names():
    """Engines differ through their class and registry entry, not through `if engine == "torch"`."""
    pattern = re.compile(r"""[=!]=\s*["'](%s)["']|["'](%s)["']\s*[=!]=""" % (("|".join(ENGINES),) * 2))
    found = [f"{p.relative_to(SRC)}:{i}" for p in sorted(SRC.rglob("*.py")) if p.parent.name not in ("engines", "models")
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found


def test_a_non_finite_loss_says_what_is_kept_and_which_rates_to_lower():
    from clsf.errors import NonFiniteLoss

    first, later = str(NonFiniteLoss(0, 3, 3, float("nan"))), str(NonFiniteLoss(2, 3, 40, float("inf")))
    assert "only the initial weights (checkpoints/init)" in first and "last good epoch" not in first
    assert "checkpoints/last holds the last good epoch" in later and "lower optim.lr" in later
    gan = str(NonFiniteLoss(1, 0, 10, float("nan"), fix="gan.d_lr and gan.g_lr"))
    assert "lower gan.d_lr and gan.g_lr" in gan and "optim" not in gan


def test_the_core_alone_refuses_tracking_it_cannot_do(tmp_path):
    """clsf.run.train.train has no integrations of its own: asked to track, it says so before
    writing anything (clsf.train and `clsf train` plug MLflow in)."""
    from clsf.config import build_config
    from clsf.errors import UserError
    from clsf.run.train import train

    cfg = build_config(flags={"engine": "torch", "epochs": 1, "runs_dir": str(tmp_path), "track": "mlflow"})
    with pytest.raises(UserError, match="track=mlflow is done by clsf's integrations"):
        train(cfg, quiet=True)
    assert not any(tmp_path.iterdir())
