"""Readers and writers for the image and label formats the field uses.

Arrays are returned in *display order*: for a NIfTI volume that is (z, y, x) in the LPS
convention (slices inferior->superior, rows anterior->posterior, columns patient right->left),
which is the radiological view ITK-SNAP and 3D Slicer show. The original voxel grid and affine
are kept in :class:`SourceInfo` so that exported masks land on the scan's exact grid.

Every problem with the user's input is raised as :class:`InputError` with one sentence.
"""

from __future__ import annotations

import gzip
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import CLASSES_KEY, NIFTI_COMMENT_CODE, default_class, from_text, to_text
from .errors import InputError
from .files import atomic_write, check_output_file

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
HDF5_SUFFIXES = (".h5", ".hdf5")
READ_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + PHOTO_SUFFIXES + HDF5_SUFFIXES
FLOAT_WRITE_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES
LABEL_WRITE_SUFFIXES = FLOAT_WRITE_SUFFIXES + (".png",)  # PNG: 2D label maps only

# Names that mark a file (or its folder) as a label map rather than a scan.
_LABEL_WORDS = {"label", "labels", "mask", "masks", "seg", "segmentation", "gt", "annotation",
                "annotations", "manual", "labelstr", "labelsts"}
_LPS = (("L", "R"), ("P", "A"), ("S", "I"))


@dataclass
class SourceInfo:
    """Where an array came from and how to put it back on the original voxel grid."""

    path: str
    format: str  # "nifti" | "tiff" | "photo" | "hdf5"
    spacing: tuple[float, ...]  # per display axis (spatial axes only)
    affine: np.ndarray | None = None  # NIfTI voxel -> world (RAS) of the file
    file_shape: tuple[int, ...] | None = None  # array shape as stored in the file
    # For NIfTI: axis permutation and flips taking the file's voxel order to display order.
    to_display: list[tuple[int, bool]] | None = None
    header: dict = field(default_factory=dict)

    def to_metadata(self) -> dict:
        """A plain, picklable dict for napari layer metadata."""
        return {
            "path": self.path,
            "format": self.format,
            "spacing": list(self.spacing),
            "affine": None if self.affine is None else np.asarray(self.affine).tolist(),
            "file_shape": None if self.file_shape is None else list(self.file_shape),
            "to_display": None if self.to_display is None else [list(t) for t in self.to_display],
            "header": dict(self.header),
        }

    def axis_names(self) -> tuple[str, str, str] | None:
        """Anatomical names of the display axes' slices, where the file says how it lies in the body."""
        if self.format == "nifti" and self.to_display is not None and len(self.to_display) == 3:
            return ("axial", "coronal", "sagittal")  # display axes are S, P, L (see _nifti_to_display)
        return None

    @classmethod
    def from_metadata(cls, meta: dict | None) -> SourceInfo | None:
        if not meta or "format" not in meta:
            return None
        return cls(
            path=meta.get("path", ""),
            format=meta["format"],
            spacing=tuple(meta.get("spacing") or ()),
            affine=None if meta.get("affine") is None else np.asarray(meta["affine"], float),
            file_shape=None if meta.get("file_shape") is None else tuple(meta["file_shape"]),
            to_display=None if meta.get("to_display") is None
            else [(int(a), bool(f)) for a, f in meta["to_display"]],
            header=dict(meta.get("header") or {}),
        )


@dataclass
class LoadedImage:
    """An array in display order plus where it came from."""

    data: np.ndarray
    source: SourceInfo
    rgb: bool = False
    is_label: bool = False

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.data.shape[:-1] if self.rgb else self.data.shape


# --------------------------------------------------------------------------------------------
# helpers

