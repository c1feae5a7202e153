"""Time of one training step of each method, and its ratio to supervised training's.

    python benchmarks/step_cost.py [--patch 48] [--labeled 4] [--unlabeled 4] [--threads 1] [--steps 10]

At equal time a method that costs k times a supervised step takes 1/k of its steps: this says where a
method's budget goes before any Dice is measured. Random images on the CPU, past every warm-up (the
unlabeled terms all on). SRA-Seg is left out: its alignment needs the frozen encoder and a labeled bank.
The last column is the share of the step spent in the EMA teacher's forward passes: the most that a
cheaper teacher could give back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from throughput import measure  # noqa: E402  (this folder; the same timed step, fp32 on the CPU)

from napari_semiseg.core.methods import METHODS as METHOD_CLASSES  # noqa: E402
from napari_semiseg.core.methods.base import TeacherMixin  # noqa: E402
from napari_semiseg.core.variants import parse_variant  # noqa: E402

METHODS = ("supervised", "mean-teacher", "bcp", "sgrs-net", "barl", "transmedseg")


class TeacherClock:
    """Seconds spent in the forward passes of every EMA teacher built while it is installed."""

    def __init__(self):
        self.seconds = 0.0
        self._make_teacher = TeacherMixin._make_teacher

    def __enter__(self):
        clock, make = self, self._make_teacher

        def make_timed_teacher(method):
            make(method)
            forward = method.teacher.forward

            def timed(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return forward(*args, **kwargs)
                finally:
                    clock.seconds += time.perf_counter() - t0

            method.teacher.forward = timed

        TeacherMixin._make_teacher = make_timed_teacher
        return self

    def __exit__(self, *exc):
        TeacherMixin._make_teacher = self._make_teacher


def step_seconds(variant, args, first_iteration: int = 1000) -> tuple[float, float]:
    """Mean seconds of one full step of ``variant`` (a parsed method variant) and the share of it in
    teacher passes, past every warm-up (the unlabeled terms all on, on every step even for a paced
    method: what a step that takes them costs), or from ``first_iteration`` (0: in
    a supervised warm-up, for a method that has one by default)."""
    batch = args.labeled + args.unlabeled
    settings = dict(variant.settings or {})
    if first_iteration and hasattr(METHOD_CLASSES[variant.method].Settings(), "paced"):
        # the price of a step that takes the unlabeled stream: paced, a ramp restarting at the warm-up's
        # end would have most of these steps skip it
        settings["paced"] = False
    with TeacherClock() as teacher:
        t0 = time.perf_counter()
        rate = measure(torch.device("cpu"), args.patch, batch, args.labeled, "fp32", False, args.steps,
                       method_name=variant.method, in_channels=1, n_classes=args.classes,
                       first_iteration=first_iteration, settings=settings)
        total = time.perf_counter() - t0  # every step, the untimed warm-up ones too, as the teacher's clock
    return batch / rate, teacher.seconds / total


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=48, help="patch side (the hippocampus slices' size on a CPU)")
    ap.add_argument("--labeled", type=int, default=4)
    ap.add_argument("--unlabeled", type=int, default=4)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--methods", default=",".join(METHODS), help="names or variants, e.g. bcp[pairs=0]; ';' "
                    "separates them when a variant's brackets hold a comma")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.methods.split(";" if ";" in args.methods else ",")
    if "supervised" not in names:
        names.insert(0, "supervised")
    base = None
    print(f"patch {args.patch}, {args.labeled} labeled + {args.unlabeled} unlabeled, {args.threads} thread(s)")
    print("| method | ms per step | × supervised | teacher passes |\n|---|---|---|---|")
    for name in names:
        variant = parse_variant(name)
        seconds, teacher = step_seconds(variant, args)
        base = base or seconds
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / base:.1f} | {teacher:.0%} |")
        if getattr(METHOD_CLASSES[variant.method].Settings(), "warmup", "none") != "none":
            seconds, teacher = step_seconds(variant, args, first_iteration=0)
            print(f"| {name}, in its warm-up | {seconds * 1000:.0f} | {seconds / base:.1f} | {teacher:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
