"""Time of one training step of each method, and its ratio to supervised training's.

    python benchmarks/step_cost.py [--patch 48] [--labeled 4] [--unlabeled 4] [--threads 1] [--steps 10]

At equal time a method that costs k times a supervised step takes 1/k of its steps: this says where a
method's budget goes before any Dice is measured. Random images on the CPU, past every warm-up (the
unlabeled terms all on). SRA-Seg is left out: its alignment needs the frozen encoder and a labeled bank.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from napari_semiseg.core.methods import build_method  # noqa: E402
from napari_semiseg.core.methods.base import Batch, TrainState  # noqa: E402

METHODS = ("supervised", "mean-teacher", "bcp", "sgrs-net", "barl", "transmedseg")


def step_seconds(name: str, batch: Batch, n_classes: int, steps: int) -> float:
    """Mean seconds of a full step (losses, backward, optimiser, EMA) after three untimed ones."""
    method = build_method(name, batch.x_l.shape[1], n_classes)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step(i: int) -> None:
        state = TrainState(1000 + i, 0.5)  # half the budget used: pre-training and ramps are over
        loss = method.training_step(batch, state)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(state)

    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(3 + i)
    return (time.perf_counter() - start) / steps


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=48, help="patch side (the hippocampus slices' size on a CPU)")
    ap.add_argument("--labeled", type=int, default=4)
    ap.add_argument("--unlabeled", type=int, default=4)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    p = args.patch
    batch = Batch(torch.randn(args.labeled, 1, p, p), torch.randint(0, args.classes, (args.labeled, p, p)),
                  torch.randn(args.unlabeled, 1, p, p))
    names = args.methods.split(",")
    if "supervised" not in names:
        names.insert(0, "supervised")
    base = None
    print(f"patch {p}, {args.labeled} labeled + {args.unlabeled} unlabeled, {args.threads} thread(s)")
    print("| method | ms per step | × supervised |\n|---|---|---|")
    for name in names:
        seconds = step_seconds(name, batch, args.classes, args.steps)
        base = base or seconds
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / base:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
