"""How long the Qt event loop stalls while the plugin trains on the CPU, with a real viewer.

A 10 ms QTimer heartbeat runs during training; every gap above 10 ms is a stall the user feels.
Prints p50 / p99 / max gap and the time from pressing Train to the first pseudo-label refresh.
Run under a display (xvfb-run -a on a headless machine):

    xvfb-run -a .venv/bin/python benchmarks/responsiveness.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QPushButton

    from napari_semiseg.core.benchmark import evenly_spaced_slices
    from napari_semiseg.core.io import read_labels
    from napari_semiseg.samples import sample_labels

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-semiseg", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    widget.axis_spin.setValue(2)
    ref = read_labels(sample_labels()).data
    labels = viewer.layers["annotations"]
    for i in evenly_spaced_slices(ref, 2, 3):
        labels.data[:, :, i] = ref[:, :, i]
    labels.refresh()
    app = QApplication.instance()
    c = widget.controller

    gaps, last, big = [], [None], []
    first_refresh = [None]

    def beat():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append((now - last[0]) * 1000.0)
            if gaps[-1] > 100:
                big.append((round(now - t_train, 2), round(gaps[-1])))
        last[0] = now
        if first_refresh[0] is None and c.state.slice_scores is not None:
            first_refresh[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    t_train = time.perf_counter()
    widget.findChild(QPushButton, "train_button").click()
    while time.perf_counter() - t_train < args.seconds:
        app.processEvents()
        # the viewer is used meanwhile: move through slices as a reviewing user would
        viewer.dims.set_point(2, (int((time.perf_counter() - t_train) * 4) % 35))
        time.sleep(0.002)
    c.stop()
    while c.running:
        app.processEvents()
        time.sleep(0.01)
    timer.stop()
    g = np.array(gaps)
    stall = g - 10.0
    print(f"cores {os.cpu_count()}, training threads {c.trainer.config.threads}, "
          f"{c.state.last_report.iteration} iterations in {args.seconds:.0f} s")
    print(f"heartbeat gaps (ms): p50 {np.percentile(g, 50):.1f}, p99 {np.percentile(g, 99):.1f}, max {g.max():.1f} "
          f"(stall beyond the 10 ms tick: p99 {np.percentile(stall, 99):.1f}, max {stall.max():.1f})")
    print(f"stalls over 100 ms (s after Train, ms): {big}")
    first = (first_refresh[0] - t_train) if first_refresh[0] else float("nan")
    print(f"time from Train to first pseudo-labels: {first:.2f} s")
    viewer.close()


if __name__ == "__main__":
    main()
