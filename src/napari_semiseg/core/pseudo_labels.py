"""Which of the teacher's hard pseudo-labels a method trains on: per-class adaptive thresholds.

Background fills most of a medical image, so a young teacher's doubtful pixels at a structure's edge
come out background; trained on as hard labels they shrink the structure a little more each step
(SGRS-Net on hippocampus 008: Dice 0.752 at 470 steps, 0.651 at 940; RESULTS §18). A pixel counts
only when the teacher's confidence reaches its class's threshold, so a doubtful edge teaches nothing
instead of teaching "not the structure". Two rules for the thresholds, each a running mean over the
teacher's stream on unlabeled images:

- ``frequency`` (FreeMatch's self-adaptive thresholds, Wang et al., ICLR 2023): the mean confidence,
  scaled by how often the teacher predicts the class relative to the most predicted one. Background
  must be as sure as the teacher is on average; a rare class needs far less, so every doubtful
  foreground pixel counts and the structure can grow instead of shrink.
- ``own``: each class's own mean confidence over the pixels predicted as it. Every class keeps its
  surer pixels and drops its doubtful ones, background and structure alike: no class gains ground
  because the other's doubt was left out.
"""

from __future__ import annotations

import torch
from torch import nn

RULES = ("frequency", "own")

# The running means follow the teacher's last ~100 batches (its own EMA window at decay 0.99):
# FreeMatch's 0.999 is for 2^20 steps; a session is a few thousand.
THRESHOLD_MOMENTUM = 0.99


class ClassThresholds(nn.Module):
    """Running per-class confidence thresholds over a stream of teacher probabilities.

    Every mean starts at 1/C, which keeps every pixel, and settles within the momentum's window. Not
    saved with a model (old models load unchanged): a resumed run starts again from 1/C.
    """

    def __init__(self, n_classes: int, rule: str = "own", momentum: float = THRESHOLD_MOMENTUM):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown threshold rule '{rule}': use one of {', '.join(RULES)}")
        self.rule, self.momentum = rule, momentum
        start = torch.tensor(1.0 / n_classes)
        if rule == "own":  # mean top probability where each class wins
            self.register_buffer("own_confidence", start.repeat(n_classes), persistent=False)
        else:  # mean top probability; mean probability of each class
            self.register_buffer("confidence", start.clone(), persistent=False)
            self.register_buffer("class_mean", start.repeat(n_classes), persistent=False)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Fold in one batch of the teacher's (N, C, H, W) probabilities on unlabeled images."""
        probs = probs.float()
        top, label = probs.max(1)
        rate = 1 - self.momentum
        if self.rule == "frequency":
            self.confidence.lerp_(top.mean(), rate)
            self.class_mean.lerp_(probs.mean((0, 2, 3)), rate)
            return
        n_classes = probs.shape[1]
        counts = torch.bincount(label.flatten(), minlength=n_classes)
        sums = torch.zeros(n_classes, device=probs.device).index_add_(0, label.flatten(), top.flatten())
        # a class the teacher did not predict in this batch keeps its threshold
        batch = torch.where(counts > 0, sums / counts.clamp_min(1), self.own_confidence)
        self.own_confidence.lerp_(batch, rate)

    def thresholds(self) -> torch.Tensor:
        """(C,) the confidence a pixel predicted as each class must reach."""
        if self.rule == "own":
            return self.own_confidence
        return self.confidence * self.class_mean / self.class_mean.max()

    @torch.no_grad()
    def keep(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, H, W) bool: pixels whose top probability reaches their class's threshold."""
        top, label = probs.float().max(1)
        return top >= self.thresholds()[label]
