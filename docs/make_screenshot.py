"""Makes docs/screenshot.png: the widget beside the sample volume with live pseudo-labels and uncertainty.

    xvfb-run -a .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import time
from pathlib import Path


def main():
    import napari
    from qtpy.QtWidgets import QApplication, QPushButton

    from napari_semiseg.core.benchmark import evenly_spaced_slices
    from napari_semiseg.core.io import read_labels
    from napari_semiseg.samples import sample_labels

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 850)
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    widget.axis_spin.setValue(2)
    ref = read_labels(sample_labels()).data
    labels = viewer.layers["annotations"]
    painted = evenly_spaced_slices(ref, 2, 3)
    for i in painted:
        labels.data[:, :, i] = ref[:, :, i]
    labels.refresh()
    viewer.dims.order = (2, 0, 1)  # show sagittal slices: the hippocampus's long axis in plane
    app = QApplication.instance()
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
