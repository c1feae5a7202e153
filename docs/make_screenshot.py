"""Makes the README's pictures of a session, each after real CPU training:

- docs/screenshot.png: the sample volume, pseudo-labels of an unlabeled slice as outlines;
- docs/screenshot_uncertainty.png: the same slice with the uncertainty overlay instead;
- docs/screenshot_2d.png: a CHASE_DB1 fundus photograph painted with scribbles (unpainted pixels
  unknown) and the most uncertain tile framed by Next uncertain (skipped without ../shared/data).

    xvfb-run -a .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHASE = HERE.parents[1] / "shared" / "data" / "chase_db1"
WIDGET = ("napari-semiseg", "Semi-supervised segmentation")


def pump(seconds: float) -> None:
    """Let the viewer run (training reports, refreshes) for a while."""
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        QApplication.instance().processEvents()
        time.sleep(0.01)


def stop(controller) -> None:
    controller.stop()
    while controller.running:
        pump(0.1)


def volume_shots(napari) -> None:
    from napari_semiseg.core.benchmark import evenly_spaced_slices
    from napari_semiseg.core.io import read_labels
    from napari_semiseg.samples import sample_labels

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.axis_spin.setValue(2)
    ref = read_labels(sample_labels()).data
    labels = viewer.layers["annotations"]
    painted = evenly_spaced_slices(ref, 2, 3)
    for i in painted:  # through the layer's history, as a brush does: the widget hears of it
        idx = np.nonzero(ref[:, :, i])
        labels.data_setitem((idx[0], idx[1], np.full(idx[0].shape, i)), ref[:, :, i][idx])
    pump(0.3)  # the widget updates what can run a moment after an edit
    c = widget.controller
    widget.train_button.click()
    pump(40)
    c.go_to_slice(painted[1] + 2)  # an unlabeled slice through the structure
    pump(0.5)
    viewer.reset_view()
    shoot(viewer, "screenshot.png")
    widget.overlay_combo.setCurrentText("uncertainty")
    pump(0.5)
    shoot(viewer, "screenshot_uncertainty.png")
    stop(c)
    viewer.close()


def photo_shot(napari) -> None:
    if not CHASE.is_dir():
        print(f"{CHASE} is absent: no 2D picture")
        return
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from scribbles_2d import scribbles

    from napari_semiseg.core.io import read_labels

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.open(str(CHASE / "images" / "Image_01L.jpg"), plugin="napari-semiseg")
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.labels_combo.activated.emit(widget.labels_combo.findText("(new labels layer)"))
    widget.unpainted_combo.setCurrentIndex(1)  # unpainted pixels are unknown
    c = widget.controller
    c.set_class(1, name="vessel", colour="#46f0f0")  # the palette's first red is lost on a red fundus
    vessels = read_labels(CHASE / "manual" / "Image_01L_1stHO.png").data > 0
    painted = scribbles(vessels, np.random.default_rng(0))
    idx = np.nonzero(painted)
    c.state.labels_layer.data_setitem(idx, painted[idx])
    widget.batch_spin.setValue(4)
    widget.labeled_batch_spin.setValue(2)
    widget.refresh_spin.setValue(5)
    pump(0.3)
    widget.train_button.click()
    pump(60)
    c.pause()
    pump(1)
    widget.next_uncertain_button.click()
    pump(1)
    shoot(viewer, "screenshot_2d.png")
    stop(c)
    viewer.close()


def shoot(viewer, name: str) -> None:
    viewer.screenshot(str(HERE / name), canvas_only=False)
    print(f"wrote {HERE / name}")


def main():
    os.environ["NAPARI_SEMISEG_HOME"] = tempfile.mkdtemp()  # no autosaves of earlier runs on the picture
    import napari

    volume_shots(napari)
    photo_shot(napari)


if __name__ == "__main__":
    main()
