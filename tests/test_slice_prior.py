"""What two labeled slices agree on, taught on the slices between them (core/slice_prior.py)."""

from __future__ import annotations

import numpy as np

from napari_semiseg.core.classes import UNKNOWN
from napari_semiseg.core.sampling import TwoStreamSampler
from napari_semiseg.core.slice_prior import agreement, partial_label
from napari_semiseg.core.trainer import Trainer
from napari_semiseg.core.volume import Volume
from test_engine import fast_config


def cone(n: int = 5, side: int = 41) -> np.ndarray:
    """A disc growing from radius 4 to 12 over ``n`` slices (class 1), and a speck of class 2 on the last."""
    yy, xx = np.mgrid[:side, :side]
    lab = np.zeros((n, side, side), np.uint8)
    for z, r in enumerate(np.linspace(4, 12, n)):
        lab[z][(yy - 20) ** 2 + (xx - 20) ** 2 <= r ** 2] = 1
    lab[-1, 2:5, 2:5] = 2
    return lab


def test_two_labeled_slices_teach_what_they_agree_on_and_leave_the_rest_unknown():
    lab = cone()
    agreed, depth = agreement(lab[0], lab[-1])
    yy, xx = np.mgrid[:41, :41]
    r = np.sqrt((yy - 20) ** 2 + (xx - 20) ** 2)
    for z in range(1, 4):
        away = min(z, 4 - z)
        prior = partial_label(agreed, depth, away)
        assert (prior[r <= 2.5] == 1).all()  # more than a pixel inside the small disc: inside on both slices
        assert (prior[(r >= 14 + away) & (yy > 8)] == 0).all()  # outside both, further away from the middle
        assert (prior[(r > 5) & (r < 12 + away)] == UNKNOWN).all()  # where the disc grows, and the bulge margin
        assert (prior[1:6, 1:6] != 2).all() and (prior[2:5, 2:5] == UNKNOWN).all()  # class 2 on one slice only
        known = prior != UNKNOWN
        np.testing.assert_array_equal(prior[known], lab[z][known])  # nothing it asserts is wrong
    # a structure that bulges between the labeled slices: the slope keeps the bulge out of the background
    bulge = lab[0].copy()
    bulge[(yy - 20) ** 2 + (xx - 20) ** 2 <= 6 ** 2] = 1
    same, d = agreement(lab[0], lab[0])
    assert (partial_label(same, d, 2, slope=0.0)[bulge == 1] == 0).any()
    assert not (partial_label(same, d, 2)[bulge == 1] == 0).any()
    # two slices marked empty: everything between them is background, to the corners
    empty = np.zeros_like(lab[0])
    assert (partial_label(*agreement(empty, empty), 3) == 0).all()
    # a partly labeled neighbour: its unknown pixels are nobody's background
    part = lab[0].copy()
    part[30:, :] = UNKNOWN
    assert (partial_label(*agreement(part, lab[-1]), 0, margin=0)[30:, :] == UNKNOWN).all()


def test_a_share_of_the_labeled_patches_comes_from_between_the_labeled_slices_and_follows_corrections():
    lab = np.concatenate([cone(), cone()[:1]])  # slices 0-4 the cone, slice 5 its first slice again
    vol = Volume(np.random.default_rng(0).random(lab.shape, dtype=np.float32), lab, {0, 4, 5})
    sampler = TwoStreamSampler([vol], 48, 1, 4, 2, augment=False, prior_share=0.25)
    assert sampler.n_between == 3 and sampler.prior_items() == 1  # slices 1-3; 4 and 5 have no slice between
    for _ in range(6):
        batch = sampler.next()
        y = batch.y_l[-1].numpy()[:41, :41]  # the item from between: the patch covers the slice
        assert (y == UNKNOWN).any()
        truth = lab[1:4]
        known = y != UNKNOWN
        assert any((t[known] == y[known]).all() for t in truth)
    vol.set_labels(lab, {0, 2, 4, 5})  # a correction between them: two shorter gaps, slices 1 and 3
    sampler.refresh()
    assert sampler.n_between == 2
    assert TwoStreamSampler([vol], 48, 1, 4, 2, prior_share=0.0).prior_items() == 0
    flat = Volume(np.zeros((41, 41), np.float32), lab[0], {0})
    assert TwoStreamSampler([flat], 48, 0, 4, 2, prior_share=0.5).prior_items() == 0  # 2D: nothing between


def test_training_draws_on_the_slices_between_when_asked_and_not_by_default():
    lab = cone(9)
    vol = Volume(np.random.default_rng(0).random(lab.shape, dtype=np.float32), lab, {0, 8})
    trainer = Trainer([vol], fast_config(method="mean-teacher", iterations=2, prior_share=0.5))
    assert trainer.sampler.n_between == 7 and trainer.sampler.prior_items() == 1  # one of the two labeled
    last = trainer.train()
    assert last.iteration == 2 and all(np.isfinite(v) for v in last.losses.values())
    assert Trainer([vol], fast_config(method="supervised", iterations=2)).sampler.prior_items() == 0
