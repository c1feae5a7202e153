"""Metrics against cases computed by hand."""

import math

import numpy as np
import pytest

from napari_semiseg.core.metrics import binary_metrics, mean_metrics, per_class_metrics, summarise


def test_dice_and_jaccard_by_hand():
    pred = np.zeros((10, 10), bool)
    ref = np.zeros((10, 10), bool)
    pred[2:6, 2:6] = True  # 16 px
    ref[2:6, 4:8] = True  # 16 px, overlap 8
    m = binary_metrics(pred, ref)
    assert m.dice == pytest.approx(2 * 8 / 32)
    assert m.jaccard == pytest.approx(8 / 24)


def test_hd95_and_asd_for_shifted_squares():
    # two 4x4 squares, the prediction 2 columns left of the reference
    pred = np.zeros((12, 12), bool)
    ref = np.zeros((12, 12), bool)
    pred[4:8, 2:6] = True
    ref[4:8, 4:8] = True
    m = binary_metrics(pred, ref)
    # pred's surface is the 12-pixel ring of rows 4..7 x cols 2..5; ref's ring is rows 4..7 x cols 4..7.
    # Distance of each pred ring pixel to ref's ring, counted by hand:
    d = np.array(sorted(
        [2, 2, 2, 2,  # column 2, rows 4..7 -> nearest ref surface column 4
         1, 1,  # (4,3),(7,3)
         0, 0, 0, 0,  # (4,4),(4,5),(7,4),(7,5)
         1, 1]  # (5,5),(6,5) -> ref surface at column 4 is 1 px away
    ), float)
    assert m.asd == pytest.approx(d.mean())
    # symmetric pool: by symmetry the reverse direction gives the same multiset
    pooled = np.concatenate([d, d])
    assert m.hd95 == pytest.approx(np.percentile(pooled, 95))
    assert m.hd95 == pytest.approx(2.0)


def test_distances_scale_with_spacing():
    pred = np.zeros((1, 10, 10), bool)
    ref = np.zeros((1, 10, 10), bool)
    pred[0, 2:4, 2:4] = True
    ref[0, 2:4, 6:8] = True  # 4 px to the right
    vox = binary_metrics(pred, ref)
    mm = binary_metrics(pred, ref, spacing=(3.0, 1.0, 0.5))
    assert vox.hd95 == pytest.approx(4.0)
    assert mm.hd95 == pytest.approx(2.0)  # columns are 0.5 mm apart
    assert mm.asd == pytest.approx(vox.asd * 0.5)


def test_absent_class_conventions():
    empty = np.zeros((5, 5), bool)
    blob = np.zeros((5, 5), bool)
    blob[1:3, 1:3] = True
    both_absent = binary_metrics(empty, empty)
    assert (both_absent.dice, both_absent.jaccard, both_absent.hd95, both_absent.asd) == (1, 1, 0, 0)
    missed = binary_metrics(empty, blob)  # the field's convention: all zero
    assert (missed.dice, missed.jaccard, missed.hd95, missed.asd) == (0, 0, 0, 0)
    spurious = binary_metrics(blob, empty)
    assert spurious.dice == 0 and math.isnan(spurious.hd95) and math.isnan(spurious.asd)


def test_per_class_mean_and_summary_skip_undefined_distances():
    ref = np.zeros((6, 6), np.uint8)
    pred = np.zeros((6, 6), np.uint8)
    ref[1:3, 1:3] = 1
    pred[1:3, 1:3] = 1
    pred[4:6, 4:6] = 2  # class 2 only in prediction
    per = per_class_metrics(pred, ref)
    assert set(per) == {1, 2}
    mean = mean_metrics(per)
    assert mean["dice"] == pytest.approx(0.5)
    assert mean["hd95"] == pytest.approx(0.0)  # class 2's NaN left out
    s = summarise({"a": per, "b": per_class_metrics(ref, ref)})
    assert s["per_class_mean"]["1"]["dice"] == pytest.approx(1.0)
    assert s["mean"]["dice"] == pytest.approx((1.0 + 0.0) / 2)


def test_3d_volume_metrics_match_a_direct_computation():
    ref = np.zeros((8, 16, 16), np.uint8)
    ref[2:6, 4:12, 4:12] = 1
    pred = ref.copy()
    pred[2:6, 4:12, 10:14] = 1
    per = per_class_metrics(pred, ref, classes=[1])
    inter = np.count_nonzero((pred == 1) & (ref == 1))
    assert per[1].dice == pytest.approx(2 * inter / (np.count_nonzero(pred) + np.count_nonzero(ref)))
    assert per[1].hd95 == pytest.approx(2.0)