def suffix_of(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for s in READ_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


def stem_of(path: str | os.PathLike) -> str:
    name = Path(path).name
    s = suffix_of(path)
    return name[: len(name) - len(s)] if name.lower().endswith(s) else Path(name).stem


def looks_like_label_file(path: str | os.PathLike) -> bool:
    """True when the file name or its folder says it holds a label map."""
    p = Path(path)
    words = {w for w in _split_words(stem_of(p))}
    return bool(words & _LABEL_WORDS) or p.parent.name.lower() in _LABEL_WORDS \
        or stem_of(p).lower().endswith(("_1stho", "_2ndho"))


def _split_words(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text.lower():
        if ch.isalnum():
            cur += ch
        else:
            if cur:
                out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"File not found: {path}.")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file.")


def _unsupported(path: Path, allowed=READ_SUFFIXES) -> InputError:
    return InputError(
        f"Unsupported file type '{suffix_of(path) or path.name}' for {path.name}: "
        f"use one of {', '.join(allowed)}."
    )


def _corrupt(path: Path, err: Exception) -> InputError:
    return InputError(f"Could not read {path.name}: the file is corrupt or truncated ({type(err).__name__}).")


def available_memory() -> int:
    """Bytes of memory the process can still take without swapping."""
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def not_enough_memory(what: str, needed: float | None = None) -> InputError:
    free = available_memory()
    need = f" (it needs about {format_bytes(needed)}, {format_bytes(free)} are free)" if needed else \
        f" ({format_bytes(free)} are free)"
    return InputError(f"Not enough memory to {what}{need}: close other programs, or use a machine with more memory.")


def _check_allocation(path: Path, shape, dtype) -> int:
    """Refuse, before reading, an array the header says would not fit in memory (or has no pixels)."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InputError(f"Could not read {path.name}: its header declares a negative size {shape}; the file is corrupt.")
    if any(s == 0 for s in shape):
        raise InputError(f"{path.name} holds no pixels (shape {shape}): the file is empty or corrupt.")
    nbytes = int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize)
    if nbytes > available_memory():
        raise InputError(f"{path.name} declares {'x'.join(map(str, shape))} voxels of {np.dtype(dtype)} "
                         f"({format_bytes(nbytes)}), more than the {format_bytes(available_memory())} of memory "
                         "free: the header is corrupt, or the image needs a machine with more memory.")
    return nbytes


# --------------------------------------------------------------------------------------------
# reading

def read_image(path: str | os.PathLike, *, as_labels: bool | None = None) -> LoadedImage:
    """Read an image or label file into display order.

    ``as_labels=None`` decides from the file name; ``True`` validates the array as a label map.
    Whatever goes wrong becomes an :class:`InputError` in one sentence: the readers of these
    formats raise dozens of exception types on damaged files, and none of them is the user's to see.
    """
    path = Path(path)
    _check_exists(path)
    try:
        loaded = _read_any(path, as_labels)
    except InputError:
        raise
    except MemoryError:
        raise not_enough_memory(f"read {path.name}") from None
    except Exception as err:  # noqa: BLE001 - a damaged file, whatever the reader raised
        raise _corrupt(path, err) from None

    if 0 in loaded.data.shape:
        raise InputError(f"{path.name} holds no pixels (shape {tuple(loaded.data.shape)}): the file is empty or corrupt.")
    if as_labels is None:
        # a file that carries class names (written by us) is a label map whatever its name
        as_labels = (looks_like_label_file(path) or bool(loaded.source.header.get("classes"))) and not loaded.rgb
    if as_labels:
        if loaded.rgb:
            raise InputError(f"{path.name} is an RGB image and cannot be used as a label map.")
        loaded.data = validate_labels(loaded.data, name=path.name)
        loaded.is_label = True
    elif not (np.issubdtype(loaded.data.dtype, np.number) or loaded.data.dtype == bool):
        raise InputError(f"{path.name} holds {loaded.data.dtype} values, not numbers: it is not an image.")
    return loaded


def _read_any(path: Path, as_labels: bool | None) -> LoadedImage:
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in PHOTO_SUFFIXES:
        return _read_photo(path, as_labels)
    if suffix in HDF5_SUFFIXES:
        image, label = read_h5(path)
        key_label = as_labels if as_labels is not None else False
        arr = label if key_label else image
        if arr is None:
            raise InputError(f"{path.name} has no '{'label' if key_label else 'image'}' dataset.")
        return LoadedImage(arr, SourceInfo(str(path), "hdf5", (1.0,) * arr.ndim))
    raise _unsupported(path)


def read_labels(path: str | os.PathLike) -> LoadedImage:
    return read_image(path, as_labels=True)


def _check_dims(path: Path, data: np.ndarray, rgb: bool) -> None:
    spatial = data.ndim - (1 if rgb else 0)
    if spatial > 3:
        raise InputError(
            f"{path.name} has {data.ndim} dimensions {tuple(data.shape)}; only 2D and 3D images "
            "(optionally RGB) are supported: split 4D series into single volumes first."
        )
    if spatial < 2:
        raise InputError(f"{path.name} has shape {tuple(data.shape)}; an image needs at least 2 dimensions.")


def _gzip_size(path: Path) -> int:
    """Decompress a .gz file to the end and return its size: this checks the CRC, which nibabel skips."""
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            size += len(chunk)
    return size


def _read_nifti(path: Path) -> LoadedImage:
    import nibabel as nib

    with _quiet("nibabel"):  # it logs each header field it repairs; a damaged header is our one sentence
        img = nib.load(str(path))
        return _nifti_display(path, img)


def _nifti_display(path: Path, img) -> LoadedImage:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # trailing singleton axes (x, y, z, 1)
        shape = shape[:-1]
    if len(shape) > 3 or len(shape) < 2:
        raise InputError(f"{path.name} has {len(shape)} dimensions {shape}; only 2D and 3D images are "
                         "supported: split 4D series into single volumes first.")
    nbytes = _check_allocation(path, shape, img.get_data_dtype())
    stored = _gzip_size(path) if suffix_of(path) == ".nii.gz" else path.stat().st_size
    offset = int(img.header.get("vox_offset", 0) or 0)
    if stored < offset + nbytes:
        raise InputError(f"Could not read {path.name}: the file is corrupt or truncated (its header declares "
                         f"{format_bytes(offset + nbytes)}, it holds {format_bytes(stored)}).")
    affine = np.asarray(img.affine, dtype=float)
    zooms = tuple(float(z) for z in img.header.get_zooms()[: len(shape)])
    header_note = ""
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        # a degenerate geometry (pixdim 0, NaN): show the voxels as ITK-SNAP does, on a unit grid, and say so
        affine, zooms = np.eye(4), (1.0,) * len(shape)
        header_note = "invalid orientation in the file: unit voxels and no rotation were assumed"
    data = np.asanyarray(img.dataobj).reshape(shape)
    file_shape = tuple(int(s) for s in data.shape)
    header = {"descrip": _decode(img.header.get("descrip")), "qform_code": int(img.header["qform_code"]),
              "sform_code": int(img.header["sform_code"]), "datatype": str(img.get_data_dtype())}
    if header_note:
        header["warning"] = header_note
    classes = next((t for t in (from_text(e.get_content()) for e in img.header.extensions
                                if e.get_code() == NIFTI_COMMENT_CODE) if t), None)
    if classes:
        header["classes"] = classes

    if data.ndim == 3:
        to_display = _nifti_to_display(affine)
        display = _apply_to_display(data, to_display)
        spacing = tuple(zooms[a] for a, _ in to_display)
    else:  # 2D: (x, y) -> rows y, columns x
        to_display = [(1, False), (0, False)]
        display = data.T
        spacing = (zooms[1], zooms[0])
    src = SourceInfo(str(path), "nifti", spacing, affine, file_shape, to_display, header)
    # a view in display order, not a copy: a 315 MB CT stays 315 MB (slices are read strided)
    return LoadedImage(display, src)


def _decode(value) -> str:
    try:
        return bytes(np.asarray(value).item()).decode("latin-1").strip("\x00 ")
    except Exception:  # header field absent or odd: not worth failing a read over
        return ""


def _nifti_to_display(affine: np.ndarray) -> list[tuple[int, bool]]:
    """For each display axis (z, y, x in LPS), the file axis it comes from and whether it is flipped."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)  # file axis i -> (world axis, direction) in RAS
    lps_sign = (-1, -1, 1)  # L = -R, P = -A, S = +S
    by_world = {}
    for file_axis, (world_axis, direction) in enumerate(ornt):
        world_axis = int(world_axis)
        flip = int(direction) != lps_sign[world_axis]
        by_world[world_axis] = (file_axis, flip)
    # display order z (S), y (P), x (L)
    return [by_world[2], by_world[1], by_world[0]]


def _apply_to_display(data: np.ndarray, to_display: list[tuple[int, bool]]) -> np.ndarray:
    out = np.transpose(data, [a for a, _ in to_display])
    for i, (_, flip) in enumerate(to_display):
        if flip:
            out = np.flip(out, axis=i)
    return out


def _undo_display(data: np.ndarray, to_display: list[tuple[int, bool]]) -> np.ndarray:
    out = data
    for i, (_, flip) in enumerate(to_display):
        if flip:
            out = np.flip(out, axis=i)
    inverse = np.argsort([a for a, _ in to_display])
    return np.transpose(out, inverse)


def _read_tiff(path: Path) -> LoadedImage:
    import tifffile

    with _quiet("tifffile"), tifffile.TiffFile(str(path)) as tif:
        _check_tiff_pages(path, tif)
        if not tif.series:
            raise InputError(f"{path.name} holds no image: the file is empty or corrupt.")
        series = tif.series[0]
        _check_allocation(path, series.shape, series.dtype)
        data = series.asarray()
        spacing = _tiff_spacing(tif)
        classes = from_text(tif.pages[0].description) if tif.pages else None
    data = np.squeeze(data) if data.ndim > 3 else data
    rgb = looks_rgb(data.shape, data.dtype)
    if rgb and data.shape[-1] == 4:
        data = data[..., :3]
    _check_dims(path, data, rgb)
    ndim = data.ndim - (1 if rgb else 0)
    spacing = spacing[-ndim:] if len(spacing) >= ndim else (1.0,) * ndim
    return LoadedImage(data, SourceInfo(str(path), "tiff", tuple(spacing),
                                        header={"classes": classes} if classes else {}), rgb=rgb)


def looks_rgb(shape, dtype) -> bool:
    """8-bit colour (RGB or RGBA) in the last axis: how a TIFF tells a photograph from a small stack."""
    return len(shape) >= 3 and shape[-1] in (3, 4) and np.dtype(dtype) == np.uint8


def _check_tiff_pages(path: Path, tif) -> None:
    """Refuse damage the TIFF reader would turn into a hang or a huge image of garbage."""
    size = path.stat().st_size
    most = size // 16 + 1  # a damaged page chain can loop forever; a file holds no more pages than its bytes allow
    for n, page in enumerate(tif.pages, 1):
        if n > most:
            raise InputError(f"Could not read {path.name}: the file is corrupt (its list of pages loops).")
        offsets, counts = getattr(page, "dataoffsets", None), getattr(page, "databytecounts", None)
        chunked = getattr(page, "chunked", None)
        if offsets is None or chunked is None:
            continue
        # every strip or tile the page's size calls for must be listed, and lie inside the file
        if len(offsets) != int(np.prod(chunked)) or any(o + c > size for o, c in zip(offsets, counts) if c):
            raise InputError(f"Could not read {path.name}: the file is corrupt or truncated (page {n}'s image data "
                             "does not match its declared size).")


@contextmanager
def _quiet(logger: str):
    """A damaged file is reported once, in our sentence, not also as the reader's log lines and warnings."""
    log = logging.getLogger(logger)
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(old)


def _tiff_spacing(tif) -> tuple[float, ...]:
    """Pixel spacing from ImageJ metadata or resolution tags; 1.0 where unknown."""
    try:
        page = tif.pages[0]
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        sx = xres.value[1] / xres.value[0] if xres and xres.value[0] else 1.0
        sy = yres.value[1] / yres.value[0] if yres and yres.value[0] else 1.0
        sz = float((tif.imagej_metadata or {}).get("spacing", 1.0))
        # resolution 1/1 is the "unknown" default
        return (sz, sy, sx)
    except Exception:  # malformed tags: fall back to unit spacing
        return (1.0, 1.0, 1.0)


def _read_photo(path: Path, as_labels: bool | None = None) -> LoadedImage:
    import imageio.v3 as iio
    from PIL import Image

    with Image.open(path) as im:  # the header alone: refuse what would not fit before decoding it
        _check_allocation(path, (im.height, im.width, len(im.getbands())), np.uint16 if im.mode.startswith("I")
                          else np.uint8)
        classes = from_text(im.info.get(CLASSES_KEY))
        if im.mode == "P" and (classes or as_labels or (as_labels is None and looks_like_label_file(path))):
            # a label map with a palette (ours, or e.g. PASCAL VOC's): the pixel values are the classes
            return LoadedImage(np.asarray(im), SourceInfo(str(path), "photo", (1.0, 1.0),
                                                          header={"classes": classes} if classes else {}))
    data = np.asarray(iio.imread(str(path)))
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    rgb = data.ndim == 3 and data.shape[-1] == 3
    if rgb and np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 0], data[..., 2]):
        data, rgb = data[..., 0], False  # grey stored as RGB
    if data.ndim != 2 and not rgb:
        raise InputError(f"{path.name} has shape {data.shape}; a PNG/JPEG must be a 2D grey or RGB image.")
    return LoadedImage(data, SourceInfo(str(path), "photo", (1.0, 1.0)), rgb=rgb)


