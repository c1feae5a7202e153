"""Two-stream batches of labeled and unlabeled patches with the field's augmentations.

Items are square patches cropped from slices at the working resolution (the image's own unless
the user asks for a coarser one); a slice smaller than the patch is padded, never resized. Labeled
items are drawn only from slices in each volume's ``labeled`` set, so labels of other slices never
reach a loss, and a fixed share of them is centred on a labeled foreground pixel of a class drawn
at random (nnU-Net's oversampling), so rare, small or thin classes are in every batch. In a 3D
volume a share of the labeled items (``prior_share``) comes from the slices between two labeled
ones, labeled with what those two agree on (``slice_prior``) and unknown elsewhere. Augmentation
(methods-spec §1.1) runs on the whole batch at once: with p = 0.5 a random rot90 and flip,
otherwise a rotation in [-20, 20) degrees; images bilinear, labels nearest.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .classes import UNKNOWN
from .io import InputError
from .methods.base import Batch
from .slice_prior import agreement, gaps, partial_label
from .volume import Volume


class _Cycler:
    """Shuffled passes over a list, reshuffled when exhausted (an "epoch" of the labeled set)."""

    def __init__(self, items: list, rng: np.random.Generator):
        self.items, self.rng, self.order = list(items), rng, []

    def take(self, n: int) -> list:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = list(self.rng.permutation(len(self.items)))
            out.append(self.items[self.order.pop()])
        return out


UNLABELED_SOURCES = ("real", "extra", "both")


class TwoStreamSampler:
    """Labeled slices come from ``volumes``; unlabeled ones from their other slices ("real"), from
    ``extra_unlabeled`` images such as a folder of synthetic ones ("extra"), or from both."""

    def __init__(self, volumes: list[Volume], patch: int, context: int, labeled_batch: int,
                 unlabeled_batch: int, seed: int = 0, augment: bool = True,
                 extra_unlabeled: list[Volume] | None = None, unlabeled_source: str = "real",
                 scale: float = 1.0, foreground_fraction: float = 0.33, shard: tuple[int, int] = (0, 1),
                 prior_share: float = 0.0):
        if unlabeled_source not in UNLABELED_SOURCES:
            raise InputError(f"Unknown unlabeled source '{unlabeled_source}': use real, extra or both.")
        extra = list(extra_unlabeled or [])
        if unlabeled_source != "real" and not extra:
            raise InputError("Unlabeled images were asked for from a folder, but none were given.")
        self.n_own = len(volumes)
        self.unlabeled_source = unlabeled_source
        volumes = list(volumes) + extra
        self.volumes, self.patch, self.context = volumes, patch, context
        self.labeled_batch, self.unlabeled_batch = labeled_batch, unlabeled_batch
        self.augment = augment
        self.foreground_fraction = foreground_fraction
        self.prior_share = prior_share
        self.shard = shard  # (rank, ranks): under torchrun each process draws from its own part
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.geometries = [v.geometry(scale) for v in volumes]
        self.refresh()

    def refresh(self) -> None:
        """Re-read the labeled sets (after the user labeled or accepted more slices)."""
        own = self.volumes[:self.n_own]
        labeled = [(vi, s) for vi, v in enumerate(own) for s in sorted(v.labeled)]
        if not labeled:
            raise InputError("No labeled slice: label at least one slice (or mark it as background) first.")
        unlabeled = []
        if self.unlabeled_source in ("real", "both"):
            unlabeled += [(vi, s) for vi, v in enumerate(own) for s in v.unlabeled]
        if self.unlabeled_source in ("extra", "both"):
            unlabeled += [(vi, s) for vi in range(self.n_own, len(self.volumes))
                          for s in range(self.volumes[vi].n_slices)]
        labeled, unlabeled = own_shard(labeled, *self.shard), own_shard(unlabeled, *self.shard)
        # with every slice labeled, the unlabeled stream reuses the images without their labels
        self._labeled = _Cycler(labeled, self.rng)
        self._unlabeled = _Cycler(unlabeled or labeled, self.rng)
        self.n_labeled, self.n_unlabeled = len(labeled), len(unlabeled)
        self._priors, between = {}, []
        if self.prior_share > 0:
            for vi, v in enumerate(own):
                for a, b in gaps(v.labeled) if v.is_3d else []:
                    self._priors[(vi, a)] = prior_maps(v, self.geometries[vi], a, b)
                    between += [(vi, s, a, b) for s in range(a + 1, b)]
        between = own_shard(between, *self.shard)
        self._between = _Cycler(between, self.rng) if between else None
        self.n_between = len(between)

    def labeled_keys(self) -> list[tuple[int, int]]:
        """(volume, slice) of every labeled slice, for methods that search the labeled images."""
        return list(self._labeled.items)

    def labeled_image(self, key: tuple[int, int]) -> torch.Tensor:
        """The un-augmented network input of a labeled slice: its central patch."""
        vi, s = key
        return centre_patch(self.volumes[vi], self.geometries[vi], s, self.patch, self.context)

    def _input(self, vi: int, s: int) -> torch.Tensor:
        return slice_input(self.volumes[vi], self.geometries[vi], s, self.context)

    def _labeled_patch(self, vi: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        return labeled_patch(self.volumes[vi], self.geometries[vi], s, self.patch, self.context, self.rng,
                             self.foreground_fraction)

    def _unlabeled_patch(self, vi: int, s: int) -> torch.Tensor:
        return unlabeled_patch(self.volumes[vi], self.geometries[vi], s, self.patch, self.context, self.rng)

    def _between_patch(self, vi: int, s: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels, depth, fg = self._priors[(vi, a)]
        y = torch.from_numpy(partial_label(labels, depth, min(s - a, b - s)))
        x = slice_input(self.volumes[vi], self.geometries[vi], s, self.context)
        return patch_around(x, y, fg, self.patch, self.rng, self.foreground_fraction)

    def prior_items(self) -> int:
        """Labeled items of the next batch to draw from the slices between labeled ones: the share on
        average (rounded at random, so a small batch gets some too), never the whole batch."""
        if self._between is None:
            return 0
        expected = self.labeled_batch * self.prior_share
        n = int(expected) + int(self.rng.random() < expected - int(expected))
        return min(n, self.labeled_batch - 1)

    def next(self, with_unlabeled: bool = True) -> Batch:
        n_prior = self.prior_items()
        pairs = [self._labeled_patch(vi, s) for vi, s in self._labeled.take(self.labeled_batch - n_prior)]
        if n_prior:
            pairs += [self._between_patch(*item) for item in self._between.take(n_prior)]
        x_l = torch.stack([p[0] for p in pairs])
        y_l = torch.stack([p[1] for p in pairs]).long()
        x_u = torch.stack([self._unlabeled_patch(vi, s) for vi, s in self._unlabeled.take(self.unlabeled_batch)]) \
            if self.unlabeled_batch and with_unlabeled else x_l[:0]
        batch = Batch(x_l, y_l, x_u)
        return augment_batch(batch, self.generator) if self.augment else batch


def own_shard(items: list, rank: int, ranks: int) -> list:
    """Every ``ranks``-th item from ``rank`` on; all of them when there are fewer items than ranks."""
    return items[rank::ranks] if len(items) >= ranks else items


def slice_input(v: Volume, geom, s: int, context: int) -> torch.Tensor:
    """The network input of slice ``s``: (C * (2 context + 1), h, w) at the working resolution."""
    x = v.context_stack(s, geom, context)
    if context and not v.is_3d:  # a 2D image among 3D volumes: its own neighbours
        x = x.repeat(2 * context + 1, 1, 1)
    return x


def labeled_patch(v: Volume, geom, s: int, patch: int, context: int, rng: np.random.Generator,
                  foreground_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (image, label) patch of a labeled slice; with probability ``foreground_fraction``
    centred on a pixel of a class drawn at random."""
    return patch_around(slice_input(v, geom, s, context), v.working_label(s, geom), v.foreground(s, geom),
                        patch, rng, foreground_fraction)


