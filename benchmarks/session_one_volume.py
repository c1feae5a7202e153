"""The session protocol on one named volume, at equal steps: what a method does where it fails.

    python benchmarks/session_one_volume.py ../shared/data/hippocampus_msd hippocampus_015 \
        --iterations 200 --methods "supervised;bcp;sra-seg;sra-seg[labeled_weight=1.0]"

Methods are separated by ';' (a variant's settings hold commas). One thread, seed 0, K = 3 evenly
spaced slices along --axis, as `napari-semiseg benchmark --protocol session --iterations N` does for
every volume; prints the teacher's and the student's Dice on the slices nobody labeled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.benchmark import load_cases, run_session  # noqa: E402
from napari_semiseg.core.trainer import TrainConfig  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("volume", help="the case's name, e.g. hippocampus_015")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--methods", default="supervised;sra-seg")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--axis", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cases = [c for c in load_cases(args.data) if c.name == args.volume]
    if not cases:
        print(f"no volume named {args.volume} in {args.data}", file=sys.stderr)
        return 2
    result = run_session(cases[0], args.methods.split(";"), k=args.k, axis=args.axis,
                         iterations=args.iterations, base_config=TrainConfig(threads=1, seed=args.seed))
    print(f"{result.case}: interpolation {result.interpolation:.3f}")
    for name, r in result.methods.items():
        print(f"{name}: {r['dice']:.3f} (student {r['student_dice']:.3f}, {r['iterations']} steps, {r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
