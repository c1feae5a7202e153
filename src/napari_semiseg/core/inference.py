"""Prediction at the working resolution of any image: labels, a per-voxel uncertainty in [0, 1] and a
per-slice score, computed one slice (or a batch of small slices) at a time.

A slice larger than the network's patch is covered by MONAI's ``sliding_window_inference``:
overlapping windows, each weighted by a Gaussian so that no seam shows, stitched over every
border pixel; a smaller one is padded, never resized. Memory follows the window, not the image:
the only full-size outputs are the labels, the uncertainty and the slice scores.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .losses import pixel_uncertainty
from .volume import Volume


class PredictorOutput(NamedTuple):
    """What a method's predictor returns: logits (N, C, H, W) and, for a method that predicts with two
    views or branches, the (N, H, W) map of pixels where they disagree (None otherwise, and while
    batch-norm statistics are re-estimated in training mode)."""

    logits: torch.Tensor
    disagreement: torch.Tensor | None = None


class Predictor(nn.Module):
    """A plain network as a predictor: its logits, no disagreement."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> PredictorOutput:
        return PredictorOutput(self.net(x))


@dataclass(frozen=True)
class Runtime:
    """Where and how a network runs: every prediction takes this one value."""

    device: torch.device
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    channels_last: bool = False

    @classmethod
    def of(cls, net: nn.Module) -> Runtime:
        return cls(next(net.parameters()).device)


@dataclass(frozen=True)
class InputSpec:
    """How the network sees an image: patch side, neighbouring slices, working scale, window overlap."""

    patch: int
    context: int = 0
    scale: float = 1.0
    overlap: float = 0.25
    window_batch: int = 8


@dataclass
class Prediction:
    labels: np.ndarray  # spatial shape, uint8
    uncertainty: np.ndarray  # spatial shape, float32 in [0, 1]
    slice_scores: np.ndarray  # (n_slices,) mean uncertainty of each slice along the volume's axis


@dataclass
class SlicePrediction:
    """A few slices of one volume: what a live refresh sends to the viewer."""

    volume_index: int
    slices: list[int]
    labels: np.ndarray  # (k, H, W) uint8
    uncertainty: np.ndarray  # (k, H, W) float32
    scores: np.ndarray  # (k,)


