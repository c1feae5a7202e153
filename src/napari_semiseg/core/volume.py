"""An image with its annotations: the label map, which slices are labeled, and the working geometry.

A ``Volume`` wraps arrays it does not own (napari layers, nibabel arrays) without copying them
to float64: intensities are normalised slice by slice, on demand, into float32 at the network's
working resolution, and those small slices are cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .classes import UNKNOWN
from .io import InputError

NETWORK_MULTIPLE = 16  # four 2x poolings in UNet2D


@dataclass(frozen=True)
class Normalisation:
    """Robust percentile clipping to [0, 1] (MRI, photographs) or a fixed CT window."""

    mode: str = "percentile"  # "percentile" | "window"
    low: float = 0.5  # percentile, or window lower bound in HU
    high: float = 99.5

    def bounds(self, sample: np.ndarray, channel_axis: int | None) -> np.ndarray:
        """(channels, 2) array of the values mapped to 0 and 1, from a sample of the image's voxels."""
        chans = [sample] if channel_axis is None else [np.take(sample, c, axis=channel_axis)
                                                       for c in range(sample.shape[channel_axis])]
        out = []
        for ch in chans:
            if self.mode == "window":
                lo, hi = self.low, self.high
            else:
                ch = np.asarray(ch).reshape(-1)
                if np.issubdtype(ch.dtype, np.floating):
                    ch = ch[np.isfinite(ch)]  # NaN/Inf voxels (outside a scanner's field) carry no scale
                if ch.size == 0:
                    raise InputError("The image holds no finite intensity (every voxel sampled is NaN or infinite).")
                lo, hi = np.percentile(ch, (self.low, self.high))
            if hi <= lo:
                hi = lo + 1.0
            out.append((float(lo), float(hi)))
        return np.asarray(out, np.float32)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(d.get("mode", "percentile"), float(d.get("low", 0.5)), float(d.get("high", 99.5)))


