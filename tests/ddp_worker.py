"""Run by torchrun in tests/test_distributed.py: one real Trainer per rank, results written per rank.

``grads OUT``: one step of a per-sample method (group norm, no dropout, cross-entropy per pixel) on
four fixed 32x32 images, batch 4 split over the ranks; saves the gradients.
``state OUT METHOD PRECISION``: a few augmented steps of METHOD; saves the whole method state
(student, EMA teacher, batch-norm and class statistics).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_semiseg.core import distributed
from napari_semiseg.core.methods import METHODS, Method
from napari_semiseg.core.networks import UNet2D
from napari_semiseg.core.trainer import TrainConfig, Trainer
from napari_semiseg.core.volume import Volume


class PerSample(Method):
    """A loss that is a mean over samples, and a network without batch coupling: the one setting in
    which B/2 + B/2 on two ranks must equal B on one."""

    name = "per-sample"

    def __init__(self, in_channels, n_classes, settings=None):
        super().__init__(in_channels, n_classes, settings)
        self.student = UNet2D(in_channels, n_classes, dropout=(0.0,) * 5, norm="group")

    def training_step(self, batch, state):
        loss = F.cross_entropy(self.student(batch.x_l), batch.y_l)
        return {"loss": loss}


def images(n: int = 4, side: int = 32) -> list[Volume]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        img = rng.normal(0, 1, (side, side)).astype(np.float32)
        lab = np.zeros((side, side), np.uint8)
        lab[4 + i:20 + i, 6:22] = 1
        out.append(Volume(img + 2 * lab, lab, {0}, name=f"im{i}"))
    return out


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    ranks = distributed.start("cpu")
    if mode == "grads":
        METHODS[PerSample.name] = PerSample
        per_rank = 4 // ranks.world
        cfg = TrainConfig(method="per-sample", iterations=1, batch_size=per_rank, labeled_batch=per_rank, patch_size=32,
                          augment=False, foreground_fraction=0.0, device="cpu", threads=1, precision="fp32",
                          final_prediction=False)
        trainer = Trainer(images(), cfg)
        trainer.step(0.0)
        grads = {k: p.grad.clone() for k, p in trainer.method.student.named_parameters()}
        torch.save(grads, out / f"grads_world{ranks.world}_rank{ranks.rank}.pt")
    elif mode == "state":
        method, precision = sys.argv[3], sys.argv[4]
        # no supervised warm-up: these few steps are to take the unlabeled path (teacher, statistics)
        settings = {"mean-teacher": {"warmup": "none", "paced": False},
                    "transmedseg": {"rampup_iterations": 2, "base_settings": {"warmup": "none", "paced": False}}}.get(method, {})
        cfg = TrainConfig(method=method, iterations=12, batch_size=4, patch_size=32, device="cpu", threads=1,
                          precision=precision, final_prediction=False, method_settings=settings)
        vols = images(6)
        for v in vols[2:]:  # four unlabeled
            v.set_labels(np.zeros_like(v.labels), set())
        trainer = Trainer(vols, cfg)
        trainer.train()
        state = {k: v.detach().clone() for k, v in trainer.method.state_dict(keep_vars=False).items()}
        torch.save(state, out / f"state_{method}_rank{ranks.rank}.pt")


if __name__ == "__main__":
    main()
