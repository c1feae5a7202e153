"""The five methods of the mission (BCP, SRA-Seg, SGRS-Net, BARL, TransMedSeg): their losses on
hand-made cases whose answer is known, and each trained end-to-end on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_semiseg.core.classes import UNKNOWN
from napari_semiseg.core.io import InputError
from napari_semiseg.core.losses import one_hot, soft_segmentation_loss
from napari_semiseg.core.methods import METHODS, build_method
from napari_semiseg.core.methods.barl import components, masked_prototypes, match_instances
from napari_semiseg.core.methods.base import Batch, TrainState
from napari_semiseg.core.methods.sgrs import Regions, SGRSSettings, region_losses, synergy_regions
from napari_semiseg.core.methods.transmedseg import ClassStatistics, tsa_cross_entropy, tsa_logit_shift
from napari_semiseg.core.pseudo_labels import ClassThresholds
from napari_semiseg.core.mixing import blend_band, box_mask, largest_component_per_class, soft_alpha
from napari_semiseg.core.checkpoint import load_method, predict_with_model
from napari_semiseg.core.trainer import LabelUpdate, Trainer
from napari_semiseg.core.variants import parse_variant, split_methods, write_standin_synthetic
from napari_semiseg.core.volume import Volume

from test_engine import fast_config, tiny_volume

NEW_METHODS = ["bcp", "sra-seg", "sgrs-net", "barl", "transmedseg"]


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    """A tiny random DINOv2 saved to disk, loaded the way a user's local checkpoint is."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             patch_size=14, image_size=56)).save_pretrained(path)
    return f"dinov2:{path}"


# ------------------------------------------------------------------------------------------ mixing

def test_soft_mask_range_band_and_borders():
    m = torch.ones(30, 30)
    m[10:20, 10:20] = 0
    for blend in ("gaussian", "box"):
        a = soft_alpha(m, blend)
        assert a.min() >= 0 and a.max() <= 1
        assert a[15, 15] == 0 and a[2, 2] == 1  # deep inside the box, far outside
        assert torch.all(a[0] == 1) and torch.all(a[:, -1] == 1)  # replicate padding: no blended frame
        band = blend_band(a)
        assert band.max() > 0.5 and band[15, 15] == 0 and band[2, 2] == 0
        assert 0 < a[10, 15] < 1  # the seam is continuous
    assert torch.equal(soft_alpha(m, "hard"), m)
    bm = box_mask(30, torch.Generator().manual_seed(1))
    assert (bm == 0).sum() == 20 * 20


def test_soft_losses_on_one_hot_targets_equal_the_hard_ones():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8))
    g = one_hot(y, 3)
    p = torch.softmax(logits, 1)
    hard_dice = 1 - (2 * (p * g).sum((2, 3)) / (p.sum((2, 3)) + g.sum((2, 3)))).mean()
    hard = hard_dice + F.cross_entropy(logits, y)
    assert torch.allclose(soft_segmentation_loss(logits, g), hard, atol=1e-4)
    # a soft target pays for confident predictions on the seam
    half = 0.5 * (one_hot(torch.zeros_like(y), 3) + one_hot(torch.ones_like(y), 3))
    sure = torch.zeros(2, 3, 8, 8)
    sure[:, 0] = 10
    hedged = torch.zeros(2, 3, 8, 8)
    hedged[:, :2] = 5
    assert soft_segmentation_loss(hedged, half) < soft_segmentation_loss(sure, half)


def test_largest_component_keeps_one_region_per_class():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, 0:4, 0:4] = 1  # 16 px
    lab[0, 8:10, 8:10] = 1  # 4 px, dropped
    lab[0, 6, 0] = 2
    out = largest_component_per_class(lab, 3)
    assert out[0, 0:4, 0:4].eq(1).all() and out[0, 8:10, 8:10].eq(0).all() and out[0, 6, 0] == 2


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_bcp_keeps_the_largest_region_only_of_classes_the_labels_show_in_one_piece():
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 4:12, 4:12] = 1  # an organ: one region per slice
    y[:, 20:22, ::4] = 2  # a structure in pieces (eight short vessels per slice)
    bcp = build_method("bcp", 1, 3, {"pretrain_fraction": 0.0})
    bcp.training_step(Batch(torch.rand(4, 1, 32, 32), y, torch.rand(4, 1, 32, 32)), TrainState(10, 0.5))
    assert bcp.one_piece_classes() == [1]
    teacher = torch.zeros(1, 32, 32, dtype=torch.long)
    teacher[0, 2:10, 2:10] = 1
    teacher[0, 28:30, 28:30] = 1  # a stray island of the organ
    teacher[0, 20:22, 0:3] = 2
    teacher[0, 20:22, 8:11] = 2  # two vessels
    bcp.teacher = FixedLogits(F.one_hot(teacher, 3).permute(0, 3, 1, 2).float())
    pseudo = bcp.pseudo_labels(torch.rand(1, 1, 32, 32))
    assert pseudo[0, 28:30, 28:30].eq(UNKNOWN).all()  # the island: no loss, rather than "background"
    assert pseudo[0, 2:10, 2:10].eq(1).all()
    assert torch.equal(pseudo[teacher == 2], teacher[teacher == 2])  # every vessel kept
    bcp_reference = build_method("bcp", 1, 3, {"largest_component": True, "outside_largest": "background"})
    bcp_reference.teacher = bcp.teacher
    reference = bcp_reference.pseudo_labels(torch.rand(1, 1, 32, 32))
    assert reference[0, 28:30, 28:30].eq(0).all() and reference[teacher == 2].eq(2).sum() == 6  # one vessel left


