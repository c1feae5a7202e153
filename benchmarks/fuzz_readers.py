"""The readers' fuzz harness (tests/fuzz_harness.py), run longer: counts per format and outcome.

    .venv/bin/python benchmarks/fuzz_readers.py --seeds 20 --cases 1200

Every mutated file must read as a sane image or be refused with one sentence; the script stops at
the first other exception (the harness names the seed and case to reproduce it).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_harness import fuzz  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--cases", type=int, default=1200, help="mutated files per seed")
    args = ap.parse_args()
    total: dict = collections.defaultdict(collections.Counter)
    slowest = (0.0, "")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            r = fuzz(Path(tmp), args.cases, seed=seed)
            for fmt, c in r["counts"].items():
                total[fmt].update(c)
            slowest = max(slowest, (r["slowest"][0], f"seed {seed} {r['slowest'][1]}"))
    n = sum(sum(c.values()) for c in total.values())
    print(f"{n} mutated files in {time.perf_counter() - t0:.0f} s; 0 escaped exceptions; slowest read "
          f"{slowest[0] * 1000:.0f} ms ({slowest[1]})")
    print(f"{'format':>8} {'read':>6} {'refused':>8}")
    for fmt, c in total.items():
        print(f"{fmt:>8} {c.get('read', 0):>6} {c.get('refused', 0):>8}")


if __name__ == "__main__":
    main()
