"""Dataset-scale training: throughput on 1 and 2 ranks, and memory against the size of the data set.

    python benchmarks/scale_out.py [--iterations 60] [--device cpu|cuda]

Writes synthetic NIfTI volumes (uncompressed, 24 x 192 x 192 float32, a quarter labeled) under
benchmarks/out/scale_out/, then launches the real command line under torchrun:
- throughput: slices per second for 1 rank with every thread and for 2 ranks sharing the same
  cores (CPU) or one GPU each; the ratio is the scaling.
- memory: peak memory of the whole process tree (launcher, ranks, reading workers; each process's
  unique memory, so shared libraries count once per process tree, not once per process) for a
  data set of 8 and of 64 volumes: streaming must not grow with the data set.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

OUT = Path(__file__).parent / "out" / "scale_out"


def data_set(n: int) -> Path:
    root = OUT / f"volumes_{n}"
    if (root / "images" / f"v{n - 1:03d}.nii").exists():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:24, :192, :192]
    for i in range(n):
        c = rng.uniform(60, 130, 2)
        lab = (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < rng.uniform(15, 40) ** 2).astype(np.uint8)
        img = (rng.normal(0, 1, lab.shape) + 1.5 * lab).astype(np.float32)
        affine = np.diag([1.0, 1.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(img.transpose(2, 1, 0).copy(), affine), root / "images" / f"v{i:03d}.nii")
        if i % 4 == 0:
            nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0).copy(), affine), root / "labels" / f"v{i:03d}.nii")
    return root


def train(data: Path, nproc: int, threads: int, iterations: int, device: str, workers: int,
          watch_memory: bool = False) -> tuple[float, float]:
    """(slices per second, peak bytes of the process tree: only with ``watch_memory``, whose reading
    of /proc costs CPU time the throughput runs must not lose)."""
    out = OUT / f"model_{nproc}_{data.name}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={29600 + nproc}", "-m", "napari_semiseg", "train", str(data), "--out", str(out),
           "--iterations", str(iterations), "--threads", str(threads), "--device", device, "--seed", "0",
           "--set", "batch_size=8", "--set", f"loader_workers={workers}", "--set", "checkpoint_seconds=100000"]
    if out.exists():
        import shutil

        shutil.rmtree(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    peak = 0
    while proc.poll() is None and watch_memory:
        try:
            tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
            # unique memory of each process (USS): the shared torch libraries counted once, not per process
            peak = max(peak, sum(p.memory_full_info().uss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    text = proc.communicate()[0]
    m = re.search(r"(\d+) iterations in ([\d.]+) s", text)
    if proc.returncode or not m:
        raise SystemExit(text[-3000:])
    return int(m.group(1)) * 8 * nproc / float(m.group(2)), peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    args = ap.parse_args()
    small, large = data_set(8), data_set(64)
    one, _ = train(small, 1, args.cores, args.iterations, args.device, 1)
    two, _ = train(small, 2, max(1, args.cores // 2), args.iterations, args.device, 1)
    print(f"throughput ({args.device}, {args.cores} cores): 1 rank {one:.1f} slices/s, 2 ranks {two:.1f} slices/s, "
          f"ratio {two / one:.2f}")
    _, mem_small = train(small, 1, args.cores, args.iterations, args.device, 2, watch_memory=True)
    _, mem_large = train(large, 1, args.cores, args.iterations, args.device, 2, watch_memory=True)
    size = sum(f.stat().st_size for f in (large / "images").iterdir())
    print(f"peak unique memory of the process tree: 8 volumes {mem_small / 2**20:.0f} MiB, 64 volumes "
          f"{mem_large / 2**20:.0f} MiB (ratio {mem_large / mem_small:.2f}; the 64 images hold "
          f"{size / 2**20:.0f} MiB on disk)")


if __name__ == "__main__":
    main()
