"""The README's commands, run as written, in order, from an empty folder: the quickstart on the
package's sample, the rest on tiny stand-ins for the datasets it names, found through $CLSF_DATA
(what a newcomer does after `export CLSF_DATA=...`). A command that stops working fails here."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clsf.cli import main
from helpers import make_image_tree, png_bytes, tar_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """`clsf ...` lines of code blocks, and the example (last column) of each commands-table row."""
    out = []
    for line in README.read_text().splitlines():
        if line.startswith("    clsf "):
            out.append(line.split("  #")[0].strip())
        elif line.startswith("| `clsf"):
            out.append(re.findall(r"`(clsf [^`]*)`", line)[-1])
    return out


def _stand_ins(store: Path) -> None:
    make_image_tree(store / "cifar10-jpeg", classes=tuple("abc"), per_class=12, size=(32, 32))
    tar_dir(store / "cifar10-jpeg", store / "cifar10-jpeg.tar.gz")
    rng = np.random.default_rng(0)
    np.savez(store / "mnist.npz", x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), y_train=np.arange(64) % 10,
             x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=np.arange(20) % 10)


def test_the_readme_has_the_commands_this_test_runs():
    cmds = readme_commands()
    assert cmds[0] == "clsf train --engine torch" and len(cmds) >= 12
    assert {c.split()[1] for c in cmds} >= {"train", "evaluate", "compare", "sweep", "tune", "report", "export", "predict", "gan",
                                            "data", "models", "recipes"}


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.extra  # also in CI's second step, where its tune command runs too
@pytest.mark.long  # 70 s
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    store, work = tmp_path / "datasets", tmp_path / "work"
    store.mkdir()
    work.mkdir()
    _stand_ins(store)
    monkeypatch.setenv("CLSF_DATA", str(store))
    monkeypatch.chdir(work)
    (work / "cat.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    (work / "photos").mkdir()
    (work / "photos" / "dog.png").write_bytes(png_bytes(np.full((32, 32, 3), 200, np.uint8)))
    make_image_tree(work / "mypets", classes=("cat", "dog"), per_class=6, size=(40, 48), splits=("",))  # no test split
    (work / "space.yaml").write_text("space:\n  optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")  # as docs/tune.md shows
    left_out = []
    for cmd in readme_commands():
        extra = _extra_missing(cmd)
        if extra:  # a command of an extra the README's install leaves out: run where it is installed (CI's second step)
            left_out.append(f"`{cmd}` needs the {extra} extra")
            continue
        runs = sorted(p for p in (work / "runs").glob("*") if (p / "config.yaml").is_file()) if (work / "runs").is_dir() else []
        # RUN, RUN_A, RUN_B: the runs made by the commands above, oldest first
        text = cmd.replace("runs/RUN_A", str(runs[0]) if runs else "RUN_A").replace("runs/RUN_B", str(runs[-1]) if runs else "RUN_B")
        text = text.replace("runs/RUN", str(runs[0]) if runs else "RUN")
        code = main(shlex.split(text)[1:])
        out = capsys.readouterr()
        assert code == 0, f"{cmd}\n{out.err[-2000:]}"
    # and its Python block, on what the commands left
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        exec(compile(block, "README.md", "exec"), {})
    if left_out:
        pytest.skip(f"ran every other README command; left out: {'; '.join(left_out)} (pip install -e '.[tune]')")


def _extra_missing(cmd: str) -> str | None:
    """The extra a README command needs that is not installed, or None."""
    import importlib.util

    return "tune" if cmd.split()[1] == "tune" and importlib.util.find_spec("optuna") is None else None


@pytest.mark.extra
def test_the_docs_site_builds_with_no_warnings(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    import clsf

    for name in set(clsf.COMMANDS.values()):  # every command's function has its reference entry
        fn = getattr(clsf, name)
        assert f'id="{fn.__module__}.{fn.__name__}"' in api, f"docs/api.md has no ::: {fn.__module__}.{fn.__name__}"


def docs_commands() -> list[tuple[str, str]]:
    """(page, command) for every `clsf ...` line of a code block in docs/, comments dropped."""
    out = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for line in page.read_text().splitlines():
            if line.startswith("    clsf "):
                out.append((page.name, re.split(r"\s+#", line.strip())[0]))
    return out


def test_every_command_in_the_docs_parses_and_its_settings_resolve():
    """Not run (that is the README walkthrough above): parsed by clsf's own parser, and for commands
    that build a config, their flags and KEY=VALUE overrides resolved and validated, so a renamed flag
    or key fails here. Synopsis lines (`a|b`, `[--opt]`, `...`) are checked for their command name only."""
    from clsf.cli import build_parser
    from clsf.commands.common import config_flags
    from clsf.config import build_config

    commands = docs_commands()
    assert len(commands) >= 40
    parser = build_parser()
    for page, cmd in commands:
        argv = shlex.split(cmd)[1:]
        if any(t in cmd for t in ("|", "[", "...")):
            assert argv[0] in parser._subparsers._group_actions[0].choices, (page, cmd)
            continue
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/{page}: `{cmd}` does not parse")
        if argv[0] in ("train", "compare", "sweep", "tune") and not getattr(args, "resume", None):
            config = getattr(args, "config", None)
            model = getattr(args, "model", None)
            if config or (model and model.endswith(".yaml")):
                continue  # names a file the reader makes
            build_config(None, config_flags(args), args.overrides, getattr(args, "recipe", None))


# --- every docs page's commands and Python blocks, executed ---------------------------------------

NOT_RUN = {  # docs lines not executed here, and why
    "db.example": "needs a PostgreSQL or MySQL server",
    "mlflow.example": "needs a remote MLflow server (tests/test_tracking.py starts one on 127.0.0.1 under -m slow)",
    "python -m pytest": "the test suite itself",
    "python bench/": "a benchmark on the real datasets (minutes to hours)",
    "export CLSF_DATA": "the harness sets CLSF_DATA itself",
    "torchrun --nnodes": "several machines (tests/test_distributed.py runs torchrun's two-node line on 127.0.0.1)",
    "--nodes": "several machines at once (tests/test_distributed.py runs these on 127.0.0.1 and 127.0.0.2)",
    "--executor ray": "a Ray cluster (tests/test_cluster.py starts one on this machine and runs these)",
    "ray start": "a Ray cluster (tests/test_cluster.py starts one on this machine)",
}
PLACEHOLDERS = ("RUN_OR_EXPORT", "CLASSIFIER_RUN", "RUN_DIR", "COMPARE_OR_SWEEP_FOLDER", "RUN")


def page_blocks(page: Path) -> list[tuple[str, str]]:
    """[("cmd", line) | ("python", code) | ("yaml", text)] in page order; comments dropped from commands."""
    out, text = [], page.read_text()
    for m in re.finditer(r"```(python|yaml)\n(.*?)```|^    ((?:clsf|python|torchrun|export) [^\n]*)$", text, re.S | re.M):
        if m.group(3):
            out.append(("cmd", re.split(r"\s+#", m.group(3).strip())[0].strip()))
        else:
            out.append((m.group(1), m.group(2)))
    return out


def _base_runs(root: Path, store: Path) -> dict[str, Path]:
    """What a reader of a page has made before it: a finished classifier run on the CIFAR-10 stand-in
    and an MNIST classifier (a GAN's judge)."""
    env = {**os.environ, "CLSF_DATA": str(store)}
    made = {}
    for name, data in (("base", "cifar10-jpeg.tar.gz"), ("mnist-mlp", "mnist.npz")):
        subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "torch", "--data", data, "--epochs", "1",
                        "--runs-dir", str(root), "--run-name", name, "--quiet"], env=env, check=True, timeout=600)
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    store = root / "datasets"
    store.mkdir()
    _stand_ins(store)
    return store, _base_runs(root / "made", store)


