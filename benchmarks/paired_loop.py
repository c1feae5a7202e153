"""Loop-protocol runs compared per volume against one method, after each round of the gain proposal.

    python benchmarks/paired_loop.py --against supervised RUN.json [RUN2.json ...]
    python benchmarks/paired_loop.py --before BEFORE.json AFTER.json

RUN files are `napari-semiseg benchmark --protocol loop --json` outputs; runs of the same method on
different volumes (the two halves of run_all.sh) are merged. ``--before`` compares each method of
AFTER with the same method in BEFORE (a change of setting, e.g. --set relabel_ramp_iterations=0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.comparison import paired  # noqa: E402


def volumes(paths) -> dict[str, dict[str, dict]]:
    """method -> volume -> its record in the runs (runs of one method on different volumes merged)."""
    out: dict[str, dict[str, dict]] = {}
    for p in paths:
        for method, run in json.loads(Path(p).read_text())["methods"].items():
            for v in run["volumes"]:
                out.setdefault(method, {})[v["case"]] = v
    return out


def curves(runs, policy: str = "gain") -> dict[str, dict[str, list[float]]]:
    """method -> volume -> Dice after each round, then with K+R even slices and the ceiling (None
    where the run did not train them: --curve-only)."""
    return {method: {case: [pt["dice"] for pt in v["curves"][policy]] + [
        v[key]["dice"] if v[key] else None for key in ("even_engine", "ceiling")] for case, v in per.items()}
        for method, per in runs.items()}


def steps(runs, policy: str = "gain") -> dict[str, dict[str, list]]:
    """method -> volume -> steps taken when each round was scored (None in runs that predate it)."""
    return {method: {case: [pt.get("iteration") for pt in v["curves"][policy]] for case, v in per.items()}
            for method, per in runs.items()}


def step_range(per_volume: dict, cases: list, r: int) -> str:
    """'min-max' steps over the volumes at round r, or '?' where a run did not record them."""
    found = [per_volume[c][r] for c in cases if per_volume.get(c) and r < len(per_volume[c])]
    if not found or None in found:
        return "?"
    return f"{min(found)}-{max(found)}"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("--against", "--before"):
        print(__doc__)
        return 2
    if argv[0] == "--before":
        before_runs, after_runs = volumes([argv[1]]), volumes(argv[2:])
        before, after = curves(before_runs), curves(after_runs)
        before_steps, after_steps = steps(before_runs), steps(after_runs)
        for method in after:
            compare(f"{method}, before", before[method], method, after[method],
                    (before_steps[method], after_steps[method]))
        return 0
    runs = volumes(argv[2:])
    base_name, found, counted = argv[1], curves(runs), steps(runs)
    base = found.pop(base_name)
    for method, per in found.items():
        compare(base_name, base, method, per, (counted[base_name], counted[method]))
    return 0


def compare(base_name: str, base: dict, method: str, per: dict, counted: tuple[dict, dict]) -> None:
    """Per volume, after each round (and the references where both runs trained them)."""
    cases = sorted(set(per) & set(base))
    rounds = len(base[cases[0]]) - 2
    names = [f"after {r} corrections" for r in range(rounds)] + [
        f"{rounds - 1} more even slices from the start", "every slice labeled (ceiling)"]
    print(f"{method} vs {base_name} ({len(cases)} volumes):")
    for r, name in enumerate(names):
        a, b = [base[c][r] for c in cases], [per[c][r] for c in cases]
        if None in a or None in b:  # a reference one of the runs did not train
            continue
        res = paired(a, b)
        took = (f", steps {step_range(counted[0], cases, r)} -> {step_range(counted[1], cases, r)}"
                if r < rounds else "")
        print(f"  {name}: {sum(a) / len(a):.3f} -> {sum(b) / len(b):.3f} "
              f"({res.mean_difference:+.3f}), wins/losses {res.wins}/{res.losses}, Wilcoxon p = {res.p:.3f}{took}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
