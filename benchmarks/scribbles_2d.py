"""Scribbles against full labels on CHASE_DB1: what partial labels are worth.

The CHASE_DB1 dataset split (2 labeled + 18 unlabeled photographs, the last 8 test). The two
labeled photographs are given either whole (``full``) or as simulated scribbles: strokes along the
vessels' centre lines covering a tenth of the vessel pixels, and straight strokes of background at
least 5 pixels from any vessel (twice as many pixels). ``scribbles`` leaves every other pixel
unknown (the widget's "Unpainted pixels: unknown"); ``scribbles-as-complete`` teaches it as
background (what a partly painted image taught before).

    python benchmarks/scribbles_2d.py METHOD MODE [MINUTES]   (one thread; data: ../shared/data/chase_db1)
    python benchmarks/scribbles_2d.py --compare LOG LOG ...   (runs' last lines, paired per test image)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.benchmark import load_cases, split_cases  # noqa: E402
from napari_semiseg.core.classes import PAINTED_BACKGROUND, engine_labels  # noqa: E402
from napari_semiseg.core.inference import predict_volume  # noqa: E402
from napari_semiseg.core.metrics import mean_metrics, per_class_metrics  # noqa: E402
from napari_semiseg.core.trainer import TrainConfig, Trainer  # noqa: E402
from napari_semiseg.core.variants import parse_variant  # noqa: E402
from napari_semiseg.core.volume import Volume  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chase_db1"
MODES = ("full", "scribbles", "scribbles-as-complete")


def scribbles(vessels: np.ndarray, rng: np.random.Generator, fraction: float = 0.1) -> np.ndarray:
    """Painted pixels as a user with a 3-pixel brush would leave them: 1 on vessels, PAINTED_BACKGROUND
    on background, 0 unpainted."""
    from skimage.morphology import skeletonize

    vessels = vessels > 0
    skeleton = skeletonize(vessels)
    pieces, n = ndimage.label(skeleton & ~ndimage.binary_dilation(_branch_points(skeleton), iterations=2),
                              structure=np.ones((3, 3)))
    painted = np.zeros(vessels.shape, np.uint8)
    target = fraction * vessels.sum()
    for piece in rng.permutation(np.arange(1, n + 1)):
        if (painted == 1).sum() >= target:
            break
        stroke = ndimage.binary_dilation(pieces == piece, iterations=1) & vessels
        painted[stroke] = 1
    far = ndimage.distance_transform_edt(~vessels) >= 5
    bg_target, h, w = 2 * (painted == 1).sum(), *vessels.shape
    while (painted == PAINTED_BACKGROUND).sum() < bg_target:
        y, x = rng.integers(0, h), rng.integers(0, w)
        angle = rng.uniform(0, np.pi)
        t = np.arange(60)
        ys = np.clip((y + t * np.sin(angle)).astype(int), 0, h - 1)
        xs = np.clip((x + t * np.cos(angle)).astype(int), 0, w - 1)
        line = np.zeros(vessels.shape, bool)
        line[ys, xs] = True
        line = ndimage.binary_dilation(line, iterations=1)
        if (line & far).sum() == line.sum():
            painted[line] = PAINTED_BACKGROUND
    return painted


def _branch_points(skeleton: np.ndarray) -> np.ndarray:
    neighbours = ndimage.convolve(skeleton.astype(int), np.ones((3, 3), int), mode="constant") - 1
    return skeleton & (neighbours >= 3)


def compare(logs: list[str]) -> int:
    from napari_semiseg.core.comparison import paired

    runs = [json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in logs]
    for r in runs:
        print(f"{r['method']:>14} {r['mode']:<22} Dice {r['mean']:.3f}  ({r['iterations']} iterations)")
    for a in runs:
        for b in runs:
            if a is not b and a["method"] == b["method"] and a["mode"] == "full":
                res = paired(a["dice"], b["dice"])
                print(f"{b['method']}: {b['mode']} vs full: {res.mean_difference:+.3f}, "
                      f"wins/losses {res.wins}/{res.losses}, Wilcoxon p = {res.p:.3f}")
            if a is not b and a["method"] == b["method"] and (a["mode"], b["mode"]) == (
                    "scribbles-as-complete", "scribbles"):
                res = paired(a["dice"], b["dice"])
                print(f"{b['method']}: scribbles (unpainted unknown) vs as complete: {res.mean_difference:+.3f}, "
                      f"wins/losses {res.wins}/{res.losses}, Wilcoxon p = {res.p:.3f}")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--compare":
        return compare(argv[1:])
    method, mode = argv[0], argv[1]
    minutes = float(argv[2]) if len(argv) > 2 else 5.0
    if mode not in MODES:
        raise SystemExit(f"MODE is one of {', '.join(MODES)}")
    torch.set_num_threads(1)
    labeled, unlabeled, test = split_cases(load_cases(DATA), test_count=8)
    rng = np.random.default_rng(0)
    train, painted_share = [], []
    for c in labeled:
        if mode == "full":
            labels = c.labels
        else:
            painted = scribbles(c.labels, rng)
            painted_share.append(float((painted == 1).sum() / max(1, (c.labels > 0).sum())))
            labels = engine_labels(painted, "unknown" if mode == "scribbles" else "background")
        train.append(Volume(c.image, labels, {0}, channels=c.channels, name=c.name))
    train += [Volume(c.image, None, set(), channels=c.channels, name=c.name) for c in unlabeled]
    cfg = parse_variant(method).apply(TrainConfig(threads=1, minutes=minutes, refresh_seconds=1e9,
                                                  first_refresh_seconds=1e9, final_prediction=False))
    trainer = Trainer(train, cfg)
    last = trainer.train()
    net = trainer.method.predictor()
    scores = []
    for c in test:
        v = Volume(c.image, None, set(), channels=c.channels, name=c.name)
        pred = predict_volume(net, v, trainer.spec, trainer.runtime).labels
        scores.append(mean_metrics(per_class_metrics(pred, c.labels, classes=[1]))["dice"])
    out = {"method": method, "mode": mode, "minutes": minutes, "iterations": last.iteration,
           "vessel_share_painted": painted_share, "dice": scores, "mean": float(np.mean(scores))}
    print(f"{method} {mode}: Dice {np.mean(scores):.4f} ({last.iteration} iterations"
          + (f"; scribbles cover {np.mean(painted_share):.1%} of the vessels" if painted_share else "") + ")")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
