"""A data set streamed from disk, for training on more volumes than fit in memory.

Up front only headers are read (shapes, channels) and, once, each label file to learn the classes;
no image is loaded whole. DataLoader worker processes draw slices at random (each slice of the
rank's shard equally likely), open the few files they need lazily (NIfTI through nibabel's
proxy, HDF5 and zarr by chunk, TIFF through its zarr view), read the slices a patch needs and
crop it exactly as the in-memory sampler does. Memory per rank is a few open files per worker and
the prefetched batches, whatever the size of the data set.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .io import HDF5_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES, looks_rgb, stem_of, suffix_of, validate_labels
from .methods.base import Batch
from .sampling import augment_batch, centre_patch, labeled_patch, own_shard, unlabeled_patch
from .volume import Normalisation, Volume, WorkingGeometry

ZARR_SUFFIXES = (".zarr",)
STREAM_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + HDF5_SUFFIXES + ZARR_SUFFIXES
OPEN_FILES_PER_WORKER = 2
STREAMED_SLICE_CACHE = 8 << 20  # a streamed file is read once per patch: keep little of it


# --------------------------------------------------------------------------------------------- lazy arrays

class LazyImage:
    """An image on disk in display order; indexing reads only what it names (an int or ``:`` per axis)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        for i in index:
            if not (isinstance(i, (int, np.integer)) or i == slice(None)):
                raise IndexError("a streamed image is read a whole slice at a time")
        index = tuple(int(i) % n if isinstance(i, (int, np.integer)) else i for i, n in zip(index, self.shape))
        return self._read(index)

    def _read(self, index: tuple) -> np.ndarray:
        raise NotImplementedError


class _ArrayOnDisk(LazyImage):
    """HDF5 datasets and zarr arrays index like numpy already."""

    def __init__(self, array, keep_open=None):
        self.array, self._keep_open = array, keep_open
        self.shape, self.dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)

    def _read(self, index):
        return np.asarray(self.array[index])


class _NiftiOnDisk(LazyImage):
    """nibabel's array proxy in the file's axis order, shown in display order (z, y, x in LPS) as
    ``io.read_image`` shows it: a display index is turned into a file index, then the slab read is
    transposed and flipped."""

    def __init__(self, path: Path):
        import nibabel as nib

        from .io import _nifti_to_display

        img = nib.load(str(path))
        self.proxy = img.dataobj
        file_shape = tuple(int(s) for s in img.shape)
        self.extra = len(file_shape)
        while len(file_shape) > 3 and file_shape[-1] == 1:
            file_shape = file_shape[:-1]
        if len(file_shape) not in (2, 3):
            raise InputError(f"{path.name} has {len(file_shape)} dimensions; only 2D and 3D images stream.")
        affine = np.asarray(img.affine, dtype=float)
        if len(file_shape) == 3:
            if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
                affine = np.eye(4)  # as read_image does: unit voxels, no rotation
            self.to_display = _nifti_to_display(affine)
        else:
            self.to_display = [(1, False), (0, False)]
        self.shape = tuple(file_shape[a] for a, _ in self.to_display)
        self.dtype = np.dtype(img.get_data_dtype())

    def _read(self, index):
        file_index = [slice(None)] * len(self.to_display) + [0] * (self.extra - len(self.to_display))
        for d, (axis, flip) in enumerate(self.to_display):
            if not isinstance(index[d], slice):
                file_index[axis] = self.shape[d] - 1 - index[d] if flip else index[d]
        data = np.asarray(self.proxy[tuple(file_index)])
        kept = [d for d in range(len(index)) if isinstance(index[d], slice)]
        in_file_order = sorted(self.to_display[d][0] for d in kept)
        data = np.transpose(data, [in_file_order.index(self.to_display[d][0]) for d in kept])
        flips = tuple(k for k, d in enumerate(kept) if self.to_display[d][1])
        return np.flip(data, flips) if flips else data


