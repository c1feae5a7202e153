"""Paired comparison of two methods over the same volumes: wins, losses and a Wilcoxon test.

A mean difference of 0.005 over ten volumes is noise as often as not; per-volume wins and losses
(a difference within ``tie`` counts as neither) and a paired signed-rank test say whether it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE = 0.005


@dataclass
class Paired:
    n: int
    mean_difference: float  # mean of b - a
    wins: int  # volumes where b beats a by more than the tie margin
    losses: int
    p: float  # two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero)


def paired(a, b, tie: float = TIE) -> Paired:
    """How ``b`` compares with ``a`` (two equal-length sequences of per-volume scores)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired() needs two equally long, non-empty lists of per-volume scores")
    d = b - a
    p = 1.0
    if np.any(d != 0):
        from scipy.stats import wilcoxon

        p = float(wilcoxon(b, a, zero_method="wilcox", alternative="two-sided").pvalue)
    return Paired(len(d), float(d.mean()), int((d > tie).sum()), int((d < -tie).sum()), p)
