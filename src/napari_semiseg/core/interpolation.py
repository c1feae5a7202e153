"""Shape-based interpolation between labeled slices: the baseline that needs no training.

Each class's mask on two consecutive labeled slices is turned into a signed distance map
(negative inside); maps are interpolated linearly along the slice axis and thresholded at 0,
which is what "fill between slices" does in 3D Slicer and ITK-SNAP. Slices outside the first and
last labeled slice stay background, as in those tools. A class present on only one of two
consecutive labeled slices shrinks to a point halfway between them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Negative inside, positive outside, in pixels; an empty mask is far away everywhere."""
    if not mask.any():
        return np.full(mask.shape, float(sum(mask.shape)), np.float32)
    if mask.all():
        return np.full(mask.shape, -float(sum(mask.shape)), np.float32)
    inside = ndimage.distance_transform_edt(mask)  # > 0 inside
    outside = ndimage.distance_transform_edt(~mask)  # > 0 outside
    # half a pixel each side so the zero level lies on the boundary between pixels
    return np.where(mask, 0.5 - inside, outside - 0.5).astype(np.float32)


def interpolate_labels(labels: np.ndarray, labeled: list[int] | set[int], axis: int = 0) -> np.ndarray:
    """Fill the slices between labeled slices of ``labels`` (any number of classes)."""
    labeled = sorted(int(i) for i in labeled)
    lab = np.moveaxis(labels, axis, 0)
    out = np.zeros_like(lab)
    for i in labeled:
        out[i] = lab[i]
    classes = [c for c in np.unique(lab[labeled]) if c != 0] if labeled else []
    for a, b in zip(labeled[:-1], labeled[1:]):
        if b - a < 2:
            continue
        sdf_a = {c: signed_distance(lab[a] == c) for c in classes}
        sdf_b = {c: signed_distance(lab[b] == c) for c in classes}
        for c in classes:  # a class on one side only tapers to a point halfway between the slices
            present_a, present_b = (lab[a] == c).any(), (lab[b] == c).any()
            if present_a and not present_b:
                sdf_b[c] = np.full_like(sdf_a[c], -sdf_a[c].min())
            elif present_b and not present_a:
                sdf_a[c] = np.full_like(sdf_b[c], -sdf_b[c].min())
        for z in range(a + 1, b):
            t = (z - a) / (b - a)
            best = np.zeros(lab.shape[1:], np.float32)
            fill = np.zeros(lab.shape[1:], lab.dtype)
            for c in classes:
                d = (1 - t) * sdf_a[c] + t * sdf_b[c]
                take = d < best  # inside, and deeper inside than any other class so far
                fill[take] = c
                best = np.minimum(best, np.where(d < 0, d, 0))
            out[z] = fill
    return np.moveaxis(out, 0, axis)
