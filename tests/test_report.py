"""clsf report: made from run directories alone (no framework import), one run in full, several
runs side by side with only the config keys that differ."""

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clsf.cli import main

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("torch")
    from helpers import tiny_config

    from clsf.run.train import train

    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("plain", []), ("wide", ["model.args.widths=[6, 6]", "optim.name=adam"])):
        train(tiny_config("torch", root, DATA, *extra, run_name=name), quiet=True)
    return root


def _pngs(folder):
    from PIL import Image

    out = {}
    for p in sorted((folder / "report_files").glob("*.png")):
        with Image.open(p) as im:
            im.load()  # decodes, or raises
            out[p.stem] = im.size
    return out


def _embedded_images_decode(html):
    import base64

    from PIL import Image

    data = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    for d in data:
        Image.open(io.BytesIO(base64.b64decode(d))).load()
    return len(data)


def test_one_run_report_has_every_section(runs, capsys):
    run = runs / "plain"
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'report.html'}"
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    for section in ("Curves", "Metrics per epoch", "Test set", "Config", "Environment"):
        assert f"<h2>{section}</h2>" in html and f"## {section}" in md
    final = json.loads((run / "final.json").read_text())
    assert f"{final['test_acc']:.4f}" in html and "most confident mistakes" in html
    assert set(_pngs(run)) == {"history", "confusion", "mistakes"}
    assert _embedded_images_decode(html) == 3
    assert "http://" not in html and "https://" not in html  # nothing fetched: opens from disk, offline


def test_several_runs_show_only_the_keys_that_differ(runs, tmp_path):
    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    table = md.split("## Config keys that differ")[1].split("##")[0]
    header = [c.strip() for c in table.strip().splitlines()[0].strip("|").split("|")]
    assert header == ["run", "model.args.widths", "optim.name"]  # run_name and runs_dir are not "differences"
    assert "| plain |" in md and "| wide |" in md and "curves.png" in md
    assert set(_pngs(out)) == {"curves"}


def test_importing_and_running_reports_loads_no_framework(runs, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import clsf.report, clsf.report.build, clsf.plots, clsf.report.summary, clsf.experiments.compare, clsf.experiments.sweep
        from clsf.report.build import write_report
        write_report([{str(runs / 'plain')!r}], {str(tmp_path / 'one')!r})
        write_report([{str(runs)!r}], {str(tmp_path / 'many')!r})
        loaded = [m for m in ("tensorflow", "torch", "keras", "jax") if m in sys.modules]
        print(loaded)
        sys.exit(1 if loaded else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # teeth: the same check sees a framework once one is imported
    r = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit('torch' in sys.modules)"])
    assert r.returncode == 1


def test_a_run_without_predictions_still_reports(runs, tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(runs / "plain", run)
    (run / "predictions.npz").unlink()  # as written before predictions were saved
    (run / "final.json").unlink()  # and unfinished
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "stopped at epoch 2/2" in html and "Test set" not in html


def test_damaged_run_is_one_line_exit_2(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "bad"
    shutil.copytree(runs / "plain", run)
    (run / "final.json").write_text("{not json")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "final.json is damaged (not JSON" in err
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), str(runs)]) == 2
    assert "holds no clsf run directories" in capsys.readouterr().err


@pytest.mark.extra
def test_markdown_and_html_say_the_same(runs):
    from html import escape

    from clsf.report.build import run_page
    from clsf.report.runs import read_run

    page = run_page(read_run(runs / "wide"))
    md, pictures = page.to_markdown("files")
    html = page.to_html()
    cells = [c for b in page.blocks if b[0] == "table" for row in b[2] for c in row]
    assert all(c in md for c in cells) and all(escape(c) in html for c in cells)
    assert len(pictures) == html.count("<img ")
    assert np.isfinite(float(re.search(r"\| finished \| ([0-9.]+) \|", md).group(1)))


def _browser():
    """Headless Chromium driven by Playwright: Debian's chromium package, else Playwright's own build."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    pw = sync_api.sync_playwright().start()
    try:
        return pw, pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
    except Exception as e:  # noqa: BLE001 - any launch failure means "no browser here", said in the skip
        pw.stop()
        pytest.skip(f"no headless Chromium could start ({str(e).splitlines()[0]}); install Debian's chromium package")


def _open(browser, path, shot=None):
    """Load a page from disk; return (console errors, body text, [(alt, naturalWidth)]); with `shot`,
    a full-page screenshot there, as a user would see the page."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete ? i.naturalWidth : 0])")
    page.click("th")  # the sortable tables' script runs without error
    text = page.inner_text("body")
    if shot is not None:
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{path.name}: the page is {wide} px wider than the window (something runs off the right)"
        page.screenshot(path=str(shot), full_page=True)
    page.close()
    return errors, text, images


