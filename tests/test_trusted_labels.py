"""What the trainer is taught is what the user's labels layer says: strokes, undo and redo, the axis
being painted, and the machine's layers, which take no paint. Painting is real mouse input on the canvas."""

from __future__ import annotations

import numpy as np

from canvas import brush_stroke, paint_stroke
from napari_semiseg.napari.controller import PSEUDO, TILE
from gui_session import AXIS, PAINTED, click, in_thread, notifications, paint_reference

def _warnings():
    return notifications("warning")


def _start(viewer, widget, qtbot):
    in_thread(widget)  # these tests read what the trainer holds
    widget.axis_spin.setValue(AXIS)
    viewer.reset_view()
    paint_reference(viewer.layers["annotations"])
    click(widget, "train_button")
    c = widget.controller
    qtbot.waitUntil(lambda: c.session is not None and c.session.has_model and c.state.slice_scores is not None, timeout=60000)
    return c


def _stroke_on_slice(viewer, layer, index, qtbot):
    """A diagonal stroke across the middle of slice ``index`` (along AXIS)."""
    shape = layer.data.shape
    viewer.window._qt_viewer.canvas.native.setFocus()
    paint_stroke(viewer, layer, [(shape[0] * f, shape[1] * f, index) for f in (0.35, 0.5, 0.65)], qtbot)


def test_a_brush_stroke_while_training_reaches_the_trainer_and_the_labeled_count(shown, qtbot):
    viewer, widget = shown
    c = _start(viewer, widget, qtbot)
    labels = viewer.layers["annotations"]
    target = 30
    c.go_to_slice(target)
    _stroke_on_slice(viewer, labels, target, qtbot)
    painted = int(np.count_nonzero(labels.data[:, :, target]))
    assert painted > 10  # the stroke landed on the slice on screen
    assert target in c.labeled_slices()
    # the count on the widget follows without moving the slider
    qtbot.waitUntil(lambda: f"Labeled slices: {len(PAINTED) + 1}" in widget.labeled_label.text(), timeout=5000)
    # and the trainer has every voxel of it, not the stroke minus its last segment
    vol = c.session.trainer.volumes[0]
    qtbot.waitUntil(lambda: target in vol.labeled, timeout=30000)
    np.testing.assert_array_equal(vol.labels[:, :, target], labels.data[:, :, target])


def test_undo_and_redo_of_accept_reach_the_labeled_set_and_the_trainer(shown, qtbot):
    viewer, widget = shown
    c = _start(viewer, widget, qtbot)
    labels = viewer.layers["annotations"]
    vol = c.session.trainer.volumes[0]
    # a slice where the teacher already sees structure, so that Accept paints something
    here = next(i for i in np.argsort(-np.count_nonzero(viewer.layers[PSEUDO].data, axis=(0, 1)))
                if i not in PAINTED)
    c.go_to_slice(int(here))
    click(widget, "accept_slice_button")
    assert labels.data[:, :, here].any()
    qtbot.waitUntil(lambda: here in vol.labeled, timeout=30000)

    labels.undo()
    assert not labels.data[:, :, here].any()
    assert here not in c.labeled_slices()  # no stale "accepted" mark keeps the emptied slice
    qtbot.waitUntil(lambda: here not in vol.labeled, timeout=30000)
    assert not vol.labels[:, :, here].any()

    labels.redo()
    qtbot.waitUntil(lambda: here in vol.labeled, timeout=30000)
    np.testing.assert_array_equal(vol.labels[:, :, here], labels.data[:, :, here])


def test_the_slice_axis_is_the_axis_napari_slices_named_anatomically(shown, qtbot):
    viewer, widget = shown
    c = widget.controller
    assert c.state.axis == 0 and widget.axis_words.text() == "axial"
    viewer.dims.order = (2, 0, 1)  # napari's "roll" to sagittal slices
    qtbot.waitUntil(lambda: widget.axis_spin.value() == 2, timeout=2000)
    assert c.state.axis == 2 and widget.axis_words.text() == "sagittal"
    widget.axis_spin.setValue(1)  # and the other way: the widget turns the view
    assert viewer.dims.not_displayed == (1,) and c.state.axis == 1
    assert widget.axis_words.text() == "coronal"


def test_labels_painted_along_another_axis_are_flagged_not_silently_counted(shown, qtbot):
    viewer, widget = shown
    c = widget.controller
    labels = viewer.layers["annotations"]
    viewer.reset_view()
    _stroke_on_slice_axis0(viewer, labels, qtbot)
    assert c.labeled_slices() == {17}
    widget.axis_spin.setValue(2)  # the stroke crosses many sagittal slices
    assert len(c.labeled_slices()) > 3
    warning = next(w for w in _warnings() if "look painted on axial slices" in w and "sagittal" in w)
    qtbot.waitUntil(lambda: widget.message_label.text() == warning, timeout=2000)  # whole, in the dock