def patch_around(x: torch.Tensor, y: torch.Tensor, fg: dict[int, np.ndarray], patch: int,
                 rng: np.random.Generator, foreground_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random patch of (x, y); with probability ``foreground_fraction`` centred on one of the pixels
    ``fg`` lists (flat indices by class) of a class drawn at random."""
    centre = None
    if rng.random() < foreground_fraction and fg:  # drawn first, as before: the same patches for the same seed
        pixels = fg[list(fg)[int(rng.integers(len(fg)))]]  # a class at random, then one of its pixels
        centre = divmod(int(pixels[int(rng.integers(len(pixels)))]), x.shape[-1])
    return _crop(x, y, *_window(x.shape[-2:], patch, centre, rng), patch)


def prior_maps(v: Volume, geom, a: int, b: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """What labeled slices a and b agree on and how deep, at the working resolution, with the flat
    indices of each foreground class it asserts on every slice between them (patch centres)."""
    labels, depth = agreement(v.raw_label_slice(a), v.raw_label_slice(b))
    labels, depth = (geom.to_working(torch.from_numpy(m)[None, None], "nearest")[0, 0].contiguous().numpy()
                     for m in (labels, depth))
    flat = partial_label(labels, depth, 0).reshape(-1)
    centres = set(np.unique(flat).tolist()) - {0, UNKNOWN}
    return labels, depth, {int(c): np.flatnonzero(flat == c) for c in sorted(centres)}


def unlabeled_patch(v: Volume, geom, s: int, patch: int, context: int, rng: np.random.Generator) -> torch.Tensor:
    x = slice_input(v, geom, s, context)
    return _crop(x, None, *_window(x.shape[-2:], patch, None, rng), patch)[0]


def centre_patch(v: Volume, geom, s: int, patch: int, context: int) -> torch.Tensor:
    x = slice_input(v, geom, s, context)
    return _crop(x, None, *_window(x.shape[-2:], patch, None, None, middle=True), patch)[0]


def _window(shape, patch: int, centre, rng: np.random.Generator, middle: bool = False) -> tuple[int, int]:
    """Top-left corner of a ``patch`` window in an (h, w) slice: around ``centre`` (row, column) if
    given, in the middle with ``middle``, else at random; 0 along an axis shorter than the patch."""
    out = []
    for axis, n in enumerate(int(n) for n in shape):
        if n <= patch:
            out.append(0)
        elif middle:
            out.append((n - patch) // 2)
        elif centre is not None:
            out.append(int(np.clip(centre[axis] - patch // 2, 0, n - patch)))
        else:
            out.append(int(rng.integers(0, n - patch + 1)))
    return tuple(out)


def _crop(x: torch.Tensor, y: torch.Tensor | None, top: int, left: int, patch: int):
    """A (C, patch, patch) crop of x (and y), zero-padded at the bottom and right where the slice is smaller."""
    x = x[..., top:top + patch, left:left + patch]
    pad = (0, patch - x.shape[-1], 0, patch - x.shape[-2])
    if pad[1] or pad[3]:
        x = F.pad(x, pad)
    if y is None:
        return x, None
    y = y[top:top + patch, left:left + patch]
    if pad[1] or pad[3]:
        y = F.pad(y, pad)
    return x, y


def _random_affines(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) rotation(+flip) matrices for affine_grid."""
    use_rot90 = torch.rand(n, generator=gen) < 0.5
    k = torch.randint(0, 4, (n,), generator=gen).float()
    free = (torch.rand(n, generator=gen) * 40.0 - 20.0).floor()  # integer degrees in [-20, 20)
    angle = torch.where(use_rot90, k * 90.0, free) * math.pi / 180.0
    flip = torch.where(use_rot90 & (torch.rand(n, generator=gen) < 0.5), -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    return theta


def augment_batch(batch: Batch, gen: torch.Generator) -> Batch:
    """Both streams augmented, each patch with its own rotation (and flip)."""
    x_l, y_l = augment_pairs(batch.x_l, batch.y_l, gen)
    x_u = augment_pairs(batch.x_u, None, gen)[0] if len(batch.x_u) else batch.x_u
    return Batch(x_l, y_l, x_u)


def augment_pairs(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator):
    theta = _random_affines(x.shape[0], gen)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x_aug = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if y is None:
        return x_aug, None
    y_aug = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x_aug, y_aug[:, 0].round().long()
