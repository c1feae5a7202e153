"""What a finished segmentation measures: each class's volume and a surface to look at it in 3D."""

from __future__ import annotations

import numpy as np

SURFACE_VOXELS = 4_000_000  # above this, surfaces are built on every other voxel: a CT stays a second's work


def class_volumes(labels: np.ndarray, spacing: tuple[float, ...]) -> dict[int, float]:
    """Volume of each non-zero class, in the cube of ``spacing``'s unit (mm^3 for a NIfTI)."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))
    voxel = float(np.prod(spacing))
    return {int(c): float(n) * voxel for c, n in enumerate(counts) if c > 0 and n > 0}


def class_surfaces(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One triangle mesh for all classes (marching cubes per class, in voxel coordinates), and each
    vertex's class: what napari's Surface layer takes."""
    from skimage.measure import marching_cubes

    step = 2 if labels.size > SURFACE_VOXELS else 1
    verts, faces, values, offset = [], [], [], 0
    for c in (int(c) for c in np.unique(labels) if c > 0):
        mask = np.pad(labels == c, 1)  # closed surfaces where the structure touches the border
        if mask.sum() < 2:
            continue
        v, f, _, _ = marching_cubes(mask.astype(np.float32), 0.5, step_size=step)
        verts.append(v - 1.0)
        faces.append(f + offset)
        values.append(np.full(len(v), float(c), np.float32))
        offset += len(v)
    if not verts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros(0, np.float32)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(values)
