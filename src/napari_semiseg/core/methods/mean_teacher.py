"""Mean teacher (Tarvainen & Valpola 2017; methods-spec §2.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import sigmoid_rampup, supervised_loss
from .base import (Batch, Method, MethodSettings, TeacherMixin, TrainState, batch_stats_forward, noisy,
                   two_stream_forward)


@dataclass
class MeanTeacherSettings(MethodSettings):
    ema_decay: float = 0.99
    consistency: float = 0.1  # weight once ramped up (SSL4MIS's; 1.0 collapsed on some volumes)
    rampup_fraction: float = 0.3  # of the budget; SSL4MIS ramps over its whole 30k-iteration run
    rampup_iterations: int = 600  # used when training runs until stopped
    noise_std: float = 0.1
    noise_clip: float = 0.2
    teacher_norm: str = "running"  # "running": eval mode (measured better); "batch": the unlabeled batch's BN statistics


class MeanTeacher(TeacherMixin, Method):
    """Student on labeled + unlabeled slices; MSE to the EMA teacher's softmax on a noisy view.

    Differs from SSL4MIS on purpose: the teacher averages batch-norm statistics too and runs in eval
    mode, so the pseudo-labels the user sees are the teacher's best, not a dropout sample.
    """

    name = "mean-teacher"
    Settings = MeanTeacherSettings

    def __init__(self, in_channels, n_classes, settings=None):
        super().__init__(in_channels, n_classes, settings)
        self._make_teacher()

    def predictor(self):
        return self.teacher

    def training_step(self, batch: Batch, state: TrainState):
        s = self.settings
        nl = batch.x_l.shape[0]
        capturing = self.capture is not None
        if capturing:  # the same two passes, keeping the features a wrapping loss needs
            logits_l, feats_l = self.student(batch.x_l, return_features=True)
            logits = torch.cat([logits_l, self.student(batch.x_u)])
        else:
            logits = two_stream_forward(self.student, batch)
        sup = supervised_loss(logits[:nl], batch.y_l)
        with torch.no_grad():
            x_t = noisy(batch.x_u, s.noise_std, s.noise_clip)
            if s.teacher_norm == "batch":
                logits_t = batch_stats_forward(self.teacher, x_t)
            else:
                self.teacher.eval()
                logits_t, feats_t = self.teacher(x_t, return_features=True)
            target = torch.softmax(logits_t.float(), 1)
        if capturing:
            self._record("source", features=feats_l["decoder"], labels=batch.y_l,
                         mask=torch.ones_like(batch.y_l, dtype=torch.bool))
            if s.teacher_norm != "batch":
                self._record("target", features=feats_t["decoder"], probs=target)
        cons = torch.mean((torch.softmax(logits[nl:].float(), 1) - target) ** 2)
        w = s.consistency * sigmoid_rampup(state.ramp(s.rampup_fraction, s.rampup_iterations), 1.0)
        return {"loss": sup + w * cons, "supervised": sup.detach(), "consistency": cons.detach(),
                "consistency_weight": torch.tensor(w)}

    @torch.no_grad()
    def after_step(self, state: TrainState):
        self.ema_update(state.iteration, self.settings.ema_decay)