def test_bcp_pseudo_labels_never_overwrite_the_labeled_ground_truth():
    torch.manual_seed(0)
    bcp = build_method("bcp", 1, 3, {"pretrain_fraction": 0.0})
    batch = Batch(torch.rand(4, 1, 32, 32), torch.randint(1, 3, (4, 32, 32)), torch.rand(4, 1, 32, 32))
    state = TrainState(10, 0.5)
    inward, outward = bcp.mixes(batch, state)
    ya, yb = batch.y_l[:2], batch.y_l[2:]
    inside = inward.alpha < 0.5  # the labeled box pasted into the unlabeled image
    assert torch.equal(inward.hard_labels()[:, inside], ya[:, inside])
    assert torch.equal(outward.hard_labels()[:, ~inside], yb[:, ~inside])  # the labeled image around the box
    assert torch.equal(inward.trusted()[0], inside) and torch.equal(outward.trusted()[0], ~inside)
    assert inward.w_a == bcp.settings.u_weight < 1.0 and inward.w_b == 1.0  # pseudo-labeled regions down-weighted
    # images: labeled pixels are copied unchanged
    assert torch.equal(inward.x[:, :, inside], batch.x_l[:2][:, :, inside])


def test_bcp_pastes_half_the_labeled_batch_each_way_unless_told_how_many_pairs():
    batch = Batch(torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 16, 16)), torch.rand(4, 1, 16, 16))
    for state, one, published in ((TrainState(5, 0.1), [1], [2]),  # pre-training: labeled pairs
                                  (TrainState(900, 0.9), [1, 1], [2, 2])):  # self-training: both ways
        for pairs, sizes in ((1, one), (0, published)):
            bcp = build_method("bcp", 1, 2, {"pairs": pairs, "pretrain": "paste"})
            assert [len(m.x) for m in bcp.mixes(batch, state)] == sizes
    with pytest.raises(InputError, match="pairs"):
        build_method("bcp", 1, 2, {"pairs": -1})


def test_bcp_trains_on_the_unpasted_labeled_patches_too_unless_told_not_to():
    batch = Batch(torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 16, 16)), torch.rand(4, 1, 16, 16))
    for iteration, progress in ((5, 0.1), (900, 0.9)):  # pre-training and self-training
        bcp = build_method("bcp", 1, 2, {"pretrain": "paste"})
        out = bcp.training_step(batch, TrainState(iteration, progress))
        published = build_method("bcp", 1, 2, {"labeled_weight": 0, "pretrain": "paste"}).training_step(
            batch, TrainState(iteration, progress))
        assert "supervised" in out and "supervised" not in published
        weight = bcp.settings.labeled_weight
        assert out["loss"].item() == pytest.approx(out["mix"].item() + weight * out["supervised"].item(), rel=1e-5)


def test_bcp_pretrains_on_labeled_pairs_then_starts_the_teacher_from_the_student():
    bcp = build_method("bcp", 1, 2, {"pretrain_fraction": 0.5, "pretrain": "paste"})
    batch = Batch(torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 16, 16)), torch.rand(4, 1, 16, 16))
    (pre,) = bcp.mixes(batch, TrainState(0, 0.1))
    assert pre.trusted().all()
    bcp.training_step(batch, TrainState(0, 0.1))
    assert not bool(bcp.self_training)
    with torch.no_grad():
        bcp.student.head.bias.add_(1.0)
    bcp.training_step(batch, TrainState(500, 0.6))  # past the budget's half and the minimum steps
    assert bool(bcp.self_training)
    assert torch.equal(bcp.teacher.head.bias, bcp.student.head.bias)


