"""Turns the JSON files of benchmarks/run_all.sh into the Markdown tables of RESULTS.md.

    python benchmarks/summarise.py benchmarks/out
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def session_table(path: Path) -> str:
    d = json.loads(path.read_text())
    methods = [m for m in d["volumes"][0]["methods"]]
    head = "| volume | labeled slices | interpolation | " + " | ".join(
        f"{m} (teacher) | {m} (student) | {m} it" for m in methods) + " |"
    sep = "|" + "---|" * (3 + 3 * len(methods))
    rows = [head, sep]
    for v in d["volumes"]:
        cells = [v["case"], ",".join(map(str, v["labeled"])), f"{v['interpolation']:.3f}"]
        for m in methods:
            r = v["methods"][m]
            cells += [f"{r['dice']:.3f}", f"{r['student_dice']:.3f}", str(r["iterations"])]
        rows.append("| " + " | ".join(cells) + " |")
    mean = d["mean"]
    cells = ["**mean**", "", f"**{mean['interpolation']:.3f}**"]
    for m in methods:
        cells += [f"**{mean[m]:.3f}**", f"{mean[m + ' (student)']:.3f}", ""]
    rows.append("| " + " | ".join(cells) + " |")
    for m in methods:
        diffs = [v["methods"][m]["dice"] - v["interpolation"] for v in d["volumes"]]
        rows.append(f"\n{m}: {mean[m] - mean['interpolation']:+.3f} over interpolation on average; "
                    f"worse than interpolation on {sum(x < 0 for x in diffs)} of {len(diffs)} volumes "
                    f"(worst {min(diffs):+.3f}).")
    return "\n".join(rows)


def dataset_table(path: Path) -> str:
    d = json.loads(path.read_text())
    rows = [f"{d['n_train_volumes']} training volumes ({d['n_labeled_volumes']} labeled), "
            f"{len(d['test'])} test volumes.\n",
            "| method | network | Dice | Jaccard | HD95 (vox) | ASD (vox) | iterations |", "|---|---|---|---|---|---|---|"]
    for m, r in d["methods"].items():
        for which in ("teacher", "student"):
            s = r[which]["mean"]
            rows.append(f"| {m} | {which} | {s['dice']:.4f} | {s['jaccard']:.4f} | {s['hd95']:.2f} | {s['asd']:.2f} "
                        f"| {r['iterations']} |")
    return "\n".join(rows)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out")
    for name in ("session_iso", "session_aniso", "session_warm", "session_uncertainty"):
        p = out / f"{name}.json"
        if p.exists():
            print(f"### {name}\n\n{session_table(p)}\n")
    p = out / "dataset.json"
    if p.exists():
        print(f"### dataset\n\n{dataset_table(p)}\n")


if __name__ == "__main__":
    main()