def _looks_like_a_page(shot):
    """A screenshot as a user sees it: the full width, at least a screen tall, not blank, and a clear
    right edge (nothing cut off there)."""
    from PIL import Image

    with Image.open(shot) as im:
        a = np.asarray(im.convert("L"), dtype=np.float64)
    assert a.shape[1] == 1280 and a.shape[0] >= 900, a.shape
    assert a.std() > 20  # text and pictures, not an empty page
    right = a[:, -8:]  # the last columns: page background, not a picture running off the edge
    assert (right > 200).mean() > 0.95


def _folder(tmp_path, runs, kind: str, plan: dict) -> Path:
    """A compare, sweep or tune folder around the module's two runs (what those commands leave)."""
    import shutil

    folder = tmp_path / kind
    for name in ("plain", "wide"):
        shutil.copytree(runs / name, folder / "runs" / name)
    base = {"epochs": 2}
    (folder / "plan.json").write_text(json.dumps({"kind": kind, "model": "seed-cnn", "data": DATA, "base": base, **plan}))
    return folder


def _experiment_folders(tmp_path, runs) -> dict[str, Path]:
    compare = _folder(tmp_path, runs, "compare", {
        "engines": ["torch", "keras"], "seeds": [0], "independent_init": True,
        "runs": [{"name": "plain", "engine": "torch", "seed": 0}, {"name": "wide", "engine": "keras", "seed": 0}]})
    sweep = _folder(tmp_path, runs, "sweep", {
        "engine": "torch", "grid": {"optim.name": ["rmsprop", "adam"]}, "swept": ["optim.name"], "seeds": [0],
        "runs": [{"name": "plain", "seed": 0, "point": {"optim.name": "rmsprop"}},
                 {"name": "wide", "seed": 0, "point": {"optim.name": "adam"}}]})
    tune = _folder(tmp_path, runs, "tune", {
        "engine": "torch", "seed": 0, "space": {"optim.lr": {"low": 1e-4, "high": 0.1, "log": True, "step": None, "int": False}},
        "enqueue": [], "objective": "val_acc", "direction": "maximize", "sampler": "tpe",
        "pruner": {"name": "median"}, "storage": None, "study": "tune"})
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tune", storage=f"sqlite:///{tune / 'study.db'}", direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    for name, value, pruned in (("plain", 0.5, False), ("wide", 0.2, True)):  # a complete trial and a pruned one
        trial = study.ask({"optim.lr": lr})
        trial.set_user_attr("run", name)
        trial.report(value, 1)
        study.tell(trial, value if not pruned else None, state=optuna.trial.TrialState.PRUNED if pruned else None)
    return {"compare": compare, "sweep": sweep, "tune": tune}


@pytest.mark.extra
def test_reports_open_in_a_real_browser(runs, tmp_path):
    from clsf.report.build import write_report

    many = write_report([runs], tmp_path / "many")
    one = write_report([runs / "wide"], tmp_path / "one")
    folders = {kind: write_report([f]) for kind, f in _experiment_folders(tmp_path / "folders", runs).items()}
    said = {"compare": ["plain", "wide", "torch", "keras"], "sweep": ["rmsprop", "adam"],
            "tune": ["Best trials", "Pruned trials (1)", "1 complete, 1 pruned"]}
    pw, browser = _browser()
    try:
        for path, names in ((many, ["plain", "wide"]), (one, ["wide"]), *((folders[k], said[k]) for k in folders)):
            shot = tmp_path / f"{path.parent.name}.png"
            errors, text, images = _open(browser, path, shot)
            assert errors == [], errors
            assert all(n in text for n in names)
            assert images and all(w > 0 for _, w in images), images
            _looks_like_a_page(shot)
        # teeth: a broken picture and a script error are both seen
        broken = tmp_path / "broken.html"
        html = one.read_text()
        broken.write_text(html.replace("base64,iVBOR", "base64,AAAA", 1).replace("</body>", "<script>undefinedCall()</script></body>"))
        errors, _, images = _open(browser, broken)
        assert any("undefinedCall" in e for e in errors) and sorted(w for _, w in images)[0] == 0
    finally:
        browser.close()
        pw.stop()


def test_markdown_keeps_names_as_text():
    """report.md is rendered by viewers that pass raw HTML through: a run or class name stays text."""
    from clsf.report.page import Page

    page = Page("run <script>alert(1)</script>")
    page.heading("<b>classes</b>")
    page.table(["name"], [["<img src=x onerror=alert(1)>"]])
    md, _ = page.to_markdown("files")
    assert "<script>" not in md and "<img" not in md and "<b>" not in md and "&lt;script&gt;" in md