def test_bcp_pre_trained_supervised_takes_supervised_trainings_step_then_pastes():
    batch = Batch(torch.rand(4, 1, 16, 16), torch.randint(0, 2, (4, 16, 16)), torch.rand(4, 1, 16, 16))
    torch.manual_seed(0)
    bcp = build_method("bcp", 1, 2, {"pretrain_fraction": 0.5})  # pretrain=supervised, the default
    torch.manual_seed(0)
    supervised = build_method("supervised", 1, 2)
    early = TrainState(0, 0.1)
    assert bcp.mixes(batch, early) == []
    losses = []
    for method in (bcp, supervised):
        torch.manual_seed(1)  # the same dropout
        losses.append(method.training_step(batch, early)["loss"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert len(bcp.mixes(batch, TrainState(500, 0.6))) == 2  # self-training pastes both ways
    bcp.training_step(batch, TrainState(500, 0.6))
    assert bool(bcp.self_training)
    with pytest.raises(InputError, match="pretrain"):
        build_method("bcp", 1, 2, {"pretrain": "none"})


# ------------------------------------------------------------------------------------------ SGRS

def test_sgrs_partition_of_a_constructed_probability_map():
    clean = torch.zeros(1, 2, 2, 2)
    mixed = torch.zeros(1, 2, 2, 2)
    # pixel (0,0): both confident class 0; (0,1): views disagree, both confident;
    # (1,0): agree but the mixed view is near 0.5 (uncertain); (1,1): agree on class 1
    clean[0, :, 0, 0] = torch.tensor([0.95, 0.05])
    mixed[0, :, 0, 0] = torch.tensor([0.9, 0.1])
    clean[0, :, 0, 1] = torch.tensor([0.95, 0.05])
    mixed[0, :, 0, 1] = torch.tensor([0.05, 0.95])
    clean[0, :, 1, 0] = torch.tensor([0.9, 0.1])
    mixed[0, :, 1, 0] = torch.tensor([0.55, 0.45])
    clean[0, :, 1, 1] = torch.tensor([0.2, 0.8])
    mixed[0, :, 1, 1] = torch.tensor([0.1, 0.9])
    r = synergy_regions(clean, mixed, 0.9837)
    assert r.consistent.tolist() == [[[True, False], [True, True]]]
    assert r.uncertain.tolist() == [[[False, False], [True, False]]]
    assert r.consistent_certain.tolist() == [[[True, False], [False, True]]]
    assert r.inconsistent_certain.tolist() == [[[False, True], [False, False]]]
    # 0.425 < p < 0.575 is exactly the binary rule the threshold stands for
    edge = torch.tensor([[[[0.426]], [[0.574]]]])
    outside = torch.tensor([[[[0.42]], [[0.58]]]])
    assert synergy_regions(edge, edge, 0.9837).uncertain.item()
    assert not synergy_regions(outside, outside, 0.9837).uncertain.item()


def test_sgrs_region_rules():
    torch.manual_seed(0)
    logits = [(0.5 * torch.randn(1, 2, 4, 4)).requires_grad_() for _ in range(2)]
    pseudo = torch.randint(0, 2, (1, 4, 4))
    consistent = torch.zeros(1, 4, 4, dtype=torch.bool)
    consistent[:, :2] = True
    regions = Regions(consistent, torch.zeros_like(consistent))
    soft = region_losses(logits, pseudo, regions, SGRSSettings())
    hard = region_losses(logits, pseudo, regions, SGRSSettings(inconsistent="hard"))
    excl = region_losses(logits, pseudo, regions, SGRSSettings(inconsistent="exclude"))
    assert excl["ce"] < soft["ce"] and excl["ce"] < hard["ce"]
    # label smoothing lowers the pull of inconsistent pixels: its gradient there is smaller
    g_soft = torch.autograd.grad(soft["ce"], logits[0], retain_graph=True)[0][:, :, 2:].abs().sum()
    g_hard = torch.autograd.grad(hard["ce"], logits[0])[0][:, :, 2:].abs().sum()
    assert g_soft < g_hard
    # every pixel consistent: the rules agree
    all_c = Regions(torch.ones_like(consistent), torch.zeros_like(consistent))
    a = region_losses(logits, pseudo, all_c, SGRSSettings())
    b = region_losses(logits, pseudo, all_c, SGRSSettings(inconsistent="hard"))
    assert torch.allclose(a["ce"], b["ce"])


def _background_heavy_stream(n_classes: int = 2) -> torch.Tensor:
    """Teacher probabilities as on a medical image: sure background nearly everywhere, a little
    foreground, sure in its middle (0.9) and doubtful at its edge (0.6)."""
    probs = torch.zeros(2, n_classes, 16, 16)
    probs[:, 0], probs[:, 1] = 0.98, 0.02
    probs[:, 0, :4, :4], probs[:, 1, :4, :4] = 0.4, 0.6
    probs[:, 0, :3, :3], probs[:, 1, :3, :3] = 0.1, 0.9
    return probs


DOUBTFUL_BG, DOUBTFUL_FG, SURE_BG, SURE_FG = [0.7, 0.3], [0.4, 0.6], [0.99, 0.01], [0.05, 0.95]
PIXELS = torch.tensor([DOUBTFUL_BG, DOUBTFUL_FG, SURE_BG, SURE_FG]).T[None, :, None, :]  # (1, 2, 1, 4)


@pytest.mark.parametrize("rule, kept", [
    # background must be as sure as the teacher is on average; any foreground counts
    ("frequency", [False, True, True, True]),
    # each class must be as sure as the teacher is on average where it predicts that class
    ("own", [False, False, True, True]),
])
def test_adaptive_thresholds_leave_out_doubtful_background(rule, kept):
    th = ClassThresholds(2, rule, momentum=0.9)
    assert th.keep(PIXELS).all()  # nothing learned yet: every pseudo-label counts, as without thresholds
    for _ in range(200):
        th.update(_background_heavy_stream())
    assert th.keep(PIXELS).tolist() == [[kept]]
    if rule == "own":  # a class the teacher stops predicting keeps the threshold it had
        before = float(th.thresholds()[1])
        th.update(torch.tensor([0.99, 0.01])[None, :, None, None].expand(2, 2, 16, 16))
        assert float(th.thresholds()[1]) == before


def test_sgrs_pseudo_labels_below_their_class_threshold_teach_nothing():
    torch.manual_seed(0)
    logits = (0.5 * torch.randn(1, 2, 8, 8)).requires_grad_()
    pseudo = torch.randint(0, 2, (1, 8, 8))
    everywhere = torch.ones(1, 8, 8, dtype=torch.bool)
    counted = torch.zeros_like(everywhere)
    counted[:, :4] = True
    parts = region_losses([logits], pseudo, Regions(everywhere, ~everywhere, counted), SGRSSettings())
    grad = torch.autograd.grad(parts["ce"] + parts["dice"], logits)[0]
    assert grad[:, :, 4:].abs().max() == 0 and grad[:, :, :4].abs().max() > 0
    # in a training step: once the teacher is known to be sure of its background, a fresh teacher's
    # doubtful background is left out; with the thresholds off every pixel counts
    batch = Batch(torch.rand(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16)), torch.rand(2, 1, 16, 16))
    for rule in ("own", "frequency", "off"):
        sgrs = build_method("sgrs-net", 1, 2, {"thresholds": rule, "paced": False})
        if sgrs.thresholds is not None:
            for _ in range(200):
                sgrs.thresholds.update(_background_heavy_stream())
        counted = float(sgrs.training_step(batch, TrainState(500, 0.5))["counted_fraction"])
        assert counted < 0.9 if rule != "off" else counted == 1.0


# ------------------------------------------------------------------------------------------ BARL

def test_barl_instance_matcher_pairs_constructed_components():
    lab1 = np.zeros((20, 20), np.uint8)
    lab2 = np.zeros((20, 20), np.uint8)
    lab1[1:6, 1:6] = 1  # A (25 px)
    lab1[10:13, 10:19] = 1  # B (27 px)
    lab1[16:18, 1:3] = 1  # C, nothing in branch 2
    lab2[11:14, 10:19] = 1  # B shifted by one row (larger, listed first)
    lab2[2:6, 1:6] = 1  # A trimmed
    lab2[0:2, 15:18] = 1  # D, nothing in branch 1
    c1 = components(lab1, 8, 1)
    c2 = components(lab2, 8, 1)
    pairs = dict(match_instances(c1, c2, 0.1))
    centre = [tuple(np.argwhere(c).mean(0).round().astype(int)) for c in c1]
    a1, b1 = centre.index((3, 3)), centre.index((11, 14))
    centre2 = [tuple(np.argwhere(c).mean(0).round().astype(int)) for c in c2]
    assert pairs[a1] == centre2.index((4, 3)) and pairs[b1] == centre2.index((12, 14))
    assert len(pairs) == 2  # C and D have no partner above the IoU floor


def test_region_prototypes_are_masked_means():
    torch.manual_seed(0)
    feats = torch.randn(5, 12)  # (D, P)
    masks = torch.zeros(2, 12)
    masks[0, :4] = 1
    masks[1, 6:] = 1
    protos = masked_prototypes(feats, masks)
    assert torch.allclose(protos[0], feats[:, :4].mean(1)) and torch.allclose(protos[1], feats[:, 6:].mean(1))


# ------------------------------------------------------------------------------------------ TSA

def test_tsa_bound_is_cross_entropy_at_zero_strength_and_grows_along_the_class_difference():
    torch.manual_seed(0)
    c, d = 3, 4
    weight = torch.randn(c, d)
    feats = torch.randn(50, d)
    labels = torch.randint(0, c, (50,))
    logits = feats @ weight.T
    known = torch.ones(c, dtype=torch.bool)
    cov = torch.eye(d).expand(c, d, d).clone()
    shift0 = tsa_logit_shift(weight, torch.randn(c, d), cov, 0.0, known)
    assert torch.equal(tsa_cross_entropy(logits, labels, shift0), F.cross_entropy(logits, labels))
    # variance along w_1 - w_0 raises the bound for class-0 pixels; the same variance orthogonal to it does not
    v = weight[1] - weight[0]
    v = v / v.norm()
    ortho = torch.randn(d)
    ortho = ortho - (ortho @ v) * v
    along = torch.zeros(c, d, d)
    along[0] = 4 * torch.outer(v, v)
    across = torch.zeros(c, d, d)
    across[0] = 4 * torch.outer(ortho / ortho.norm(), ortho / ortho.norm())
    zero = torch.zeros(c, d)
    s_along = tsa_logit_shift(weight, zero, along, 0.5, known)
    s_across = tsa_logit_shift(weight, zero, across, 0.5, known)
    assert s_along[0, 1] > 0 and abs(s_across[0, 1]) < 1e-5 and torch.all(s_along.diagonal() == 0)
    y0 = torch.zeros(50, dtype=torch.long)
    assert tsa_cross_entropy(logits, y0, s_along) > tsa_cross_entropy(logits, y0, s_across)
    # classes without statistics are left alone
    assert torch.all(tsa_logit_shift(weight, zero, along, 0.5, torch.tensor([False, True, True]))[0] == 0)


def test_class_statistics_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 3)), rng.normal(2, 1, size=(25, 3))
    la, lb = rng.integers(0, 2, 40), rng.integers(0, 2, 25)
    exact = ClassStatistics(2, 3, momentum=None)
    exact.update(torch.tensor(a, dtype=torch.float32), torch.tensor(la))
    exact.update(torch.tensor(b, dtype=torch.float32), torch.tensor(lb))
    allf, alll = np.concatenate([a, b]), np.concatenate([la, lb])
    for c in range(2):
        x = allf[alll == c]
        np.testing.assert_allclose(exact.mean[c].numpy(), x.mean(0), atol=1e-5)
        np.testing.assert_allclose(exact.cov[c].numpy(), np.cov(x.T, bias=True), atol=1e-5)
        assert exact.count[c] == len(x)
    ema = ClassStatistics(2, 3, momentum=0.9)
    ema.update(torch.tensor(a, dtype=torch.float32), torch.tensor(la))
    x0 = a[la == 0]
    np.testing.assert_allclose(ema.mean[0].numpy(), x0.mean(0), atol=1e-5)
    ema.update(torch.tensor(b, dtype=torch.float32), torch.tensor(lb))
    np.testing.assert_allclose(ema.mean[0].numpy(), 0.9 * x0.mean(0) + 0.1 * b[lb == 0].mean(0), atol=1e-5)


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.parametrize("method", NEW_METHODS)
def test_each_method_trains_saves_loads_and_predicts(method, tmp_path):
    vol = tiny_volume()
    settings = {"pretrain_fraction": 0.3} if method in ("bcp", "sra-seg") else {}
    trainer = Trainer([vol], fast_config(method=method, iterations=6, method_settings=settings), out_dir=tmp_path)
    report = trainer.train()
    assert report.finished and report.iteration == 6
    assert all(np.isfinite(v) for v in report.losses.values())
    pred = report.prediction[0]
    assert pred.labels.shape == vol.spatial_shape
    assert 0.0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1.0
    method_obj, meta = load_method(tmp_path)
    assert meta["method"] == method
    again = predict_with_model(method_obj, meta, vol, device="cpu")  # bf16 where the CPU has it
    assert (again.labels == pred.labels).mean() > 0.99
    np.testing.assert_allclose(again.uncertainty, pred.uncertainty, atol=0.02)


