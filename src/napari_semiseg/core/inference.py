"""Whole-volume prediction: labels, a per-voxel uncertainty in [0, 1], and a per-slice score."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .losses import pixel_uncertainty
from .volume import Volume


@dataclass
class Prediction:
    labels: np.ndarray  # spatial shape, uint8
    uncertainty: np.ndarray  # spatial shape, float32 in [0, 1]
    slice_scores: np.ndarray  # (n_slices,) mean uncertainty of each slice along the volume's axis
    probabilities: np.ndarray | None = None  # (C, *spatial) float32, only when asked for


def autocast_for(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return nullcontext()


MIN_SLICES_TO_RECALIBRATE = 8


@torch.no_grad()
def recalibrated(net: nn.Module, slices: list[torch.Tensor], batch_size: int = 64,
                 channels_last: bool = False) -> nn.Module:
    """A copy of ``net`` whose batch-norm statistics are re-estimated on the volume it will predict.

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
    for start in range(0, len(slices), batch_size):
        x = torch.stack(slices[start:start + batch_size])
        copy_(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return copy_.eval()


@torch.no_grad()
def predict_volume(net: nn.Module, volume: Volume, canvas: int, context: int, *, device=None,
                   precision: str = "fp32", channels_last: bool = False, batch_size: int = 16,
                   uncertainty_fn=pixel_uncertainty, keep_probabilities: bool = False,
                   recalibrate: bool = True) -> Prediction:
    """Run ``net`` (in eval mode) over every slice of ``volume`` and map back to native size.

    With ``recalibrate`` and enough slices, batch-norm statistics are first re-estimated on this
    volume (see :func:`recalibrated`); the network passed in is not modified.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    geom = volume.geometry(canvas)
    n = volume.n_slices
    if recalibrate and n >= MIN_SLICES_TO_RECALIBRATE:
        stacks = [volume.context_stack(i, geom, context).to(device) for i in range(n)]
        net = recalibrated(net, stacks, channels_last=channels_last)
    was_training = net.training
    net.eval()
    labels, unc, probs_out = [], [], []
    try:
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            x = torch.stack([volume.context_stack(i, geom, context) for i in idx]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, precision):
                out = net(x)
            # a predictor may return (logits, extra uncertainty map) - see Method.uncertainty
            logits, extra = out if isinstance(out, tuple) else (out, None)
            probs = geom.from_canvas(torch.softmax(logits.float(), 1))
            if extra is not None:
                extra = geom.from_canvas(extra.float()[:, None])[:, 0]
            labels.append(probs.argmax(1).to(torch.uint8).cpu())
            unc.append(uncertainty_fn(probs, extra).float().cpu())
            if keep_probabilities:
                probs_out.append(probs.cpu())
    finally:
        net.train(was_training)
    lab = torch.cat(labels).numpy()
    u = torch.cat(unc).numpy()
    scores = u.reshape(n, -1).mean(1)
    probs_arr = torch.cat(probs_out).numpy() if keep_probabilities else None
    if volume.is_3d:
        lab = np.moveaxis(lab, 0, volume.axis)
        u = np.moveaxis(u, 0, volume.axis)
        if probs_arr is not None:  # (n, C, H, W) -> (C, *spatial)
            probs_arr = np.moveaxis(np.moveaxis(probs_arr, 1, 0), 1, volume.axis + 1)
    else:
        lab, u = lab[0], u[0]
        probs_arr = probs_arr[0] if probs_arr is not None else None
    return Prediction(np.ascontiguousarray(lab), np.ascontiguousarray(u, dtype=np.float32), scores, probs_arr)
