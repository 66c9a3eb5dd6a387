"""The CLI: every command has --help; bad input is one line on stderr and exit code 2."""

import subprocess
import sys

import numpy as np
import pytest

from clsf.cli import main
from helpers import make_image_tree


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "data" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "info", "--help"], ["data", "show", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def test_data_info_prints_counts_and_checksum(capsys):
    assert main(["data", "info", "--data", "synthetic:train=20,test=10,classes=2"]) == 0
    out = capsys.readouterr().out
    assert "class0" in out and "sha256" in out and "total" in out and "20" in out


def test_data_show_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "show", "--data", "synthetic", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    make_image_tree(tmp_path / "one", classes=("only",), splits=(None,))
    make_image_tree(tmp_path / "bad", splits=(None,))
    (tmp_path / "bad" / "cat" / "x.png").write_bytes(b"garbage")
    np.savez(tmp_path / "lbl.npz", x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1, 12]))
    np.savez(tmp_path / "cnt.npz", x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1]))
    return {
        "missing path": (str(tmp_path / "nope"), "does not exist"),
        "unknown name": ("imagenet", "unknown dataset"),
        "empty folder": (str(tmp_path / "empty"), "no images"),
        "single class": (str(tmp_path / "one"), "single class"),
        "corrupt image": (str(tmp_path / "bad"), "x.png"),
        "labels out of range": (str(tmp_path / "lbl.npz"), "labels range over 0..12"),
        "count mismatch": (str(tmp_path / "cnt.npz"), "3 images but 2 labels"),
    }


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    for what, (data, message) in _bad_inputs(tmp_path).items():
        r = subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", data],
                           capture_output=True, text=True)
        assert r.returncode == 2, what
        assert "Traceback" not in r.stderr, what
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("clsf: error: ") and message in lines[0], (what, r.stderr)


def test_skip_bad_counts(tmp_path, capsys):
    make_image_tree(tmp_path / "bad", splits=(None,))
    (tmp_path / "bad" / "cat" / "x.png").write_bytes(b"garbage")
    assert main(["data", "info", "--data", str(tmp_path / "bad"), "--skip-bad"]) == 0
    assert "skipped_bad_images: 1" in capsys.readouterr().out
