"""Copy-paste masks, soft blending and largest-component pseudo-labels (methods-spec §2.6, §3.2)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

BLENDS = ("hard", "gaussian", "box")


def box_mask(size: int, generator: torch.Generator | None = None, fraction: float = 2.0 / 3.0,
             device=None) -> torch.Tensor:
    """(H, W) ones with a zero box of floor(fraction * H) x floor(fraction * W) at a uniform random place."""
    bh = bw = int(size * fraction)
    top = int(torch.randint(0, size - bh + 1, (1,), generator=generator))
    left = int(torch.randint(0, size - bw + 1, (1,), generator=generator))
    m = torch.ones(size, size, device=device)
    m[top:top + bh, left:left + bw] = 0.0
    return m


def _gaussian_kernel(size: int, sigma: float, device) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def soft_alpha(mask: torch.Tensor, blend: str = "gaussian", gaussian_size: int = 5, gaussian_sigma: float = 1.0,
               box_size: int = 7) -> torch.Tensor:
    """The hard mask blurred into a continuous alpha in [0, 1] (SRA-Seg's soft edge blending).

    "gaussian" (k=5, sigma=1) suits organs; "box" (k=7) suits thin structures such as vessels;
    "hard" returns the mask unchanged (BCP). We pad by replication where the released code pads
    with zeros: zero padding makes alpha < 1 along the image border, blending in a thin frame of
    the other image far from the pasted box (methods-spec §3.3, defect 3).
    """
    if blend == "hard":
        return mask.float()
    m = mask.float()[None, None]
    if blend == "gaussian":
        k = _gaussian_kernel(gaussian_size, gaussian_sigma, m.device)
        pad = gaussian_size // 2
        out = F.conv2d(F.pad(m, (pad, pad, pad, pad), mode="replicate"), k)
    elif blend == "box":
        pad = box_size // 2
        out = F.avg_pool2d(F.pad(m, (pad, pad, pad, pad), mode="replicate"), box_size, stride=1)
    else:
        raise ValueError(f"unknown blend '{blend}': use one of {', '.join(BLENDS)}")
    return out[0, 0].clamp(0.0, 1.0)


def blend_band(alpha: torch.Tensor) -> torch.Tensor:
    """4 alpha (1 - alpha): 1 on the seam, 0 away from it (methods-spec §8.4)."""
    return 4.0 * alpha * (1.0 - alpha)


def largest_component_per_class(labels: torch.Tensor, n_classes: int, classes=None) -> torch.Tensor:
    """Keep, in each 2D map of (N, H, W) labels, only the largest connected region of each class in
    ``classes`` (default: every foreground class); the other classes are kept whole.

    Voxels of a class outside its largest region become background, as in BCP's pseudo-labels.
    """
    arr = labels.detach().cpu().numpy()
    filtered = set(range(1, n_classes) if classes is None else classes)
    out = np.where(np.isin(arr, list(filtered)), 0, arr)
    for i in range(arr.shape[0]):
        for c in filtered:
            comp, n = ndimage.label(arr[i] == c)
            if n == 0:
                continue
            sizes = np.bincount(comp.ravel())[1:]
            out[i][comp == 1 + int(np.argmax(sizes))] = c
    return torch.from_numpy(out).to(labels.device)


def regions_per_class(labels: torch.Tensor, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of connected regions, number of 2D maps holding the class) for each class of (N, H, W) labels."""
    arr = labels.detach().cpu().numpy()
    regions, present = np.zeros(n_classes), np.zeros(n_classes)
    for i in range(arr.shape[0]):
        for c in range(1, n_classes):
            n = ndimage.label(arr[i] == c)[1]
            if n:
                regions[c] += n
                present[c] += 1
    return regions, present
