"""What the user sees in a real viewer: the overlay switch, class names and colours (kept in exported
files), buttons that say why they cannot run yet, the first proposal by interpolation, Finish in 3D
with volumes in mL, and the loop's keyboard shortcuts."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QLineEdit, QPushButton, QSpinBox, QTableWidget

from napari_semiseg.core.io import read_labels
from napari_semiseg.napari.controller import PSEUDO, SEGMENTATION, SURFACE, UNCERTAINTY
from napari_semiseg.napari.widget import NEW_LABELS
from gui_session import PAINTED, click, notifications, paint_reference


def _infos():
    return notifications("info")


def test_every_control_explains_itself_and_buttons_that_cannot_run_say_why(session):
    viewer, widget = session
    for kind in (QPushButton, QComboBox, QSpinBox, QDoubleSpinBox, QLineEdit, QTableWidget):
        for w in widget.findChildren(kind):
            if w.parent() is not None and w.parent().inherits("QAbstractSpinBox"):
                continue
            assert w.toolTip(), f"{kind.__name__} {w.objectName()} has no tooltip"
    expect = {"train_button": "Paint a few slices", "next_uncertain_button": "first pseudo-labels",
              "accept_slice_button": "no proposal yet", "finish_button": "no proposal yet",
              "save_model_button": "no model yet", "pause_button": "Not training"}
    for name, why in expect.items():
        button = widget.findChild(QPushButton, name)
        assert not button.isEnabled() and why in button.toolTip(), (name, button.toolTip())
    paint_reference(viewer.layers["annotations"], slices=(12,))
    widget.refresh()
    assert widget.train_button.isEnabled() and "Train on the labeled slices" in widget.train_button.toolTip()


def test_a_dock_shorter_than_the_panel_scrolls_instead_of_squashing_its_buttons(shown, qtbot):
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer, widget = shown
    viewer.window._qt_window.resize(1000, 600)
    qtbot.waitUntil(lambda: widget.height() < 600, timeout=5000)
    QApplication.processEvents()
    scroll = widget.findChild(QScrollArea, "semiseg_scroll")
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the panel is taller than the dock
    for button in widget.findChildren(QPushButton):
        assert button.height() >= button.minimumSizeHint().height(), button.objectName()
    assert scroll.widget().width() <= scroll.viewport().width()  # nothing cut at the right edge
    bar.setValue(bar.maximum())
    QApplication.processEvents()
    export = widget.findChild(QPushButton, "export_button")
    top = export.mapTo(scroll.viewport(), export.rect().topLeft()).y()
    assert 0 <= top and top + export.height() <= scroll.viewport().height()  # the last row can be reached


def test_choosing_new_labels_layer_creates_one_and_annotates_it(session):
    viewer, widget = session
    before = [ly.name for ly in viewer.layers]
    widget.labels_combo.activated.emit(widget.labels_combo.findText(NEW_LABELS))
    added = [ly for ly in viewer.layers if ly.name not in before]
    assert len(added) == 1 and added[0]._type_string == "labels"
    assert widget.controller.state.labels_layer is added[0]
    assert widget.labels_combo.currentText() == added[0].name


def test_two_labeled_slices_give_an_interpolated_proposal_before_training_then_finish_in_3d(session, qtbot):
    viewer, widget = session
    c = widget.controller
    labels = viewer.layers["annotations"]
    ref = paint_reference(labels, slices=(12, 21))
    qtbot.waitUntil(lambda: PSEUDO in viewer.layers and viewer.layers[PSEUDO].data[:, :, 16].any(), timeout=5000)
    assert c.state.proposal_source == "interpolation" and not c.running
    guess = viewer.layers[PSEUDO].data[:, :, 16]
    inter = np.logical_and(guess > 0, ref[:, :, 16] > 0).sum() / max(1, ((guess > 0) | (ref[:, :, 16] > 0)).sum())
    assert inter > 0.3  # a real guess at the slice between, not noise
    widget.refresh()
    assert widget.accept_slice_button.isEnabled() and not widget.next_uncertain_button.isEnabled()

    c.go_to_slice(16)
    click(widget, "accept_slice_button")
    np.testing.assert_array_equal(labels.data[:, :, 16], guess)

    click(widget, "finish_button")
    seg = viewer.layers[SEGMENTATION]
    assert SURFACE in viewer.layers and viewer.dims.ndisplay == 3
    spacing = np.asarray(c._spacing_mm())
    for cls in (1, 2):
        expected = np.count_nonzero(seg.data == cls) * spacing.prod() / 1000.0
        assert c.state.volumes_ml[cls] == pytest.approx(expected)
    assert any("anterior (head)" in m and "mL" in m for m in _infos())


def test_overlay_switch_and_uncertainty_quiet_below_its_threshold(session, qtbot):
    viewer, widget = session
    c = widget.controller
    paint_reference(viewer.layers["annotations"])
    click(widget, "train_button")
    qtbot.waitUntil(lambda: c.state.slice_scores is not None, timeout=60000)
    pseudo, unc = viewer.layers[PSEUDO], viewer.layers[UNCERTAINTY]
    assert pseudo.visible and pseudo.contour > 0 and not unc.visible  # quiet by default: outlines only
    widget.overlay_combo.setCurrentText("uncertainty")
    assert unc.visible and not pseudo.visible
    widget.threshold_spin.setValue(0.6)
    alpha = unc.colormap.map(np.array([0.3, 0.59, 0.65, 0.95]))[:, 3]
    assert alpha[0] == 0 and alpha[1] == 0 and 0 < alpha[2] < alpha[3]
    widget.overlay_combo.setCurrentText("none")
    assert not unc.visible and not pseudo.visible

    qtbot.waitUntil(lambda: len(c.state.loss_history) > 3, timeout=30000)
    widget.refresh()
    curve = widget.loss_curve.grab().toImage()  # the plot has axes: the y axis line at its left margin
    assert curve.pixelColor(widget.loss_curve.LEFT, curve.height() // 2).getRgb()[:3] == (120, 120, 120)
    click(widget, "pause_button")
    widget.refresh()
    assert widget.progress_label.text().startswith("Paused")
    click(widget, "stop_button")
    qtbot.waitUntil(lambda: not c.running, timeout=60000)
    long_path = "/" + "/".join(["a-very-long-folder-name"] * 20)
    c.state.model_dir = long_path
    width = widget.sizeHint().width()
    widget.refresh()
    assert widget.sizeHint().width() <= width + 5  # a long model path never widens the dock
    assert long_path in widget.progress_label.toolTip()


def test_class_names_and_colours_are_shared_by_the_machine_layers_and_written_to_the_files(session, qtbot,
                                                                                            tmp_path):
    viewer, widget = session
    c = widget.controller
    labels = viewer.layers["annotations"]
    assert widget.class_table.item(0, 0).text() == "anterior (head)"
    widget.class_table.item(1, 0).setText("tail")  # typed in the table
    assert c.class_names()[2] == "tail"
    c.set_class(1, colour="#00ff00")
    np.testing.assert_allclose(labels.colormap.map(np.array([1]))[0][:3], [0, 1, 0], atol=0.01)
    click(widget, "add_class_button")
    assert 3 in c.class_table() and widget.class_table.rowCount() == 3
    widget.class_table.cellClicked.emit(2, 0)
    assert labels.selected_label == 3  # clicking a row paints that class next

    paint_reference(labels, slices=(12, 21))
    qtbot.waitUntil(lambda: PSEUDO in viewer.layers, timeout=5000)
    pseudo = viewer.layers[PSEUDO]
    np.testing.assert_allclose(pseudo.colormap.map(np.array([1]))[0][:3], [0, 1, 0], atol=0.01)
    click(widget, "finish_button")
    seg = viewer.layers[SEGMENTATION]
    viewer.layers.selection = {seg}
    for name in ("final.nii.gz", "final.tif"):
        assert viewer.layers.save(str(tmp_path / name), selected=True, plugin="napari-semiseg")
        back = read_labels(tmp_path / name)
        assert back.source.header["classes"][2]["name"] == "tail"
        assert back.source.header["classes"][1]["colour"] == "#00ff00"
    reopened = viewer.open(str(tmp_path / "final.nii.gz"), plugin="napari-semiseg")[0]
    np.testing.assert_allclose(reopened.colormap.map(np.array([1]))[0][:3], [0, 1, 0], atol=0.01)


def test_loop_shortcuts_go_through_napari_keybindings_and_can_be_remapped(session, qtbot):
    from napari.utils.action_manager import action_manager
    from qtpy.QtCore import Qt

    viewer, widget = session
    c = widget.controller
    paint_reference(viewer.layers["annotations"])
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)  # Shift+T: train
    assert c.running
    qtbot.waitUntil(lambda: c.state.slice_scores is not None, timeout=60000)
    qtbot.keyClick(canvas, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)  # Shift+N: next uncertain
    proposed = c.current_slice()
    assert proposed not in PAINTED
    name = "napari-semiseg:accept"
    action_manager.unbind_shortcut(name)
    action_manager.bind_shortcut(name, "Shift-J")  # what Preferences > Shortcuts does
    qtbot.keyClick(canvas, Qt.Key.Key_J, Qt.KeyboardModifier.ShiftModifier)
    assert viewer.layers["annotations"].data[:, :, proposed].any() or proposed in c.state.marked_empty
    action_manager.unbind_shortcut(name)
    action_manager.bind_shortcut(name, "Shift-A")
    qtbot.keyClick(canvas, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)  # Shift+T again: stop
    qtbot.waitUntil(lambda: not c.running, timeout=60000)


def test_export_writes_where_the_user_chooses_a_png_for_a_photograph_with_its_classes(
        make_napari_viewer, fresh_notifications, tmp_path, monkeypatch):
    import imageio.v3 as iio
    from PIL import Image
    from qtpy.QtWidgets import QFileDialog

    from gui_session import WIDGET

    photo = tmp_path / "fundus.png"
    iio.imwrite(photo, np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(photo), plugin="napari-semiseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
    c = widget.controller
    assert not widget.export_button.isEnabled()  # nothing to export before there is a labels layer
    widget.labels_combo.activated.emit(widget.labels_combo.findText(NEW_LABELS))
    labels = c.state.labels_layer
    labels.data_setitem((np.arange(10, 30), np.full(20, 40)), 1)
    c.set_class(1, name="vessel", colour="#ff8000")

    offered = []

    def save_dialog(parent, caption, default, formats):  # the native dialog: the user types a bare name
        offered.append((default, formats))
        return str(tmp_path / "out" / "mine"), formats.split(";;")[0]

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    click(widget, "export_button")
    assert offered[0][0] == str(tmp_path / "fundus_labels.png")  # beside the photograph, named after it
    assert offered[0][1].startswith("PNG")
    written = tmp_path / "out" / "mine.png"
    back = read_labels(written)
    np.testing.assert_array_equal(back.data, labels.data)
    assert back.source.header["classes"][1]["name"] == "vessel"
    with Image.open(written) as im:  # a palette PNG: any image viewer shows the class in its colour
        assert im.mode == "P" and im.getpalette()[3:6] == [255, 128, 0]
    assert any(str(written) in m for m in notifications("info"))


def test_export_of_a_volume_is_offered_as_nifti_and_refused_as_png(session, tmp_path, monkeypatch):
    from pathlib import Path

    from qtpy.QtWidgets import QFileDialog

    viewer, widget = session
    paint_reference(viewer.layers["annotations"], slices=(12,))
    offered = []
    answer = str(tmp_path / "volume.png")
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda parent, caption, default, formats: (offered.append(default), (answer, ""))[1])
    click(widget, "export_button")
    # the bundled sample's folder is not the user's: the export is offered in the home folder
    assert Path(offered[0]).parent == Path.home() and offered[0].endswith("_labels.nii.gz")
    assert not (tmp_path / "volume.png").exists()
    assert any("PNG holds one 2D image" in e for e in notifications("error"))
    answer = str(tmp_path / "volume.nii.gz")
    click(widget, "export_button")
    np.testing.assert_array_equal(read_labels(answer).data, viewer.layers["annotations"].data)
