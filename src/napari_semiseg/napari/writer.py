"""npe2 writers: a Labels layer to NIfTI (on the scan's grid and affine), TIFF or (2D) PNG."""

from __future__ import annotations

import numpy as np

from ..core.classes import CLASSES_KEY
from ..core.io import write_labels
from .layers import source_from_meta


def _write(path: str, data, meta: dict) -> list[str]:
    source = source_from_meta(meta.get("metadata"))
    scale = meta.get("scale")
    spacing = tuple(float(s) for s in scale) if scale is not None else None
    classes = (meta.get("metadata") or {}).get(CLASSES_KEY)
    written = write_labels(path, np.asarray(data), source, spacing=spacing, classes=classes)
    return [str(written)]


def write_labels_nifti(path: str, data, meta: dict) -> list[str]:
    return _write(path, data, meta)


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    return _write(path, data, meta)


def write_labels_png(path: str, data, meta: dict) -> list[str]:
    return _write(path, data, meta)