def test_method_uncertainty_maps_include_disagreement():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    for name in ("sgrs-net", "barl"):
        m = build_method(name, 1, 2).eval()
        logits, extra = m.predictor().eval()(x)
        assert extra.shape == (2, 16, 16) and set(extra.unique().tolist()) <= {0.0, 1.0}
        u = m.uncertainty(torch.softmax(logits, 1), extra)
        assert torch.all(u >= extra)  # a disagreeing pixel is fully uncertain


def test_transmedseg_on_bcp_and_swapped_direction_train():
    vol = tiny_volume()
    for settings in ({"base": "bcp", "base_settings": {"pretrain_fraction": 0.3}},
                     {"direction": "teacher-to-student", "confidence": 0.0,
                      "base_settings": {"warmup": "none", "paced": False}}):  # a warm-up or paced step has no teacher features
        report = Trainer([vol], fast_config(method="transmedseg", iterations=5, method_settings=settings)).train()
        assert "tsa" in report.losses and np.isfinite(report.losses["tsa"])


def test_bad_method_settings_are_one_clear_error():
    with pytest.raises(InputError, match="sra-seg"):
        build_method("sra-seg", 1, 2, {"blend": "feathered"})
    with pytest.raises(InputError, match="unknown setting"):
        build_method("sgrs-net", 1, 2, {"tau": 0.4})
    with pytest.raises(InputError, match="DINOv2"):
        Trainer([tiny_volume()], fast_config(method="sra-seg", iterations=2, method_settings={
            "pretrain_fraction": 0.0, "encoder": "dinov2:/nonexistent/dinov2-small"})).train()


