"""The command line as a user runs it: real files, exit codes, one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_semiseg import __version__
from napari_semiseg.cli import main
from napari_semiseg.core.io import read_labels, write_labels
from napari_semiseg.core.trainer import TrainConfig
from napari_semiseg.samples import sample_image, sample_labels


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "napari_semiseg", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_train_help_says_what_each_method_costs_and_where_it_loses():
    r = run_cli("train", "--help")
    assert r.returncode == 0
    methods = r.stdout.split("methods (Dice against supervised training")[1]
    assert "barl: Two networks, about five times the time per step" in methods
    assert all(f"  {name}: " in methods for name in ("supervised", "mean-teacher", "bcp", "sra-seg", "sgrs-net",
                                                     "transmedseg"))


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
    # a clock too short for one step: the floor of steps still trains (a busy machine trains longer, not worse)
    r = run_cli("demo", "--out", str(tmp_path / "out"), "--seconds", "0.001", "--min-iterations", "6", env=env)
    assert r.returncode == 0, r.stderr
    assert "headless" in r.stdout and "slice interpolation" in r.stdout
    assert int(r.stdout.split(" iterations in ")[0].split()[-1]) >= 6
    out = tmp_path / "out"
    seg = out / "hippocampus_001_segmentation.nii.gz"
    assert seg.exists() and (out / "hippocampus_001_segmentation.tif").exists()
    assert (out / "hippocampus_001_uncertainty.nii.gz").exists() and (out / "model" / "model.safetensors").exists()
    # the three labeled slices keep the user's labels exactly
    import nibabel as nib

    from napari_semiseg.core.io import read_labels
    final = read_labels(seg).data
    ref = read_labels(sample_labels()).data
    labeled = [int(s) for s in r.stdout.split("labeled slices [")[1].split("]")[0].split(",")]
    for i in labeled:
        np.testing.assert_array_equal(final[:, :, i], ref[:, :, i])
    assert nib.load(str(seg)).shape == nib.load(str(sample_labels())).shape


def test_train_predict_evaluate_round_trip_on_a_real_volume(tmp_path):
    """The CLI as a user runs it on the bundled hippocampus MRI (real data, CC BY-SA 4.0)."""
    from napari_semiseg.samples import sample_image

    model = tmp_path / "model"
    r = run_cli("train", str(sample_image()), "--labels", str(sample_labels()), "--labeled-slices", "10,17,24",
                "--axis", "2", "--method", "mean-teacher", "--iterations", "40", "--device", "cpu",
                "--set", "batch_size=4", "--set", "labeled_batch=2", "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert (model / "model" / "model.safetensors").exists() and (model / "model" / "config.json").exists()
    assert (model / "mask.nii.gz").exists() and (model / "uncertainty.nii.gz").exists()
    cfg = json.loads((model / "model" / "config.json").read_text())
    assert cfg["method"] == "mean-teacher" and cfg["axis"] == 2 and cfg["n_classes"] == 3

    mask = tmp_path / "pred.nii.gz"
    unc = tmp_path / "unc.nii.gz"
    r = run_cli("predict", str(model), str(sample_image()), "--out", str(mask), "--uncertainty", str(unc))
    assert r.returncode == 0, r.stderr
    import nibabel as nib

    scan = nib.load(str(sample_image()))
    pred = nib.load(str(mask))
    assert pred.shape == scan.shape and np.allclose(pred.affine, scan.affine)
    u = np.asarray(nib.load(str(unc)).dataobj)
    assert u.shape == scan.shape and 0 <= u.min() and u.max() <= 1
    # predicting with the saved model reproduces the mask train wrote (same teacher, same volume)
    np.testing.assert_array_equal(np.asarray(pred.dataobj), np.asarray(nib.load(str(model / "mask.nii.gz")).dataobj))

    r = run_cli("evaluate", str(mask), str(sample_labels()), "--json", str(tmp_path / "m.json"))
    assert r.returncode == 0 and "mean" in r.stdout
    dice = json.loads((tmp_path / "m.json").read_text())["mean"]["dice"]
    assert 0.0 <= dice <= 1.0


def test_train_resumes_a_saved_model(tmp_path):
    from napari_semiseg.samples import sample_image

    common = [str(sample_image()), "--labels", str(sample_labels()), "--labeled-slices", "17", "--axis", "2",
              "--method", "supervised", "--set", "batch_size=2", "--set", "labeled_batch=2"]
    assert main(["train", *common, "--iterations", "3", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--iterations", "2", "--resume", str(tmp_path / "a"),
                 "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "model" / "config.json").read_text())["iteration"] == 5


def test_train_bad_inputs_are_one_sentence(tmp_path):
    from napari_semiseg.samples import sample_image

    r = run_cli("train", str(sample_image()), "--labels", str(sample_labels()), "--labeled-slices", "99",
                "--axis", "2", "--iterations", "1")
    assert r.returncode == 2 and "outside the image" in r.stderr and "Traceback" not in r.stderr
    empty = write_labels(tmp_path / "empty_labels.nii.gz", np.zeros((35, 51, 35), np.uint8))
    r = run_cli("train", str(sample_image()), "--labels", str(empty), "--iterations", "1")
    assert r.returncode == 2 and "empty" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("predict", str(tmp_path / "nomodel"), str(sample_image()), "--out", str(tmp_path / "x.nii.gz"))
    assert r.returncode == 2 and "Model not found" in r.stderr
    r = run_cli("train", str(sample_image()), "--labels", str(sample_labels()), "--method", "magic", "--iterations", "1")
    assert r.returncode == 2 and "Unknown method" in r.stderr


def ssl4mis_folder(tmp_path):
    """A tiny data set in the SSL4MIS HDF5 layout: 3 volumes of 4 slices, 8 training slices, 1 test volume."""
    import h5py

    root = tmp_path / "ACDC"
    (root / "data" / "slices").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for p in range(3):
        img = rng.random((4, 24, 24)).astype(np.float32)
        lab = np.zeros((4, 24, 24), np.uint8)
        lab[:, 5:12, 5:12] = 1
        lab[:, 14:20, 14:20] = 2
        img[lab == 1] += 1.0
        img = img / img.max()
        case = f"patient{p:03d}_frame01"
        with h5py.File(root / "data" / f"{case}.h5", "w") as f:
            f["image"], f["label"] = img, lab
        for s in range(4):
            with h5py.File(root / "data" / "slices" / f"{case}_slice_{s}.h5", "w") as f:
                f["image"], f["label"] = img[s], lab[s]
            names.append(f"{case}_slice_{s}")
    (root / "train_slices.list").write_text("\n".join(names[:8]) + "\n")
    (root / "test.list").write_text("patient002_frame01\n")
    return root


def test_benchmark_dataset_protocol_on_ssl4mis_hdf5(tmp_path):
    """SSL4MIS layout: first N slices of train_slices.list labeled, test.list volumes held out."""
    root = ssl4mis_folder(tmp_path)
    out = tmp_path / "r.json"
    # --iterations replaces the time budget: a slow method still takes every step (BARL stopped at 684 of
    # 1000 steps on CHASE_DB1 when the default 10 minutes still applied beside it)
    r = run_cli("benchmark", str(root), "--protocol", "dataset", "--labeled-slices", "2", "--iterations", "3",
                "--minutes", "0.0001", "--methods", "supervised,mean-teacher", "--set", "batch_size=2",
                "--set", "labeled_batch=1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [res["methods"][m]["iterations"] for m in ("supervised", "mean-teacher")] == [3, 3]
    assert res["n_train_volumes"] == 8 and res["n_labeled_volumes"] == 2 and res["test"] == ["patient002_frame01"]
    for m in ("supervised", "mean-teacher"):
        assert set(res["methods"][m]["teacher"]["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    compared = res["paired"]["mean-teacher"]  # paired against supervised over the test volumes
    assert compared["baseline"] == "supervised" and compared["n"] == 1 and "p" in compared
    assert "mean-teacher vs supervised" in r.stdout


def test_repeated_dataset_runs_are_compared_over_runs_with_their_own_seeds(tmp_path):
    """--repeats N trains every method N times with seeds seed..seed+N-1; the comparison that says
    something about the method is over those runs (one per seed), beside each run's per-volume one."""
    root = ssl4mis_folder(tmp_path)
    out = tmp_path / "r.json"
    r = run_cli("benchmark", str(root), "--protocol", "dataset", "--labeled-slices", "2", "--iterations", "2",
                "--methods", "supervised,mean-teacher", "--set", "batch_size=2", "--set", "labeled_batch=1",
                "--repeats", "2", "--seed", "5", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["seeds"] == [5, 6] and len(res["runs"]) == 2 and "methods" not in res
    assert [run["seed"] for run in res["runs"]] == [5, 6]
    assert all(set(run["methods"]) == {"supervised", "mean-teacher"} for run in res["runs"])
    over = res["paired_over_runs"]["mean-teacher"]
    assert over["n"] == 2 and over["baseline"] == "supervised"
    assert "run 2 of 2 (seed 6)" in r.stdout and "of 2 runs" in r.stdout


def test_benchmark_session_protocol_reports_interpolation_baseline(tmp_path, hippo_folder):
    data = hippo_folder
    out = tmp_path / "s.json"
    r = run_cli("benchmark", str(data), "--protocol", "session", "--k", "3", "--seconds", "2", "--axis", "2",
                "--methods", "supervised", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    row = res["volumes"][0]
    assert len(row["labeled"]) == 3 and 0 < row["interpolation"] < 1
    assert 0 <= row["methods"]["supervised"]["dice"] <= 1
    # uncertainty-driven selection: two evenly spaced slices, then the teacher's most uncertain one
    # (a step budget: with a time budget on a busy machine no report may fall in the second half)
    r = run_cli("benchmark", str(data), "--protocol", "session", "--k", "3", "--iterations", "20", "--axis", "2",
                "--methods", "mean-teacher", "--selection", "uncertainty", "--json", str(out))
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())["volumes"][0]
    chosen = row["methods"]["mean-teacher"]["labeled"]
    assert len(chosen) == 3 and set(chosen) != set(row["labeled"])


def test_chase_layout_reads_both_observers_and_scores_the_human_ceiling(tmp_path):
    from conftest import CHASE

    if not (CHASE / "manual").is_dir():
        pytest.skip("../shared/data/chase_db1 is not available")
    import shutil

    from napari_semiseg.core.benchmark import load_cases, run_dataset

    data = tmp_path / "chase"
    (data / "images").mkdir(parents=True)
    (data / "manual").mkdir()
    for name in ("Image_01L", "Image_01R", "Image_02L"):
        shutil.copy(CHASE / "images" / f"{name}.jpg", data / "images")
        for obs in ("1stHO", "2ndHO"):
            shutil.copy(CHASE / "manual" / f"{name}_{obs}.png", data / "manual")
    cases = load_cases(data)
    assert [c.name for c in cases] == ["Image_01L", "Image_01R", "Image_02L"]
    assert cases[0].channels and cases[0].second_observer.shape == cases[0].labels.shape
    out = run_dataset(cases, ["supervised"], labeled_fraction=0.5, test_count=1, iterations=1,
                      base_config=TrainConfig(patch_size=64, batch_size=2, labeled_batch=1, threads=1))
    assert out["test"] == ["Image_02L"] and out["n_labeled_volumes"] == 1
    assert 0.6 < out["second_observer"]["mean"]["dice"] < 1.0  # two experts agree, not perfectly


def test_train_on_scribbles_with_unpainted_unknown(tmp_path, monkeypatch):
    """A scribbled photograph from the widget (255 = painted background): only what was painted is taught."""
    import tifffile

    from napari_semiseg.core import trainer as trainer_mod
    from napari_semiseg.core.classes import PAINTED_BACKGROUND, UNKNOWN
    from test_partial_labels import discs

    image, _, painted = discs()
    tifffile.imwrite(tmp_path / "photo.tif", (image * 100).astype(np.float32))
    tifffile.imwrite(tmp_path / "photo_labels.tif", painted)
    no_bg = np.where(painted == PAINTED_BACKGROUND, 0, painted).astype(np.uint8)
    tifffile.imwrite(tmp_path / "nobg_labels.tif", no_bg)
    r = run_cli("train", str(tmp_path / "photo.tif"), "--labels", str(tmp_path / "nobg_labels.tif"),
                "--unpainted", "unknown", "--iterations", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "mark the background" in r.stderr and "Traceback" not in r.stderr

    seen = {}
    original = trainer_mod.Trainer.__init__

    def spy(self, volumes, *a, **kw):  # what the engine was handed
        seen["labels"] = np.array(volumes[0].labels)
        original(self, volumes, *a, **kw)

    monkeypatch.setattr(trainer_mod.Trainer, "__init__", spy)
    assert main(["train", str(tmp_path / "photo.tif"), "--labels", str(tmp_path / "photo_labels.tif"),
                 "--unpainted", "unknown", "--method", "supervised", "--iterations", "2",
                 "--set", "batch_size=2", "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(seen["labels"] == UNKNOWN, painted == 0)
    np.testing.assert_array_equal(seen["labels"] == 0, painted == PAINTED_BACKGROUND)
    assert (tmp_path / "out" / "mask.tif").exists()
    # the 2D model's mask as a palette PNG; a volume asked for a PNG is refused before any prediction
    assert main(["predict", str(tmp_path / "out"), str(tmp_path / "photo.tif"), "--out", str(tmp_path / "m.png")]) == 0
    assert read_labels(tmp_path / "m.png").data.shape == image.shape
    r = run_cli("predict", str(tmp_path / "out"), str(sample_image()), "--out", str(tmp_path / "v.png"))
    assert r.returncode == 2 and "PNG holds one 2D image" in r.stderr and not (tmp_path / "v.png").exists()
