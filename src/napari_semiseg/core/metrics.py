"""Per-class segmentation metrics: Dice, Jaccard, HD95 and average surface distance.

Conventions (those of the field's reference code, medpy as used by SSL4MIS / BCP, methods-spec §1.1):

* Surfaces are the voxels of a mask that have a face-neighbour outside it (erosion with the
  connectivity-1 structure); distances are Euclidean, in voxels, or in mm when ``spacing`` is given.
* HD95 is the 95th percentile of the surface distances in both directions pooled together.
* ASD is medpy's ``asd``: the mean distance from the prediction's surface to the reference's.
* A class absent from both prediction and reference: Dice 1, Jaccard 1, HD95 0, ASD 0 (nothing to
  find, nothing found).
* A class present in the reference but absent from the prediction: every metric is 0, as in the
  BCP / SSL4MIS evaluation code (so a missed class scores Dice 0; its distances carry no meaning).
* A class present in the prediction but absent from the reference: Dice 0, Jaccard 0, HD95 and ASD
  undefined (NaN), left out of the distance means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


@dataclass
class ClassMetrics:
    dice: float
    jaccard: float
    hd95: float
    asd: float


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing=None) -> np.ndarray:
    """Distances from each surface voxel of ``pred`` to the nearest surface voxel of ``ref``."""
    pred_surface = _surface(pred)
    ref_surface = _surface(ref)
    dist_to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    return dist_to_ref[pred_surface]


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing=None) -> ClassMetrics:
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} shapes differ")
    p, r = pred.any(), ref.any()
    if not p and not r:
        return ClassMetrics(1.0, 1.0, 0.0, 0.0)
    if not p:
        return ClassMetrics(0.0, 0.0, 0.0, 0.0)
    inter = np.count_nonzero(pred & ref)
    dice = 2.0 * inter / (np.count_nonzero(pred) + np.count_nonzero(ref))
    jaccard = inter / np.count_nonzero(pred | ref)
    if not r:
        return ClassMetrics(dice, jaccard, float("nan"), float("nan"))
    d_pr = surface_distances(pred, ref, spacing)
    d_rp = surface_distances(ref, pred, spacing)
    hd95 = float(np.percentile(np.hstack([d_pr, d_rp]), 95))
    asd = float(d_pr.mean())
    return ClassMetrics(float(dice), float(jaccard), hd95, asd)


def per_class_metrics(pred: np.ndarray, ref: np.ndarray, classes=None, spacing=None) -> dict[int, ClassMetrics]:
    """Metrics for each foreground class (default: every class > 0 in either map)."""
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} shapes differ")
    if classes is None:
        classes = sorted((set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0})
    return {int(c): binary_metrics(pred == c, ref == c, spacing) for c in classes}


def mean_metrics(per_class: dict[int, ClassMetrics]) -> dict[str, float]:
    """Mean over classes of each metric (NaN distances left out)."""
    out = {}
    for name in METRIC_NAMES:
        vals = np.array([getattr(m, name) for m in per_class.values()], float)
        out[name] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
    return out


def summarise(volumes: dict[str, dict[int, ClassMetrics]]) -> dict:
    """Per-volume tables plus the mean over volumes, per class and over classes."""
    classes = sorted({c for v in volumes.values() for c in v})
    per_class_mean = {}
    for c in classes:
        per_class_mean[c] = {}
        for name in METRIC_NAMES:
            vals = np.array([getattr(v[c], name) for v in volumes.values() if c in v], float)
            per_class_mean[c][name] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
    overall = {}
    for name in METRIC_NAMES:
        vals = np.array([per_class_mean[c][name] for c in classes], float)
        overall[name] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
    return {
        "volumes": {k: {str(c): asdict(m) for c, m in v.items()} for k, v in volumes.items()},
        "per_class_mean": {str(c): v for c, v in per_class_mean.items()},
        "mean": overall,
    }


def format_table(per_class: dict[int, ClassMetrics], unit: str = "vox") -> str:
    lines = [f"{'class':>5} {'Dice':>7} {'Jaccard':>8} {'HD95':>9} {'ASD':>9}   (distances in {unit})"]
    for c, m in per_class.items():
        lines.append(f"{c:>5} {m.dice:7.4f} {m.jaccard:8.4f} {m.hd95:9.3f} {m.asd:9.3f}")
    mean = mean_metrics(per_class)
    lines.append(f"{'mean':>5} {mean['dice']:7.4f} {mean['jaccard']:8.4f} {mean['hd95']:9.3f} {mean['asd']:9.3f}")
    return "\n".join(lines)