@dataclass(frozen=True)
class WorkingGeometry:
    """How a native slice maps onto the network's working grid: resized by ``scale`` (1 = native).

    Nothing is padded or squeezed here: training crops patches from the working slice and
    prediction slides a window over it, so an image of any size keeps its own resolution.
    """

    native: tuple[int, int]
    scale: float = 1.0

    @property
    def working(self) -> tuple[int, int]:
        return (max(1, round(self.native[0] * self.scale)), max(1, round(self.native[1] * self.scale)))

    def to_working(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """(N, C, H, W) native -> (N, C, h, w) at the working resolution."""
        if self.working == tuple(self.native):
            return x
        if mode == "nearest":
            return F.interpolate(x.float(), size=self.working, mode="nearest").to(x.dtype)
        return F.interpolate(x, size=self.working, mode="bilinear", align_corners=False, antialias=True)

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) probabilities -> (N, C, H, W) native (bilinear)."""
        if self.working == tuple(self.native):
            return x
        return F.interpolate(x, size=self.native, mode="bilinear", align_corners=False)


def choose_patch(working_shapes: list[tuple[int, int]], requested: int | None, device_type: str) -> int:
    """The training patch side: the user's, else by device (CPU 128, GPU 512), never larger than the
    largest working slice needs; a multiple of 16 (four 2x poolings in UNet2D)."""
    side = requested or (128 if device_type == "cpu" else 512)
    largest = max(max(s) for s in working_shapes)
    return int(np.ceil(min(side, largest) / NETWORK_MULTIPLE) * NETWORK_MULTIPLE)


@dataclass
class Volume:
    """An image (2D, 2D RGB, 3D, 3D with channels) with its label map and labeled slices.

    ``image`` is in display order with channels last when ``channels`` is True. 2D images are one
    slice. ``labeled`` holds the indices (along ``axis``) whose labels are trusted; labels of every
    other slice are never read for training.
    """

    image: np.ndarray
    labels: np.ndarray | None = None
    labeled: set[int] = field(default_factory=set)
    axis: int = 0
    channels: bool = False
    normalisation: Normalisation = field(default_factory=Normalisation)
    name: str = "volume"
    # (channels, 2) values mapped to 0 and 1, when already known (a streamed file opened again)
    intensity_bounds: np.ndarray | None = None
    cache_bytes: int = 64 << 20  # working slices kept (a streamed file, read once per patch, needs few)

    def __post_init__(self):
        spatial = self.image.ndim - (1 if self.channels else 0)
        if spatial not in (2, 3):
            raise InputError(f"The image has shape {self.image.shape}; 2D or 3D (optionally with channels) only.")
        if self.labels is not None and tuple(self.labels.shape) != self.spatial_shape:
            raise InputError(f"The image has shape {self.spatial_shape} but the labels have "
                             f"{tuple(self.labels.shape)}; they must match.")
        if spatial == 2:
            self.axis = 0
        elif not 0 <= self.axis < 3:
            raise InputError(f"Slice axis {self.axis} does not exist: a 3D volume has axes 0, 1 and 2.")
        self.labeled = {int(i) for i in self.labeled}
        bad = [i for i in self.labeled if not 0 <= i < self.n_slices]
        if bad:
            raise InputError(f"Labeled slice {bad[0]} is outside the volume (0 to {self.n_slices - 1}).")
        self._bounds = self.intensity_bounds if self.intensity_bounds is not None else self.normalisation.bounds(
            _intensity_sample(self.image, self.channels), -1 if self.channels else None)
        self.intensity_bounds = self._bounds
        if not np.all(np.isfinite(self._bounds)):
            raise InputError("The intensity window is not finite: give finite normalisation bounds.")
        self.non_finite_voxels = count_non_finite(self.image)
        slice_bytes = int(np.prod(self.slice_shape)) * self.n_channels * 4
        self._cache = _SliceCache(max(self.cache_bytes, 4 * slice_bytes))  # a photograph's own slice must stay in

    # ---- shape
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[:-1] if self.channels else self.image.shape)

    @property
    def is_3d(self) -> bool:
        return len(self.spatial_shape) == 3

    @property
    def n_channels(self) -> int:
        return self.image.shape[-1] if self.channels else 1

    @property
    def n_slices(self) -> int:
        return self.spatial_shape[self.axis] if self.is_3d else 1

    @property
    def slice_shape(self) -> tuple[int, int]:
        s = list(self.spatial_shape)
        if self.is_3d:
            s.pop(self.axis)
        return (s[0], s[1])

    @property
    def unlabeled(self) -> list[int]:
        return [i for i in range(self.n_slices) if i not in self.labeled]

    def classes_present(self) -> list[int]:
        if self.labels is None or not self.labeled:
            return [0]
        vals = set()
        for i in self.labeled:
            vals |= set(np.unique(self.raw_label_slice(i)).tolist())
        return sorted((vals - {UNKNOWN}) | {0})

    # ---- slices (read one at a time: the image may be a memory-mapped file, a dask or a zarr array)
    def _index(self, i: int) -> tuple:
        idx = [slice(None)] * (len(self.spatial_shape) + (1 if self.channels else 0))
        idx[self.axis] = int(i)
        return tuple(idx)

    def raw_image_slice(self, i: int) -> np.ndarray:
        """(H, W) or (H, W, C) native slice, as stored."""
        return np.asarray(self.image if not self.is_3d else self.image[self._index(i)])

    def raw_label_slice(self, i: int) -> np.ndarray:
        if self.labels is None:
            raise InputError("This volume has no labels.")
        return np.asarray(self.labels if not self.is_3d else self.labels[self._index(i)])

    def normalised_slice(self, i: int) -> np.ndarray:
        """(C, H, W) float32 in [0, 1]."""
        raw = self.raw_image_slice(i)
        raw = raw[None] if not self.channels else np.moveaxis(raw, -1, 0)
        lo = self._bounds[:, 0, None, None]
        hi = self._bounds[:, 1, None, None]
        out = np.array(raw, dtype=np.float32)  # one full-size copy; the rest happens in place
        out -= lo
        out /= hi - lo
        np.clip(out, 0.0, 1.0, out=out)
        if self.non_finite_voxels:
            np.nan_to_num(out, copy=False, nan=0.0)  # +-Inf were clipped to 1 and 0; NaN is the darkest value
        return out

    def working_slice(self, i: int, geometry: WorkingGeometry) -> torch.Tensor:
        """(C, h, w) float32 at the working resolution, cached: training revisits the labeled slices often."""
        key = ("img", i, geometry.scale)
        hit = self._cache.get(key)
        if hit is None:
            x = torch.from_numpy(np.ascontiguousarray(self.normalised_slice(i)))[None]
            hit = self._cache.put(key, geometry.to_working(x, "bilinear")[0].contiguous())
        return hit

    def working_label(self, i: int, geometry: WorkingGeometry) -> torch.Tensor:
        """(h, w) uint8 label of a labeled slice at the working resolution; refuses unlabeled slices.

        Kept as uint8 (classes go to 255): a photograph's int64 label map would be 65 MB."""
        if i not in self.labeled:
            raise KeyError(f"slice {i} is not labeled")
        key = ("lab", i, geometry.scale)
        hit = self._cache.get(key)
        if hit is None:
            y = torch.from_numpy(np.ascontiguousarray(self.raw_label_slice(i), dtype=np.uint8))[None, None]
            hit = self._cache.put(key, geometry.to_working(y, "nearest")[0, 0].contiguous())
        return hit

    def foreground(self, i: int, geometry: WorkingGeometry) -> dict[int, np.ndarray]:
        """Flat indices of each class's pixels in a labeled slice (working resolution), cached: the
        foreground classes, and on a partly labeled slice also the background the user painted, so
        that patches are centred where something is known."""
        key = ("fg", i, geometry.scale)
        hit = self._cache.get(key)
        if hit is None:
            flat = self.working_label(i, geometry).reshape(-1).numpy()
            values = set(np.unique(flat).tolist())
            centres = values - {UNKNOWN} - ({0} if UNKNOWN not in values else set())
            hit = self._cache.put(key, {int(c): np.flatnonzero(flat == c) for c in sorted(centres)},
                                  nbytes=flat.size)
        return hit

    def context_stack(self, i: int, geometry: WorkingGeometry, context: int) -> torch.Tensor:
        """The slice with ``context`` neighbours on each side as extra channels (edges repeated)."""
        if context == 0 or not self.is_3d:
            return self.working_slice(i, geometry)
        idx = [min(max(j, 0), self.n_slices - 1) for j in range(i - context, i + context + 1)]
        return torch.cat([self.working_slice(j, geometry) for j in idx], 0)

    def set_labels(self, labels: np.ndarray, labeled: set[int]) -> None:
        """Replace the trusted annotations (e.g. after the user accepted or corrected a slice)."""
        if tuple(labels.shape) != self.spatial_shape:
            raise InputError(f"The new labels have shape {labels.shape}, not {self.spatial_shape}.")
        self.labels = labels
        self.labeled = {int(i) for i in labeled}
        self._cache.drop(lambda k: k[0] in ("lab", "fg"))

    def geometry(self, scale: float = 1.0) -> WorkingGeometry:
        return WorkingGeometry(tuple(int(s) for s in self.slice_shape), float(scale))


