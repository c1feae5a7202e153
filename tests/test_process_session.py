"""Training in a spawned child process: the session's interface end to end, large arrays through
shared memory, label updates as the slices that changed, and a child killed mid-run (the caller lives on, told in one sentence, and the next
session resumes from the checkpoint)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from napari_semiseg.core.checkpoint import load_method
from napari_semiseg.core.errors import InputError
from napari_semiseg.core.label_sync import ChangedSlices, LabelCopy, slice_stack
from napari_semiseg.core.process_session import ProcessSession, TrainingProcessDied
from napari_semiseg.core.session import LatestSender
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


@pytest.mark.parametrize("shape, axis", [((19, 7, 8), 0), ((19, 7, 8), 1), ((19, 7, 8), 2), ((7, 8), 0)])
def test_a_correction_travels_as_its_changed_slices_and_completes_the_other_sides_copy(shape, axis):
    labels = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    sender, receiver = LabelCopy(labels, axis), LabelCopy(labels, axis)
    corrected = labels.copy()
    stack = slice_stack(corrected, axis if len(shape) == 3 else 0)
    changed = sorted({0, len(stack) // 2, len(stack) - 1})
    stack[changed[-1]] = 3
    stack[changed[0]][-1, -1] = 3  # one voxel, in the array's last rows (the volume is compared in blocks of rows)
    stack[changed[len(changed) // 2]][0, 0] = 3
    change = sender.changes(LabelUpdate(corrected, {0, changed[-1]}))
    assert change.slices.tolist() == changed and change.planes.shape == (len(changed),) + stack.shape[1:]
    sender.write(change)
    update = receiver.apply(change)
    assert np.array_equal(update.labels, corrected) and update.labeled == {0, changed[-1]}
    assert sender.changes(LabelUpdate(corrected, {0})).slices.size == 0  # nothing new: nothing to send
    update.labels[...] = 0  # the trainer's array is its own: the copy keeps the labels
    assert np.array_equal(receiver.labels, corrected)


@pytest.mark.parametrize("slices, planes, labeled, said", [
    ([9], np.zeros((1, 7, 8), np.uint8), [1], "outside the volume's 6 slices"),
    ([1], np.zeros((1, 8, 7), np.uint8), [1], "have shape (1, 8, 7), not (1, 7, 8)"),
    ([1], np.full((1, 7, 8), 300, np.int64), [1], "do not fit this volume's uint8"),
    ([1], np.zeros((1, 7, 8), np.float32), [1], "do not fit"),
    ([1], np.zeros((1, 7, 8), np.uint8), ["x"], "not a list of whole numbers"),
])
def test_changed_slices_that_do_not_fit_are_one_sentence_and_change_nothing(slices, planes, labeled, said):
    labels = np.ones((6, 7, 8), np.uint8)
    copy = LabelCopy(labels)
    with pytest.raises(InputError, match=said.replace("(", r"\(").replace(")", r"\)")):
        copy.apply(ChangedSlices(np.array(slices), planes, labeled))
    assert np.array_equal(copy.labels, labels)


def test_the_child_gets_the_corrected_slice_not_the_whole_labels(tmp_path):
    args = volume_args(n=8, size=400)  # 8 x 400 x 400 uint8 labels: 1.3 MB, a slice 160 kB
    session = ProcessSession([args], fast_config(iterations=None, minutes=None, report_every=1, patch_size=64))
    try:
        session.build()
        reports = session.reports()
        next(reports)
        before = session.channel.bytes_piped + session.channel.bytes_shared
        corrected = args["labels"].copy()
        corrected[4, :10, :10] = 5  # a class this 3-class model does not have: the child can only know from the slice
        session.send(LabelUpdate(corrected, {1, 4}))
        assert session.wait_for_sends()
        sent = session.channel.bytes_piped + session.channel.bytes_shared - before
        assert corrected[4].nbytes <= sent < 2 * corrected[4].nbytes
        with pytest.raises(InputError, match="Label 5 is beyond the 3 classes"):
            list(reports)
    finally:
        session.close()


def test_the_label_sender_keeps_the_newest_update_of_each_volume_not_of_all():
    release, delivered = threading.Event(), []

    def deliver(update):
        release.wait(10)
        delivered.append(update)

    sender = LatestSender(deliver, "test-sender")
    sender.put("first of volume 0", key=0)  # being delivered: the sender waits in deliver
    time.sleep(0.2)
    sender.put("old of volume 0", key=0)
    sender.put("of volume 1", key=1)
    sender.put("new of volume 0", key=0)  # replaces the old one of its volume, not volume 1's
    release.set()
    assert sender.wait(10)
    assert delivered == ["first of volume 0", "of volume 1", "new of volume 0"]