# ------------------------------------------------------------------------------------------ SRA-Seg encoders

def test_sra_seg_embeds_the_labeled_bank_once(tiny_dinov2):
    vol = tiny_volume(labeled=(0, 2, 4))
    cfg = fast_config(method="sra-seg", iterations=5,
                      method_settings={"pretrain_fraction": 0.0, "encoder": tiny_dinov2, "encoder_size": 28})
    trainer = Trainer([vol], cfg)
    calls = []
    for _ in trainer.run():
        calls.append(trainer.method.encoder.calls)
    unlabeled_per_step = trainer.sampler.unlabeled_batch
    bank = len(vol.labeled)
    # first step: the bank (3 slices) and the batch; every later step only the batch
    assert calls[0] == bank + unlabeled_per_step
    assert calls[4] - calls[0] == 4 * unlabeled_per_step
    assert "alignment" in trainer.step(0.5)


def test_default_encoder_is_offline_imagenet_efficientnet():
    from napari_semiseg.core.encoders import load_encoder

    enc = load_encoder()
    x = torch.rand(3, 1, 40, 40)
    e = enc.embed(x)
    assert e.shape == (3, 1280) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(enc.embed(x[:1]), e[:1], atol=1e-4)  # frozen and deterministic


def test_sra_seg_paper_code_mode_logs_a_distance_that_does_not_train(tiny_dinov2):
    m = build_method("sra-seg", 1, 2, {"pretrain_fraction": 0.0, "sa_mode": "paper_code", "encoder": tiny_dinov2,
                                       "encoder_size": 28})
    batch = Batch(torch.rand(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16)), torch.rand(2, 1, 16, 16))
    out = m.training_step(batch, TrainState(3, 0.5))
    assert "sa_distance" in out and not out["sa_distance"].requires_grad


# ------------------------------------------------------------------------------------------ synthetic data

