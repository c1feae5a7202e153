"""The command line as a user runs it: real files, exit codes, one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from napari_semiseg import __version__
from napari_semiseg.cli import main
from napari_semiseg.core.io import write_labels
from napari_semiseg.samples import sample_labels


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "napari_semiseg", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_evaluate_prints_table_and_writes_json(tmp_path, capsys):
    ref = sample_labels()
    from napari_semiseg.core.io import read_labels

    labels = read_labels(ref)
    pred = labels.data.copy()
    pred[pred == 2] = 0  # miss class 2 entirely
    out = write_labels(tmp_path / "pred.nii.gz", pred, labels.source)
    assert main(["evaluate", str(out), str(ref), "--json", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "Dice" in table and "mean" in table
    data = json.loads((tmp_path / "m.json").read_text())
    per = data["volumes"]["pred.nii.gz"]
    assert per["1"]["dice"] == 1.0 and per["2"]["dice"] == 0.0
    assert data["mean"]["dice"] == 0.5


def test_evaluate_bad_input_is_one_sentence_and_nonzero(tmp_path):
    r = run_cli("evaluate", str(tmp_path / "missing.nii.gz"), str(sample_labels()))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "not found" in r.stderr
    small = write_labels(tmp_path / "small.tif", np.zeros((3, 4, 5), np.uint8))
    r = run_cli("evaluate", str(small), str(sample_labels()))
    assert r.returncode == 2 and "must match" in r.stderr and "Traceback" not in r.stderr


def test_demo_runs_headless_without_a_display(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = run_cli("demo", "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    assert "headless" in r.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert any(n.endswith(".nii.gz") for n in written) and any(n.endswith(".tif") for n in written)
