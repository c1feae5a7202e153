"""Knowing when the user's labels changed: brush strokes, fills, erasing, undo, redo, data replaced."""

from __future__ import annotations


class LabelEditWatcher:
    """Calls ``on_edit`` once, on the next turn of the event loop, after a Labels layer's data changed.

    napari emits ``paint`` when it records a history step, which for ``data_setitem`` and
    ``paint`` happens before the values are written: the call is deferred so that whoever reads the
    layer then sees the new values. Undo and redo emit no edit event, only ``set_data``, which also
    fires on every slider move; they are told apart by the depth of the layer's undo and redo stacks
    (napari's own workaround in issue #4194 until it has an event for them).
    """

    def __init__(self, layer, on_edit):
        self.layer = layer
        self.on_edit = on_edit
        self._depth = self._history_depth()
        self._scheduled = False
        self.version = 0  # grows with every change: lets readers cache what they derive from the data
        self._events = ((layer.events.paint, self._changed), (layer.events.data, self._changed),
                        (layer.events.set_data, self._maybe_undone))
        for event, slot in self._events:
            event.connect(slot)

    def close(self) -> None:
        for event, slot in self._events:
            try:
                event.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):
                pass

    def _history_depth(self) -> tuple[int, int]:
        return (len(getattr(self.layer, "_undo_history", ())), len(getattr(self.layer, "_redo_history", ())))

    def _maybe_undone(self, event=None) -> None:
        if self._history_depth() != self._depth:
            self._changed()

    def _changed(self, event=None) -> None:
        self._depth = self._history_depth()
        self.version += 1
        if self._scheduled:
            return
        self._scheduled = True
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._fire)

    def _fire(self) -> None:
        self._scheduled = False
        self.version += 1  # the values are written by now
        self.on_edit()
