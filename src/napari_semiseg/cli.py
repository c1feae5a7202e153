"""Command line: ``napari-semiseg demo | evaluate`` (train, predict and benchmark come with the engine)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .core.io import InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-semiseg", description=__doc__)
    p.add_argument("--version", action="version", version=f"napari-semiseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="open napari with the plugin on the sample volume "
                                       "(headless without a display)")
    demo.add_argument("--headless", action="store_true", help="run without a window even if a display exists")
    demo.add_argument("--out", default="semiseg-output", help="output folder for the headless run")

    ev = sub.add_parser("evaluate", help="per-class Dice, Jaccard, HD95 and ASD of a prediction against a reference")
    ev.add_argument("pred", help="predicted label map (NIfTI or TIFF)")
    ev.add_argument("ref", help="reference label map (NIfTI or TIFF)")
    ev.add_argument("--mm", action="store_true",
                    help="distances in mm from the reference's voxel spacing (default: voxels, as the field reports)")
    ev.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    try:
        return {"demo": cmd_demo, "evaluate": cmd_evaluate}[args.command](args)
    except InputError as err:
        print(f"napari-semiseg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-semiseg: interrupted", file=sys.stderr)
        return 130


def cmd_evaluate(args) -> int:
    from .core.io import read_labels
    from .core.metrics import format_table, per_class_metrics, summarise

    pred = read_labels(args.pred)
    ref = read_labels(args.ref)
    if pred.data.shape != ref.data.shape:
        raise InputError(f"The prediction has shape {pred.data.shape} but the reference has "
                         f"{ref.data.shape}; they must match.")
    spacing = ref.source.spacing if args.mm else None
    metrics = per_class_metrics(pred.data, ref.data, spacing=spacing)
    if not metrics:
        raise InputError("Neither label map contains a foreground class: nothing to evaluate.")
    print(format_table(metrics, unit="mm" if args.mm else "voxels"))
    if args.json:
        summary = summarise({Path(args.pred).name: metrics})
        summary["distance_unit"] = "mm" if args.mm else "voxels"
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"metrics written to {args.json}")
    return 0


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_demo(args) -> int:
    if args.headless or not has_display():
        from .demo import run_headless

        run_headless(Path(args.out))
        return 0
    from .napari.demo import run_viewer

    run_viewer()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