def read_h5(path: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Read an SSL4MIS-style HDF5 file: ``image`` (float in [0, 1]) and ``label`` (uint8)."""
    path = Path(path)
    _check_exists(path)
    try:
        image, label = _read_h5_datasets(path)
    except InputError:
        raise
    except MemoryError:
        raise not_enough_memory(f"read {path.name}") from None
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError... on damage
        raise _corrupt(path, err) from None
    if image is None and label is None:
        raise InputError(f"{path.name} has neither an 'image' nor a 'label' dataset (SSL4MIS layout).")
    for arr in (image, label):
        if arr is not None:
            _check_dims(path, arr, rgb=False)
    if image is not None and label is not None and image.shape != label.shape:
        raise InputError(f"In {path.name} the image {image.shape} and label {label.shape} shapes differ.")
    if label is not None:
        label = validate_labels(label, name=path.name)
    return image, label


def _read_h5_datasets(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    import h5py

    out = []
    with h5py.File(str(path), "r") as f:
        for key in ("image", "label"):
            ds = f.get(key)
            if ds is None:
                out.append(None)
                continue
            if not isinstance(ds, h5py.Dataset) or not ds.shape:
                raise InputError(f"In {path.name}, '{key}' is not an array.")
            _check_allocation(path, ds.shape, ds.dtype)
            arr = np.asarray(ds[()])
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise InputError(f"In {path.name}, '{key}' holds {arr.dtype} values, not numbers.")
            out.append(arr)
    return out[0], out[1]


@dataclass
class SSL4MISSplit:
    """An SSL4MIS-layout data folder: ``data/`` with h5 files and the split lists."""

    root: Path
    train_slices: list[str]
    val: list[str]
    test: list[str]

    def slice_path(self, name: str) -> Path:
        return self.root / "data" / "slices" / f"{name}.h5"

    def volume_path(self, name: str) -> Path:
        return self.root / "data" / f"{name}.h5"


def read_ssl4mis_split(root: str | os.PathLike) -> SSL4MISSplit:
    root = Path(root)
    if not (root / "data").is_dir():
        raise InputError(f"{root} is not an SSL4MIS data folder: it has no data/ subfolder.")

    def read_list(name: str, required: bool) -> list[str]:
        p = root / name
        if not p.exists():
            if required:
                raise InputError(f"{root} is missing {name}.")
            return []
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]

    return SSL4MISSplit(root, read_list("train_slices.list", True), read_list("val.list", False),
                        read_list("test.list", True))


def validate_labels(data: np.ndarray, *, name: str = "the label map") -> np.ndarray:
    """Return a label map as the smallest unsigned integer type; reject what is not one."""
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"{name} has data type {data.dtype}; a label map must hold whole numbers.")
    if data.size == 0:
        raise InputError(f"{name} is empty.")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise InputError(f"{name} contains NaN or infinite values; a label map must hold whole numbers.")
        if not np.all(data == np.round(data)):
            raise InputError(f"{name} holds non-integer values; a label map must hold whole numbers "
                             "(is it an image rather than labels?).")
    lo, hi = data.min(), data.max()
    if lo < 0:
        raise InputError(f"{name} contains negative labels (minimum {lo}); labels must be 0 or more.")
    return data.astype(smallest_label_dtype(int(hi)), copy=False)


def smallest_label_dtype(max_label: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_label <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise InputError(f"Label value {max_label} is too large.")


def check_same_shape(image: LoadedImage, labels: LoadedImage) -> None:
    if tuple(image.spatial_shape) != tuple(labels.data.shape):
        raise InputError(
            f"The image {Path(image.source.path).name} has shape {tuple(image.spatial_shape)} but the "
            f"label map {Path(labels.source.path).name} has shape {tuple(labels.data.shape)}; they must match."
        )


# --------------------------------------------------------------------------------------------
# writing

def write_labels(path: str | os.PathLike, labels: np.ndarray, source: SourceInfo | None = None,
                 *, spacing: tuple[float, ...] | None = None, overwrite: bool = True,
                 classes: dict | None = None) -> Path:
    """Write a label map (display order) to NIfTI, TIFF or (2D) PNG, atomically.

    With a NIfTI ``source`` the mask goes back to the file's voxel grid with its affine, so it
    overlays the scan in other viewers. The dtype is the smallest unsigned type that holds it.
    ``classes`` (names and colours, see core.classes) go into the file's header.
    """
    path = _check_output(path, source, "labels")
    if labels.ndim not in (2, 3):
        raise InputError(f"Labels of shape {labels.shape} cannot be exported: 2D or 3D only.")
    if suffix_of(path) == ".png" and labels.ndim != 2:
        raise InputError(f"A PNG holds one 2D image; export labels of shape {labels.shape} as NIfTI or TIFF.")
    labels = validate_labels(labels, name="The labels to export")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists.")
    if suffix_of(path) in NIFTI_SUFFIXES:
        writer = lambda tmp: _write_nifti(tmp, labels, source, spacing, classes)  # noqa: E731
    elif suffix_of(path) == ".png":
        writer = lambda tmp: _write_png(tmp, labels, classes)  # noqa: E731
    else:
        writer = lambda tmp: _write_tiff(tmp, labels, classes)  # noqa: E731
    return atomic_write(path, writer, "labels", suffix=suffix_of(path))


def check_export_path(path: str | os.PathLike, inputs, what: str, suffixes=LABEL_WRITE_SUFFIXES) -> Path:
    """An export path of a format we write, in a writable folder, and none of ``inputs``."""
    path = Path(path)
    if suffix_of(path) not in suffixes:
        raise _unsupported(path, suffixes)
    return check_output_file(path, inputs, what)


def _check_output(path: str | os.PathLike, source: SourceInfo | None, what: str,
                  suffixes=LABEL_WRITE_SUFFIXES) -> Path:
    """The scan the data were drawn on is an input of every export."""
    return check_export_path(path, [source.path] if source is not None and source.path else [], what, suffixes)


def _write_png(tmp: str, labels: np.ndarray, classes: dict | None = None) -> None:
    """Class values as pixel values; up to 255 classes as a palette PNG, so any image viewer shows the
    classes' colours while a program reads the values; more as 16-bit grey. Classes in a text chunk."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if classes:
        info.add_text(CLASSES_KEY, to_text(classes))
    if labels.max(initial=0) <= 255:
        im = Image.fromarray(labels.astype(np.uint8), mode="P")
        palette = [0, 0, 0] * 256
        for value in range(1, 256):
            colour = (classes or {}).get(value, {}).get("colour") or default_class(value)["colour"]
            palette[3 * value:3 * value + 3] = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        im.putpalette(palette)
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    im.save(tmp, format="PNG", pnginfo=info)


def _write_tiff(tmp: str, labels: np.ndarray, classes: dict | None = None) -> None:
    import tifffile

    tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack", metadata=None,
                     description=to_text(classes) if classes else None)


