"""BCP (bidirectional copy-paste, methods-spec §2.6) and SRA-Seg (§3) on one copy-paste core.

Both pre-train (on the labeled patches alone by default, as supervised training; on labeled pairs mixed
through a zero box, as published, with ``pretrain="paste"``), then self-train: the EMA teacher's
pseudo-labels (the largest region of each class that the labels show in one piece) of unlabeled
images are pasted into and out of labeled ones. Unlike the papers, the labeled patches also train
unpasted in every step (``labeled_weight``). SRA-Seg blurs the box into a soft alpha, trains on the
blended soft labels with soft Dice + soft CE, and adds a similarity-alignment term computed with a
frozen encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classes import UNKNOWN
from ..inference import Predictor
from ..losses import (masked_cross_entropy, one_hot, soft_dice_loss, soft_segmentation_loss, split_known,
                      supervised_loss)
from ..mixing import BLENDS, box_mask, largest_component_per_class, regions_per_class, soft_alpha
from .base import (Batch, Method, StepFeatures, TeacherMixin, TeacherSettings, TrainState, check_choice,
                   running_stats_frozen, supervised_step)

SA_MODES = ("feature", "paper_code", "off")


ONE_PIECE = 1.5  # regions per labeled patch below which a class counts as one piece (hippocampus: 1.2, vessels: 16-85)


@dataclass
class BCPSettings(TeacherSettings):
    pretrain_fraction: float = 0.25  # of the budget; BCP's ACDC schedule is 10k pre-train of 40k iterations
    pretrain_iterations: int = 300  # used when training runs until stopped
    # "supervised": pre-train on the labeled patches alone, exactly supervised training's step, at its
    # price; "paste": on labeled pairs pasted together beside them (BCP as published), 1.5 times the
    # price and slower to learn. Supervised: +0.007 to +0.014 Dice in 10 CPU minutes on CHASE_DB1 and
    # +0.010 at the loop protocol's start; level after its corrections and at 1000 steps over two
    # hippocampus seeds and on CHASE_DB1 (RESULTS §27).
    pretrain: str = "supervised"
    box_fraction: float = 2.0 / 3.0
    # Weight of the pseudo-labeled regions. BCP's 0.5 (SRA-Seg's 1.0) is for tens of thousands of GPU
    # steps, a teacher far ahead of its student; at a CPU budget 0.1 (as the mean teacher's and
    # SGRS-Net's unlabeled weights) measured better on thin vessels and level on the hippocampus for
    # BCP, better on both for SRA-Seg (RESULTS §24).
    u_weight: float = 0.1
    # Pseudo-labels keep only the largest region of each class (BCP's filter of the teacher's stray
    # islands): true, false, or None: for the classes the labels show in one piece per slice (fewer
    # than ONE_PIECE regions per labeled patch on average), not for the others (vessel trees), which
    # the filter would cut down to one branch.
    largest_component: bool | None = None
    outside_largest: str = "unknown"  # regions outside a class's largest: "unknown" (no loss) or "background" (BCP)
    blend: str = "hard"  # "hard" | "gaussian" | "box"
    loss: str = "region"  # "region": per-region masked Dice + CE (BCP); "soft": soft Dice + soft CE (SRA-Seg)
    # The supervised loss on the labeled patches as they are (not pasted), every step; 0 is BCP as
    # published. Copy-paste alone learns slowly on a short budget: 1000 steps of pasted labeled pairs
    # reach 0.43 Dice on the hippocampus dataset where the same patches unpasted reach 0.79 (RESULTS
    # §16). Weighted 2, not 1: +0.009 to +0.014 Dice on both data sets, two seeds and the session
    # protocol at equal steps, each better on most images (RESULTS §25.6, §26).
    labeled_weight: float = 2.0
    # Image pairs pasted each way per step; 0: half the labeled batch (BCP as published, 2 on a CPU).
    # One pair makes a step 1.6 supervised ones, not 2.0, but bought no Dice in 10 CPU minutes on
    # CHASE_DB1: the steps it gains learn less (RESULTS §27).
    pairs: int = 0


@dataclass
class Mix:
    """One batch of images pasted together: x = a * alpha + b * (1 - alpha), alpha 1 outside the box."""

    x: torch.Tensor  # (N, C, H, W)
    alpha: torch.Tensor  # (H, W)
    y_a: torch.Tensor  # (N, H, W) labels of the outer image
    y_b: torch.Tensor  # (N, H, W) labels of the pasted box
    w_a: float
    w_b: float
    trusted_a: bool = True  # labels of the outer image are ground truth (not pseudo-labels)
    trusted_b: bool = True
    known_a: torch.Tensor = field(init=False)  # (N, H, W) pixels whose label is known
    known_b: torch.Tensor = field(init=False)

    def __post_init__(self):
        # a partly labeled slice's unknown pixels: background in the targets, weight 0 in every term
        self.y_a, self.known_a = split_known(self.y_a)
        self.y_b, self.known_b = split_known(self.y_b)

    def hard_labels(self) -> torch.Tensor:
        return torch.where(self.alpha > 0.5, self.y_a, self.y_b)

    def trusted(self) -> torch.Tensor:
        """(N, H, W) pixels whose label is ground truth (known, not a pseudo-label)."""
        outer = (self.alpha > 0.5).expand_as(self.y_a)
        return (outer & self.known_a & self.trusted_a) | (~outer & self.known_b & self.trusted_b)

    def soft_target(self, n_classes: int) -> torch.Tensor:
        a = self.alpha[None, None]
        return one_hot(self.y_a, n_classes) * a + one_hot(self.y_b, n_classes) * (1 - a)

    def weight_map(self) -> torch.Tensor:
        """Each image's weight where its labels are known; 0 on a partly labeled slice's unknown pixels."""
        return self.w_a * self.alpha * self.known_a + self.w_b * (1 - self.alpha) * self.known_b


def paste(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, y_a, y_b, w_a: float = 1.0, w_b: float = 1.0,
          trusted_a: bool = True, trusted_b: bool = True) -> Mix:
    al = alpha.to(a.dtype)[None, None]
    return Mix(a * al + b * (1 - al), alpha, y_a, y_b, w_a, w_b, trusted_a, trusted_b)


def region_loss(logits: torch.Tensor, mix: Mix) -> torch.Tensor:
    """BCP's mix loss: (Dice + CE) / 2, each the weighted sum of its mean inside and outside the box."""
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), 1)
    outside = (mix.alpha > 0.5).expand_as(mix.y_a) & mix.known_a
    inside = (mix.alpha <= 0.5).expand_as(mix.y_b) & mix.known_b
    dice = (mix.w_a * soft_dice_loss(probs, one_hot(mix.y_a, n_classes), outside)
            + mix.w_b * soft_dice_loss(probs, one_hot(mix.y_b, n_classes), inside))
    ce = (mix.w_a * masked_cross_entropy(logits, mix.y_a, outside)
          + mix.w_b * masked_cross_entropy(logits, mix.y_b, inside))
    return 0.5 * (dice + ce)