def _stroke_on_slice_axis0(viewer, layer, qtbot):
    c_index = 17
    viewer.dims.set_point(0, layer.data_to_world((c_index, 0, 0))[0])
    shape = layer.data.shape
    paint_stroke(viewer, layer, [(c_index, shape[1] * 0.5, shape[2] * f) for f in (0.2, 0.8)], qtbot, size=2)


def test_the_machine_layers_take_no_paint_and_other_axes_take_none_while_training(shown, qtbot):
    viewer, widget = shown
    c = _start(viewer, widget, qtbot)
    pseudo = viewer.layers[PSEUDO]
    assert not pseudo.editable
    pseudo.mode = "paint"
    assert pseudo.mode == "pan_zoom"
    before = np.array(pseudo.data, copy=True)
    viewer.layers.selection.active = pseudo
    c.flush_writes()
    brush_stroke(viewer, pseudo, [(10, 10, c.current_slice()), (20, 20, c.current_slice())], qtbot)
    np.testing.assert_array_equal(pseudo.data[:, :, c.current_slice()], before[:, :, c.current_slice()])

    labels = viewer.layers["annotations"]
    viewer.dims.order = (0, 1, 2)  # look at axial slices while training on sagittal ones
    assert not labels.editable and c.state.axis == AXIS
    assert any("Painting is off" in w for w in _warnings())
    viewer.dims.order = (2, 0, 1)
    assert labels.editable


def test_a_partly_painted_photo_teaches_only_what_was_painted_and_is_accepted_a_tile_at_a_time(
        make_napari_viewer, fresh_notifications, qtbot):
    from gui_session import WIDGET
    from napari_semiseg.core.classes import PAINTED_BACKGROUND, UNKNOWN
    from test_partial_labels import discs

    image, truth, _ = discs(size=160)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 800)
    viewer.add_image(image, name="photo")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    in_thread(widget)
    c = widget.controller
    widget.refresh_spin.setValue(1)
    widget.labels_combo.activated.emit(widget.labels_combo.findText("(new labels layer)"))
    labels = c.state.labels_layer
    widget.unpainted_combo.setCurrentIndex(1)
    assert c.state.unpainted == "unknown" and PAINTED_BACKGROUND in c.class_table()
    viewer.reset_view()
    paint_stroke(viewer, labels, [(48, 38), (48, 52)], qtbot)  # inside one disc
    click(widget, "train_button")
    assert not c.running and any("no background is painted" in e for e in notifications("error"))
    paint_stroke(viewer, labels, [(6, 10), (6, 150)], qtbot, label=PAINTED_BACKGROUND)
    painted = np.array(labels.data, copy=True)
    assert (painted == 1).sum() > 10 and (painted == PAINTED_BACKGROUND).sum() > 100

    click(widget, "train_button")
    qtbot.waitUntil(lambda: c.session is not None and c.session.has_model and c.state.slice_scores is not None, timeout=60000)
    taught = c.session.trainer.volumes[0].labels
    np.testing.assert_array_equal(taught == UNKNOWN, painted == 0)  # unpainted is unknown, not background
    np.testing.assert_array_equal(taught == 0, painted == PAINTED_BACKGROUND)
    click(widget, "pause_button")

    click(widget, "next_uncertain_button")
    top, left, bottom, right = c.state.tile
    # the view centres on the tile and zooms until it spans 80 % of the canvas's shorter side
    np.testing.assert_allclose(viewer.camera.center[-2:], ((top + bottom) / 2, (left + right) / 2), atol=1)
    on_screen = viewer.camera.zoom * max(bottom - top, right - left)
    assert abs(on_screen - 0.8 * min(viewer.canvas.size)) < 2
    frame = viewer.layers[TILE].data[0]  # the tile is framed on screen; painting stays on the labels
    assert frame[:, 0].min() == top - 0.5 and frame[:, 1].max() == right - 0.5
    assert viewer.layers.selection.active is labels
    before = np.array(labels.data, copy=True)
    click(widget, "accept_slice_button")
    assert TILE not in viewer.layers
    changed = np.argwhere(labels.data != before)
    assert len(changed) and changed[:, 0].min() >= top and changed[:, 0].max() < bottom
    assert changed[:, 1].min() >= left and changed[:, 1].max() < right
    assert not (labels.data[top:bottom, left:right] == 0).any()  # the whole tile is known now
    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    widget.controller.shutdown()


def test_painted_background_on_slices_taught_whole_is_questioned_at_train(session, qtbot):
    from napari_semiseg.core.classes import PAINTED_BACKGROUND

    viewer, widget = session
    labels = viewer.layers["annotations"]
    paint_reference(labels)
    labels.data_setitem((np.arange(2, 8), np.full(6, 3), np.full(6, PAINTED[0])), PAINTED_BACKGROUND)
    click(widget, "train_button")
    assert any("set Unpainted pixels to 'unknown'" in w for w in _warnings())
    widget.controller.stop()
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=60000)
