"""Training in a spawned child process: the session's interface end to end, large arrays through
shared memory, and a child killed mid-run (the caller lives on, told in one sentence, and the next
session resumes from the checkpoint)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from napari_semiseg.core.checkpoint import load_method
from napari_semiseg.core.errors import InputError
from napari_semiseg.core.process_session import ProcessSession, TrainingProcessDied
from napari_semiseg.core.trainer import LabelUpdate
from test_engine import fast_config


def volume_args(n=6, size=20, seed=0) -> dict:
    """tiny_volume's data as the keyword arguments the child builds its Volume from."""
    from test_engine import tiny_volume

    v = tiny_volume(n=n, size=size, seed=seed)
    return {"image": v.image, "labels": np.asarray(v.labels), "labeled": {1, 4}}


def test_a_session_in_a_child_process_takes_commands_and_streams_reports(tmp_path):
    args = volume_args()
    session = ProcessSession([args], fast_config(iterations=None, minutes=None, report_every=5),
                             out_dir=tmp_path / "model", focus=(0, 2))
    try:
        assert session.build()["device"] == "cpu"
        reports = session.reports()
        first = next(reports)
        assert first.iteration >= 1
        more = args["labels"].copy()
        session.send(LabelUpdate(more, {1, 2, 4}))
        session.pause()
        assert next(r for r in reports if r.paused).paused
        saved = session.save(tmp_path / "saved")
        method, meta = load_method(saved)
        assert meta["n_classes"] == 3
        session.resume()
        assert not next(r for r in reports if not r.paused).paused
        session.stop()
        last = list(reports)[-1]
        assert last.finished and last.checkpoint == str(tmp_path / "model")
        assert session.predict()[0].labels.shape == args["image"].shape
    finally:
        session.close()
    assert not session.process.is_alive()


def test_large_arrays_cross_by_shared_memory_not_the_pipe(tmp_path):
    args = volume_args(n=8, size=400)  # 8 x 400 x 400 float32: 5 MB
    session = ProcessSession([args], fast_config(iterations=1, patch_size=64))
    started = time.time()
    try:
        session.build()
        assert session.channel.bytes_shared >= args["image"].nbytes
        assert session.channel.bytes_piped < 100_000
        list(session.reports())
        labels = session.predict()[0].labels  # 1.3 MB back through shared memory
        assert labels.shape == args["image"].shape
    finally:
        session.close()
    leftovers = [f for f in os.listdir("/dev/shm") if f.startswith("psm_")] if os.path.isdir("/dev/shm") else []
    assert not [f for f in leftovers if os.path.getmtime(f"/dev/shm/{f}") > started]


def test_an_error_in_the_child_is_the_callers_one_sentence():
    args = volume_args()
    args["labels"][:] = 0
    args["labeled"] = set()
    session = ProcessSession([args], fast_config())
    try:
        with pytest.raises(InputError) as err:
            list(session.reports())
        assert "\n" not in str(err.value) and str(err.value).endswith(".")
    finally:
        session.close()


def test_a_killed_child_is_one_sentence_and_the_next_session_resumes_from_its_checkpoint(tmp_path):
    model = tmp_path / "model"
    session = ProcessSession([volume_args()], fast_config(iterations=None, minutes=None, checkpoint_seconds=0.01),
                             out_dir=model)
    reports = session.reports()
    checkpointed = next(r for r in reports if r.checkpoint)
    os.kill(session.process.pid, signal.SIGKILL)
    with pytest.raises(TrainingProcessDied, match="killed by SIGKILL"):
        for _ in reports:
            pass
    session.close()
    again = ProcessSession([volume_args()], fast_config(iterations=2), resume_from=model)
    try:
        last = list(again.reports())[-1]
        assert last.iteration >= checkpointed.iteration + 2  # it went on from the checkpoint
    finally:
        again.close()
