"""Real mouse input on napari's canvas: Qt mouse events sent to the canvas widget, as a hand would."""

from __future__ import annotations

import numpy as np


def canvas_position(viewer, layer, data_point) -> tuple[float, float]:
    """Where a point of ``layer``'s data is drawn on the canvas, in widget pixels."""
    canvas = viewer.window._qt_viewer.canvas
    world = np.asarray(layer.data_to_world(np.asarray(data_point, float)))
    offset = viewer.dims.ndim - layer.ndim
    displayed = [world[d - offset] for d in viewer.dims.displayed]
    transform = canvas.view.transform * canvas.view.scene.transform
    x, y = transform.map(list(displayed[::-1]))[:2]
    return float(x), float(y)


def _send(widget, kind: str, pos, held: bool) -> None:
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    local = QPointF(*pos)
    button = Qt.MouseButton.NoButton if kind == "move" else Qt.MouseButton.LeftButton
    buttons = Qt.MouseButton.LeftButton if held else Qt.MouseButton.NoButton
    event = QMouseEvent(types[kind], local, QPointF(widget.mapToGlobal(local)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def paint_stroke(viewer, layer, data_points, qtbot, label: int = 1, size: int = 3) -> None:
    """What a user does to paint: select the layer, the brush, its size and the label, then drag."""
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    layer.brush_size = size
    layer.selected_label = label
    brush_stroke(viewer, layer, data_points, qtbot)


def brush_stroke(viewer, layer, data_points, qtbot, steps: int = 6) -> None:
    """Press on the first point, drag through the others, release on the last (``layer`` in paint mode)."""
    widget = viewer.window._qt_viewer.canvas.native
    pts = [canvas_position(viewer, layer, p) for p in data_points]
    _send(widget, "press", pts[0], held=True)
    for a, b in zip(pts[:-1], pts[1:]):
        for t in np.linspace(0, 1, steps)[1:]:
            _send(widget, "move", (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])), held=True)
            qtbot.wait(5)
    _send(widget, "release", pts[-1], held=False)
    qtbot.wait(20)
