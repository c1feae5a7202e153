"""npe2 reader: NIfTI, TIFF, PNG/JPEG and SSL4MIS HDF5 files as Image / Labels layers."""

from __future__ import annotations

from pathlib import Path

from ..core.io import READ_SUFFIXES, HDF5_SUFFIXES, LoadedImage, SourceInfo, read_h5, read_image, stem_of, suffix_of
from .layers import layer_data


def get_reader(path):
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(suffix_of(p) not in READ_SUFFIXES for p in paths):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    """Read each path; a file whose name marks it as a label map becomes a Labels layer."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        if suffix_of(p) in HDF5_SUFFIXES:
            layers.extend(_read_h5_layers(Path(p)))
        else:
            loaded = read_image(p)
            if loaded.source.header.get("warning"):
                from napari.utils.notifications import show_warning

                show_warning(f"{Path(p).name}: {loaded.source.header['warning']}.")
            layers.append(layer_data(loaded))
    return layers


def _read_h5_layers(path: Path) -> list[tuple]:
    image, label = read_h5(path)
    out = []
    stem = stem_of(path)
    for arr, is_label, name in ((image, False, stem), (label, True, f"{stem}_label")):
        if arr is not None:
            src = SourceInfo(str(path), "hdf5", (1.0,) * arr.ndim)
            out.append(layer_data(LoadedImage(arr, src, is_label=is_label), name=name))
    return out
