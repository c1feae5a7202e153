"""The interface every training method implements, and the pieces they share."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from ..inference import Predictor
from ..losses import labeled_agreement, pixel_uncertainty, sigmoid_rampup, split_known, supervised_loss
from ..networks import UNet2D


@dataclass
class Batch:
    """Two streams: labeled slices with their labels, then unlabeled slices (methods-spec §1.4)."""

    x_l: torch.Tensor  # (Nl, C, H, W)
    y_l: torch.Tensor  # (Nl, H, W) int64
    x_u: torch.Tensor  # (Nu, C, H, W)

    def to(self, device) -> Batch:
        return Batch(self.x_l.to(device, non_blocking=True), self.y_l.to(device, non_blocking=True),
                     self.x_u.to(device, non_blocking=True))


# No ramp or warm-up ends before this many steps, whatever the clock says: on a slow or busy
# machine a time budget can end a ramp before the network has learned anything (TransMedSeg given
# 45 s on a busy machine ramped its augmentation to full and scored 0.08 where 300 steps give 0.81).
MIN_RAMP_ITERATIONS = 200


# After the labels change while training (a correction), the pseudo-labels come from networks that
# have not learned the new labels yet and would teach the old answer around them: every method's
# unlabeled weight ramps up again over this many steps (the EMA teacher's window at its default
# decay, 1 / (1 - 0.99)). SGRS-Net's Dice fell after corrections without it (RESULTS §17).
RELABEL_RAMP_ITERATIONS = 100


@dataclass
class TrainState:
    iteration: int
    progress: float | None  # fraction of the budget used, None when training runs until stopped
    relabeled_at: int | None = None  # the step at which the labels last changed while training
    relabel_ramp: int = RELABEL_RAMP_ITERATIONS

    def trust(self) -> float:
        """How far pseudo-labels are trusted again since the labels last changed: 0 at that step, 1
        ``relabel_ramp`` steps later (and when they have not changed)."""
        if self.relabeled_at is None or self.relabel_ramp <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.iteration - self.relabeled_at) / self.relabel_ramp))

    def ramp(self, fraction: float, fallback_iterations: int, floor: int = MIN_RAMP_ITERATIONS) -> float:
        """Ramp-up position in [0, 1]: over ``fraction`` of the budget but never in fewer than
        ``floor`` steps, or over ``fallback_iterations`` steps when training runs until stopped; and
        never beyond :meth:`trust`."""
        return min(self._ramp(fraction, fallback_iterations, floor), self.trust())

    def _ramp(self, fraction: float, fallback_iterations: int, floor: int) -> float:
        if fraction <= 0:  # no ramp asked for
            return 1.0
        if self.progress is not None:
            by_budget = min(self.progress / fraction, 1.0)
            return min(by_budget, self.iteration / floor) if floor > 0 else by_budget
        return min(self.iteration / fallback_iterations, 1.0) if fallback_iterations > 0 else 1.0

    def within(self, fraction: float, fallback_iterations: int, floor: int = MIN_RAMP_ITERATIONS) -> bool:
        """Still in a warm-up phase of ``fraction`` of the budget (at least ``floor`` steps), or of
        ``fallback_iterations`` steps when training runs until stopped."""
        if fraction <= 0:  # no warm-up asked for
            return False
        if self.progress is not None:
            return self.progress < fraction or self.iteration < min(floor, fallback_iterations)
        return self.iteration < fallback_iterations


@dataclass
class MethodSettings:
    """Base class of each method's named hyper-parameters."""

    # Settings that reach outside the model (a path to load code or weights from, network access):
    # only the user may set them, never a model file (checkpoint.load_method drops them).
    LOCAL_ONLY: ClassVar[frozenset] = frozenset()

    @classmethod
    def from_dict(cls, d: dict | None):
        from ..settings import check_types

        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for this method; known: {sorted(known)}")
        return cls(**check_types(cls, d, "method"))