def _prepare(work: Path, store: Path, made: dict, page: str) -> None:
    import shutil

    runs = work / "runs"
    for name in ("a", "b", "20261123-101500-seed-cnn-torch-cifar10-jpeg"):  # the runs pages name by example
        shutil.copytree(made["base"], runs / name)
    shutil.copytree(made["mnist-mlp"], runs / "mnist-mlp")
    (work / "cat.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    for d, v in (("photos", 200), ("more", 90)):
        (work / d).mkdir()
        (work / d / "x.jpg").write_bytes(png_bytes(np.full((32, 32, 3), v, np.uint8), fmt="JPEG"))
    make_image_tree(work / "path/to/other-test-folder", classes=tuple("abc"), per_class=2, size=(32, 32), splits=("",))
    make_image_tree(work / "classes-a", classes=tuple("abc"), per_class=4, size=(32, 32))
    make_image_tree(work / "mypets", classes=("cat", "dog"), per_class=6, size=(40, 48), splits=("",))  # no test split
    make_image_tree(work / "classes-b", classes=("d", "e"), per_class=4, size=(32, 32))
    (work / "examples").symlink_to(ROOT / "examples")
    my = (ROOT / "examples/models/tiny-resnet.yaml").read_text() if page == "models.md" else "epochs: 1\n"
    (work / "my.yaml").write_text(my)


def _newest(work: Path, pattern: str, kind: str | None = None, model: str | None = None) -> Path | None:
    """The newest run (or compare/sweep/tune folder) the page made; `model`: of that model only."""
    found = [p for p in (work / "runs").glob(pattern) if ((p / "config.yaml").is_file() or (p / "plan.json").is_file())
             and p.name != "mnist-mlp"]  # (the GAN's judge, named where it is meant)
    if kind == "gan":
        found = [p for p in found if '"kind": "gan"' in (p / "env.json").read_text()]
    elif kind == "classifier":
        found = [p for p in found if (p / "env.json").is_file() and '"kind": "gan"' not in (p / "env.json").read_text()]
    if model:
        found = [p for p in found if f"name: {model}\n" in (p / "config.yaml").read_text()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _fill(cmd: str, work: Path, store: Path) -> str | None:
    """The command with its placeholders replaced by what the page made (None: not made yet)."""
    cmd = cmd.replace("/big/folder", str(store / "cifar10-jpeg"))
    if "PLANID" in cmd:
        folder = _newest(work, "tune-*")
        cmd = None if folder is None else re.sub(r"runs/tune-\S+", str(folder), cmd)
    if cmd and "COMPARE_OR_SWEEP_FOLDER" in cmd:
        folder = _newest(work, "sweep-*") or _newest(work, "compare-*")
        cmd = None if folder is None else cmd.replace("COMPARE_OR_SWEEP_FOLDER", str(folder))
    for word in PLACEHOLDERS:
        if cmd and re.search(rf"\b{word}\b", cmd):
            model = re.search(r"--model (\S+)", cmd)
            run = _newest(work, "*", "gan" if cmd.startswith("clsf gan") else "classifier",
                          model=model.group(1) if model else "seed-cnn" if "init_from" in cmd else None)
            cmd = None if run is None else re.sub(rf"\b{word}\b", str(run), cmd)
    return cmd


def _expected_code(line: str, page: Path) -> int:
    full = next(ln for ln in page.read_text().splitlines() if line in ln)
    m = re.search(r"\(exit (\d+)\)", full)
    return int(m.group(1)) if m else 0


def _run_command(line: str, cmd: str, work: Path, env: dict, page: Path) -> None:
    """`cmd` (the page's `line` with its placeholders filled) exits as the page says: 0, or the code
    its comment names ("(exit 2)")."""
    argv = shlex.split(cmd)
    argv = [sys.executable, "-m", "clsf", *argv[1:]] if argv[0] == "clsf" else [sys.executable, *argv[1:]]
    r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    want = _expected_code(line, page)
    assert r.returncode == want, f"docs/{page.name}: `{cmd}` exited {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-2500:]}"


PAGES = sorted(p.name for p in (ROOT / "docs").glob("*.md") if any(k != "yaml" for k, _ in page_blocks(p)))


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_every_command_and_code_block_of_a_docs_page_runs(name, docs_world, tmp_path):
    """A page's commands run in order, as written, from a fresh folder holding what a reader has made
    before (a finished run, an MNIST classifier) and the files the page names, on tiny stand-ins for
    the datasets found through $CLSF_DATA; then its Python blocks. Placeholders (RUN, RUN_DIR, ...)
    become the newest run the page made; a command whose run is not made yet runs after the rest
    (gan --resume RUN after the GAN that makes RUN). Synopses (`a|b`, `[--opt]`, `...`) are parsed by
    the parser test above instead; lines that need a server or the real datasets are listed in NOT_RUN."""
    store, made = docs_world
    page = ROOT / "docs" / name
    work = tmp_path / "work"
    work.mkdir()
    _prepare(work, store, made, name)
    env = {**os.environ, "CLSF_DATA": str(store), "MPLBACKEND": "Agg", "CLSF_OVERSUBSCRIBE": "1"}
    blocks = page_blocks(page)
    yaml_blocks = [t for k, t in blocks if k == "yaml"]
    if name == "tune.md":
        (work / "space.yaml").write_text(yaml_blocks[0])  # the page's own space file
    pending = []
    for kind, text in blocks:
        if kind != "cmd" or any(t in text for t in ("|", "[", "...")) or any(k in text for k in NOT_RUN):
            continue
        filled = _fill(text, work, store)
        if filled is None:
            pending.append(text)
            continue
        _run_command(text, filled, work, env, page)
    for text in pending:
        filled = _fill(text, work, store)
        assert filled is not None, f"docs/{name}: `{text}` names a run the page never makes"
        _run_command(text, filled, work, env, page)
    for kind, code in blocks:
        if kind == "python":
            r = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
            assert r.returncode == 0, f"docs/{name}: a Python block failed\n{code}\n{r.stderr[-2500:]}"
