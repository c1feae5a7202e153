"""Does re-estimating batch-norm statistics on the image being predicted help 2D photographs?

Trains one method on the CHASE_DB1 dataset split (2 labeled + 18 unlabeled photographs, the last 8
test), then scores teacher and student on the test images with and without the re-estimation.

    python benchmarks/recalibration_2d.py METHOD [MINUTES]    (one thread; data: ../shared/data/chase_db1)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.benchmark import load_cases, split_cases  # noqa: E402
from napari_semiseg.core.inference import Predictor, predict_volume  # noqa: E402
from napari_semiseg.core.metrics import mean_metrics, per_class_metrics  # noqa: E402
from napari_semiseg.core.trainer import TrainConfig, Trainer  # noqa: E402
from napari_semiseg.core.variants import parse_variant  # noqa: E402
from napari_semiseg.core.volume import Volume  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chase_db1"


def main(argv: list[str]) -> int:
    method = argv[0] if argv else "supervised"
    minutes = float(argv[1]) if len(argv) > 1 else 5.0
    torch.set_num_threads(1)
    labeled, unlabeled, test = split_cases(load_cases(DATA), test_count=8)
    train = [Volume(c.image, c.labels, {0}, channels=c.channels, name=c.name) for c in labeled]
    train += [Volume(c.image, None, set(), channels=c.channels, name=c.name) for c in unlabeled]
    cfg = parse_variant(method).apply(TrainConfig(threads=1, minutes=minutes, refresh_seconds=1e9,
                                                  first_refresh_seconds=1e9, final_prediction=False))
    trainer = Trainer(train, cfg)
    last = trainer.train()
    print(f"{method}: {last.iteration} iterations in {minutes} min")
    for which, net in (("teacher", trainer.method.predictor()), ("student", Predictor(trainer.method.student))):
        for recalibrate in (False, True):
            scores = []
            for c in test:
                v = Volume(c.image, None, set(), channels=c.channels, name=c.name)
                pred = predict_volume(net, v, trainer.spec, trainer.runtime, recalibrate=recalibrate).labels
                scores.append(mean_metrics(per_class_metrics(pred, c.labels, classes=[1]))["dice"])
            print(f"  {which:>7}, statistics {'re-estimated on the image' if recalibrate else 'from training':>26}: "
                  f"Dice {np.mean(scores):.4f}  per image " + " ".join(f"{s:.3f}" for s in scores))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