def _to_file_grid(data: np.ndarray, source: SourceInfo | None, spacing=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Display-order ``data`` as NIfTI voxels plus its affine; True when it is the scan's own grid.

    Without a NIfTI scan to align to, display (z, y, x) is stored as LPS voxels with ``spacing``.
    """
    if source is not None and source.format == "nifti" and source.to_display is not None:
        grid = _undo_display(data, source.to_display) if data.ndim == 3 else data.T
        if source.file_shape is not None and tuple(grid.shape) != tuple(source.file_shape):
            raise InputError(f"The data have shape {data.shape} but the scan {Path(source.path).name} "
                             f"has {tuple(source.file_shape)} voxels; they must match.")
        return np.ascontiguousarray(grid), np.asarray(source.affine, float), True
    sp = tuple(spacing) if spacing else (source.spacing if source is not None and source.spacing else None)
    sp = sp or (1.0,) * data.ndim
    if data.ndim == 3:
        return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), np.diag([-sp[2], -sp[1], sp[0], 1.0]), False
    return np.ascontiguousarray(data.T), np.diag([-sp[1], -sp[0], 1.0, 1.0]), False


def _write_nifti(tmp: str, labels: np.ndarray, source: SourceInfo | None, spacing, classes=None) -> None:
    import nibabel as nib

    grid, affine, on_scan = _to_file_grid(labels, source, spacing)
    img = nib.Nifti1Image(grid, affine)
    codes = (source.header.get("qform_code", 1), source.header.get("sform_code", 1)) if on_scan else (1, 1)
    img.set_qform(affine, code=max(1, int(codes[0])))
    img.set_sform(affine, code=max(1, int(codes[1])))
    img.set_data_dtype(labels.dtype)
    img.header["descrip"] = b"napari-semiseg labels"
    if classes:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_COMMENT_CODE, to_text(classes).encode()))
    nib.save(img, tmp)


def write_float_map(path: str | os.PathLike, data: np.ndarray, source: SourceInfo | None = None) -> Path:
    """Write a float32 map (e.g. uncertainty) on the scan's grid: NIfTI with its affine, or TIFF."""
    path = _check_output(path, source, "uncertainty map", FLOAT_WRITE_SUFFIXES)
    data = np.asarray(data, np.float32)
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        grid, affine, _ = _to_file_grid(data, source)
        return atomic_write(path, lambda tmp: nib.save(nib.Nifti1Image(grid, affine), tmp), "uncertainty map", suffix)
    import tifffile

    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data), "uncertainty map", suffix)
