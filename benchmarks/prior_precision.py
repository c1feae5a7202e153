"""How right is what two labeled slices agree on, on the slices between them? (core/slice_prior.py)

    python benchmarks/prior_precision.py DATA [--axes 0,1,2] [--k 3] [--margins 1] [--slopes 0,1] [--volumes 10]

For K evenly spaced labeled slices of each volume (as the session protocol labels them), every slice
between two labeled ones gets the partial label ``slice_prior`` makes of its two neighbours; against
the reference labels of that slice it prints the share of the foreground it asserts that is right,
the share of the true foreground it asserts (coverage), the share of the background it asserts that
is right, and the true foreground it calls background (as a share of the true foreground between the
slices). Means over volumes, the worst volume in brackets. No training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.benchmark import evenly_spaced_slices, load_cases  # noqa: E402
from napari_semiseg.core.classes import UNKNOWN  # noqa: E402
from napari_semiseg.core.slice_prior import agreement, gaps, partial_label  # noqa: E402


def volume_figures(labels: np.ndarray, axis: int, k: int, margin: float, slope: float) -> list[float]:
    lab = np.moveaxis(labels, axis, 0)
    n = dict.fromkeys(("fg_said", "fg_right", "fg_true", "bg_said", "bg_right", "bg_wrong"), 0)
    for a, b in gaps(evenly_spaced_slices(labels, axis, k)):
        agreed, depth = agreement(lab[a], lab[b])
        for z in range(a + 1, b):
            prior, truth = partial_label(agreed, depth, min(z - a, b - z), margin, slope), lab[z]
            fg, bg = (prior != UNKNOWN) & (prior > 0), prior == 0
            n["fg_said"] += fg.sum()
            n["fg_right"] += (truth[fg] == prior[fg]).sum()
            n["fg_true"] += (truth > 0).sum()
            n["bg_said"] += bg.sum()
            n["bg_right"] += (truth[bg] == 0).sum()
            n["bg_wrong"] += (bg & (truth > 0)).sum()
    said = n["fg_said"] or np.nan  # a volume where it asserts no foreground has no precision
    return [n["fg_right"] / said, n["fg_right"] / max(n["fg_true"], 1), n["bg_right"] / max(n["bg_said"], 1),
            n["bg_wrong"] / max(n["fg_true"], 1)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--axes", default="0,1,2")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--margins", default="1")
    ap.add_argument("--slopes", default="0,1")
    ap.add_argument("--volumes", type=int, default=10)
    args = ap.parse_args(argv)
    cases = load_cases(args.data)[:args.volumes]
    print(f"{len(cases)} volumes, K = {args.k}")
    print("| axis | margin | slope | foreground right | foreground covered | background right "
          "| true foreground called background |")
    print("|---|---|---|---|---|---|---|")
    for axis in (int(x) for x in args.axes.split(",")):
        for m in (float(x) for x in args.margins.split(",")):
            for slope in (float(x) for x in args.slopes.split(",")):
                f = np.array([volume_figures(c.labels, axis, args.k, m, slope) for c in cases])
                worst = (np.nanmin(f[:, 0]) if np.isfinite(f[:, 0]).any() else np.nan, f[:, 1].min(),
                         f[:, 2].min(), f[:, 3].max())
                mean = (np.nanmean(f[:, 0]) if np.isfinite(f[:, 0]).any() else np.nan, *f[:, 1:].mean(0))
                cells = " | ".join(f"{x:.4f} ({w:.4f})" for x, w in zip(mean, worst))
                print(f"| {axis} | {m:g} | {slope:g} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
