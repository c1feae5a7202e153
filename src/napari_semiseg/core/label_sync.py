"""Label updates as the slices that changed.

A correction changes one slice of a volume's labels; sending the whole label map to a training
process or server each time copied a CT's 79 MB (benchmarks/RESULTS.md §13). Each side keeps its
own copy of the labels as the other side has them (:class:`LabelCopy`): the sender finds the slices
that differ and sends those, the receiver writes them into its copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .trainer import LabelUpdate

DIFF_ROWS = 8  # planes of the array (its first axis, contiguous in memory) compared at a time


def slice_stack(labels: np.ndarray, axis: int) -> np.ndarray:
    """A view of ``labels`` as a stack of slices along ``axis`` (a 2D image is a stack of one)."""
    return np.moveaxis(labels, axis, 0) if labels.ndim == 3 else labels[None]


@dataclass
class ChangedSlices:
    """The slices of one volume's labels that changed, and the labeled slices after the change."""

    slices: np.ndarray  # (K,) int64 indices along the volume's axis
    planes: np.ndarray  # (K, ...) their new labels
    labeled: set[int]
    volume_index: int = 0


class LabelCopy:
    """One volume's labels as the other side of a session has them."""

    def __init__(self, labels: np.ndarray, axis: int = 0, volume_index: int = 0):
        self.labels = np.array(labels)  # our own: the caller's array goes on changing
        self.axis = axis if self.labels.ndim == 3 else 0
        self.volume_index = volume_index
        self._stack = slice_stack(self.labels, self.axis)  # a view: writes go through to the labels

    def changes(self, update: LabelUpdate) -> ChangedSlices:
        """The sender's side: the slices of ``update`` that differ from this copy (which it leaves as
        it is: :meth:`write` them once they are delivered)."""
        labels = np.asarray(update.labels)
        new = slice_stack(labels, self.axis)
        if new.shape != self._stack.shape:
            raise InputError(f"The new labels have shape {labels.shape}, not {self.labels.shape}.")
        changed = np.nonzero(_differing_slices(labels, self.labels, self.axis))[0].astype(np.int64)
        return ChangedSlices(changed, np.ascontiguousarray(new[changed]), _labeled_set(update.labeled),
                             self.volume_index)

    def write(self, change: ChangedSlices) -> None:
        """Write the changed slices into this copy; InputError, before anything changes, for slices
        that do not fit it."""
        slices = np.asarray(change.slices).reshape(-1)
        if not slices.size:
            return
        if not np.issubdtype(slices.dtype, np.integer):
            raise InputError("The slice indices are not whole numbers.")
        if any(not 0 <= i < len(self._stack) for i in slices):
            raise InputError(f"A slice index is outside the volume's {len(self._stack)} slices.")
        planes = np.asarray(change.planes)
        expected = (len(slices),) + self._stack.shape[1:]
        if planes.shape != expected:
            raise InputError(f"The slices have shape {planes.shape}, not {expected}.")
        top = np.iinfo(self.labels.dtype).max if np.issubdtype(self.labels.dtype, np.integer) else np.inf
        if planes.size and (not np.issubdtype(planes.dtype, np.integer) or planes.min() < 0 or planes.max() > top):
            raise InputError(f"The slices' labels do not fit this volume's {self.labels.dtype} label map.")
        self._stack[slices.astype(np.int64)] = planes

    def apply(self, change: ChangedSlices) -> LabelUpdate:
        """The receiver's side: the changed slices written into this copy, as a trainer's update of
        its own array (the trainer keeps it while this copy takes the next change)."""
        labeled = _labeled_set(change.labeled)  # malformed: refused before anything changes
        self.write(change)
        return LabelUpdate(self.labels.copy(), labeled, self.volume_index)


def _differing_slices(new: np.ndarray, old: np.ndarray, axis: int) -> np.ndarray:
    """Which slices along ``axis`` differ (bool per slice), a few of the array's own planes at a time:
    one comparison of the whole volume allocated a CT-sized mask (79 MB, 0.2 s of page faults on the
    viewer's cores at each correction), and going slice by slice along a non-contiguous axis read the
    whole volume once per slice."""
    if new.ndim == 2:
        return np.array([bool((new != old).any())])
    changed = np.zeros(new.shape[axis], bool)
    others = tuple(d for d in range(3) if d != axis)
    for start in range(0, new.shape[0], DIFF_ROWS):
        block = new[start:start + DIFF_ROWS] != old[start:start + DIFF_ROWS]
        if axis == 0:
            changed[start:start + len(block)] = block.reshape(len(block), -1).any(1)
        else:
            changed |= block.any(axis=others)
    return changed


def _labeled_set(labeled) -> set[int]:
    try:
        return {int(i) for i in labeled}
    except (TypeError, ValueError):
        raise InputError("The labeled slices are not a list of whole numbers.") from None