class Method(nn.Module):
    """One training step from a batch, and which network predicts.

    Subclasses set ``name`` and ``Settings``, build their networks in ``__init__`` and implement
    ``training_step``. ``after_step`` runs after the optimiser step (EMA updates).
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = MethodSettings
    # One sentence for whoever picks a method: what it costs and where it loses to supervised
    # training, from the measured figures (benchmarks/RESULTS.md §20.6); the widget and `train --help`
    # show it.
    advice: ClassVar[str] = ""

    def __init__(self, in_channels: int, n_classes: int, settings: dict | None = None):
        super().__init__()
        self.in_channels, self.n_classes = in_channels, n_classes
        self.settings = self.Settings.from_dict(settings)
        self.student = UNet2D(in_channels, n_classes)

    def trainable_parameters(self):
        return self.student.parameters()

    # Whether some trainable parameters sit out some steps (DDP must then look for them every step).
    skips_parameters = False

    # Whether a step without unlabeled patches (every slice labeled) is still this method: the mean
    # teacher's is its supervised part; methods built on mixing or pairing unlabeled images keep theirs.
    learns_without_unlabeled = False

    def needs_unlabeled(self, state: TrainState) -> bool:
        """Whether this step uses the unlabeled stream (the sampler skips drawing it when not)."""
        return True

    def training_step(self, batch: Batch, state: TrainState) -> dict[str, torch.Tensor]:
        """The step's losses ("loss" is optimised; the others are reported)."""
        return self.step_with_features(batch, state)[0]

    def forward(self, batch: Batch, state: TrainState) -> dict[str, torch.Tensor]:
        """One training step: what DistributedDataParallel calls, so that its gradient hooks run."""
        return self.training_step(batch, state)

    def step_with_features(self, batch: Batch, state: TrainState) -> tuple[dict[str, torch.Tensor], StepFeatures]:
        """The step's losses and the decoder features a loss acting on this method's features needs
        (TransMedSeg wraps the methods that give them)."""
        raise NotImplementedError(f"{self.name} does not give its features")

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        pass

    def predictor(self) -> nn.Module:
        """The network whose predictions the user sees (the EMA teacher where there is one), returning
        a PredictorOutput."""
        return Predictor(self.student)

    def uncertainty(self, probs: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel uncertainty in [0, 1] from the predictor's probabilities (N, C, H, W).

        ``extra`` is the (N, H, W) map a predictor may return beside its logits (view or branch
        disagreement); where there is one, a pixel is as uncertain as the larger of the two.
        """
        return pixel_uncertainty(probs, extra)

    def bind_labeled_bank(self, bank) -> None:
        """Called with the sampler whenever the labeled set changes (methods that need the labeled images)."""



@dataclass
class StepFeatures:
    """Decoder features of one training step. ``source``: labeled pixels (``features``, ``labels``,
    ``mask`` of the known ones); ``target``: unlabeled pixels (``features``, the teacher's ``probs``)."""

    source: dict[str, torch.Tensor] | None = None
    target: dict[str, torch.Tensor] | None = None


# The teacher averages about the last 1/TEACHER_WINDOW of the steps taken (until ``decay`` caps it).
# The reference schedule, min(1 - 1/(t + 1), decay), is a uniform average of every step until
# t = 1/(1 - decay): after 300 steps, 13 % of a 0.99 teacher still came from the first 100 (random
# weights and the first rough ones), and it scored 0.05-0.09 Dice below its own student on the
# hippocampus dataset (benchmarks/RESULTS.md §15). Over the papers' 30k steps both are the same.
TEACHER_WINDOW = 10


@dataclass
class TeacherSettings(MethodSettings):
    """The settings of a method with an EMA teacher, which ``TeacherMixin.ema_update`` reads."""

    ema_decay: float = 0.99
    teacher_window: float = TEACHER_WINDOW  # the teacher averages about the last 1/teacher_window of the steps


class TeacherMixin:
    """An EMA teacher over the student's whole state (parameters and batch-norm statistics).

    Averaging only the parameters, as SSL4MIS does, leaves the teacher's batch-norm statistics at
    their initial values: such a teacher predicts badly in eval mode. Averaging the buffers too
    (as BCP does) keeps the eval-mode teacher as good as the student.
    """

    def _make_teacher(self) -> None:
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def ema_update(self, iteration: int) -> None:
        """Move the teacher toward the student (the method's ``ema_decay`` and ``teacher_window``)."""
        alpha = teacher_alpha(iteration, self.settings.ema_decay, self.settings.teacher_window)
        t_state = self.teacher.state_dict()
        for k, s in self.student.state_dict().items():
            t = t_state[k]
            if t.dtype.is_floating_point:
                t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
            else:
                t.copy_(s)


def teacher_alpha(iteration: int, decay: float, window: float) -> float:
    """The EMA teacher's decay at this step: 0 (a copy of the student) at the first step, then
    1 - window / (iteration + 1), never above ``decay``."""
    return min(decay, max(0.0, 1.0 - window / (iteration + 1)))


@dataclass
class WarmupSettings:
    """The supervised warm-up's settings (``AgreementWarmup``): no unlabeled stream, so steps as fast
    as the method's supervised part, until the network agrees with the labeled patches (running Dice
    >= warmup_agreement) after at least MIN_RAMP_ITERATIONS steps, and at most warmup_fraction of the
    budget; the unlabeled terms' ramp starts then."""

    warmup: str = "none"  # "none" | "agreement"
    warmup_agreement: float = 0.7
    warmup_fraction: float = 0.5
    warmup_iterations: int = 1000  # the cap when training runs until stopped
    # After the warm-up, take the unlabeled stream on a share of the steps equal to the unlabeled
    # terms' ramp weight, at full weight when taken (``AgreementWarmup.paced_take``): the same expected
    # loss, but while the weight is small (the ramp, and after each correction) most steps cost a
    # supervised step instead of two or three.
    paced: bool = False


class AgreementWarmup:
    """The supervised warm-up of a method whose settings include ``WarmupSettings``."""

    def _init_warmup(self) -> None:
        s = self.settings
        check_choice("warmup", s.warmup, ("none", "agreement"))
        check_fraction("warmup_agreement", s.warmup_agreement)
        check_fraction("warmup_fraction", s.warmup_fraction)
        # not saved: a resumed model re-measures its agreement, which a trained one passes in a few steps
        self.warmed_up = s.warmup == "none"
        # running Dice on the labeled patches; a buffer (unsaved) so that the ranks of a torchrun
        # average it after each step and take the warm-up decision together
        self.register_buffer("agreement", torch.zeros(()), persistent=False)
        self._warm_end: tuple[int, float] = (0, 0.0)  # (iteration, progress) where the warm-up ended
        self._credit = 0.0  # paced: ramp weight accumulated since the unlabeled stream was last taken
        self._paced: tuple[int, bool] = (-1, True)  # (iteration, taken): one decision per step

    def warmed(self, state: TrainState) -> bool:
        """Whether the warm-up is over (it ends here, once, when its condition is first met)."""
        if self.warmed_up:
            return True
        s = self.settings
        done = (state.iteration >= MIN_RAMP_ITERATIONS and float(self.agreement) >= s.warmup_agreement) or \
            not state.within(s.warmup_fraction, s.warmup_iterations)
        if done:
            self.warmed_up = True
            self._warm_end = (state.iteration, state.progress or 0.0)
        return done

    def needs_unlabeled(self, state: TrainState) -> bool:
        return self.warmed(state) and self.paced_take(state)

    def paced_take(self, state: TrainState) -> bool:
        """Paced (``paced``): whether this step takes the unlabeled stream. A running credit adds the
        ramp's weight each step and the stream is taken whenever a whole unit has built up, so it is
        taken on a share of the steps equal to the weight; unpaced, every step takes it."""
        if not self.settings.paced:
            return True
        if self._paced[0] != state.iteration:
            self._credit += self.unlabeled_ramp(state)
            taken = self._credit >= 1.0
            if taken:
                self._credit -= 1.0
            self._paced = (state.iteration, taken)
        return self._paced[1]

    def unlabeled_ramp(self, state: TrainState) -> float:
        """The method's unlabeled-term ramp at this step (``ramp_after_warmup`` with its settings)."""
        s = self.settings
        return self.ramp_after_warmup(state, s.rampup_fraction, s.rampup_iterations)

    def unlabeled_weight(self, state: TrainState) -> float:
        """What multiplies the unlabeled terms on a step that takes them: the ramp, or 1 when paced
        (the ramp is then how often they are taken)."""
        return 1.0 if self.settings.paced else self.unlabeled_ramp(state)

    def record_agreement(self, dice: float) -> torch.Tensor:
        self.agreement.mul_(0.9).add_(0.1 * dice)
        return self.agreement.clone()

    def warmup_step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], StepFeatures]:
        """A warm-up step of a method with one student: supervised training's step, which also records
        how well the student agrees with the labels."""
        logits, out, features = supervised_step(self.student, batch)
        out["agreement"] = self.record_agreement(labeled_agreement(logits, batch.y_l))
        return out, features

    def ramp_after_warmup(self, state: TrainState, fraction: float, fallback_iterations: int) -> float:
        """The unlabeled terms' sigmoid ramp, counted from the end of the warm-up."""
        i0, p0 = self._warm_end
        since = TrainState(state.iteration - i0, None if state.progress is None else state.progress - p0)
        return sigmoid_rampup(min(since.ramp(fraction, fallback_iterations), state.trust()), 1.0)


