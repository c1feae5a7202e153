"""Turns the JSON files of benchmarks/run_all.sh into the Markdown tables of RESULTS.md.

    python benchmarks/summarise.py benchmarks/out
    python benchmarks/summarise.py --per-image RUN.json [RUN2.json ...]   (dataset runs on one split, merged)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


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


def merged_session_table(paths: list[Path], only_volumes: int | None = None) -> str:
    """Several session runs over the same volumes as one table: teacher Dice per method, and the
    mean iterations each method reached in its budget."""
    runs = [json.loads(p.read_text()) for p in paths if p.exists()]
    if not runs:
        return "(no results)"
    volumes = runs[0]["volumes"][:only_volumes]
    methods = [m for r in runs for m in r["volumes"][0]["methods"]]
    per = {v["case"]: {} for v in volumes}
    for r in runs:
        for v in r["volumes"]:
            if v["case"] in per:
                per[v["case"]].update(v["methods"])
    rows = ["| volume | interpolation | " + " | ".join(methods) + " |", "|" + "---|" * (2 + len(methods))]
    for v in volumes:
        rows.append(f"| {v['case']} | {v['interpolation']:.3f} | " + " | ".join(
            f"{per[v['case']][m]['dice']:.3f}" for m in methods) + " |")
    mean = {m: sum(per[c][m]["dice"] for c in per) / len(per) for m in methods}
    interp = sum(v["interpolation"] for v in volumes) / len(volumes)
    rows.append(f"| **mean** | **{interp:.3f}** | " + " | ".join(f"**{mean[m]:.3f}**" for m in methods) + " |")
    rows.append("| student mean | | " + " | ".join(
        f"{sum(per[c][m]['student_dice'] for c in per) / len(per):.3f}" for m in methods) + " |")
    rows.append("| iterations (mean) | | " + " | ".join(
        f"{sum(per[c][m]['iterations'] for c in per) / len(per):.0f}" for m in methods) + " |")
    if "mean-teacher" in methods:
        mt = {c: per[c]["mean-teacher"]["dice"] for c in per}
        rows.append("| better than mean teacher on | | " + " | ".join(
            f"{sum(per[c][m]['dice'] > mt[c] for c in per)}/{len(per)}" for m in methods) + " |")
    return "\n".join(rows)


def dataset_methods_table(path: Path) -> str:
    d = json.loads(path.read_text())
    rows = [f"{d['n_train_volumes']} training images/volumes ({d['n_labeled_volumes']} labeled), "
            f"{len(d['test'])} test.\n",
            "| method | teacher Dice | teacher HD95 (vox) | student Dice | iterations |", "|---|---|---|---|---|"]
    for m, r in d["methods"].items():
        t, st = r["teacher"]["mean"], r["student"]["mean"]
        rows.append(f"| {m} | {t['dice']:.4f} | {t['hd95']:.2f} | {st['dice']:.4f} | {r['iterations']} |")
    if "second_observer" in d:
        so = d["second_observer"]["mean"]
        rows.append(f"| second observer (human ceiling) | {so['dice']:.4f} | {so['hd95']:.2f} | | |")
    return "\n".join(rows)


def per_image_dataset_table(paths: list[Path], baseline: str = "supervised") -> str:
    """Runs of the dataset protocol on the same split merged: Dice per test image and method
    (teacher), means, steps, and wins/losses with a paired Wilcoxon test against ``baseline``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from napari_semiseg.core.comparison import paired

    methods: dict = {}
    for path in paths:
        methods.update(json.loads(path.read_text())["methods"])
    images = sorted(next(iter(methods.values()))["teacher"]["volumes"])

    def dice(m, which="teacher"):
        return [float(np.mean([c["dice"] for c in methods[m][which]["volumes"][i].values()])) for i in images]

    rows = ["| image | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for k, image in enumerate(images):
        rows.append(f"| {image} | " + " | ".join(f"{dice(m)[k]:.3f}" for m in methods) + " |")
    rows.append("| **mean (teacher)** | " + " | ".join(f"**{np.mean(dice(m)):.3f}**" for m in methods) + " |")
    rows.append("| student mean | " + " | ".join(f"{np.mean(dice(m, 'student')):.3f}" for m in methods) + " |")
    rows.append("| iterations | " + " | ".join(str(methods[m]["iterations"]) for m in methods) + " |")
    cells = []
    for m in methods:
        if m == baseline or baseline not in methods:
            cells.append("–")
            continue
        r = paired(dice(baseline), dice(m))
        cells.append(f"{r.mean_difference:+.3f}, {r.wins}/{r.losses}, p={r.p:.3f}")
    rows.append(f"| vs {baseline}: difference, wins/losses, Wilcoxon p | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--per-image":  # [--against METHOD] RUN.json [RUN2.json ...]
        args, baseline = sys.argv[2:], "supervised"
        if args[0] == "--against":
            baseline, args = args[1], args[2:]
        print(per_image_dataset_table([Path(p) for p in args], baseline))
        return
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out")
    for name in ("session_iso", "session_aniso", "session_warm", "session_uncertainty"):
        p = out / f"{name}.json"
        if p.exists():
            print(f"### {name}\n\n{session_table(p)}\n")
    p = out / "dataset.json"
    if p.exists():
        print(f"### dataset\n\n{dataset_table(p)}\n")
    session = [out / f"methods_session_{k}.json" for k in "abcde"]
    if session[0].exists():
        print(f"### methods, session\n\n{merged_session_table(session)}\n")
        print(f"### methods, ablations (3 volumes)\n\n"
              f"{merged_session_table(session + [out / 'methods_ablation.json'], only_volumes=3)}\n")
    for name in ("methods_dataset_hippo", "methods_dataset_chase"):
        p = out / f"{name}.json"
        if p.exists():
            print(f"### {name}\n\n{dataset_methods_table(p)}\n")


if __name__ == "__main__":
    main()
