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

from .io import InputError

NETWORK_MULTIPLE = 16  # four 2x poolings in UNet2D


@dataclass(frozen=True)
class Normalisation:
    """Robust percentile clipping to [0, 1] (MRI, photographs) or a fixed CT window."""

    mode: str = "percentile"  # "percentile" | "window"
    low: float = 0.5  # percentile, or window lower bound in HU
    high: float = 99.5

    def bounds(self, image: np.ndarray, channel_axis: int | None) -> np.ndarray:
        """(channels, 2) array of the values mapped to 0 and 1."""
        chans = [image] if channel_axis is None else [np.take(image, c, axis=channel_axis)
                                                      for c in range(image.shape[channel_axis])]
        out = []
        for ch in chans:
            if self.mode == "window":
                lo, hi = self.low, self.high
            else:
                sample = _subsample(ch, 2_000_000)
                if np.issubdtype(sample.dtype, np.floating):
                    sample = sample[np.isfinite(sample)]  # NaN/Inf voxels (outside a scanner's field) carry no scale
                if sample.size == 0:
                    raise InputError("The image holds no finite intensity (every voxel sampled is NaN or infinite).")
                lo, hi = np.percentile(sample, (self.low, self.high))
            if hi <= lo:
                hi = lo + 1.0
            out.append((float(lo), float(hi)))
        return np.asarray(out, np.float32)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(d.get("mode", "percentile"), float(d.get("low", 0.5)), float(d.get("high", 99.5)))


def _subsample(arr: np.ndarray, max_items: int) -> np.ndarray:
    step = int(np.ceil(arr.size / max_items)) if arr.size > max_items else 1
    return arr.reshape(-1)[::step] if arr.flags.c_contiguous else np.asarray(arr).reshape(-1)[::step]


@dataclass(frozen=True)
class WorkingGeometry:
    """How a native slice maps onto the square network canvas: resize by ``scale``, pad to ``canvas``."""

    native: tuple[int, int]
    canvas: int
    scale: float

    @property
    def resized(self) -> tuple[int, int]:
        return (max(1, round(self.native[0] * self.scale)), max(1, round(self.native[1] * self.scale)))

    def to_canvas(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """(N, C, H, W) native -> (N, C, canvas, canvas)."""
        if self.scale != 1.0:
            if mode == "nearest":
                x = F.interpolate(x.float(), size=self.resized, mode="nearest").to(x.dtype)
            else:
                x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.canvas - w, 0, self.canvas - h))

    def from_canvas(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, canvas, canvas) probabilities -> (N, C, H, W) native (bilinear, inverse of to_canvas)."""
        h, w = self.resized
        x = x[..., :h, :w]
        if self.scale != 1.0:
            x = F.interpolate(x, size=self.native, mode="bilinear", align_corners=False)
        return x


def choose_canvas(native_shapes: list[tuple[int, int]], max_side: int = 256) -> int:
    """One square canvas for all slices: the largest native side, capped, rounded up to the net's multiple."""
    side = min(max(max(s) for s in native_shapes), max_side)
    return int(np.ceil(side / NETWORK_MULTIPLE) * NETWORK_MULTIPLE)