def supervised_step(student: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], StepFeatures]:
    """Supervised training's step on the labeled patches: the logits, the losses, and the labeled features
    (for TransMedSeg) of a method's warm-up or pre-training."""
    logits, feats = student(batch.x_l, return_features=True)
    sup = supervised_loss(logits, batch.y_l)
    return logits, {"loss": sup, "supervised": sup.detach()}, StepFeatures(source=labeled_source(feats, batch.y_l))


def labeled_source(feats: dict[str, torch.Tensor], y_l: torch.Tensor) -> dict[str, torch.Tensor]:
    """``StepFeatures.source`` of the labeled patches: their decoder features, labels and known pixels."""
    labels, known = split_known(y_l)
    return {"features": feats["decoder"], "labels": labels, "mask": known}


def check_choice(setting: str, value, choices) -> None:
    """A setting outside its choices is one clear error (build_method turns it into an InputError)."""
    if value not in choices:
        raise ValueError(f"unknown {setting} '{value}': use one of {', '.join(map(str, choices))}")


def check_fraction(setting: str, value: float) -> None:
    """A setting that is a share or a probability: from 0 to 1, else one clear error."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{setting} must be from 0 to 1, not {value}")


def noisy(x: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """x + clamp(N(0, std^2), -clip, clip): the teacher's noisy view."""
    return x + torch.clamp(torch.randn_like(x) * std, -clip, clip)


@torch.no_grad()
def batch_stats_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward with batch-norm on the batch's own statistics, dropout off, running statistics untouched.

    The EMA teacher's running statistics fit its averaged weights poorly; normalising with the
    batch it is asked about keeps its targets consistent with what the student sees.
    """
    was = net.training
    net.eval()
    try:
        with running_stats_frozen(net):
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
            return net(x)
    finally:
        net.train(was)


@contextmanager
def running_stats_frozen(net: nn.Module):
    """Batch-norm layers keep their running statistics (and counters) through the forwards inside."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield net
    finally:
        for m, (tr, mom, tracked) in zip(norms, saved):
            m.train(tr)
            m.momentum = mom
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