class _SliceCache:
    """Working slices by key, least recently used first out, within a memory budget (64 MB).

    A 300-slice CT at 512x512 would otherwise keep 300 MB of float32 slices alive; the labeled
    slices, which training revisits every few steps, stay in, and prediction needs only a slice's
    neighbours (its context) at a time.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        from collections import OrderedDict

        self.max_bytes, self.bytes, self.items = max_bytes, 0, OrderedDict()

    def get(self, key):
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
            return hit[0]
        return None

    def put(self, key, value, nbytes: int | None = None):
        size = nbytes if nbytes is not None else value.element_size() * value.nelement()
        self.items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, (_, old) = self.items.popitem(last=False)
            self.bytes -= old
        return value

    def drop(self, predicate) -> None:
        for key in [k for k in self.items if predicate(k)]:
            self.bytes -= self.items.pop(key)[1]


def _intensity_sample(image, channels: bool) -> np.ndarray:
    """Up to about 2 M voxels for the normalisation bounds: all of a small image, else a few slices
    spread through the volume (strided), so a lazy image is never read whole."""
    size = int(np.prod(image.shape, dtype=np.float64))
    if size <= 2_000_000 or isinstance(image, np.ndarray) and image.flags.c_contiguous:
        arr = np.asarray(image)
        if size <= 2_000_000:
            return arr
        step = int(np.ceil(size / 2_000_000))
        flat = arr.reshape(-1, arr.shape[-1]) if channels else arr.reshape(-1)
        return flat[::step]
    n0 = image.shape[0]
    picks = np.unique(np.linspace(0, n0 - 1, min(n0, 16)).round().astype(int))
    per = 2_000_000 // len(picks)
    parts = []
    for i in picks:
        sl = np.asarray(image[int(i)])
        flat = sl.reshape(-1, sl.shape[-1]) if channels else sl.reshape(-1)
        parts.append(flat[:: max(1, int(np.ceil(len(flat) / per)))])
    return np.concatenate(parts)


def count_non_finite(image) -> int:
    """NaN and infinite voxels of a float image in memory, a slab at a time (no full-size mask).

    A lazy image (dask, zarr) is not read whole for this: its slices are cleaned as they are read."""
    if not np.issubdtype(image.dtype, np.floating):
        return 0
    if not isinstance(image, np.ndarray):
        return -1  # unknown: clean every slice
    flat = image.reshape(image.shape[0], -1) if image.ndim > 1 else image[None]
    return int(sum(flat[i:i + 16].size - np.count_nonzero(np.isfinite(flat[i:i + 16]))
                   for i in range(0, flat.shape[0], 16)))


def labeled_slices_from_labels(labels: np.ndarray, axis: int) -> set[int]:
    """Slices along ``axis`` with any non-zero voxel: what counts as labeled by default."""
    if labels.ndim == 2:
        return {0} if labels.any() else set()
    other = tuple(a for a in range(3) if a != axis)
    return {int(i) for i in np.flatnonzero(np.any(labels, axis=other))}


def painting_axis(labels: np.ndarray, axis: int) -> int | None:
    """The axis these labels look painted along, when it is not ``axis``; else None.

    A slice painted along one axis crosses every slice of another axis that it cuts, and each of
    those would count as labeled, hence be taught as complete, though it holds one line of paint.
    Painted slices are few and apart along the axis they were painted on: a single slice, or
    slices with gaps, three times fewer than along ``axis``. A volume labeled whole is not flagged.
    """
    if labels.ndim != 3:
        return None
    found = [sorted(labeled_slices_from_labels(labels, a)) for a in range(3)]
    best = min(range(3), key=lambda a: len(found[a]))
    painted = found[best]
    if best == axis or not painted or len(painted) * 3 > len(found[axis]):
        return None
    apart = len(painted) == 1 or painted[-1] - painted[0] + 1 > len(painted)
    return best if apart else None


def labels_on_slices(labels: np.ndarray, slices, axis: int) -> np.ndarray:
    """A copy of ``labels`` that keeps only the given slices (what a user who labeled them has)."""
    return final_segmentation(np.zeros_like(labels), labels, slices, axis)


def final_segmentation(predicted: np.ndarray, user: np.ndarray, labeled, axis: int) -> np.ndarray:
    """The user's labels on the slices they labeled, the prediction everywhere else."""
    out = np.array(predicted, dtype=user.dtype, copy=True)
    if user.ndim == 2:
        return np.array(user, copy=True) if labeled else out
    idx = [slice(None)] * user.ndim
    for i in labeled:
        idx[axis] = int(i)
        out[tuple(idx)] = user[tuple(idx)]
    return out
