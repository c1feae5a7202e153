"""Partly labeled images: unpainted pixels mean "unknown", painted background is known. The engine
leaves unknown pixels out of every supervised term, in every method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_semiseg.core.classes import PAINTED_BACKGROUND, UNKNOWN, engine_labels
from napari_semiseg.core.losses import supervised_loss
from napari_semiseg.core.methods import METHODS
from napari_semiseg.core.trainer import Trainer
from napari_semiseg.core.volume import Volume
from test_engine import fast_config


def discs(size=96, seed=0):
    """Six bright discs on noise: the full truth, and scribbles: a short stroke in two discs and a
    few strokes of painted background, the rest unpainted."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    centres = [(20, 20), (20, 70), (48, 45), (75, 20), (75, 70), (48, 82)]
    for cy, cx in centres:
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1
    image = rng.normal(0, 0.15, (size, size)).astype(np.float32) + truth
    painted = np.zeros_like(truth)
    for cy, cx in centres[:2]:
        painted[cy - 1:cy + 2, cx - 5:cx + 6] = 1
    painted[4:7, 5:90] = PAINTED_BACKGROUND
    painted[88:91, 5:90] = PAINTED_BACKGROUND
    painted[30:33, 35:60] = PAINTED_BACKGROUND
    return image, truth, painted


def test_engine_labels_swap_unpainted_and_painted_background():
    painted = np.array([[0, 1, PAINTED_BACKGROUND], [2, 0, 0]], np.uint8)
    np.testing.assert_array_equal(engine_labels(painted, "unknown"), [[UNKNOWN, 1, 0], [2, UNKNOWN, UNKNOWN]])
    np.testing.assert_array_equal(engine_labels(painted, "background"), [[0, 1, 0], [2, 0, 0]])


def test_unknown_pixels_get_no_gradient():
    target = torch.tensor([[[0, 1], [UNKNOWN, UNKNOWN]]])
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    supervised_loss(logits, target).backward()
    assert logits.grad[0, :, 1].abs().sum() == 0  # the unknown row teaches nothing
    assert logits.grad[0, :, 0].abs().sum() > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_a_partly_labeled_image(method):
    image, _, painted = discs()
    vol = Volume(image, engine_labels(painted, "unknown"), {0})
    trainer = Trainer([vol], fast_config(method=method, iterations=3, patch_size=64))
    assert trainer.n_classes == 2  # UNKNOWN is not a class
    last = trainer.train()
    assert all(np.isfinite(v) for v in last.losses.values())


def test_scribbles_with_unpainted_unknown_find_the_discs_nobody_painted():
    """Taught as background, the unpainted discs are learned as background; left unknown, they are found."""
    image, truth, painted = discs()
    dice = {}
    for meaning in ("unknown", "background"):
        vol = Volume(image, engine_labels(painted, meaning), {0})
        cfg = fast_config(method="supervised", iterations=150, patch_size=64, batch_size=4, labeled_batch=4, seed=1)
        pred = Trainer([vol], cfg).train().prediction[0].labels
        unpainted_discs = (truth == 1) & (painted == 0)
        dice[meaning] = 2 * np.sum((pred == 1) & unpainted_discs) / (np.sum(pred == 1) + np.sum(unpainted_discs))
    assert dice["unknown"] > 0.6
    assert dice["unknown"] > dice["background"] + 0.2
