"""TransMedSeg: transferable semantic augmentation on per-pixel features (methods-spec §6).

A base method (mean teacher by default, or BCP) trains as usual; its student's penultimate
features on trusted labeled pixels ("source") and its EMA teacher's features on confident
unlabeled pixels ("target") feed per-class running means and covariances. The TSA loss is the
closed-form upper bound of the expected cross-entropy when each source feature is augmented by
delta ~ N(lambda (mu_T - mu_S), lambda Sigma_T) (TSA, Li et al. 2021), through the 1x1 head:

    z~_j = z_j + lambda/2 (w_j - w_y)^T Sigma^y (w_j - w_y) + lambda (w_j - w_y)^T (mu_T^y - mu_S^y)

At lambda = 0 it is exactly the cross-entropy. ``direction="teacher-to-student"`` swaps the roles
(the abstract's reading): teacher features of confident unlabeled pixels, with their pseudo-labels,
are augmented toward the student's statistics and classified by the student's head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .base import Batch, Method, MethodSettings, StepFeatures, TrainState, check_choice

DIRECTIONS = ("student-to-teacher", "teacher-to-student")
BASES = ("mean-teacher", "bcp")


class ClassStatistics(nn.Module):
    """Per-class mean (C, D) and covariance (C, D, D) of features, kept online.

    ``momentum=None`` merges batches exactly (count-weighted, population covariance), so the state
    equals the statistics of every feature seen; a momentum in (0, 1) is an EMA that follows the
    features as the network changes (the first batch of a class sets it).
    """

    def __init__(self, n_classes: int, dim: int, momentum: float | None = 0.99):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(n_classes, dim))
        self.register_buffer("cov", torch.zeros(n_classes, dim, dim))
        self.register_buffer("count", torch.zeros(n_classes))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features (N, D), labels (N,). Under torchrun the batch's per-class sums are added over every
        rank first, so each rank updates with the statistics of the whole global batch (and all agree)."""
        n_classes, dim = self.mean.shape
        f = features.double()
        onehot = torch.nn.functional.one_hot(labels.long(), n_classes).double()  # (N, C)
        sums = torch.cat([onehot.sum(0), (onehot.T @ f).reshape(-1),
                          torch.einsum("nc,nd,ne->cde", onehot, f, f).reshape(-1)])
        sums = distributed.sum_(sums)
        counts = sums[:n_classes]
        firsts = sums[n_classes:n_classes + n_classes * dim].reshape(n_classes, dim)
        seconds = sums[n_classes + n_classes * dim:].reshape(n_classes, dim, dim)
        for c in torch.nonzero(counts).flatten().tolist():
            n = counts[c]
            m = firsts[c] / n
            cov = (seconds[c] / n - torch.outer(m, m)).to(self.cov.dtype)
            m, n = m.to(self.mean.dtype), float(n)
            if self.count[c] == 0:
                self.mean[c], self.cov[c] = m, cov
            elif self.momentum is None:
                n0 = self.count[c]
                total = n0 + n
                delta = (m - self.mean[c])[:, None]
                self.cov[c] = (n0 * self.cov[c] + n * cov + delta @ delta.T * n0 * n / total) / total
                self.mean[c] = self.mean[c] + (m - self.mean[c]) * n / total
            else:
                b = self.momentum
                self.mean[c] = b * self.mean[c] + (1 - b) * m
                self.cov[c] = b * self.cov[c] + (1 - b) * cov
            self.count[c] += n


def tsa_logit_shift(weight: torch.Tensor, delta_mean: torch.Tensor, cov: torch.Tensor, strength: float,
                    known: torch.Tensor) -> torch.Tensor:
    """(C, C) matrix B with B[y, j] added to logit j of a pixel labelled y (B[y, y] = 0).

    weight (C, D) of the linear head; delta_mean (C, D) and cov (C, D, D) per label class; rows of
    classes without statistics (``known`` False) are zero, leaving those pixels' CE unchanged.
    """
    dw = weight[None, :, :] - weight[:, None, :]  # dw[y, j] = w_j - w_y
    quad = torch.einsum("yjd,yde,yje->yj", dw, cov, dw)
    lin = torch.einsum("yjd,yd->yj", dw, delta_mean)
    return (0.5 * strength * quad + strength * lin) * known[:, None].to(weight.dtype)


def tsa_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """CE of (P, C) logits raised by ``shift[labels]``: the upper bound of the expected augmented CE."""
    return F.cross_entropy(logits.float() + shift[labels], labels)