def test_unlabeled_stream_from_a_folder_of_synthetic_images(tmp_path):
    vol = tiny_volume(labeled=(1, 4))
    folder = write_standin_synthetic([vol], tmp_path / "synthetic", 5)
    assert len(list(folder.glob("*.tif"))) == 5
    cfg = fast_config(method="sra-seg", iterations=3, unlabeled_dir=str(folder), unlabeled_source="extra",
                      method_settings={"pretrain_fraction": 0.0, "sa_mode": "off"})
    trainer = Trainer([vol], cfg)
    sampler = trainer.sampler
    assert sampler.n_unlabeled == 5 and all(vi >= 1 for vi, _ in sampler._unlabeled.items)
    assert trainer.train().finished
    both = Trainer([vol], fast_config(unlabeled_dir=str(folder), unlabeled_source="both")).sampler
    assert both.n_unlabeled == 5 + len(vol.unlabeled)
    # the 3D model takes neighbouring slices as channels: a 2D synthetic image is its own neighbours
    x = sampler._unlabeled_patch(1, 0)
    assert x.shape[0] == trainer.method.in_channels == 3 and torch.equal(x[0], x[1])


def test_synthetic_folder_errors_are_clear(tmp_path):
    vol = tiny_volume()
    with pytest.raises(InputError, match="does not exist"):
        Trainer([vol], fast_config(unlabeled_dir=str(tmp_path / "missing"), unlabeled_source="extra"))
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    import tifffile

    tifffile.imwrite(rgb / "a.tif", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="channel"):
        Trainer([vol], fast_config(unlabeled_dir=str(rgb), unlabeled_source="extra"))


def test_variant_syntax():
    assert split_methods("bcp,sra-seg[sa_mode=off,blend=hard],sgrs-net") == [
        "bcp", "sra-seg[sa_mode=off,blend=hard]", "sgrs-net"]
    v = parse_variant("sra-seg[sa_mode=off,unlabeled_source=extra,sa_weight=0.5]")
    assert v.method == "sra-seg" and v.settings == {"sa_mode": "off", "sa_weight": 0.5}
    assert v.config == {"unlabeled_source": "extra"} and v.wants_extra_unlabeled
    with pytest.raises(InputError, match="Unknown method"):
        parse_variant("fixmatch")


def test_all_methods_are_registered():
    assert set(NEW_METHODS) <= set(METHODS)


def test_volume_synthetic_images_have_the_volume_channels(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((24, 24, 3)).astype(np.float32)
    lab = np.zeros((24, 24), np.uint8)
    lab[5:10, 5:10] = 1
    v = Volume(img, lab, {0}, channels=True)
    folder = write_standin_synthetic([v], tmp_path / "s", 2)
    trainer = Trainer([v], fast_config(unlabeled_dir=str(folder), unlabeled_source="extra"))
    assert trainer.sampler.next().x_u.shape[1] == 3


# ------------------------------------------------------------------------------------------ mean teacher warm-up

def test_mean_teacher_warm_up_is_supervised_until_the_student_agrees_with_the_labels():
    torch.manual_seed(0)
    mt = build_method("mean-teacher", 1, 2, {"warmup": "agreement", "warmup_agreement": 0.7, "paced": False})
    batch = Batch(torch.rand(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16)), torch.rand(2, 1, 16, 16))
    early = TrainState(10, 0.1)
    assert not mt.needs_unlabeled(early)
    out = mt.training_step(batch, early)
    assert "consistency" not in out and "agreement" in out
    mt.agreement.fill_(0.9)  # agrees, but too few steps yet
    assert not mt.needs_unlabeled(TrainState(50, 0.2))
    assert mt.needs_unlabeled(TrainState(250, 0.2))
    # the consistency ramp starts where the warm-up ended, not at the start of training
    out = mt.training_step(batch, TrainState(251, 0.21))
    assert "consistency" in out and float(out["consistency_weight"]) < 0.01 * mt.settings.consistency


def test_mean_teacher_warm_up_ends_at_its_share_of_the_budget_even_without_agreement():
    mt = build_method("mean-teacher", 1, 2, {"warmup": "agreement", "warmup_fraction": 0.5, "paced": False})
    assert not mt.needs_unlabeled(TrainState(400, 0.4))
    assert mt.needs_unlabeled(TrainState(401, 0.5))


def test_barl_warm_up_trains_both_branches_on_the_labels_until_they_agree_with_them():
    torch.manual_seed(0)
    barl = build_method("barl", 1, 2)  # the warm-up is BARL's default (RESULTS §22)
    assert build_method("barl", 1, 2, {"warmup": "none"}).needs_unlabeled(TrainState(0, 0.0))
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12] = 1
    warming = Batch(torch.rand(2, 1, 16, 16), y, torch.rand(0, 1, 16, 16))  # the sampler draws no unlabeled
    early = TrainState(10, 0.1)
    assert not barl.needs_unlabeled(early)
    out = barl.training_step(warming, early)
    assert "cps" not in out and 0.0 <= float(out["labeled_agreement"]) <= 0.1
    out["loss"].backward()  # both branches learn in the warm-up
    assert all(p.grad is not None for p in barl.trainable_parameters())
    barl.agreement.fill_(0.9)
    assert not barl.needs_unlabeled(TrainState(50, 0.2)) and barl.needs_unlabeled(TrainState(250, 0.2))
    # the unlabeled terms' ramp starts where the warm-up ended
    full = Batch(warming.x_l, y, torch.rand(2, 1, 16, 16))
    out = barl.training_step(full, TrainState(251, 0.21))
    assert "cps" in out and float(out["ramp"]) < 0.01


