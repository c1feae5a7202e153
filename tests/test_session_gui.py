"""The human-in-the-loop session in a real napari viewer, driven through the widget's buttons."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from qtpy.QtWidgets import QPushButton

from conftest import autosave_root
from gui_session import AXIS, PAINTED, WIDGET, click, in_thread, notifications, paint_reference
from napari_semiseg.core.io import read_labels
from napari_semiseg.core.methods import METHODS
from napari_semiseg.napari.controller import PSEUDO, SEGMENTATION, UNCERTAINTY
from napari_semiseg.samples import sample_image

pytestmark = pytest.mark.usefixtures("fresh_notifications")


def _errors():
    return notifications("error")


def test_full_loop_train_review_accept_finish_export(session, qtbot, tmp_path):
    viewer, widget = session
    c = widget.controller
    image, labels = viewer.layers["hippocampus MRI"], viewer.layers["annotations"]
    assert c.state.image_layer is image and c.state.labels_layer is labels and c.state.axis == AXIS
    paint_reference(labels)
    widget.refresh()
    assert "Labeled slices: 3" in widget.labeled_label.text()

    click(widget, "train_button")
    assert c.running
    qtbot.waitUntil(lambda: c.state.slice_scores is not None, timeout=60000)
    assert viewer.layers[PSEUDO].data.shape == image.data.shape
    assert viewer.layers[UNCERTAINTY].data.shape == image.data.shape
    pseudo_layer = viewer.layers[PSEUDO]
    qtbot.waitUntil(lambda: len(c.state.loss_history) > 3, timeout=30000)
    assert viewer.layers[PSEUDO] is pseudo_layer  # refreshed in place, never re-created

    before = np.array(labels.data, copy=True)
    click(widget, "next_uncertain_button")
    here = c.current_slice()
    assert here not in PAINTED
    click(widget, "accept_slice_button")
    changed = np.nonzero(np.any(labels.data != before, axis=(0, 1)))[0]
    assert set(changed.tolist()) <= {here}
    np.testing.assert_array_equal(labels.data[:, :, here], viewer.layers[PSEUDO].data[:, :, here])
    assert c.labeled_slices() == set(PAINTED) | {here}
    labels.undo()  # one undo step takes the whole accepted slice back
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()

    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert autosave_root(tmp_path).exists() and any(autosave_root(tmp_path).rglob("model.safetensors"))

    click(widget, "finish_button")
    seg = viewer.layers[SEGMENTATION]
    for i in set(PAINTED) | {here}:
        np.testing.assert_array_equal(seg.data[:, :, i], labels.data[:, :, i])
    nii, tif = tmp_path / "final.nii.gz", tmp_path / "final.tif"
    viewer.layers.selection = {seg}
    assert viewer.layers.save(str(nii), selected=True, plugin="napari-semiseg")
    assert viewer.layers.save(str(tif), selected=True, plugin="napari-semiseg")
    import nibabel as nib

    back = read_labels(nii)
    np.testing.assert_array_equal(back.data, seg.data)
    np.testing.assert_allclose(nib.load(str(nii)).affine, nib.load(str(sample_image())).affine)
    np.testing.assert_array_equal(tifffile.imread(str(tif)), seg.data)
    assert not _errors()


def test_train_refuses_without_labels_and_says_what_to_do(session):
    viewer, widget = session
    assert not widget.train_button.isEnabled()
    assert "Paint a few slices" in widget.train_button.toolTip()
    widget.shortcut("train_or_stop")  # a shortcut cannot get round the disabled button
    assert not widget.controller.running
    assert any("No slice is labeled" in e for e in _errors())


def test_mark_empty_slice_counts_as_labeled_and_unmarks(session):
    viewer, widget = session
    c = widget.controller
    c.go_to_slice(2)
    click(widget, "mark_labeled_button")
    assert c.labeled_slices() == {2}
    click(widget, "mark_labeled_button")
    assert c.labeled_slices() == set()


def test_worker_failure_becomes_a_notification_and_leaves_labels_alone(session, qtbot, monkeypatch):
    viewer, widget = session
    in_thread(widget)  # the failure is injected into this process's trainer
    labels = viewer.layers["annotations"]
    paint_reference(labels)
    before = np.array(labels.data, copy=True)
    from napari_semiseg.core import trainer as trainer_mod

    def out_of_memory(self, progress):  # the allocator failing is outside our control
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_mod.Trainer, "step", out_of_memory)
    click(widget, "train_button")
    assert widget.controller.running, _errors()
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=30000)
    assert any("Out of memory" in e for e in _errors())
    np.testing.assert_array_equal(labels.data, before)
    assert widget.findChild(QPushButton, "train_button").isEnabled()


def test_removing_the_image_or_closing_the_viewer_while_training(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c = widget.controller
    widget.axis_spin.setValue(AXIS)
    paint_reference(viewer.layers["annotations"])
    click(widget, "train_button")
    qtbot.waitUntil(lambda: c.state.last_report is not None, timeout=30000)
    # edits and slice changes during training are fine
    viewer.dims.set_point(AXIS, 5)
    viewer.layers["annotations"].data_setitem((np.array([10]), np.array([10]), np.array([5])), 1)
    viewer.layers.remove("hippocampus MRI")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert any(autosave_root(tmp_path).rglob("model.safetensors"))

    viewer2 = make_napari_viewer()
    viewer2.open_sample("napari-semiseg", "hippocampus")
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c2 = widget2.controller
    paint_reference(viewer2.layers["annotations"])
    widget2.axis_spin.setValue(AXIS)
    click(widget2, "train_button")
    qtbot.waitUntil(lambda: c2.state.last_report is not None, timeout=30000)
    viewer2.close()
    assert not c2.running
    assert any(autosave_root(tmp_path).rglob("model.safetensors"))


def test_save_load_and_resume_from_the_widget(session, qtbot, tmp_path):
    import gc

    viewer, widget = session
    c = widget.controller
    thresholds_before = gc.get_threshold()
    paint_reference(viewer.layers["annotations"])
    widget.budget_spin.setValue(0.05)  # 3 s
    click(widget, "train_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    first = c.state.last_report.iteration
    import gc

    assert gc.get_threshold() == thresholds_before  # training's collector settings are undone
    out = c.save_model(tmp_path / "saved")
    meta = c.load_model(out)
    assert meta["iteration"] == first
    click(widget, "train_button")
    assert c.running, _errors()
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert c.state.last_report.iteration > first


@pytest.mark.parametrize("rgb", [False, True])
def test_2d_grey_and_rgb_images_train_and_show_live_layers(make_napari_viewer, qtbot, tmp_path, rgb):
    from napari_semiseg.core.trainer import TrainConfig

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (48, 40, 3) if rgb else (48, 40)).astype(np.uint8)
    img[10:30, 8:25] += 150
    viewer.add_image(img, name="photo", rgb=rgb)
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c = widget.controller
    # no labels layer yet: none is forced on the user, and Train says how to get one
    assert c.state.labels_layer is None and not widget.train_button.isEnabled()
    assert "(new labels layer)" in widget.train_button.toolTip()
    widget.labels_combo.activated.emit(widget.labels_combo.findText("(new labels layer)"))
    labels = c.state.labels_layer
    assert labels is not None and labels.data.shape == (48, 40) and not c.is_3d
    labels.data_setitem((np.arange(12, 28), np.full(16, 15)), 1)
    c.start(TrainConfig(iterations=6, batch_size=2, labeled_batch=1, first_refresh_seconds=0.0))
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert viewer.layers[PSEUDO].data.shape == (48, 40)
    assert viewer.layers[UNCERTAINTY].data.shape == (48, 40)
    assert c.labeled_slices() == {0}


@pytest.mark.parametrize("method", ["sgrs-net", "barl"])
def test_new_methods_train_from_the_widget_and_show_their_uncertainty(session, qtbot, method):
    viewer, widget = session
    c = widget.controller
    paint_reference(c.state.labels_layer)
    widget.method_combo.setCurrentText(method)
    widget.budget_spin.setValue(0.05)  # 3 s
    click(widget, "train_button")
    assert c.running, _errors()
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert not _errors()
    unc = viewer.layers[UNCERTAINTY].data
    pseudo = viewer.layers[PSEUDO].data
    assert unc.shape == pseudo.shape and 0 <= unc.min() and unc.max() <= 1
    # these methods mark pixels whose views / branches disagree as fully uncertain
    assert c.state.last_report.iteration > 0


def test_the_widget_says_what_each_method_costs_and_where_it_loses(session):
    _, widget = session
    seen = set()
    for i in range(widget.method_combo.count()):
        name = widget.method_combo.itemText(i)
        widget.method_combo.setCurrentIndex(i)
        shown = widget.method_advice.text()
        assert shown and shown == METHODS[name].advice and shown not in seen, name
        seen.add(shown)
    widget.method_combo.setCurrentText("barl")
    assert "five times the time per step" in widget.method_advice.text()


def test_method_settings_typed_in_the_widget_are_checked_before_training(session, tmp_path):
    viewer, widget = session
    c = widget.controller
    paint_reference(c.state.labels_layer)
    widget.method_combo.setCurrentText("sra-seg")
    widget.method_settings_edit.setText("tau=0.4")
    click(widget, "train_button")
    assert not c.running and any("unknown setting 'tau'" in e.lower() for e in _errors())
    widget.method_settings_edit.setText("blend=box, sa_mode=off, method.ema_decay=0.9, batch_size=6")
    widget.unlabeled_dir_edit.setText(str(tmp_path / "nowhere"))
    widget.unlabeled_source_combo.setCurrentText("extra")
    cfg = widget.config()  # the command line's rule: engine keys go to the engine, the rest to the method
    assert cfg.method_settings == {"blend": "box", "sa_mode": "off", "ema_decay": 0.9}
    assert cfg.unlabeled_source == "extra" and cfg.batch_size == 6


def test_painted_labels_are_autosaved_off_the_gui_thread_a_moment_after_each_edit(session, qtbot):
    import threading

    viewer, widget = session
    c = widget.controller
    slot = c.slot
    saved_on = []
    real_save = slot.save_labels

    def recording_save(labels, info):
        saved_on.append(threading.current_thread().name)
        real_save(labels, info)

    slot.save_labels = recording_save
    paint_reference(viewer.layers["annotations"])
    qtbot.waitUntil(lambda: slot.labels_path.exists(), timeout=15000)
    assert saved_on and all(name == "semiseg-autosave" for name in saved_on)
    labels, info = slot.load_labels()
    np.testing.assert_array_equal(labels, viewer.layers["annotations"].data)
    assert info["axis"] == AXIS and info["image"] == "hippocampus MRI"


@pytest.mark.parametrize("failure", [RuntimeError("a native library failed"),
                                     torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")])
def test_a_training_failure_keeps_the_last_checkpoint_and_train_resumes_from_it(session, qtbot, monkeypatch,
                                                                                  failure):
    from napari_semiseg.core import trainer as trainer_mod
    from napari_semiseg.core.trainer import TrainConfig

    viewer, widget = session
    in_thread(widget)  # the failure is injected into this process's trainer
    c = widget.controller
    labels = viewer.layers["annotations"]
    paint_reference(labels)
    before = np.array(labels.data, copy=True)
    real_step = trainer_mod.Trainer.step
    fail = {"now": False}

    def step(self, progress):  # the failure itself is outside our control (a driver, the allocator)
        if fail["now"]:
            raise failure
        return real_step(self, progress)

    monkeypatch.setattr(trainer_mod.Trainer, "step", step)
    c.start(TrainConfig(batch_size=4, labeled_batch=2, checkpoint_seconds=0.3, refresh_seconds=1))
    qtbot.waitUntil(lambda: c.state.checkpoint_iteration is not None, timeout=60000)
    fail["now"] = True
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    error = _errors()[-1]
    kept = c.state.checkpoint_iteration
    assert f"The last checkpoint (iteration {kept}) is kept" in error and "labels are untouched" in error
    assert ("Out of memory" in error) == isinstance(failure, torch.OutOfMemoryError)
    np.testing.assert_array_equal(labels.data, before)
    assert widget.findChild(QPushButton, "train_button").isEnabled()

    fail["now"] = False
    click(widget, "train_button")  # resumes from the checkpoint, not from scratch
    qtbot.waitUntil(lambda: c.session is not None and c.session.has_model, timeout=30000)
    assert c.session.iteration >= kept
    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)


def test_a_killed_training_process_leaves_the_viewer_and_labels_and_train_resumes(session, qtbot):
    import os
    import signal

    from napari_semiseg.core.trainer import TrainConfig

    viewer, widget = session
    c = widget.controller
    assert c.training_place == "process"  # the viewer's default
    labels = viewer.layers["annotations"]
    paint_reference(labels)
    before = np.array(labels.data, copy=True)
    c.start(TrainConfig(batch_size=4, labeled_batch=2, checkpoint_seconds=0.3, refresh_seconds=1))
    qtbot.waitUntil(lambda: c.state.checkpoint_iteration is not None and c.state.slice_scores is not None,
                    timeout=60000)
    os.kill(c.session.process.pid, signal.SIGKILL)  # what the out-of-memory killer does
    qtbot.waitUntil(lambda: not c.running, timeout=30000)
    error = _errors()[-1]
    kept = c.state.checkpoint_iteration
    assert "killed by SIGKILL" in error and f"The last checkpoint (iteration {kept}) is kept" in error
    assert "labels are untouched" in error and error in widget.message_label.text()
    np.testing.assert_array_equal(labels.data, before)
    assert viewer.layers[PSEUDO].data.any()  # the last pseudo-labels stay on screen
    click(widget, "train_button")  # a new process, resuming from the checkpoint
    qtbot.waitUntil(lambda: c.session is not None and c.session.has_model, timeout=60000)
    assert c.session.iteration >= kept
    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)


def test_closing_the_viewer_mid_training_then_reopening_brings_back_labels_and_model(make_napari_viewer, qtbot):
    from napari_semiseg.core.trainer import TrainConfig

    viewer = make_napari_viewer()
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c = widget.controller
    widget.axis_spin.setValue(AXIS)
    painted = paint_reference(viewer.layers["annotations"])
    c.start(TrainConfig(batch_size=4, labeled_batch=2, checkpoint_seconds=0.5))
    qtbot.waitUntil(lambda: c.state.checkpoint_iteration is not None, timeout=60000)
    c.go_to_slice(3)
    c.toggle_mark_labeled()  # an all-background slice the user vouched for
    viewer.close()  # before the autosave delay has passed, mid-training: nothing may be lost
    assert not c.running

    viewer2 = make_napari_viewer()
    viewer2.open_sample("napari-semiseg", "hippocampus")
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c2 = widget2.controller
    restore = widget2.findChild(QPushButton, "restore_button")
    assert restore.isEnabled() and "4 labeled slices, with the model" in restore.text()
    assert "annotations" in viewer2.layers and not viewer2.layers["annotations"].data.any()  # untouched
    click(widget2, "restore_button")
    restored = c2.state.labels_layer
    assert restored is not viewer2.layers["annotations"] and "restored" in restored.name
    expected = np.zeros_like(painted)
    for i in PAINTED:
        expected[:, :, i] = painted[:, :, i]
    np.testing.assert_array_equal(restored.data, expected)
    assert c2.state.axis == AXIS and c2.labeled_slices() == set(PAINTED) | {3}
    assert c2.state.resume_next and c2.state.model_dir == c2.slot.model_folder
    assert not restore.isEnabled()
    iteration = c2.load_model(c2.state.model_dir)["iteration"]
    assert iteration > 0
    widget2.batch_spin.setValue(4)
    widget2.labeled_batch_spin.setValue(2)
    click(widget2, "train_button")
    qtbot.waitUntil(lambda: c2.session is not None and c2.session.has_model, timeout=30000)
    assert c2.session.iteration >= iteration  # the autosaved model continues
    c2.shutdown()


def test_live_refresh_follows_the_slice_on_screen_and_next_uncertain_uses_the_latest_scores(session, qtbot):
    viewer, widget = session
    in_thread(widget)  # the test reads the trainer's focus
    c = widget.controller
    paint_reference(viewer.layers["annotations"])
    c.go_to_slice(30)
    click(widget, "train_button")
    qtbot.waitUntil(lambda: c.session is not None and c.session.has_model, timeout=30000)
    assert c.session.trainer.focus == (0, 30)  # the slice on screen when Train was pressed
    qtbot.waitUntil(lambda: c.state.slice_scores is not None and np.isfinite(c.state.slice_scores[30]),
                    timeout=60000)
    c.go_to_slice(5)  # the user moves: the next refresh predicts slice 5 first
    qtbot.waitUntil(lambda: c.session.trainer.focus == (0, 5), timeout=5000)
    scores = np.array(c.state.slice_scores)
    best = c.next_uncertain_slice()
    finite = np.where(np.isfinite(scores))[0]
    assert best in finite and best not in PAINTED
    pseudo = viewer.layers[PSEUDO].data
    assert pseudo.shape == viewer.layers["hippocampus MRI"].data.shape
    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    assert np.isfinite(c.state.slice_scores).all()  # the last report carries the whole volume