def _pixels(features: torch.Tensor, keep: torch.Tensor, limit: int, generator=None) -> torch.Tensor:
    """Indices of at most ``limit`` kept pixels of (N, D, H, W) features, flattened (N*H*W)."""
    idx = keep.reshape(-1).nonzero().squeeze(1)
    if idx.numel() > limit:
        idx = idx[torch.randperm(idx.numel(), device=idx.device, generator=generator)[:limit]]
    return idx


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) -> (N*H*W, D)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


@dataclass
class TransMedSegSettings(MethodSettings):
    base: str = "mean-teacher"  # or "bcp"
    base_settings: dict = field(default_factory=dict)
    tsa_weight: float = 1.0  # beta
    strength: float = 0.25  # lambda_0, ramped linearly over the budget
    rampup_iterations: int = 2000  # used when training runs until stopped
    direction: str = "student-to-teacher"
    confidence: float = 0.9  # teacher pixels at least this confident enter the target statistics
    momentum: float | None = 0.99  # of the statistics; None: exact running estimates
    pixels_per_class: int = 4096


class TransMedSeg(Method):
    name = "transmedseg"
    advice = ("The mean teacher plus feature augmentation: +0.03 Dice in short sessions, level "
              "with supervised training when many slices are labeled.")
    Settings = TransMedSegSettings

    @property
    def skips_parameters(self) -> bool:
        return self.base.skips_parameters

    def __init__(self, in_channels, n_classes, settings=None):
        nn.Module.__init__(self)
        self.in_channels, self.n_classes = in_channels, n_classes
        self.settings = s = self.Settings.from_dict(settings)
        check_choice("direction", s.direction, DIRECTIONS)
        check_choice("base", s.base, BASES)
        from . import METHODS

        self.base = METHODS[s.base](in_channels, n_classes, s.base_settings)
        dim = self.base.student.feature_channels
        self.source_stats = ClassStatistics(n_classes, dim, s.momentum)
        self.target_stats = ClassStatistics(n_classes, dim, s.momentum)

    @property
    def student(self):
        return self.base.student

    def trainable_parameters(self):
        return self.base.trainable_parameters()

    def predictor(self):
        return self.base.predictor()

    def uncertainty(self, probs, extra=None):
        return self.base.uncertainty(probs, extra)

    def bind_labeled_bank(self, bank) -> None:
        self.base.bind_labeled_bank(bank)

    def _update_memory(self, features: StepFeatures) -> None:
        s = self.settings
        src = features.source
        if src is not None:
            idx = _pixels(src["features"], src["mask"], s.pixels_per_class * self.n_classes)
            self.source_stats.update(_flat(src["features"].detach())[idx], src["labels"].reshape(-1)[idx])
        tgt = features.target
        if tgt is not None:
            conf, pseudo = tgt["probs"].max(1)
            idx = _pixels(tgt["features"], conf >= s.confidence, s.pixels_per_class * self.n_classes)
            self.target_stats.update(_flat(tgt["features"].detach())[idx], pseudo.reshape(-1)[idx])

    def tsa_loss(self, features: StepFeatures, strength: float) -> torch.Tensor | None:
        s = self.settings
        head = self.student.head
        weight = head.weight.flatten(1).float()
        if s.direction == "student-to-teacher":
            src = features.source
            if src is None:
                return None
            feats, labels, keep = src["features"], src["labels"], src["mask"]
            aug_to, aug_from = self.target_stats, self.source_stats
        else:
            tgt = features.target
            if tgt is None:
                return None
            conf, labels = tgt["probs"].max(1)
            feats, keep = tgt["features"].detach(), conf >= s.confidence
            aug_to, aug_from = self.source_stats, self.target_stats
        idx = _pixels(feats, keep, s.pixels_per_class * self.n_classes)
        if idx.numel() == 0:
            return None
        known = (aug_to.count > 0) & (aug_from.count > 0)
        shift = tsa_logit_shift(weight, aug_to.mean - aug_from.mean, aug_to.cov, strength, known)
        flat = _flat(feats)[idx]
        logits = F.linear(flat.to(head.weight.dtype), head.weight.flatten(1), head.bias)
        return tsa_cross_entropy(logits, labels.reshape(-1)[idx], shift)

    def training_step(self, batch: Batch, state: TrainState):
        s = self.settings
        out, features = self.base.step_with_features(batch, state)
        self._update_memory(features)
        strength = s.strength * state.ramp(1.0, s.rampup_iterations)
        tsa = self.tsa_loss(features, strength)
        if tsa is not None and s.tsa_weight > 0:
            out["loss"] = out["loss"] + s.tsa_weight * tsa
            out["tsa"] = tsa.detach()
        out["tsa_strength"] = torch.tensor(strength)
        return out

    def needs_unlabeled(self, state: TrainState) -> bool:
        return self.base.needs_unlabeled(state)

    @torch.no_grad()
    def after_step(self, state: TrainState):
        self.base.after_step(state)
