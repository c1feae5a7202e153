"""Session-protocol runs compared per volume, with wins/losses and a paired Wilcoxon test.

    python benchmarks/paired_session.py BEFORE.json AFTER.json [AFTER2.json ...]
    python benchmarks/paired_session.py --against supervised RUN.json [RUN2.json ...]

BEFORE is a session JSON from `napari-semiseg benchmark --protocol session --json`, or
`benchmarks/reference/session_before_native.json` (the per-volume figures of RESULTS.md §8.1).
The first form compares each method with itself (before → after); the second compares every
method of the merged runs with one baseline method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.comparison import paired  # noqa: E402


def dice_by_method(path: Path) -> dict[str, dict[str, float]]:
    d = json.loads(path.read_text())
    if "dice" in d:  # a reference file
        return d["dice"]
    out: dict[str, dict[str, float]] = {}
    for v in d["volumes"]:
        for m, r in v["methods"].items():
            out.setdefault(m, {})[v["case"]] = r["dice"]
    return out


def merged(paths) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for p in paths:
        for m, per in dice_by_method(Path(p)).items():
            out.setdefault(m, {}).update(per)
    return out


def row(name: str, a: dict[str, float], b: dict[str, float]) -> str:
    cases = sorted(set(a) & set(b))
    before, after = [a[c] for c in cases], [b[c] for c in cases]
    c = paired(before, after)
    return (f"| {name} | {sum(before) / len(cases):.3f} | {sum(after) / len(cases):.3f} | {c.mean_difference:+.3f} "
            f"| {c.wins}/{c.losses} | {c.p:.3f} |")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("| method | before / baseline | after / method | difference | wins/losses | Wilcoxon p |")
    print("|---|---|---|---|---|---|")
    if argv[0] == "--against":
        runs = merged(argv[2:])
        base = runs[argv[1]]
        for m, per in runs.items():
            if m != argv[1]:
                print(row(f"{m} vs {argv[1]}", base, per))
        return 0
    before, after = dice_by_method(Path(argv[0])), merged(argv[1:])
    for m, per in after.items():
        if m in before:
            print(row(m, before[m], per))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
