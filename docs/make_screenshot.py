"""Makes docs/screenshot.png: the widget beside the sample volume with live pseudo-labels and uncertainty.

    xvfb-run -a .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import time
from pathlib import Path


def main():
    import os
    import tempfile

    os.environ["NAPARI_SEMISEG_HOME"] = tempfile.mkdtemp()  # no autosaves of earlier runs on the picture
    import napari
    from qtpy.QtWidgets import QApplication, QPushButton

    from napari_semiseg.core.benchmark import evenly_spaced_slices
    from napari_semiseg.core.io import read_labels
    from napari_semiseg.samples import sample_labels

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    widget.axis_spin.setValue(2)
    ref = read_labels(sample_labels()).data
    labels = viewer.layers["annotations"]
    painted = evenly_spaced_slices(ref, 2, 3)
    import numpy as np

    for i in painted:  # through the layer's history, as a brush does: the widget hears of it
        idx = np.nonzero(ref[:, :, i])
        labels.data_setitem((idx[0], idx[1], np.full(idx[0].shape, i)), ref[:, :, i][idx])
    app = QApplication.instance()
    for _ in range(30):  # the widget updates what can run a moment after an edit
        app.processEvents()
        time.sleep(0.01)
    c = widget.controller
    widget.findChild(QPushButton, "train_button").click()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 40:
        app.processEvents()
        time.sleep(0.01)
    c.go_to_slice(painted[1] + 2)  # an unlabeled slice through the structure
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    viewer.reset_view()
    out = Path(__file__).with_name("screenshot.png")
    viewer.screenshot(str(out), canvas_only=False)
    c.stop()
    while c.running:
        app.processEvents()
        time.sleep(0.01)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main()