def test_sgrs_net_warm_up_is_supervised_then_ramps_its_pseudo_labels_from_where_it_ended():
    torch.manual_seed(0)
    sgrs = build_method("sgrs-net", 1, 2, {"paced": False})  # the warm-up is SGRS-Net's default (RESULTS §28)
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12] = 1
    warming = Batch(torch.rand(2, 1, 16, 16), y, torch.rand(0, 1, 16, 16))  # the sampler draws no unlabeled
    early = TrainState(10, 0.1)
    assert not sgrs.needs_unlabeled(early)
    torch.manual_seed(1)  # the same dropout in both steps
    out = sgrs.training_step(warming, early)
    assert "pseudo" not in out and "agreement" in out
    # supervised training's loss from the same weights: the warm-up step is that step
    plain = build_method("supervised", 1, 2)
    plain.student.load_state_dict(sgrs.student.state_dict())
    torch.manual_seed(1)
    assert torch.allclose(out["loss"], plain.training_step(warming, early)["loss"])
    sgrs.agreement.fill_(0.9)  # agrees, but too few steps yet
    assert not sgrs.needs_unlabeled(TrainState(50, 0.2)) and sgrs.needs_unlabeled(TrainState(250, 0.2))
    out = sgrs.training_step(Batch(warming.x_l, y, torch.rand(2, 1, 16, 16)), TrainState(251, 0.21))
    assert "pseudo" in out and float(out["pseudo_weight"]) < 0.01 * sgrs.settings.pseudo_weight
    # without the warm-up the pseudo-label weight has ramped by then
    off = build_method("sgrs-net", 1, 2, {"warmup": "none", "paced": False})
    assert off.needs_unlabeled(TrainState(0, 0.0))
    out = off.training_step(Batch(warming.x_l, y, torch.rand(2, 1, 16, 16)), TrainState(251, 0.21))
    assert float(out["pseudo_weight"]) > 0.1 * off.settings.pseudo_weight


@pytest.mark.parametrize("method, weight, full", [("mean-teacher", "consistency_weight", "consistency"),
                                                  ("sgrs-net", "pseudo_weight", "pseudo_weight")])
def test_a_paced_method_takes_the_unlabeled_stream_as_often_as_its_ramp_weighs(method, weight, full):
    m = build_method(method, 1, 2, {"paced": True, "warmup": "none"})
    s = m.settings
    states = [TrainState(i, i / 1000) for i in range(1000)]  # the ramp: the first 30-40 % of the budget
    ramps = [m.ramp_after_warmup(st, s.rampup_fraction, s.rampup_iterations) for st in states]
    taken = []
    for st in states:
        taken.append(m.needs_unlabeled(st))
        assert m.needs_unlabeled(st) == taken[-1]  # asked twice in a step (trainer, then the step): one decision
    assert abs(sum(taken) - sum(ramps)) < 1.0  # the same expected weight...
    assert sum(taken[:150]) < 0.2 * 150 and all(taken[450:])  # ...paid for only as often as it weighs
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12] = 1
    both = Batch(torch.rand(2, 1, 16, 16), y, torch.rand(2, 1, 16, 16))
    out = m.training_step(both, states[500])
    assert float(out[weight]) == pytest.approx(getattr(s, full))  # at full weight when taken
    # a step not taken draws no unlabeled patches and is supervised training's
    skipped = next(st for st, t in zip(states, taken) if not t)
    out = m.training_step(Batch(both.x_l, y, torch.rand(0, 1, 16, 16)), skipped)
    assert weight not in out and float(out["loss"].detach()) == pytest.approx(float(out["supervised"]))


def test_the_mean_teacher_is_paced_by_default_and_transmedseg_keeps_its_term_between_paced_steps():
    assert build_method("mean-teacher", 1, 2).settings.paced  # RESULTS §29
    tsa = build_method("transmedseg", 1, 2, {"base_settings": {"warmup": "none"}})
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12] = 1
    early = TrainState(5, 0.005)  # the ramp weighs almost nothing: not taken
    assert not tsa.needs_unlabeled(early)
    tsa.target_stats.update(torch.rand(64, tsa.student.feature_channels), torch.randint(0, 2, (64,)))
    out = tsa.training_step(Batch(torch.rand(2, 1, 16, 16), y, torch.rand(0, 1, 16, 16)), early)
    assert "consistency" not in out and "tsa" in out  # the labeled features still meet the unlabeled statistics


@pytest.mark.parametrize("method, unlabeled_term", [("mean-teacher", "consistency"), ("sgrs-net", "pseudo")])
def test_a_warming_method_trains_without_drawing_unlabeled_patches(method, unlabeled_term):
    vol = tiny_volume(labeled=(1, 4))
    t = Trainer([vol], fast_config(method=method, iterations=3,
                                   method_settings={"warmup": "agreement", "warmup_fraction": 1.0}))
    drawn = []
    original = t.sampler.next
    t.sampler.next = lambda with_unlabeled=True: drawn.append(with_unlabeled) or original(with_unlabeled)
    last = t.train()
    assert drawn == [False, False, False] and unlabeled_term not in last.losses


