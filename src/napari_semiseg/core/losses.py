"""Losses and schedules shared by the methods (methods-spec §1.5, §1.7)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .classes import UNKNOWN


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) for t = current / length clipped to [0, 1] (Laine & Aila, 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(current / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, H, W) int -> (N, C, H, W) float."""
    return F.one_hot(labels.long(), n_classes).permute(0, 3, 1, 2).float()


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean over classes of (2 sum p g + s) / (sum p^2 + sum g^2 + s), over the whole batch.

    ``target`` is one-hot or soft (N, C, H, W); ``mask`` (N, H, W) restricts the sums.
    SSL4MIS's DiceLoss on one-hot targets; with soft targets it is the soft Dice.
    """
    if mask is not None:
        m = mask[:, None].float()
        probs, target = probs * m, target * m
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    denom = (probs * probs).sum(dims) + (target * target).sum(dims)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                         weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with hard (N, H, W) targets, averaged over the masked pixels."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    w = torch.ones_like(ce) if mask is None else mask.float()
    if weight_map is not None:
        w = w * weight_map
    return (ce * w).sum() / w.sum().clamp_min(1.0)


def split_known(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target with unknown pixels set to background, mask of the known pixels)."""
    known = target != UNKNOWN
    return target.masked_fill(~known, 0), known


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """0.5 (CE + Dice), the field's supervised loss, over the known pixels (and ``mask``)."""
    target, known = split_known(target)
    mask = known if mask is None else mask & known
    probs = torch.softmax(logits.float(), 1)
    return 0.5 * (masked_cross_entropy(logits, target, mask)
                  + soft_dice_loss(probs, one_hot(target, logits.shape[1]), mask))


@torch.no_grad()
def labeled_agreement(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of the network's hard prediction with the labels, averaged over the foreground classes
    present in ``target`` (pooled over the batch); 1.0 when the batch holds no foreground."""
    target, known = split_known(target)
    pred = logits.argmax(1)
    scores = []
    for c in target[known].unique().tolist():
        if c == 0:
            continue
        p, g = (pred == c) & known, target == c
        scores.append(2.0 * (p & g).sum().item() / max(1, p.sum().item() + g.sum().item()))
    return float(sum(scores) / len(scores)) if scores else 1.0


def normalised_entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Predictive entropy divided by ln C: 0 for a certain prediction, 1 for a uniform one."""
    c = probs.shape[dim]
    h = -(probs * torch.log(probs.clamp_min(1e-8))).sum(dim)
    return (h / math.log(c)).clamp(0.0, 1.0)


def soft_segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor | None = None,
                           eps: float = 1e-6) -> torch.Tensor:
    """SRA-Seg's soft Dice + soft cross-entropy on continuous targets (methods-spec §3.2).

    dice = 1 - mean over samples and classes of 2 sum(p g) / (sum(p + g) + eps);
    ce = - mean over pixels of sum_c g_c log p_c. Both clamp p and g to [eps, 1 - eps].
    ``weight_map`` (N, H, W) weights each pixel (1 everywhere gives the released loss).
    """
    p = torch.softmax(logits.float(), 1).clamp(eps, 1 - eps)
    g = target.float().clamp(eps, 1 - eps)
    w = torch.ones_like(p[:, :1]) if weight_map is None else weight_map[:, None].float()
    dims = (2, 3)
    dice = 1.0 - (2 * (w * p * g).sum(dims) / ((w * (p + g)).sum(dims) + eps)).mean()
    ce = -((w * g * torch.log(p)).sum(1)).sum() / w.sum().clamp_min(eps)
    return dice + ce


def pixel_uncertainty(probs: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised entropy, raised to ``extra`` (a disagreement map in [0, 1]) where that is larger."""
    u = normalised_entropy(probs)
    return u if extra is None else torch.maximum(u, extra.to(u.dtype))
