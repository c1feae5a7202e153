"""The human-in-the-loop curve: Dice on the slices not labeled against the number of slices labeled,
from one or more JSON files of `napari-semiseg benchmark --protocol loop` (their volumes merged),
printed as a Markdown table with paired comparisons and drawn as an SVG (no plotting library).

    python benchmarks/plot_loop.py benchmarks/loop_curve.svg RUN.json [RUN2.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 60, 200, 20, 50
COLOURS = ["#1b6ca8", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#111111", "#888888"]


def series(summary: dict) -> list[tuple[str, list[float], list[float], str]]:
    x = summary["labeled_counts"]
    out = []
    for pol, curve in summary["curves"].items():
        out.append((f"engine, {pol} proposal", x, curve["engine"], "solid"))
    for pol, curve in summary["curves"].items():
        out.append((f"interpolation, {pol} slices", x, curve["interpolation"], "dotted"))
    out.append(("interpolation, evenly spaced", x, summary["even_interpolation"], "dotted"))
    if "ceiling" in summary:  # not in a --curve-only run
        out.append((f"engine, {x[-1]} evenly spaced", [x[-1]], [summary["even_engine"]], "point"))
        out.append(("ceiling (every slice labeled)", [x[0], x[-1]], [summary["ceiling"]] * 2, "dashed"))
    return out


def svg(summary: dict, title: str) -> str:
    lines = series(summary)
    xs = [v for _, x, _, _ in lines for v in x]
    ys = [v for _, _, y, _ in lines for v in y]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05)

    def px(x):
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(y):
        return H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="14" font-size="12">{title}</text>',
           f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="black"/>']
    for x in sorted(set(summary["labeled_counts"])):
        out.append(f'<text x="{px(x):.1f}" y="{H - BOTTOM + 15}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - 12}" text-anchor="middle">slices labeled</text>')
    step = 0.05
    y = round(y0 / step) * step
    while y <= y1 + 1e-9:
        if y >= y0:
            out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
            out.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{W - RIGHT}" y2="{py(y):.1f}" stroke="#eee"/>')
        y += step
    out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2:.0f}" transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2:.0f})" '
               'text-anchor="middle">Dice on the slices not labeled</text>')
    for i, (name, x, y, style) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        if style == "point":
            out.append(f'<circle cx="{px(x[0]):.1f}" cy="{py(y[0]):.1f}" r="5" fill="{colour}"/>')
        else:
            dash = {"dotted": ' stroke-dasharray="2 3"', "dashed": ' stroke-dasharray="8 4"'}.get(style, "")
            pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for a, b in zip(x, y):
                out.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{colour}"/>')
        ly = TOP + 14 + 16 * i
        if style == "point":  # the legend shows each series as it is drawn
            out.append(f'<circle cx="{W - RIGHT + 20}" cy="{ly - 4}" r="5" fill="{colour}"/>')
        else:
            out.append(f'<line x1="{W - RIGHT + 10}" y1="{ly - 4}" x2="{W - RIGHT + 30}" y2="{ly - 4}" '
                       f'stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{W - RIGHT + 34}" y="{ly}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def merged_summary(paths: list[str]) -> tuple[str, dict, int, int]:
    from napari_semiseg.core.benchmark import LoopResult, loop_summary

    runs = [json.loads(Path(p).read_text()) for p in paths]
    method = next(iter(runs[0]["methods"]))
    results = [LoopResult(**v) for r in runs for v in r["methods"][method]["volumes"]]
    return method, loop_summary(results), len(results), runs[0]["rounds"]


def table(summary: dict) -> str:
    counts = summary["labeled_counts"]
    rows = ["| slices labeled | " + " | ".join(map(str, counts)) + " |", "|---|" + "---|" * len(counts)]
    for pol, curve in summary["curves"].items():
        rows.append(f"| engine, {pol} proposal | " + " | ".join(f"{x:.3f}" for x in curve["engine"]) + " |")
        rows.append(f"| interpolation, {pol} slices | " + " | ".join(f"{x:.3f}" for x in curve["interpolation"])
                    + " |")
    rows.append("| interpolation, evenly spaced | " + " | ".join(f"{x:.3f}" for x in summary["even_interpolation"])
                + " |")
    if "ceiling" in summary:  # not in a --curve-only run
        rows.append(f"| engine, {counts[-1]} evenly spaced from the start | " + " | " * (len(counts) - 1)
                    + f"{summary['even_engine']:.3f} |")
        rows.append("| ceiling: every slice labeled | " + " | " * (len(counts) - 1) + f"{summary['ceiling']:.3f} |")
    lines = ["\n".join(rows), ""]
    for key, label in (("final_vs_spacing", "spacing proposal"), ("final_vs_even_engine", "even slices from the start")):
        for pol, c in summary.get(key, {}).items():
            lines.append(f"- {pol} vs {label}, at {counts[-1]} slices: {c['mean_difference']:+.3f}, "
                         f"wins/losses {c['wins']}/{c['losses']} of {c['n']}, Wilcoxon p = {c['p']:.3f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    method, summary, n, rounds = merged_summary(argv[1:])
    print(table(summary))
    Path(argv[0]).write_text(svg(summary, f"{method}, {n} volumes, {rounds} rounds (mean)"))
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
