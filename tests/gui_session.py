"""Helpers for the tests that drive the widget in a real viewer (fixtures are in conftest.py)."""

from __future__ import annotations

import numpy as np

from napari_semiseg.core.io import read_labels
from napari_semiseg.samples import sample_labels

WIDGET = "Semi-supervised segmentation"
AXIS = 2  # sagittal in the sample's display order (S, P, L)
PAINTED = (12, 16, 21)


def notifications(severity: str) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records if n.severity == severity]


def click(widget, name):
    """Click a button as a hand does: not within the same turn of the event loop as the last edit
    (the widget updates which buttons can run 0.1 s after a change)."""
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QPushButton

    QTest.qWait(150)
    widget.findChild(QPushButton, name).click()


def in_thread(widget):
    """Train in the viewer's own process (Advanced > Train in), for tests that read the trainer's state
    in place or patch it; the others train in the default child process."""
    widget.place_combo.setCurrentText("thread")
    assert widget.controller.training_place == "thread"


def paint_reference(labels_layer, slices=PAINTED):
    """Write the sample's reference labels of ``slices`` (along AXIS) into the layer, one undo step each."""
    ref = read_labels(sample_labels()).data
    for i in slices:
        idx = np.nonzero(ref[:, :, i])
        full = (idx[0], idx[1], np.full(idx[0].shape, i))
        labels_layer.data_setitem(full, ref[:, :, i][idx])
    return ref
