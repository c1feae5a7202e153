"""What the safety features cost: a checkpoint save, an autosave of a CT-sized label map, the slot hash.

    .venv/bin/python benchmarks/save_costs.py

Prints seconds per checkpoint (default mean-teacher network, weights + optimiser state, written as
a new folder and swapped in), seconds and bytes per autosave of a 512x512x300 label map with 20
painted slices (on the autosave thread, not the GUI's), and seconds to key a 512x512x300 float32 volume.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(n, fn):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main() -> None:
    from napari_semiseg.core.autosave import Slot, image_key
    from napari_semiseg.core.trainer import TrainConfig, Trainer
    from napari_semiseg.core.volume import Volume

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vol = Volume(rng.random((12, 64, 64)).astype(np.float32), (rng.random((12, 64, 64)) > 0.7).astype(np.uint8),
                     {2, 6, 9}, axis=0)
        trainer = Trainer([vol], TrainConfig(iterations=2, batch_size=4, labeled_batch=2, device="cpu"),
                          out_dir=tmp / "model")
        trainer.train()
        size = sum(p.stat().st_size for p in (tmp / "model").iterdir())
        lo, med = best_of(5, lambda: trainer.save(tmp / "model"))
        print(f"checkpoint (mean teacher, {size / 1e6:.1f} MB): {med:.3f} s median, {lo:.3f} s best; "
              f"once a minute that is {100 * med / 60:.2f} % of training time")

        labels = np.zeros((300, 512, 512), np.uint8)
        for i in range(0, 300, 15):
            yy, xx = np.mgrid[:512, :512]
            labels[i][(yy - 256) ** 2 + (xx - 256) ** 2 < (60 + i // 3) ** 2] = 1 + i % 2
        slot = Slot(tmp / "slot")
        lo, med = best_of(3, lambda: slot.save_labels(labels, {"axis": 0}))
        print(f"autosave of a 512x512x300 label map ({labels.nbytes / 1e6:.0f} MB in memory, "
              f"{slot.labels_path.stat().st_size / 1e3:.0f} KB on disk): {med:.2f} s median on the autosave thread")
        t0 = time.perf_counter()
        np.array(labels, copy=True)
        print(f"snapshot copy of those labels (the autosave thread takes it): {time.perf_counter() - t0:.3f} s")

        image = rng.random((300, 512, 512), dtype=np.float32)
        lo, med = best_of(3, lambda: image_key(image, "/data/ct.nii.gz"))
        print(f"slot key of a 512x512x300 float32 volume (315 MB): {med:.3f} s median")


if __name__ == "__main__":
    main()
