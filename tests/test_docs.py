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
    (work / "space.yaml").write_text("space:\n  optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")  # as docs/tune.md shows
    for cmd in readme_commands():
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
    from clsf.cli import _flags, build_parser
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
            build_config(None, _flags(args), args.overrides, getattr(args, "recipe", None))
