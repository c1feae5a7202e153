"""Turning core arrays into napari layer-data tuples, and back."""

from __future__ import annotations

import numpy as np

from ..core.classes import CLASSES_KEY
from ..core.io import LoadedImage, SourceInfo, stem_of

SOURCE_KEY = "semiseg_source"


def layer_data(loaded: LoadedImage, name: str | None = None) -> tuple:
    """A napari LayerDataTuple for a loaded image or label map."""
    meta = {SOURCE_KEY: loaded.source.to_metadata()}
    name = name or stem_of(loaded.source.path)
    ndim = len(loaded.spatial_shape)
    scale = tuple(loaded.source.spacing) if len(loaded.source.spacing) == ndim else (1.0,) * ndim
    if loaded.is_label:  # with the names and colours written in the file, if any
        return (loaded.data, _labels_kwargs(name, scale, meta, loaded.source.header.get("classes")), "labels")
    kwargs = {"name": name, "scale": scale, "metadata": meta, "rgb": loaded.rgb}
    if not loaded.rgb:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = _robust_limits(loaded.data)
    return (loaded.data, kwargs, "image")


def _robust_limits(data: np.ndarray) -> tuple[float, float]:
    """Percentile contrast so a few bright voxels do not wash the scan out."""
    sample = data[:: max(1, data.shape[0] // 16)] if data.ndim == 3 else data
    lo, hi = np.percentile(sample, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(np.min(data)), float(np.max(data))
        hi = hi if hi > lo else lo + 1.0
    return float(lo), float(hi)


def empty_labels_for(loaded: LoadedImage, name: str, classes: dict | None = None) -> tuple:
    """An empty Labels layer on the image's grid, carrying its source so exports align, and the
    names and colours of its classes."""
    data = np.zeros(loaded.spatial_shape, dtype=np.uint8)
    meta = {SOURCE_KEY: loaded.source.to_metadata()}
    ndim = len(loaded.spatial_shape)
    scale = tuple(loaded.source.spacing) if len(loaded.source.spacing) == ndim else (1.0,) * ndim
    return (data, _labels_kwargs(name, scale, meta, classes), "labels")


def _labels_kwargs(name: str, scale, meta: dict, classes: dict | None) -> dict:
    kwargs = {"name": name, "scale": scale, "metadata": meta}
    if classes:
        kwargs["metadata"] = {**meta, CLASSES_KEY: classes}
        kwargs["colormap"] = label_colormap(classes)
    return kwargs


def label_colormap(table: dict):
    """The classes' colours for a Labels layer; values without an entry are grey, never invisible."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {None: "#a0a0a0", 0: "transparent"}
    colours.update({int(k): v["colour"] for k, v in table.items()})
    return DirectLabelColormap(color_dict=colours)


def source_from_meta(meta: dict | None) -> SourceInfo | None:
    return SourceInfo.from_metadata((meta or {}).get(SOURCE_KEY))