def open_lazy(path: str | os.PathLike, *, label: bool = False) -> LazyImage:
    """An image (or, with ``label``, the label map of an HDF5 file holding both) without reading it."""
    path = Path(path)
    suffix = suffix_of(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            return _NiftiOnDisk(path)
        if suffix in HDF5_SUFFIXES:
            import h5py

            f = h5py.File(str(path), "r")
            key = "label" if label else "image"
            if key not in f:
                raise InputError(f"{path.name} has no '{key}' dataset (SSL4MIS layout).")
            return _ArrayOnDisk(f[key], keep_open=f)
        if suffix in TIFF_SUFFIXES:
            import tifffile
            import zarr

            store = tifffile.imread(str(path), aszarr=True)
            arr = zarr.open(store, mode="r")
            return _ArrayOnDisk(arr if hasattr(arr, "shape") else arr["0"], keep_open=store)
        if suffix in ZARR_SUFFIXES:
            import zarr

            arr = zarr.open(str(path), mode="r")
            if not hasattr(arr, "shape"):
                arr = arr["label" if label else "image"]
            return _ArrayOnDisk(arr)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - each reader raises its own errors on damage
        raise InputError(f"Could not open {path.name} for streaming ({type(err).__name__}): the file is damaged "
                         "or not an image.") from None
    raise InputError(f"{path.name}: streamed data sets hold NIfTI, TIFF, HDF5 or zarr files.")


# --------------------------------------------------------------------------------------------- the index

@dataclass(frozen=True)
class StreamedFile:
    image: str
    labels: str | None  # None: unlabeled; an HDF5 file's own 'label' dataset when it names the same file
    shape: tuple[int, ...]  # display order, channels last when ``channels``
    channels: bool = False

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[:-1] if self.channels else self.shape

    def n_slices(self, axis: int) -> int:
        return self.spatial[axis] if len(self.spatial) == 3 else 1

    def slice_shape(self, axis: int) -> tuple[int, int]:
        s = list(self.spatial)
        if len(s) == 3:
            s.pop(axis)
        return (s[0], s[1])

    def open(self, axis: int, normalisation: Normalisation, bounds=None) -> Volume:
        image = open_lazy(self.image)
        labels = open_lazy(self.labels, label=self.labels == self.image) if self.labels else None
        n = self.n_slices(axis)
        return Volume(image, labels, set(range(n)) if labels is not None else set(), axis=axis,
                      channels=self.channels, normalisation=normalisation, name=Path(self.image).name,
                      intensity_bounds=bounds, cache_bytes=STREAMED_SLICE_CACHE)


@dataclass
class StreamedDataSet:
    """Files of one data set: the labeled ones (labels of every slice) and the unlabeled ones."""

    files: list[StreamedFile]
    axis: int = 0
    normalisation: Normalisation = field(default_factory=Normalisation)
    top_class: int = 1

    def __post_init__(self):
        if not self.files:
            raise InputError("The data set holds no image.")
        if not any(f.labels for f in self.files):
            raise InputError("The data set holds no label map: at least one image needs its labels.")
        if len({self.n_channels_of(f) for f in self.files}) != 1:
            raise InputError("All images must have the same number of channels.")

    @staticmethod
    def n_channels_of(f: StreamedFile) -> int:
        return f.shape[-1] if f.channels else 1

    @property
    def n_channels(self) -> int:
        return self.n_channels_of(self.files[0])

    @property
    def is_3d(self) -> bool:
        return any(len(f.spatial) == 3 for f in self.files)

    @property
    def labeled(self) -> list[StreamedFile]:
        return [f for f in self.files if f.labels]

    @property
    def unlabeled(self) -> list[StreamedFile]:
        return [f for f in self.files if not f.labels]

    def working_shapes(self, scale: float) -> list[tuple[int, int]]:
        return sorted({WorkingGeometry(f.slice_shape(self.axis), scale).working for f in self.files})


def describe(image: str | os.PathLike, labels: str | os.PathLike | None) -> StreamedFile:
    """A file's entry from its header alone; the label map must have the image's shape."""
    lazy = open_lazy(image)
    shape = lazy.shape
    rgb = looks_rgb(shape, lazy.dtype)
    if rgb and shape[-1] == 4:
        raise InputError(f"{Path(image).name} has an alpha channel: streamed photographs must be RGB.")
    spatial = shape[:-1] if rgb else shape
    if len(spatial) not in (2, 3):
        raise InputError(f"{Path(image).name} has shape {shape}: 2D or 3D images only.")
    if labels is not None:
        lab = open_lazy(labels, label=Path(labels) == Path(image))
        if tuple(lab.shape) != tuple(spatial):
            raise InputError(f"{Path(image).name} {tuple(spatial)} and its labels {tuple(lab.shape)} differ in shape.")
    return StreamedFile(str(image), str(labels) if labels is not None else None, tuple(shape), rgb)


def highest_class(f: StreamedFile) -> int:
    """The largest label value in a file's label map, read (and checked as one) a slice at a time."""
    lab = open_lazy(f.labels, label=f.labels == f.image)
    name = f"The label map {Path(f.labels).name}"
    slices = (lab[i] for i in range(lab.shape[0])) if lab.ndim == 3 else [np.asarray(lab)]
    return max(int(validate_labels(sl, name=name).max()) for sl in slices)


def scan_folder(root: str | os.PathLike, axis: int = 0) -> StreamedDataSet:
    """``images/`` (or MSD's ``imagesTr/``) beside ``labels/`` (``labelsTr/``): an image with a label
    map of the same name is labeled whole, one without is unlabeled (HDF5 files with both datasets
    are labeled by their own ``label``)."""
    root = Path(root)
    img_dir = next((root / d for d in ("images", "imagesTr") if (root / d).is_dir()), None)
    if img_dir is None:
        raise InputError(f"{root} needs an images/ (or imagesTr/) folder, with label maps of the same names in "
                         "labels/ (or labelsTr/); images without one are used as unlabeled.")
    lab_dir = next((root / d for d in ("labels", "labelsTr") if (root / d).is_dir()), None)
    by_stem = {stem_of(q): q for q in lab_dir.iterdir() if streamable(q)} if lab_dir else {}
    pairs = []
    for p in sorted(img_dir.iterdir()):
        if not streamable(p) or p.name.startswith("."):
            continue
        lab = by_stem.get(stem_of(p))
        if lab is None and suffix_of(p) in HDF5_SUFFIXES and _h5_has_label(p):
            lab = p
        pairs.append((p, lab))
    return index_data_set(pairs, axis)


def index_data_set(pairs, axis: int) -> StreamedDataSet:
    """(image, label map or None) pairs as a data set: headers, and the classes from the label maps."""
    data = StreamedDataSet([describe(image, labels) for image, labels in pairs], axis=axis)
    data.top_class = max(highest_class(f) for f in data.labeled)
    return data


def streamable(p: Path) -> bool:
    return suffix_of(p) in STREAM_SUFFIXES


def _h5_has_label(p: Path) -> bool:
    import h5py

    try:
        with h5py.File(str(p), "r") as f:
            return "label" in f
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- sampling

class _PatchStream(torch.utils.data.IterableDataset):
    """Endless random patches from ``files``: a slice drawn uniformly from all their slices."""

    def __init__(self, files: list[StreamedFile], data: StreamedDataSet, labeled: bool, patch: int, context: int,
                 scale: float, foreground_fraction: float, seed: int):
        self.files, self.axis, self.normalisation = files, data.axis, data.normalisation
        self.labeled, self.patch, self.context, self.scale = labeled, patch, context, scale
        self.foreground_fraction, self.seed = foreground_fraction, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        ends = np.cumsum([f.n_slices(self.axis) for f in self.files])
        opened = _OpenFiles(self.axis, self.normalisation)
        while True:
            k = int(rng.integers(ends[-1]))
            fi = int(np.searchsorted(ends, k, side="right"))
            s = k - (int(ends[fi - 1]) if fi else 0)
            try:
                v = opened.get(self.files[fi])
                geom = v.geometry(self.scale)
                if self.labeled:
                    x, y = labeled_patch(v, geom, s, self.patch, self.context, rng, self.foreground_fraction)
                    item = (x, y.to(torch.uint8))
                else:
                    item = unlabeled_patch(v, geom, s, self.patch, self.context, rng)
            except InputError:
                raise
            except Exception as err:  # noqa: BLE001 - a file damaged past its header fails only when read
                raise InputError(f"Could not read slice {s} of {Path(self.files[fi].image).name} "
                                 f"({type(err).__name__}): the file is damaged or truncated.") from None
            yield item


class _OpenFiles:
    """The last few files a worker opened (handles, not data), and every file's intensity bounds
    (two numbers a channel), so that reopening a file does not read its sample slices again."""

    def __init__(self, axis: int, normalisation: Normalisation, keep: int = OPEN_FILES_PER_WORKER):
        self.axis, self.normalisation, self.keep = axis, normalisation, keep
        self.volumes: OrderedDict[str, Volume] = OrderedDict()
        self.bounds: dict[str, np.ndarray] = {}

    def get(self, f: StreamedFile) -> Volume:
        v = self.volumes.get(f.image)
        if v is None:
            v = f.open(self.axis, self.normalisation, self.bounds.get(f.image))
            self.bounds[f.image] = v.intensity_bounds
            self.volumes[f.image] = v
            while len(self.volumes) > self.keep:
                self.volumes.popitem(last=False)
        self.volumes.move_to_end(f.image)
        return v


def worker_message(text: str) -> str:
    """The sentence of an error a DataLoader worker raised, without the traceback it wraps it in."""
    if "Original Traceback" not in text:
        return text
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _leave_sigterm_to_the_trainer(trainer_pid: int, _worker_id: int) -> None:
    """A SIGTERM from anyone but the trainer (torchrun stopping the ranks, a cluster's time limit signalling
    the whole process group) is the trainer's to handle: it saves, then shuts its loaders down. A worker
    ended by it first made the stop a loader error ("DataLoader worker ... killed by signal"). The
    trainer's own SIGTERM still ends the worker, quietly as PyTorch's workers do: its loader sends it to a
    worker that does not stop, and Python's exit sends it to every worker left running, then waits for
    them (a worker ignoring that one hung the trainer's exit)."""
    if not hasattr(signal, "sigwaitinfo"):  # macOS, Windows: no sender to tell apart; PyTorch's handler stays
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # this thread and the one it starts

    def wait_for_the_trainers_sigterm() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != trainer_pid:
            pass
        os._exit(0)  # not a death by signal, which the trainer's loader would report as a failure

    threading.Thread(target=wait_for_the_trainers_sigterm, name="semiseg-sigterm", daemon=True).start()


class StreamingSampler:
    """The trainer's sampler for a streamed data set: the same two-stream batches as
    ``TwoStreamSampler``, read by DataLoader workers from this rank's shard of the files."""

    def __init__(self, data: StreamedDataSet, patch: int, context: int, labeled_batch: int, unlabeled_batch: int,
                 seed: int = 0, augment: bool = True, scale: float = 1.0, foreground_fraction: float = 0.33,
                 shard: tuple[int, int] = (0, 1), workers: int = 1):
        self.data, self.patch, self.context, self.scale = data, patch, context, scale
        self.labeled_batch, self.unlabeled_batch = labeled_batch, unlabeled_batch
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)
        labeled, unlabeled = own_shard(data.labeled, *shard), own_shard(data.unlabeled, *shard)
        self.labeled_files = labeled
        self.n_labeled = sum(f.n_slices(data.axis) for f in labeled)
        self.n_unlabeled = sum(f.n_slices(data.axis) for f in unlabeled)
        def loader(files, with_labels: bool, stream_seed: int, batch: int):
            stream = _PatchStream(files, data, with_labels, patch, context, scale, foreground_fraction, stream_seed)
            return iter(torch.utils.data.DataLoader(stream, batch_size=batch, num_workers=workers,
                                                    persistent_workers=workers > 0,
                                                    worker_init_fn=partial(_leave_sigterm_to_the_trainer, os.getpid()),
                                                    prefetch_factor=2 if workers else None))

        self._labeled = loader(labeled, True, seed, labeled_batch)
        # with no unlabeled file, the unlabeled stream reuses the labeled images without their labels
        self._unlabeled = loader(unlabeled or labeled, False, seed + 1, unlabeled_batch) if unlabeled_batch else None
        self._bank = _OpenFiles(data.axis, data.normalisation)

    def next(self, with_unlabeled: bool = True) -> Batch:
        try:
            x_l, y_l = next(self._labeled)
            x_u = next(self._unlabeled) if self._unlabeled is not None and with_unlabeled else x_l[:0]
        except InputError as err:  # from a worker: its message is the last line of the traceback it carries
            raise InputError(worker_message(str(err))) from None
        batch = Batch(x_l, y_l.long(), x_u)
        return augment_batch(batch, self.generator) if self.augment else batch

    def refresh(self) -> None:
        """Labels on disk do not change while training."""

    def labeled_keys(self) -> list[tuple[int, int]]:
        return [(fi, s) for fi, f in enumerate(self.labeled_files) for s in range(f.n_slices(self.data.axis))]

    def labeled_image(self, key: tuple[int, int]) -> torch.Tensor:
        fi, s = key
        v = self._bank.get(self.labeled_files[fi])
        return centre_patch(v, v.geometry(self.scale), s, self.patch, self.context)

    def close(self) -> None:
        """Stop the reading processes."""
        self._labeled = self._unlabeled = None