def _figure_of(monkeypatch):
    """Make the plot functions hand back their figure (before it is closed) instead of a PNG."""
    from clsf import plots

    monkeypatch.setattr(plots, "save_figure", lambda fig, out, dpi=100: fig)
    return plots


def _rows(acc0: float, epochs: int = 3) -> list[dict]:
    return [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_acc": acc0 + 0.01 * e} for e in range(1, epochs + 1)]


def test_many_runs_each_get_a_legend_entry_and_a_line_of_their_own(monkeypatch):
    plots = _figure_of(monkeypatch)
    runs = [(f"run-{i:02d}", _rows(0.3 + 0.01 * i)) for i in range(15)]  # the 15-run report that had no legend
    fig = plots.plot_runs(runs)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1 and [t.get_text() for t in legends[0].get_texts()] == [name for name, _ in runs]
    styles = {(line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines()}
    assert len(styles) == 15  # colour and style: no two runs alike
    assert fig.axes[0].get_ylabel() == "validation accuracy"  # every run has a validation split
    fig.canvas.draw()  # labels fit inside the picture: nothing clipped
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        label = ax.yaxis.get_label().get_window_extent(renderer)
        assert box.x0 <= label.x0 and label.x1 <= box.x1 and box.y0 <= label.y0 and label.y1 <= box.y1


def test_a_sweep_picture_shows_each_combination_instead_of_averaging_over_it(monkeypatch):
    plots = _figure_of(monkeypatch)
    grid = {"batch_size": [32, 64], "epochs": [1, 2]}
    # at epochs=2 batch 64 is better, at epochs=1 batch 32: an average over epochs would hide it
    accs = {(32, 1): [0.60, 0.62], (64, 1): [0.55, 0.57], (32, 2): [0.64, 0.66], (64, 2): [0.70, 0.72]}
    points = [({"batch_size": b, "epochs": e}, a) for (b, e), a in accs.items()]
    fig = plots.plot_sweep(grid, points)
    ax = fig.axes[0]  # test_acc against batch_size
    lines = {t.get_text(): line for t, line in zip(ax.get_legend().get_texts(), ax.get_lines())}
    assert set(lines) == {"epochs=1", "epochs=2"}
    assert list(lines["epochs=1"].get_ydata()) == pytest.approx([0.61, 0.56])
    assert list(lines["epochs=2"].get_ydata()) == pytest.approx([0.65, 0.71])
    dots = sum(len(c.get_offsets()) for c in ax.collections)
    assert dots == 8  # every seed of every point


def test_a_gan_grid_is_padded_and_readable(tmp_path):
    from clsf.gans.train import _grid

    images = np.random.default_rng(0).uniform(size=(64, 28, 28, 1))
    grid = _grid(images)
    assert grid.shape[:2] == (8 * 84 + 7 * 4, 8 * 84 + 7 * 4)  # 8x8 samples at 3x (84 px), 4 px apart
    assert (grid[:, 84:88] == 255).all() and (grid[84:88, :] == 255).all()  # white gaps between neighbours
    np.testing.assert_array_equal(grid[:3, :3, 0], np.full((3, 3), np.rint(images[0, 0, 0, 0] * 255)))  # pixels stay pixels


def test_a_second_report_of_several_runs_does_not_replace_the_first(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(runs / "plain"), str(runs / "wide")]) == 0
    assert main(["report", str(runs)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {Path('clsf-report') / 'report.html'}" in said and f"wrote {Path('clsf-report-2') / 'report.html'}" in said
    assert (tmp_path / "clsf-report" / "report.html").is_file() and (tmp_path / "clsf-report-2" / "report.html").is_file()


def test_plain_words_one_epoch_axes_and_runs_told_apart(tmp_path, monkeypatch):
    """A one-epoch run's picture spans its epoch (not 0.96-1.04) and 0..1 in accuracy; runs of two
    compares named alike are told apart by their compare folder; a copy of a run's record (MLflow's
    artifacts) is not a run."""
    import shutil

    from clsf.report.build import _labels
    from clsf.report.runs import RunRecord
    from clsf.run.rundir import find_runs

    plots = _figure_of(monkeypatch)
    fig = plots.plot_history([{**_rows(0.5)[0], "train_acc": 0.4}], None)
    assert fig.axes[0].get_xlim() == (0.5, 1.5) and fig.axes[1].get_ylim() == (0, 1)
    records = [RunRecord(Path(f"/x/{c}/runs/keras-s0"), {"seed": 0}, {}, [], None) for c in ("compare-a", "compare-b")]
    _labels(records)
    assert [r.label for r in records] == ["compare-a/keras-s0", "compare-b/keras-s0"]
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 1\n")
    copy = tmp_path / "mlartifacts" / "1" / "abc" / "artifacts"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints")  # MLflow keeps the record, not the checkpoints
    assert find_runs(tmp_path) == [run]
