"""Training throughput of one mean-teacher step: our engine's settings vs a plain fp32 NCHW step.

Prints slices/s for each configuration and the ratio. The baseline is what the field's reference code
runs: fp32, NCHW memory format, the same network and losses. Usage:

    python benchmarks/throughput.py [--device cpu|cuda] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_semiseg.core.inference import autocast_for
from napari_semiseg.core.methods import build_method
from napari_semiseg.core.methods.base import Batch, TrainState
from napari_semiseg.core.trainer import resolve_precision


def measure(device, size, batch, labeled, precision, channels_last, steps, warmup=3, method_name="mean-teacher",
            in_channels=3, n_classes=4, first_iteration=0, settings=None) -> float:
    """Slices per second of full training steps (losses, backward, optimiser, EMA) after ``warmup`` untimed
    ones; steps are numbered from ``first_iteration`` (past 1000 every warm-up phase is over)."""
    torch.manual_seed(0)
    method = build_method(method_name, in_channels, n_classes, settings).to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3)
    x_l = torch.rand(labeled, in_channels, size, size, device=device)
    y_l = torch.randint(0, n_classes, (labeled, size, size), device=device)
    x_u = torch.rand(batch - labeled, in_channels, size, size, device=device)
    if channels_last:
        x_l, x_u = (t.contiguous(memory_format=torch.channels_last) for t in (x_l, x_u))
    b = Batch(x_l, y_l, x_u)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")
    for i in range(first_iteration, first_iteration + warmup + steps):
        if i == first_iteration + warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast_for(device, precision):
            loss = method.training_step(b, TrainState(i, 0.5))["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        method.after_step(TrainState(i, 0.5))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    ours = resolve_precision("auto", device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, engine precision {ours}")
    for size, batch, labeled in ((256, 24, 12), (128, 8, 4)):
        steps = args.steps if size == 128 else max(5, args.steps // 4)
        base = measure(device, size, batch, labeled, "fp32", False, steps)
        fast = measure(device, size, batch, labeled, ours, ours != "fp32" or device.type == "cuda", steps)
        print(f"{size}x{size} batch {batch} ({labeled} labeled): fp32 NCHW {base:.1f} slices/s, "
              f"engine ({ours}, channels-last) {fast:.1f} slices/s, ratio {fast / base:.2f}x")


if __name__ == "__main__":
    main()
