"""Mean teacher (Tarvainen & Valpola 2017; methods-spec §2.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inference import Predictor
from ..losses import supervised_loss
from .base import (AgreementWarmup, Batch, Method, StepFeatures, TeacherMixin, TeacherSettings, TrainState,
                   WarmupSettings, batch_stats_forward, check_fraction, labeled_source, noisy)


@dataclass
class MeanTeacherSettings(TeacherSettings, WarmupSettings):
    consistency: float = 0.1  # weight once ramped up (SSL4MIS's; 1.0 collapsed on some volumes)
    rampup_fraction: float = 0.3  # of the budget; SSL4MIS ramps over its whole 30k-iteration run
    rampup_iterations: int = 600  # used when training runs until stopped
    noise_std: float = 0.1
    noise_clip: float = 0.2
    teacher_norm: str = "running"  # "running": eval mode (measured better); "batch": the unlabeled batch's BN statistics
    align: bool = False  # distribution alignment of the teacher's probabilities to the labeled class frequencies
    confidence: float = 0.0  # consistency only on pixels the teacher gives at least this probability; 0: all
    # Supervised steps (no unlabeled stream, supervised training's price) until the student agrees with
    # the labels (WarmupSettings); "none" starts the consistency ramp at once. On a CPU that takes 400
    # supervised steps a minute, without it the default lost to supervised training on the session
    # protocol (-0.024, 1/9) and with it is level (-0.006; +0.018 over "none", 8/1); on a machine three
    # times as fast it cost 0.009 there (RESULTS §11.2, §28).
    warmup: str = "agreement"
    # The unlabeled stream on a share of the steps equal to the consistency ramp's weight, at full
    # weight (WarmupSettings.paced): each step costs 2.3 supervised ones, and paced the ramp's steps
    # mostly cost one. On a slow CPU +0.015 on the session protocol (8/0), ahead at every point of
    # the loop protocol (+0.018 after the first correction, 9/0) and +0.011 on CHASE_DB1 in 10 minutes
    # (RESULTS §28.5, §29).
    paced: bool = True


class MeanTeacher(AgreementWarmup, TeacherMixin, Method):
    """Student on labeled + unlabeled slices; MSE to the EMA teacher's softmax on a noisy view.

    Differs from SSL4MIS on purpose: the teacher averages batch-norm statistics too and runs in eval
    mode, so the pseudo-labels the user sees are the teacher's best, not a dropout sample.
    """

    name = "mean-teacher"
    advice = ("The default: ahead of supervised training with a few labeled slices (+0.02-0.04 Dice on a "
              "fast CPU, +0.007 on a slow one), level when many are labeled; 0.02 behind on thin vessels "
              "in a 10-minute run on a slow CPU.")
    Settings = MeanTeacherSettings

    def __init__(self, in_channels, n_classes, settings=None):
        super().__init__(in_channels, n_classes, settings)
        check_fraction("confidence", self.settings.confidence)
        self._make_teacher()
        self._init_warmup()
        # running class frequencies (distribution alignment)
        self.register_buffer("_class_freq", torch.zeros(n_classes), persistent=False)
        self.register_buffer("_teacher_freq", torch.zeros(n_classes), persistent=False)
        self._aligned_once = False

    learns_without_unlabeled = True

    @torch.no_grad()
    def _aligned(self, target: torch.Tensor, y_l: torch.Tensor) -> torch.Tensor:
        """Distribution alignment (ReMixMatch): scale the teacher's class probabilities by the ratio of
        the labeled class frequencies to the teacher's running average on unlabeled patches, so that a
        teacher drifting toward the majority class (background) does not teach that drift."""
        freq = torch.bincount(y_l.flatten(), minlength=self.n_classes).float()[: self.n_classes]
        freq = freq / freq.sum()
        mean_t = target.mean((0, 2, 3))
        if not self._aligned_once:
            self._class_freq.copy_(freq)
            self._teacher_freq.copy_(mean_t)
            self._aligned_once = True
        else:
            self._class_freq.mul_(0.99).add_(0.01 * freq.to(self._class_freq))
            self._teacher_freq.mul_(0.99).add_(0.01 * mean_t.to(self._teacher_freq))
        ratio = (self._class_freq + 1e-6) / (self._teacher_freq + 1e-6)
        out = target * ratio[None, :, None, None]
        return out / out.sum(1, keepdim=True)

    def predictor(self):
        return Predictor(self.teacher)

    def step_with_features(self, batch: Batch, state: TrainState):
        s = self.settings
        taken = self.needs_unlabeled(state)
        if not taken or not len(batch.x_u):  # warming up, paced, or nothing unlabeled:
            # exactly supervised training; the labeled features only on a paced step (TransMedSeg on the
            # mean teacher keeps its term between paced steps, and adds nothing in the other two cases)
            out, features = self.warmup_step(batch)
            return out, features if self.warmed_up and not taken else StepFeatures()
        # each stream through its own forward pass: one forward over both lets batch-norm statistics
        # tell the few labeled slices apart from the rest (hippocampus, 3 labeled slices: the
        # unlabeled-slice Dice fell from 0.70 to 0.23 at 400 iterations)
        logits_l, feats_l = self.student(batch.x_l, return_features=True)
        logits_u = self.student(batch.x_u)
        sup = supervised_loss(logits_l, batch.y_l)
        with torch.no_grad():
            x_t = noisy(batch.x_u, s.noise_std, s.noise_clip)
            if s.teacher_norm == "batch":
                logits_t = batch_stats_forward(self.teacher, x_t)
            else:
                self.teacher.eval()
                logits_t, feats_t = self.teacher(x_t, return_features=True)
            target = torch.softmax(logits_t.float(), 1)
            if s.align:
                target = self._aligned(target, batch.y_l)
        features = StepFeatures(source=labeled_source(feats_l, batch.y_l),
                                target=None if s.teacher_norm == "batch" else
                                {"features": feats_t["decoder"], "probs": target})
        dist = ((torch.softmax(logits_u.float(), 1) - target) ** 2).mean(1)
        if s.confidence > 0:  # only where the teacher is sure (UA-MT's idea, with the teacher's own confidence)
            sure = (target.max(1).values >= s.confidence).float()
            cons = (dist * sure).sum() / sure.sum().clamp_min(1.0)
        else:
            cons = dist.mean()
        w = s.consistency * self.unlabeled_weight(state)
        return {"loss": sup + w * cons, "supervised": sup.detach(), "consistency": cons.detach(),
                "consistency_weight": torch.tensor(w)}, features

    @torch.no_grad()
    def after_step(self, state: TrainState):
        self.ema_update(state.iteration)
