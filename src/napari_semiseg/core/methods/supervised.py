"""Supervised-only training on the labeled slices: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

from ..losses import supervised_loss
from .base import Batch, Method, MethodSettings, TrainState


@dataclass
class SupervisedSettings(MethodSettings):
    pass


class Supervised(Method):
    name = "supervised"
    advice = "The labeled slices only: the baseline, and the fastest per step."
    Settings = SupervisedSettings

    def training_step(self, batch: Batch, state: TrainState):
        logits = self.student(batch.x_l)
        loss = supervised_loss(logits, batch.y_l)
        return {"loss": loss, "supervised": loss.detach()}