def _halves(x: torch.Tensor, *others, pairs: int = 0):
    """Split a stream into two halves (a, b) of ``pairs`` each (0: as many as it holds); a stream of one
    is paired with itself."""
    n = x.shape[0]
    h = max(1, n // 2)
    if pairs > 0:
        h = min(h, pairs)
    a = slice(0, h)
    b = slice(h, 2 * h) if n >= 2 else slice(0, 1)
    return [(t[a], t[b]) for t in (x, *others)]


class BCP(TeacherMixin, Method):
    name = "bcp"
    advice = ("Level with supervised training in a CPU minute and at equal steps over two seeds; 0.014 Dice "
              "behind after corrections and 0.02 on thin vessels in 10 minutes of a slow CPU.")
    Settings = BCPSettings

    def __init__(self, in_channels, n_classes, settings=None):
        super().__init__(in_channels, n_classes, settings)
        s = self.settings
        check_choice("blend", s.blend, BLENDS)
        check_choice("loss", s.loss, ("region", "soft"))
        check_choice("outside_largest", s.outside_largest, ("unknown", "background"))
        check_choice("pretrain", s.pretrain, ("paste", "supervised"))
        if s.pairs < 0:
            raise ValueError("pairs must be 0 (half the labeled batch) or more")
        if s.loss == "region" and s.blend != "hard":
            raise ValueError("the region loss needs a hard box: use loss=soft with a blurred blend")
        self._make_teacher()
        self.register_buffer("self_training", torch.tensor(False))  # saved: a resumed model skips pre-training
        # connected regions counted in the labeled patches, and the patches holding each class
        self._regions, self._present = np.zeros(n_classes), np.zeros(n_classes)
        self.generator = torch.Generator()

    def predictor(self):
        return Predictor(self.teacher)

    def in_pretraining(self, state: TrainState) -> bool:
        if bool(self.self_training):
            return False
        return state.within(self.settings.pretrain_fraction, self.settings.pretrain_iterations)

    def needs_unlabeled(self, state: TrainState) -> bool:
        # pre-training pastes labeled pairs only: unlabeled patches drawn then would be thrown away
        return not self.in_pretraining(state)

    def _alpha(self, size: int, device) -> torch.Tensor:
        s = self.settings
        return soft_alpha(box_mask(size, self.generator, s.box_fraction), s.blend).to(device)

    def _mix_loss(self, logits: torch.Tensor, mix: Mix) -> torch.Tensor:
        if self.settings.loss == "region":
            return region_loss(logits, mix)
        return soft_segmentation_loss(logits, mix.soft_target(self.n_classes), mix.weight_map())

    def one_piece_classes(self) -> list[int]:
        """The classes whose pseudo-labels the largest-region filter applies to."""
        setting = self.settings.largest_component
        if setting is not None:
            return list(range(1, self.n_classes)) if setting else []
        mean = self._regions / np.maximum(self._present, 1)
        return [c for c in range(1, self.n_classes) if self._present[c] and mean[c] < ONE_PIECE]

    @torch.no_grad()
    def pseudo_labels(self, x: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        labels = self.teacher(x).argmax(1)
        classes = self.one_piece_classes()
        if not classes:
            return labels
        kept = largest_component_per_class(labels, self.n_classes, classes)
        if self.settings.outside_largest == "background":
            return kept
        # The filter is there to keep the teacher's stray islands out of the targets; calling them
        # background teaches the opposite of the truth where a structure is in pieces in a slice
        # (a curved organ cut twice), so they are left out of the loss.
        return kept.masked_fill((kept != labels), UNKNOWN)

    def mixes(self, batch: Batch, state: TrainState) -> list[Mix]:
        """Pre-training: labeled a with labeled b pasted in (none when it is supervised training).
        Self-training: both directions."""
        s = self.settings
        pretraining = self.in_pretraining(state)
        if pretraining and s.pretrain == "supervised":
            return []  # before drawing a box: supervised pre-training pastes nothing
        alpha = self._alpha(batch.x_l.shape[-1], batch.x_l.device)
        (xa, xb), (ya, yb) = _halves(batch.x_l, batch.y_l, pairs=s.pairs)
        if pretraining:
            return [paste(xa, xb, alpha, ya, yb, 1.0, 1.0)]
        (ua, ub), = _halves(batch.x_u, pairs=s.pairs)
        n = min(len(ua), len(xa))
        ua, ub, xa, xb, ya, yb = ua[:n], ub[:n], xa[:n], xb[:n], ya[:n], yb[:n]
        pa, pb = self.pseudo_labels(ua), self.pseudo_labels(ub)
        u = s.u_weight * state.trust()  # a correction's news is not yet in the teacher's pseudo-labels
        return [paste(ua, xa, alpha, pa, ya, u, 1.0, trusted_a=False),  # "inward": labeled box
                paste(xb, ub, alpha, yb, pb, 1.0, u, trusted_b=False)]  # "outward": unlabeled box

    def step_with_features(self, batch: Batch, state: TrainState):
        pretraining = self.in_pretraining(state)
        if not pretraining and not bool(self.self_training):
            # BCP starts the self-training teacher (and student) from the pre-trained network
            self.teacher.load_state_dict(self.student.state_dict())
            self.self_training.fill_(True)
        if self.settings.largest_component is None:
            regions, present = regions_per_class(split_known(batch.y_l)[0], self.n_classes)
            self._regions += regions
            self._present += present
        mixes = self.mixes(batch, state)
        if not mixes:  # supervised pre-training
            _, out, features = supervised_step(self.student, batch)
            out["pretraining"] = torch.tensor(1.0)
            return out, features
        plain = self.settings.labeled_weight > 0
        x = torch.cat([m.x for m in mixes] + ([batch.x_l] if plain else []))
        logits, feats = self.student(x, return_features=True)
        losses, start = [], 0
        for m in mixes:
            losses.append(self._mix_loss(logits[start:start + len(m.x)], m))
            start += len(m.x)
        seg = sum(losses)
        out = {"mix": seg.detach(), "pretraining": torch.tensor(float(pretraining))}
        if plain:
            sup = supervised_loss(logits[start:], batch.y_l)
            seg = seg + self.settings.labeled_weight * sup
            out["supervised"] = sup.detach()
        out["loss"] = seg
        features = StepFeatures(source={"features": feats["decoder"][:start],
                                        "mask": torch.cat([m.trusted() for m in mixes]),
                                        "labels": torch.cat([m.hard_labels() for m in mixes])})
        out.update(self.extra_losses(batch, state, pretraining, out))
        return out, features

    def extra_losses(self, batch: Batch, state: TrainState, pretraining: bool, out: dict) -> dict:
        return {}

    @torch.no_grad()
    def after_step(self, state: TrainState):
        if bool(self.self_training):
            self.ema_update(state.iteration)
        else:
            self.teacher.load_state_dict(self.student.state_dict())  # the teacher shows the student until then


@dataclass
class SRASegSettings(BCPSettings):
    # u_weight: BCP's 0.1; the paper's 1.0 cost 0.010-0.014 Dice at 1000 steps (RESULTS §24.1)
    blend: str = "gaussian"  # "box" for thin structures such as vessels
    loss: str = "soft"
    # labeled_weight: BCP's 2. With 1 the pasted pairs, which learn slowly, led: 0.043 Dice lower on the
    # session protocol at equal steps (7/1), 0.005-0.007 at 1000 (RESULTS §25).
    sa_mode: str = "feature"  # "feature": trains the network; "paper_code": logged only, as released; "off"
    sa_weight: float = 0.1
    encoder: str = "efficientnet-lite0"  # or "dinov2:<local directory or hub id>"
    encoder_size: int = 128  # encoder input side (rounded to DINOv2's patch size)
    allow_download: bool = False
    projection_dim: int = 128

    LOCAL_ONLY: ClassVar[frozenset] = frozenset({"encoder", "allow_download"})


class SRASeg(BCP):
    """SRA-Seg: soft copy-paste with soft losses, plus similarity alignment to a frozen encoder.

    Alignment ("feature" mode, methods-spec §3.4): each unlabeled (or synthetic) image finds its
    nearest labeled real image in the frozen encoder's embedding space, and the student's projected
    bottleneck features of the image are pulled (1 - cosine) toward the neighbour's, which carry no
    gradient. We differ from the released code on purpose: there the term is a distance between
    frozen features of the raw inputs, so it never reaches the network (§3.3, defect 1); that
    version is kept as ``sa_mode="paper_code"`` and only logged.
    """

    name = "sra-seg"
    advice = ("Level with supervised training on a session's first 3 slices and on the hippocampus at 1000 "
              "steps; 0.03 Dice behind after corrections and on thin vessels in 10 CPU minutes.")
    Settings = SRASegSettings
    skips_parameters = True  # the projection head learns only in the alignment phase

    def __init__(self, in_channels, n_classes, settings=None):
        super().__init__(in_channels, n_classes, settings)
        s = self.settings
        check_choice("sa_mode", s.sa_mode, SA_MODES)
        deepest = self.student.encoder[-1].body[0].out_channels
        self.projection = nn.Sequential(nn.Linear(deepest, deepest), nn.ReLU(inplace=True),
                                        nn.Linear(deepest, s.projection_dim))
        self._encoder = None  # loaded on first use, never saved with the model
        self._bank = None
        self._bank_cache: dict = {}
        self._bank_matrix: tuple[list, torch.Tensor] | None = None

    def trainable_parameters(self):
        return list(self.student.parameters()) + list(self.projection.parameters())

    def bind_labeled_bank(self, bank) -> None:
        self._bank = bank

    @property
    def encoder(self):
        if self._encoder is None:
            from ..encoders import load_encoder

            s = self.settings
            self._encoder = load_encoder(s.encoder, s.encoder_size, s.allow_download)
        return self._encoder

    def bank_embeddings(self, device) -> tuple[list, torch.Tensor]:
        """Keys and (K, D) embeddings of every labeled real image; each is embedded once."""
        keys = self._bank.labeled_keys()
        missing = [k for k in keys if k not in self._bank_cache]
        for start in range(0, len(missing), 32):
            chunk = missing[start:start + 32]
            x = torch.stack([self._bank.labeled_image(k) for k in chunk]).to(device)
            for k, e in zip(chunk, self.encoder.embed(x)):
                self._bank_cache[k] = e
        if self._bank_matrix is None or self._bank_matrix[0] != keys or self._bank_matrix[1].device != device:
            # stacked once per labeled set, not at every step
            self._bank_matrix = (keys, torch.stack([self._bank_cache[k].to(device) for k in keys]))
        return keys, self._bank_matrix[1]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.student.encode(x)[-1].mean((2, 3)).float())

    def alignment_loss(self, x_u: torch.Tensor) -> torch.Tensor:
        keys, bank = self.bank_embeddings(x_u.device)
        nearest = (self.encoder.embed(x_u) @ bank.T).argmax(1)
        neighbours = torch.stack([self._bank.labeled_image(keys[int(j)]) for j in nearest]).to(x_u)
        with torch.no_grad(), running_stats_frozen(self.student):
            target = self.project(neighbours)
        return (1.0 - F.cosine_similarity(self.project(x_u), target, dim=1)).mean()

    def extra_losses(self, batch, state, pretraining, out):
        s = self.settings
        if pretraining or s.sa_mode == "off" or len(batch.x_u) == 0:
            return {}
        if s.sa_mode == "paper_code":  # nearest real-image distance of frozen features: no gradient path
            dist = torch.cdist(self.encoder.embed(batch.x_u), self.encoder.embed(batch.x_l)).min(1).values.mean()
            return {"sa_distance": dist}
        if self._bank is None:
            raise RuntimeError("SRA-Seg's alignment needs the labeled images: call bind_labeled_bank first")
        sa = self.alignment_loss(batch.x_u)
        out["loss"] = out["loss"] + s.sa_weight * sa
        return {"alignment": sa.detach()}
