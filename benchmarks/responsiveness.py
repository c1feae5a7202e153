"""How long the Qt event loop stalls while the plugin trains on the CPU, with a real viewer.

A 10 ms QTimer heartbeat runs during training; every gap above 10 ms is a stall the user feels.
Prints p50 / p99 / max gap and the time from pressing Train to the first pseudo-label refresh.
Run under a display (xvfb-run -a on a headless machine):

    xvfb-run -a .venv/bin/python benchmarks/responsiveness.py [--seconds 30] [--ct] [--place process|thread|server]

``--place server`` starts ``napari-semiseg serve`` on loopback and trains there. Halfway through, one
slice is corrected (as a brush would): the bytes that update took to reach the trainer, and the
bytes per live refresh coming back, are printed (server: over HTTP/websocket; process: through the
pipe and shared memory; thread: none cross).

``--ct`` uses a synthetic 512x512x300 float32 CT-like volume (315 MB) instead of the sample, and also
reports when every slice had been refreshed once (the live sweep) and the first refresh of the
slice on screen.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--ct", action="store_true", help="a synthetic 512x512x300 CT-like volume instead of the sample")
    ap.add_argument("--place", choices=("process", "thread", "server"), default="process",
                    help="where the trainer runs")
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication, QPushButton

    from napari_semiseg.core.benchmark import evenly_spaced_slices
    from napari_semiseg.core.io import read_labels
    from napari_semiseg.samples import sample_labels

    viewer = napari.Viewer(show=True)
    if args.ct:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parent))
        from memory_native import ct_arrays

        vol, ref = ct_arrays()
        viewer.add_image(vol, name="ct", colormap="gray", contrast_limits=(-200, 400))
        viewer.add_labels(np.zeros(vol.shape, np.uint8), name="annotations")
        axis, n_slices, painted = 0, 300, (100, 150, 200)
    else:
        viewer.open_sample("napari-semiseg", "hippocampus")
        ref = read_labels(sample_labels()).data
        axis, n_slices = 2, 35
        painted = evenly_spaced_slices(ref, 2, 3)
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    widget.axis_spin.setValue(axis)
    labels = viewer.layers["annotations"]
    for i in painted:
        _paint_slice(labels, ref, axis, i)
    viewer.dims.set_point(axis, 120 if args.ct else 17)
    app = QApplication.instance()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:  # the widget enables Train a moment after an edit
        app.processEvents()
        time.sleep(0.01)
    c = widget.controller
    c.training_place = args.place
    server = _start_server(c) if args.place == "server" else None
    refreshes = [0]
    shown = c._on_report

    def counting(report):  # the live refreshes that reached the viewer
        refreshes[0] += report.slices is not None
        shown(report)

    c._on_report = counting
    corrected = [None]

    gaps, last, big = [], [None], []
    first_refresh, swept = [None], [None]

    def beat():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append((now - last[0]) * 1000.0)
            if gaps[-1] > 100:
                big.append((round(now - t_train, 2), round(gaps[-1])))
        last[0] = now
        scores = c.state.slice_scores
        if first_refresh[0] is None and scores is not None and np.isfinite(scores[c.current_slice()]):
            first_refresh[0] = now  # the slice on screen has its pseudo-labels
        if swept[0] is None and scores is not None and np.isfinite(scores).all():
            swept[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    def drive():
        """The user, on napari's own event loop: moves through slices after the first refresh, corrects
        one slice halfway, stops at the end and leaves once training has ended."""
        t = time.perf_counter() - t_train
        if t >= args.seconds:
            if c.running and not stopping:
                stopping.append(True)
                c.stop()
            elif not c.running:
                loop.quit()
            return
        if first_refresh[0] is not None:
            viewer.dims.set_point(axis, int(t * 4) % n_slices)
        if corrected[0] is None and t > args.seconds / 2 and c.running:
            before = _bytes(c.session)
            _paint_slice(labels, ref, axis, painted[0] + 1)  # a slice next to a labeled one
            corrected[0] = (before, time.perf_counter())
        if corrected[0] is not None and len(corrected[0]) == 2 and time.perf_counter() - corrected[0][1] > 2:
            corrected[0] = (_bytes(c.session)[0] - corrected[0][0][0],)  # sent 0.1 s after the stroke

    stopping: list = []
    user = QTimer()
    user.setInterval(50)
    user.timeout.connect(drive)
    t_train = time.perf_counter()
    widget.findChild(QPushButton, "train_button").click()
    user.start()
    loop = QEventLoop()
    loop.exec()  # a real event loop, as napari runs one (no polling loop of our own in the measurement)
    user.stop()
    timer.stop()
    g = np.array(gaps)
    stall = g - 10.0
    from napari_semiseg.napari.controller import gui_thread_count

    print(f"cores {os.cpu_count()}, trainer in a {args.place}, training threads {gui_thread_count()}, "
          f"{c.state.last_report.iteration} iterations in {args.seconds:.0f} s")
    print(f"heartbeat gaps (ms): p50 {np.percentile(g, 50):.1f}, p99 {np.percentile(g, 99):.1f}, max {g.max():.1f} "
          f"(stall beyond the 10 ms tick: p99 {np.percentile(stall, 99):.1f}, max {stall.max():.1f})")
    print(f"stalls over 100 ms (s after Train, ms): {big}")
    first = (first_refresh[0] - t_train) if first_refresh[0] else float("nan")
    print(f"time from Train to first pseudo-labels on the slice on screen: {first:.2f} s")
    sweep = (swept[0] - t_train) if swept[0] else float("nan")
    print(f"time from Train until every slice had been refreshed once: {sweep:.1f} s")
    up = corrected[0][0] if corrected[0] is not None and len(corrected[0]) == 1 else float("nan")
    down = _bytes(c.session)[1]
    print(f"one corrected slice: {up / 1e3:.1f} kB to the trainer (labels {labels.data.nbytes / 1e6:.1f} MB); "
          f"{refreshes[0]} live refreshes, {down / max(refreshes[0], 1) / 1e3:.1f} kB of pseudo-labels each "
          "(process: uncompressed; server: compressed)")
    viewer.close()
    if server is not None:
        server.kill()
        server.wait()


def _paint_slice(labels, ref, axis: int, i: int) -> None:
    """The reference's slice ``i`` painted through the layer's history, as a brush does: the widget hears of it."""
    idx = [slice(None)] * 3
    idx[axis] = i
    where = np.nonzero(ref[tuple(idx)])
    full = list(where)
    full.insert(axis, np.full(where[0].shape, i))
    labels.data_setitem(tuple(full), ref[tuple(idx)][where])


def _bytes(session) -> tuple[float, float]:
    """(sent to the trainer, received from it) so far: HTTP/websocket for the server, pipe plus shared
    memory for a child process; nothing crosses for a thread."""
    if hasattr(session, "bytes_up"):
        return float(session.bytes_up), float(session.bytes_live)
    channel = getattr(session, "channel", None)
    if channel is not None:  # what arrives is not compressed: its size is the arrays'
        return float(channel.bytes_piped + channel.bytes_shared), float(session.bytes_live)
    return 0.0, 0.0


def _start_server(controller):
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "benchmark-token"
    proc = subprocess.Popen([sys.executable, "-m", "napari_semiseg", "serve", "--port", str(port), "--token", token],
                            stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/sessions", headers={"Authorization": f"Bearer {token}"}).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    controller.server_url, controller.server_token = url, token
    return proc


if __name__ == "__main__":
    main()
