"""One model over several processes, launched by the real torchrun on CPU (gloo), as on a cluster."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch

from napari_semiseg.core.checkpoint import load_method, read_metadata

WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc: int = 2, extra=()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *extra, *map(str, args)]


def standalone() -> list[str]:
    return ["--master_addr=127.0.0.1", f"--master_port={free_port()}", "--nnodes=1"]


def run(cmd, timeout=240) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_two_ranks_with_half_batches_give_the_gradients_of_one_rank_with_the_whole_batch(tmp_path):
    for n in (1, 2):
        run(torchrun(WORKER, "grads", tmp_path, nproc=n, extra=standalone()))
    whole = torch.load(tmp_path / "grads_world1_rank0.pt")
    halves = [torch.load(tmp_path / f"grads_world2_rank{r}.pt") for r in (0, 1)]
    assert whole.keys() == halves[0].keys()
    for k, g in whole.items():
        assert torch.equal(halves[0][k], halves[1][k]), k  # all-reduced: the same gradient on both ranks
        assert torch.allclose(halves[0][k], g, rtol=1e-4, atol=1e-6), (k, (halves[0][k] - g).abs().max())
    # and the comparison can fail: one rank's own half-batch gradient is not the whole batch's
    assert any(g.abs().max() > 1e-6 for g in whole.values())


@pytest.mark.parametrize("method,precision", [("mean-teacher", "bf16"), ("transmedseg", "fp32"), ("bcp", "fp16")])
def test_student_teacher_and_running_statistics_stay_identical_on_every_rank(tmp_path, method, precision):
    run(torchrun(WORKER, "state", tmp_path, method, precision, extra=standalone()))
    a, b = (torch.load(tmp_path / f"state_{method}_rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert any(k.startswith("teacher.") or ".teacher." in k for k in a)  # the EMA teacher is in the state
    if method == "transmedseg":
        assert a["source_stats.count"].sum() > 0  # class statistics were gathered (and agree, above)


def write_data_set(root: Path, n: int = 4, labeled: int = 2) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        lab = np.zeros((36, 40, 8), np.uint8)
        lab[8:24, 10:28] = 1
        img = (rng.normal(0, 1, lab.shape) + 2 * lab).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.diag([1.0, 1.0, 2.0, 1.0])), root / "images" / f"case{i}.nii.gz")
        if i < labeled:
            nib.save(nib.Nifti1Image(lab, np.diag([1.0, 1.0, 2.0, 1.0])), root / "labels" / f"case{i}.nii.gz")
    return root


def two_nodes(*train_args, timeout=300) -> list[str]:
    """Two torchrun launches, one process each, meeting at a c10d endpoint on loopback (two 'nodes')."""
    port = free_port()
    extra = ["--nnodes=2", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=semiseg-test"]
    cmd = torchrun("-m", "napari_semiseg", "train", *train_args, nproc=1, extra=extra)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for _ in range(2)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    return outs


def test_two_nodes_on_loopback_train_one_model_checkpoint_it_and_resume(tmp_path):
    data = write_data_set(tmp_path / "data")
    common = ["--threads", "1", "--set", "batch_size=4", "--set", "patch_size=32"]
    outs = two_nodes(data, "--out", tmp_path / "first", "--iterations", "6", *common)
    said = [o for o in outs if "world size 2" in o]
    assert len(said) == 1, outs  # rank 0 alone speaks, and says it trains on two ranks
    assert "6 iterations" in said[0]
    model = tmp_path / "first" / "model"
    assert read_metadata(model)["iteration"] == 6
    outs = two_nodes(data, "--out", tmp_path / "second", "--resume", model, "--iterations", "4", *common)
    assert read_metadata(tmp_path / "second" / "model")["iteration"] == 10
    method, _ = load_method(tmp_path / "second" / "model")
    assert all(torch.isfinite(p).all() for p in method.parameters())
    # the warm start: a new case trains on from the data set's model in one process
    case = tmp_path / "new_case"
    run([sys.executable, "-m", "napari_semiseg", "train", data / "images" / "case3.nii.gz", "--labels",
         data / "labels" / "case0.nii.gz", "--labeled-slices", "2,5", "--resume", tmp_path / "second" / "model",
         "--iterations", "2", "--threads", "1", "--out", case])
    assert read_metadata(case / "model")["iteration"] == 12 and (case / "mask.nii.gz").exists()


def _pids_of_rank(rank: int, near: int) -> list[int]:
    out = []
    for p in psutil.Process(near).children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank) and p.environ().get("LOCAL_RANK") is not None:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _wait_for_a_checkpoint(proc: subprocess.Popen, out: Path) -> None:
    """Until the run has saved its model once, and a little longer."""
    deadline = time.time() + 120
    while not (out / "model" / "config.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    time.sleep(1.0)


def test_killing_one_rank_ends_the_run_with_one_clear_sentence_and_a_usable_checkpoint(tmp_path):
    data = write_data_set(tmp_path / "data")
    out = tmp_path / "run"
    cmd = torchrun("-m", "napari_semiseg", "train", data, "--out", out, "--minutes", "5", "--threads", "1",
                   "--set", "checkpoint_seconds=0.5", "--set", "batch_size=4", "--set", "patch_size=32",
                   extra=standalone())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        _wait_for_a_checkpoint(proc, out)
        victims = _pids_of_rank(1, proc.pid)
        assert victims
        for pid in victims:  # the rank and its data-reading workers, as the OOM killer would
            os.kill(pid, signal.SIGKILL)
        text = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    lines = [ln for ln in text.splitlines() if ln.startswith("napari-semiseg: error:")]
    assert len(lines) == 1, text[-3000:]
    # rank 0 hears of it from the broken connection, or from torchrun stopping it: either way one sentence
    assert ("Another training process of this run stopped" in lines[0] or "the launcher ended it" in lines[0]) \
        and "--resume" in lines[0], lines[0]
    meta = read_metadata(out / "model")
    assert meta["iteration"] > 0
    method, _ = load_method(out / "model")  # complete and loadable: the atomic save was never half-written
    assert all(torch.isfinite(p).all() for p in method.parameters())
    assert json.loads((out / "model" / "config.json").read_text())["iteration"] == meta["iteration"]


def test_the_dataset_benchmark_trains_one_model_on_two_ranks_and_scores_every_test_case(tmp_path):
    data = write_data_set(tmp_path / "data", n=5, labeled=5)
    out = run(torchrun("-m", "napari_semiseg", "benchmark", data, "--protocol", "dataset", "--methods", "supervised",
                       "--iterations", "4", "--threads", "1", "--test-count", "2", "--labeled-fraction", "0.5",
                       "--set", "patch_size=32", "--json", tmp_path / "r.json", extra=standalone()))
    result = json.loads((tmp_path / "r.json").read_text())
    sup = result["methods"]["supervised"]
    assert sup["ranks"] == 2 and sup["iterations"] == 4
    assert sorted(sup["teacher"]["volumes"]) == ["case3", "case4"]  # each rank scored one; rank 0 has both
    assert out.stdout.count("world size 2") == 2  # teacher and student lines, printed once (rank 0)


def test_sync_batchnorm_on_cpu_processes_is_refused_in_one_sentence(tmp_path):
    data = write_data_set(tmp_path / "data")
    cmd = torchrun("-m", "napari_semiseg", "train", data, "--out", tmp_path / "o", "--iterations", "2",
                   "--set", "sync_batchnorm=true", extra=standalone())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode != 0
    assert "napari-semiseg: error: sync_batchnorm needs GPUs (NCCL)" in out.stderr
    assert "]: Traceback" not in out.stderr  # no rank's traceback (torchrun prints its own summary after ours)


def test_a_sigterm_to_the_whole_process_group_saves_and_stops_cleanly(tmp_path):
    """A cluster's time limit (or torchrun) signals every process of the job, the data-reading workers too:
    the run must stop as from Ctrl-C, not as a loader error because a worker died first."""
    data = write_data_set(tmp_path / "data")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_semiseg", "train", str(data), "--out", str(out), "--minutes", "5",
           "--threads", "1", "--set", "checkpoint_seconds=0.5", "--set", "batch_size=4", "--set", "patch_size=32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    try:
        _wait_for_a_checkpoint(proc, out)
        os.killpg(proc.pid, signal.SIGTERM)
        text = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text[-3000:]
    assert "internal error" not in text and "interrupted at iteration" in text, text[-3000:]
    assert read_metadata(out / "model")["iteration"] > 0
