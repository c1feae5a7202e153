"""The loop protocol's ceiling alone: every slice of a volume labeled, the loop's whole budget.

    python benchmarks/ceiling_loop.py FOLDER METHOD [SECONDS] > out.json   (one thread)

Scored as `run_loop` scores its ceiling (`benchmark.engine_dice`): Dice on the slices other than
the 3 evenly spaced start slices. Compare with the `ceiling` of a `--protocol loop --json` run of another method.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.benchmark import engine_dice, evenly_spaced_slices, load_cases  # noqa: E402
from napari_semiseg.core.trainer import TrainConfig  # noqa: E402
from napari_semiseg.core.variants import parse_variant  # noqa: E402

AXIS = 2


def main(argv: list[str]) -> int:
    folder, method = argv[0], argv[1]
    seconds = float(argv[2]) if len(argv) > 2 else 90.0
    torch.set_num_threads(1)
    cfg = replace(parse_variant(method).apply(TrainConfig(threads=1)), minutes=seconds / 60.0, report_every=1)
    out = {}
    for c in load_cases(folder):
        start = evenly_spaced_slices(c.labels, AXIS, 3)
        out[c.name] = engine_dice(c, range(c.labels.shape[AXIS]), AXIS, cfg, start)
        print(f"{c.name} {method}: ceiling {out[c.name]:.3f}", file=sys.stderr)
    print(json.dumps({"method": method, "seconds": seconds, "ceiling": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
