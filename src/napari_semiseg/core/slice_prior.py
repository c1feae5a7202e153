"""What two labeled slices agree on, taught as partial labels on the slices between them (3D).

Between two consecutive labeled slices a and b, a pixel more than ``PRIOR_MARGIN`` pixels inside
class c on both is labeled c on every slice between them; a pixel that is background on both, far
from anything else, is labeled background; every other pixel is unknown and carries no loss. This
is shape-based interpolation cut down to what it can only get wrong where a structure bulges out
between two slices and back. For the bulge, background must also keep one pixel more per slice from
the nearer labeled slice (``BACKGROUND_SLOPE``: no surface flatter than 45 degrees to the slices
escapes both): without it, 4 % of the hippocampus between slices cut along its long axis would be
taught as background (13 % in the worst volume); with it 0.1 % (benchmarks/RESULTS.md §23).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .classes import UNKNOWN

PRIOR_MARGIN = 1.0  # pixels of the native slice kept clear of every boundary on both labeled slices
BACKGROUND_SLOPE = 1.0  # background: one pixel more per slice away from the nearer labeled slice


def depth_inside(mask: np.ndarray, edge_outside: bool) -> np.ndarray:
    """Distance of each pixel of ``mask`` to the nearest pixel outside it (the image's edge counts as
    outside with ``edge_outside``); infinite everywhere when nothing is outside."""
    if edge_outside:
        return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    if mask.all():  # scipy measures an all-True mask from a corner outside the image
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(mask)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From two labeled (H, W) slices: the class both give each pixel (UNKNOWN where they differ or
    either is unknown), and how far the pixel lies inside that class on the shallower of the two."""
    labels = np.full(a.shape, UNKNOWN, np.uint8)
    depth = np.zeros(a.shape, np.float32)
    for c in np.intersect1d(np.unique(a), np.unique(b)):
        if c == UNKNOWN:
            continue
        both = (a == c) & (b == c)
        # the image's edge bounds a structure, not the background around it
        d = np.minimum(depth_inside(a == c, c != 0), depth_inside(b == c, c != 0))
        labels[both] = c
        depth[both] = d[both]
    return labels, depth


def partial_label(labels: np.ndarray, depth: np.ndarray, slices_away: int, margin: float = PRIOR_MARGIN,
                  slope: float = BACKGROUND_SLOPE) -> np.ndarray:
    """The partial label of a slice ``slices_away`` from the nearer of the two labeled slices."""
    keep = np.where(labels == 0, margin + slope * slices_away, margin)
    return np.where((labels != UNKNOWN) & (depth > keep), labels, UNKNOWN).astype(np.uint8)


def gaps(labeled) -> list[tuple[int, int]]:
    """Consecutive labeled slices (a, b) with at least one slice between them."""
    s = sorted(int(i) for i in labeled)
    return [(a, b) for a, b in zip(s[:-1], s[1:]) if b - a >= 2]