@pytest.mark.parametrize("method", ["bcp", "sra-seg"])
def test_copy_paste_pre_training_draws_no_unlabeled_patches(method):
    """Pre-training pastes labeled pairs: unlabeled patches drawn then would cost time and teach nothing."""
    vol = tiny_volume(labeled=(1, 4))
    t = Trainer([vol], fast_config(method=method, iterations=3))
    drawn = []
    original = t.sampler.next
    t.sampler.next = lambda with_unlabeled=True: drawn.append(with_unlabeled) or original(with_unlabeled)
    last = t.train()
    assert drawn == [False, False, False] and last.losses["pretraining"] == 1.0
    m = t.method
    assert m.needs_unlabeled(TrainState(250, 0.3))  # self-training: both directions need unlabeled images
    m.self_training.fill_(True)  # a resumed model skips pre-training
    assert m.needs_unlabeled(TrainState(0, 0.0))


def test_with_every_slice_labeled_the_mean_teacher_is_supervised_training_and_bcp_keeps_its_pairs():
    """Nothing unlabeled to learn from: the mean teacher's consistency would only cost steps."""
    vol = tiny_volume(labeled=range(6))
    for method, draws in (("mean-teacher", False), ("bcp", True)):
        # BCP past its pre-training, which draws nothing unlabeled
        settings = {"pretrain_fraction": 0.0} if method == "bcp" else {}
        t = Trainer([vol], fast_config(method=method, iterations=2, method_settings=settings))
        drawn = []
        original = t.sampler.next
        t.sampler.next = lambda with_unlabeled=True: drawn.append(with_unlabeled) or original(with_unlabeled)
        last = t.train()
        assert drawn == [draws, draws], method
        assert ("consistency" in last.losses) is False


# ------------------------------------------------------------------------------------------ the EMA teacher's window

@pytest.mark.parametrize("method", ["mean-teacher", "sgrs-net", "transmedseg"])  # (BCP's copies until self-training)
def test_a_short_run_s_teacher_averages_its_last_steps_not_its_first(method):
    """A student whose weights move steadily (each step adds 1): after 300 steps the teacher of a
    0.99 EMA must sit near the recent weights. The reference schedule min(1 - 1/(t+1), 0.99) kept a
    uniform average of the first 100 steps and left the teacher about 100 steps behind."""
    def lag_after_300_steps(settings):
        m = build_method(method, 1, 2, settings)
        weight = next(m.student.parameters())
        with torch.no_grad():
            weight.zero_()
            for i in range(300):
                weight.add_(1.0)
                m.after_step(TrainState(i, (i + 1) / 300))
        teacher_weight = next(getattr(m, "base", m).teacher.parameters())  # TransMedSeg: its base's teacher
        return 300 - float(teacher_weight.mean())

    base = {"base_settings": {"teacher_window": 1}} if method == "transmedseg" else {"teacher_window": 1}
    assert 9.0 < lag_after_300_steps(None) < 40.0  # not a copy (0), not the decay's own horizon (≈ 100)
    assert lag_after_300_steps(base) > 90.0  # teacher_window=1 is the reference schedule


# ------------------------------------------------------------------------------------------ corrections while training

def test_after_a_correction_pseudo_labels_are_trusted_again_only_gradually():
    settled, just, half = TrainState(1000, 0.9), TrainState(1000, 0.9, 1000), TrainState(1050, 0.9, 1000)
    assert (settled.ramp(0.3, 600), just.ramp(0.3, 600), half.ramp(0.3, 600)) == (1.0, 0.0, 0.5)
    assert TrainState(1000, 0.9, 1000, relabel_ramp=0).ramp(0.3, 600) == 1.0  # switched off
    torch.manual_seed(0)
    x_l, y_l = torch.rand(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    batch = Batch(x_l, y_l, torch.rand(2, 1, 32, 32))
    sgrs = build_method("sgrs-net", 1, 2, {"warmup": "none", "paced": False})  # weights ramped by the budget alone
    assert float(sgrs.training_step(batch, settled)["pseudo_weight"]) == pytest.approx(sgrs.settings.pseudo_weight)
    assert float(sgrs.training_step(batch, just)["pseudo_weight"]) < 0.01 * sgrs.settings.pseudo_weight
    # BCP: the pseudo-labeled half of each mix weighs nothing right after, its full u_weight later
    bcp = build_method("bcp", 1, 2, {"labeled_weight": 0.0, "pretrain_fraction": 0.0})
    bcp.self_training.fill_(True)
    weights = {name: min(min(m.w_a, m.w_b) for m in bcp.mixes(batch, st))
               for name, st in (("settled", settled), ("just", just))}
    assert weights == {"settled": bcp.settings.u_weight, "just": 0.0}


def test_a_correction_while_training_restarts_the_ramp_of_the_unlabeled_weight():
    vol = tiny_volume(labeled=(1, 4))
    trainer = Trainer([vol], fast_config(method="mean-teacher", iterations=None, relabel_ramp_iterations=4,
                                         method_settings={"rampup_iterations": 1, "paced": False}))
    weights = []
    for report in trainer.run():
        if "consistency_weight" in report.losses:
            weights.append(report.losses["consistency_weight"])
        if len(weights) == 3:
            corrected = vol.labels.copy()
            corrected[2] = corrected[1]
            trainer.update_labels(LabelUpdate(corrected, {1, 2, 4}))
        if len(weights) == 10:
            trainer.stop()
    full = pytest.approx(trainer.method.settings.consistency)
    assert weights[1:3] == [full, full]
    assert weights[3] < 0.001 < weights[4] < weights[5] < weights[6] < 0.099  # the step after, then back up
    assert weights[7:10] == [full] * 3