def geometry_for(native: tuple[int, int], canvas: int) -> WorkingGeometry:
    scale = min(1.0, canvas / max(native))
    return WorkingGeometry(tuple(int(s) for s in native), canvas, scale)


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
    spacing: tuple[float, ...] | None = None

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
        self._bounds = self.normalisation.bounds(self.image, self.image.ndim - 1 if self.channels else None)
        if not np.all(np.isfinite(self._bounds)):
            raise InputError("The intensity window is not finite: give finite normalisation bounds.")
        self.non_finite_voxels = count_non_finite(self.image)
        self._cache: dict = {}

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
        return sorted(vals | {0})

    # ---- slices
    def raw_image_slice(self, i: int) -> np.ndarray:
        """(H, W) or (H, W, C) native slice, as stored."""
        if not self.is_3d:
            return np.asarray(self.image)
        return np.asarray(np.take(self.image, i, axis=self.axis))

    def raw_label_slice(self, i: int) -> np.ndarray:
        if self.labels is None:
            raise InputError("This volume has no labels.")
        if not self.is_3d:
            return np.asarray(self.labels)
        return np.asarray(np.take(self.labels, i, axis=self.axis))

    def normalised_slice(self, i: int) -> np.ndarray:
        """(C, H, W) float32 in [0, 1]."""
        raw = self.raw_image_slice(i).astype(np.float32, copy=False)
        raw = raw[None] if not self.channels else np.moveaxis(raw, -1, 0)
        lo = self._bounds[:, 0, None, None]
        hi = self._bounds[:, 1, None, None]
        out = np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32, copy=False)
        if self.non_finite_voxels:
            np.nan_to_num(out, copy=False, nan=0.0)  # +-Inf were clipped to 1 and 0; NaN is the darkest value
        return out

    def canvas_slice(self, i: int, geometry: WorkingGeometry) -> torch.Tensor:
        """(C, canvas, canvas) float32, cached: training revisits the same few slices often."""
        key = ("img", i, geometry.canvas)
        if key not in self._cache:
            x = torch.from_numpy(np.ascontiguousarray(self.normalised_slice(i)))[None]
            self._cache[key] = geometry.to_canvas(x, "bilinear")[0].contiguous()
        return self._cache[key]

    def canvas_label(self, i: int, geometry: WorkingGeometry) -> torch.Tensor:
        """(canvas, canvas) int64 label of a labeled slice; refuses unlabeled slices."""
        if i not in self.labeled:
            raise KeyError(f"slice {i} is not labeled")
        key = ("lab", i, geometry.canvas)
        if key not in self._cache:
            y = torch.from_numpy(self.raw_label_slice(i).astype(np.int64))[None, None]
            self._cache[key] = geometry.to_canvas(y, "nearest")[0, 0].contiguous()
        return self._cache[key]

    def context_stack(self, i: int, geometry: WorkingGeometry, context: int) -> torch.Tensor:
        """The slice with ``context`` neighbours on each side as extra channels (edges repeated)."""
        if context == 0 or not self.is_3d:
            return self.canvas_slice(i, geometry)
        idx = [min(max(j, 0), self.n_slices - 1) for j in range(i - context, i + context + 1)]
        return torch.cat([self.canvas_slice(j, geometry) for j in idx], 0)

    def set_labels(self, labels: np.ndarray, labeled: set[int]) -> None:
        """Replace the trusted annotations (e.g. after the user accepted or corrected a slice)."""
        if tuple(labels.shape) != self.spatial_shape:
            raise InputError(f"The new labels have shape {labels.shape}, not {self.spatial_shape}.")
        self.labels = labels
        self.labeled = {int(i) for i in labeled}
        self._cache = {k: v for k, v in self._cache.items() if k[0] != "lab"}

    def geometry(self, canvas: int) -> WorkingGeometry:
        return geometry_for(self.slice_shape, canvas)


def count_non_finite(image: np.ndarray) -> int:
    """NaN and infinite voxels of a float image, counted a slab at a time (no full-size mask)."""
    if not np.issubdtype(image.dtype, np.floating):
        return 0
    flat = image.reshape(image.shape[0], -1) if image.ndim > 1 else image[None]
    return int(sum(flat[i:i + 16].size - np.count_nonzero(np.isfinite(flat[i:i + 16]))
                   for i in range(0, flat.shape[0], 16)))


def labeled_slices_from_labels(labels: np.ndarray, axis: int) -> set[int]:
    """Slices along ``axis`` with any non-zero voxel: what counts as labeled by default."""
    if labels.ndim == 2:
        return {0} if labels.any() else set()
    other = tuple(a for a in range(3) if a != axis)
    return {int(i) for i in np.flatnonzero(np.any(labels, axis=other))}


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
