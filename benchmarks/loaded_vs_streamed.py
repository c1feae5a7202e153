"""The dataset protocol with the training volumes loaded into memory (as before streaming) or
streamed from disk (the default for NIfTI files), at several seeds: does the sampler's way of
drawing slices change the result, or was one run's 0.02 seed noise?

    python benchmarks/loaded_vs_streamed.py DATA METHOD ITERATIONS MAX_TEST SEED [SEED ...]

Prints each seed's mean Dice (teacher) both ways and the comparison over seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core import benchmark as bm  # noqa: E402
from napari_semiseg.core.comparison import paired  # noqa: E402
from napari_semiseg.core.trainer import TrainConfig  # noqa: E402


def mean_dice(result: dict, method: str) -> float:
    return float(np.mean(bm.dataset_per_volume_dice(result)[method]))


def main(data: str, method: str, iterations: int, max_test: int, seeds: list[int]) -> None:
    torch.set_num_threads(1)
    files = bm.case_files(data)
    cases = [f.read() for f in files]
    scores = {"loaded": [], "streamed": []}
    for seed in seeds:
        for how, source in (("loaded", cases), ("streamed", files)):
            r = bm.run_dataset(source, [method], axis=0, iterations=iterations, max_test=max_test,
                               base_config=TrainConfig(seed=seed, threads=1))
            scores[how].append(mean_dice(r, method))
        print(f"seed {seed}: loaded {scores['loaded'][-1]:.4f}, streamed {scores['streamed'][-1]:.4f}", flush=True)
    c = paired(scores["loaded"], scores["streamed"])
    print(f"{method}, {iterations} iterations, {len(seeds)} seeds: loaded {np.mean(scores['loaded']):.4f}, "
          f"streamed {np.mean(scores['streamed']):.4f}, streamed - loaded {c.mean_difference:+.4f} "
          f"(wins/losses {c.wins}/{c.losses} of {c.n} seeds, Wilcoxon p = {c.p:.3f})")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), [int(s) for s in a[4:]])