def autocast_for(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return nullcontext()


RECALIBRATION_PIXELS = 1 << 20  # batch-norm statistics from about a million working pixels


BATCH_PIXELS = 1 << 18  # per re-estimation batch: a small volume's slices all go in one batch, as before


@torch.no_grad()
def recalibrated(net: nn.Module, patches: list[torch.Tensor], batch_size: int | None = None,
                 channels_last: bool = False) -> nn.Module:
    """A copy of ``net`` whose batch-norm statistics are re-estimated on patches of the image it will predict.

    An EMA teacher averages weights; the statistics its averaged weights would produce differ from
    the averaged statistics (the same reason SWA re-estimates them). Measured on hippocampus with 3
    labeled slices: teacher Dice 0.63 -> 0.71 on the unlabeled slices. Dropout stays off.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return net
    copy_ = copy.deepcopy(net)
    for m in copy_.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    copy_.train()
    for m in copy_.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    # The cumulative average weighs every batch alike and averages within-batch variances: batches
    # must be of equal size and each a mix of the whole volume. Measured: batches of 16 in slice
    # order cost supervised 0.028 Dice on the hippocampus session protocol (benchmarks/RESULTS.md §10.5).
    n = len(patches)
    if batch_size is None:
        batch_size = max(1, BATCH_PIXELS // (patches[0].shape[-1] * patches[0].shape[-2])) if n else 1
    n_batches = max(1, int(np.ceil(n / batch_size)))
    order = np.random.default_rng(0).permutation(n) if n_batches > 1 else np.arange(n)
    for part in np.array_split(order, n_batches):
        x = torch.stack([patches[i] for i in part])
        copy_(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return copy_.eval()


def recalibration_patches(volume: Volume, spec: InputSpec, device, seed: int = 0) -> list[torch.Tensor]:
    """Patches for batch-norm re-estimation, about a million working pixels: the middle window of
    every slice of a small volume; a seeded sample of slices of a large one; and several random
    windows of each slice when there are fewer slices than that (a 2D photograph, a few large slices)."""
    from .sampling import _crop, _window

    geom = volume.geometry(spec.scale)
    n_patches = int(np.clip(RECALIBRATION_PIXELS // (spec.patch * spec.patch), 8, 64))
    n = volume.n_slices
    rng = np.random.default_rng(seed)
    fits = all(side <= spec.patch for side in geom.working)
    if n >= MIN_PATCHES_TO_RECALIBRATE or fits:
        slices = range(n) if n <= n_patches else sorted(rng.choice(n, n_patches, replace=False).tolist())
        per_slice, middle = 1, n <= n_patches  # the middle window (the whole slice when it fits)
    else:
        slices, per_slice, middle = range(n), -(-n_patches // n), False
    out = []
    for i in slices:
        x = volume.context_stack(int(i), geom, spec.context)
        for _ in range(per_slice):
            out.append(_crop(x, None, *_window(x.shape[-2:], spec.patch, None, rng, middle=middle), spec.patch)[0]
                       .to(device))
    return out


MIN_PATCHES_TO_RECALIBRATE = 8  # fewer, and the statistics would be an estimate from too little


def prepare(net: nn.Module, volume: Volume, spec: InputSpec, runtime: Runtime, recalibrate: bool = True) -> nn.Module:
    """The network to predict ``volume`` with: batch-norm statistics re-estimated on it where there
    is enough of it (8 patches or more), in eval mode. The network passed in is not modified.

    A 2D image larger than a patch counts: its windows are enough. Without this an EMA teacher
    predicted 2D photographs with averaged statistics that fit its averaged weights poorly, and
    scored below its own student on 7 of 8 CHASE_DB1 test images (benchmarks/RESULTS.md §11).
    """
    if not recalibrate:
        return net
    patches = recalibration_patches(volume, spec, runtime.device)
    if len(patches) >= MIN_PATCHES_TO_RECALIBRATE:
        return recalibrated(net, patches, channels_last=runtime.channels_last)
    return net


def _probabilities(net: nn.Module, runtime: Runtime):
    """The window function of a predictor (see PredictorOutput): softmax probabilities, with the
    disagreement map as a second output where there is one (the sliding window stitches both)."""
    def run(x: torch.Tensor):
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(runtime.device, runtime.precision):
            out = net(x)
        probs = torch.softmax(out.logits.float(), 1)
        return probs if out.disagreement is None else (probs, out.disagreement.float()[:, None])
    return run


@torch.no_grad()
def predict_slices(net: nn.Module, volume: Volume, indices, spec: InputSpec, runtime: Runtime,
                   uncertainty_fn=pixel_uncertainty):
    """Yield (slice index, labels (H, W) uint8, uncertainty (H, W) float32) at native size.

    ``net`` is used as given (see :func:`prepare`). Slices that fit in one window go through the
    network in batches; larger ones through a Gaussian-weighted sliding window.
    """
    geom = volume.geometry(spec.scale)
    h, w = geom.working
    window = _probabilities(net, runtime)
    was_training = net.training
    net.eval()
    try:
        indices = [int(i) for i in indices]
        step = spec.window_batch if h <= spec.patch and w <= spec.patch else 1
        for start in range(0, len(indices), step):
            idx = indices[start:start + step]
            x = torch.stack([volume.context_stack(i, geom, spec.context) for i in idx]).to(runtime.device)
            out = stitched(x, spec, window)
            probs, extra = out if isinstance(out, tuple) else (out, None)
            probs = geom.to_native(probs)
            extra = None if extra is None else geom.to_native(extra)[:, 0]
            labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
            unc = uncertainty_fn(probs, extra).float().cpu().numpy()
            for k, i in enumerate(idx):
                yield i, labels[k], unc[k]
    finally:
        net.train(was_training)


def stitched(x: torch.Tensor, spec: InputSpec, window):
    """``window`` applied over (N, C, h, w) slices of any size: directly on slices that fit in one
    patch (padded at the bottom and right, as in training), else through MONAI's Gaussian-weighted
    sliding window. Returns what ``window`` returns (a tensor or a tuple), cut to (h, w)."""
    from monai.inferers import sliding_window_inference

    h, w = x.shape[-2:]
    if h <= spec.patch and w <= spec.patch:
        out = window(torch.nn.functional.pad(x, (0, spec.patch - w, 0, spec.patch - h)))
        return tuple(o[..., :h, :w] for o in out) if isinstance(out, tuple) else out[..., :h, :w]
    return sliding_window_inference(x, (spec.patch, spec.patch), spec.window_batch, window,
                                    overlap=spec.overlap, mode="gaussian", padding_mode="constant")


def _put(volume: Volume, full: np.ndarray, i: int, plane: np.ndarray) -> None:
    if volume.is_3d:
        idx = [slice(None)] * 3
        idx[volume.axis] = i
        full[tuple(idx)] = plane
    else:
        full[...] = plane


@torch.no_grad()
def predict_volume(net: nn.Module, volume: Volume, spec: InputSpec, runtime: Runtime | None = None, *,
                   uncertainty_fn=pixel_uncertainty, recalibrate: bool = True) -> Prediction:
    """Every slice of ``volume``, one at a time into preallocated full-size outputs."""
    runtime = runtime or Runtime.of(net)
    net = prepare(net, volume, spec, runtime, recalibrate)
    labels = np.zeros(volume.spatial_shape, np.uint8)
    unc = np.zeros(volume.spatial_shape, np.float32)
    scores = np.zeros(volume.n_slices, np.float64)
    for i, lab, u in predict_slices(net, volume, range(volume.n_slices), spec, runtime, uncertainty_fn):
        _put(volume, labels, i, lab)
        _put(volume, unc, i, u)
        scores[i] = float(u.mean())
    return Prediction(labels, unc, scores)


@torch.no_grad()
def predict_some(net: nn.Module, volume: Volume, indices, spec: InputSpec, runtime: Runtime,
                 volume_index: int = 0, uncertainty_fn=pixel_uncertainty) -> SlicePrediction:
    """A few slices (``net`` already prepared), stacked for the viewer."""
    got = list(predict_slices(net, volume, indices, spec, runtime, uncertainty_fn))
    return SlicePrediction(volume_index, [g[0] for g in got], np.stack([g[1] for g in got]),
                           np.stack([g[2] for g in got]), np.array([float(g[2].mean()) for g in got]))
