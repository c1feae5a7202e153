"""The engine's pieces on tiny inputs: each test pins behaviour that could break."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_semiseg.core.inference import InputSpec, predict_volume
from napari_semiseg.core.interpolation import interpolate_labels
from napari_semiseg.core.io import InputError
from napari_semiseg.core.losses import (masked_cross_entropy, normalised_entropy, one_hot, sigmoid_rampup,
                                        soft_dice_loss, supervised_loss)
from napari_semiseg.core.methods import build_method
from napari_semiseg.core.methods.base import MIN_RAMP_ITERATIONS, TrainState
from napari_semiseg.core.sampling import TwoStreamSampler, augment_pairs
from napari_semiseg.core.checkpoint import load_method
from napari_semiseg.core.trainer import LabelUpdate, TrainConfig, Trainer
from napari_semiseg.core.volume import Volume, labeled_slices_from_labels


def tiny_volume(n=6, size=20, labeled=(1, 4), seed=0) -> Volume:
    """A bright square (class 1) and a dim disc (class 2) on noise; labels on every slice."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 0.1, (n, size, size)).astype(np.float32)
    lab = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for z in range(n):
        lab[z, 3:9, 3:9] = 1
        lab[z][(yy - 13) ** 2 + (xx - 13) ** 2 < 12] = 2
    img[lab == 1] += 1.0
    img[lab == 2] += 0.5
    return Volume(img, lab, set(labeled))


def fast_config(**kw) -> TrainConfig:
    base = dict(iterations=4, batch_size=4, labeled_batch=2, patch_size=32, refresh_seconds=1e9,
                first_refresh_seconds=1e9, precision="fp32", report_every=1)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------------ losses

def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(50, 10) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_losses_on_known_cases():
    target = torch.tensor([[[0, 1], [2, 1]]])
    perfect = one_hot(target, 3) * 50.0
    assert supervised_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    uniform = torch.zeros(1, 3, 2, 2)
    assert masked_cross_entropy(uniform, target).item() == pytest.approx(math.log(3), rel=1e-5)
    # the mask restricts the average: only the pixel with label 2 counts
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 1, 0] = 5.0
    mask = target == 2
    expect = -torch.log_softmax(torch.tensor([0.0, 0.0, 5.0]), 0)[2].item()
    assert masked_cross_entropy(logits, target, mask).item() == pytest.approx(expect, rel=1e-5)
    # Dice: disjoint prediction -> 1, exact one-hot -> 0
    g = one_hot(target, 3)
    assert soft_dice_loss(g, g).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(1 - g, g).item() == pytest.approx(1.0, abs=1e-4)


def test_normalised_entropy_bounds():
    certain = torch.tensor([[1.0, 0.0, 0.0]]).reshape(1, 3, 1, 1)
    uniform = torch.full((1, 3, 1, 1), 1 / 3)
    assert normalised_entropy(certain).item() == pytest.approx(0.0, abs=1e-6)
    assert normalised_entropy(uniform).item() == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ EMA

def test_ema_updates_parameters_and_batchnorm_statistics():
    m = build_method("mean-teacher", 1, 3)
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
        bn = m.student.encoder[0].body[1]
        bn.running_mean.fill_(2.0)
    t_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    s_state = m.student.state_dict()
    m.ema_update(iteration=1000)  # past the teacher's window: the decay (0.99) itself
    for k, t in m.teacher.state_dict().items():
        if t.dtype.is_floating_point:
            torch.testing.assert_close(t, 0.99 * t_before[k] + 0.01 * s_state[k])
    assert m.teacher.encoder[0].body[1].running_mean[0].item() == pytest.approx(0.01 * 2.0)
    # warm-up: at iteration 0 the decay is 0 and the teacher copies the student
    m.ema_update(iteration=0)
    for k, t in m.teacher.state_dict().items():
        torch.testing.assert_close(t, s_state[k])


def test_ramp_position_follows_budget_or_iterations():
    assert TrainState(1000, 0.15).ramp(0.3, 999) == pytest.approx(0.5)
    assert TrainState(300, None).ramp(0.3, 600) == pytest.approx(0.5)


def test_no_ramp_or_warm_up_ends_before_its_minimum_steps_however_far_the_clock_is():
    # a slow or busy machine: 90 % of the time budget gone after 50 steps
    slow = TrainState(50, 0.9)
    assert slow.ramp(0.3, 600) == pytest.approx(50 / MIN_RAMP_ITERATIONS)
    assert slow.ramp(1.0, 2000) == pytest.approx(50 / MIN_RAMP_ITERATIONS)
    assert slow.within(0.25, 300)  # still pre-training
    assert not TrainState(MIN_RAMP_ITERATIONS, 0.9).within(0.25, 300)
    assert TrainState(MIN_RAMP_ITERATIONS, 0.9).ramp(0.3, 600) == 1.0
    # a zero-length ramp or warm-up is none
    assert TrainState(0, 0.0).ramp(0.0, 600) == 1.0 and not TrainState(0, 0.0).within(0.0, 300)


# ------------------------------------------------------------------------------------------ volume & sampling

def test_sampling_never_reads_an_unlabeled_slice_label():
    vol = tiny_volume(labeled=(2,))
    vol.labels[[0, 1, 3, 4, 5]] = 7  # a class that must never appear in a labeled batch
    sampler = TwoStreamSampler([vol], patch=32, context=1, labeled_batch=3, unlabeled_batch=3, seed=1)
    for _ in range(20):
        b = sampler.next()
        assert b.y_l.max().item() <= 2
        assert b.x_l.shape == (3, 3, 32, 32) and b.x_u.shape == (3, 3, 32, 32)
    with pytest.raises(KeyError):
        vol.working_label(0, vol.geometry())


def test_augmentation_moves_image_and_label_together():
    x = torch.zeros(8, 1, 16, 16)
    x[:, 0, 2:6, 3:9] = 1.0
    y = (x[:, 0] > 0.5).long()
    xa, ya = augment_pairs(x, y, torch.Generator().manual_seed(0))
    agree = ((xa[:, 0] > 0.5).long() == ya).float().mean().item()
    assert agree > 0.97
    assert ya.sum() > 0


def test_geometry_round_trip_and_labeled_slices():
    vol = Volume(np.zeros((3, 300, 200), np.float32), np.zeros((3, 300, 200), np.uint8), {0})
    assert vol.geometry().working == (300, 200)  # the image's own resolution unless asked otherwise
    geom = vol.geometry(0.5)
    assert geom.working == (150, 100)
    x = torch.rand(1, 2, 300, 200)
    back = geom.to_native(geom.to_working(x, "bilinear"))
    assert back.shape == x.shape
    lab = np.zeros((4, 5, 5), np.uint8)
    lab[2, 1, 1] = 1
    assert labeled_slices_from_labels(lab, 0) == {2}
    assert labeled_slices_from_labels(lab, 2) == {1}


def test_rgb_and_multichannel_volumes():
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    v = Volume(rgb, np.zeros((40, 50), np.uint8), {0}, channels=True)
    assert v.n_slices == 1 and v.n_channels == 3
    s = v.normalised_slice(0)
    assert s.shape == (3, 40, 50) and 0 <= s.min() and s.max() <= 1
    mc = np.random.default_rng(0).random((5, 12, 14, 2)).astype(np.float32)
    v3 = Volume(mc, None, set(), axis=2, channels=True)
    assert v3.n_slices == 14 and v3.slice_shape == (5, 12)
    assert v3.context_stack(0, v3.geometry(), 1).shape == (6, 5, 12)
    with pytest.raises(InputError):
        Volume(np.zeros((4, 5, 6)), np.zeros((4, 5, 7), np.uint8), set())


# ------------------------------------------------------------------------------------------ trainer

@pytest.mark.parametrize("method", ["supervised", "mean-teacher"])
def test_training_learns_and_predicts(method):
    vol = tiny_volume()
    trainer = Trainer([vol], fast_config(method=method, iterations=60))
    first = None
    for r in trainer.run():
        first = first or r
        last = r
    assert last.finished and last.iteration == 60
    assert last.losses["supervised"] < first.losses["supervised"]
    pred = last.prediction[0]
    assert pred.labels.shape == vol.spatial_shape and pred.uncertainty.shape == vol.spatial_shape
    assert 0.0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1.0
    assert pred.slice_scores.shape == (vol.n_slices,)
    fg = (pred.labels > 0) == (vol.labels > 0)
    assert fg.mean() > 0.8


def test_refresh_carries_prediction_and_reports_are_small():
    trainer = Trainer([tiny_volume()], fast_config(iterations=6, first_refresh_seconds=0.0, refresh_seconds=0.0))
    reports = list(trainer.run())
    live = [r.slices for r in reports[:-1] if r.slices is not None]
    assert live and all(r.prediction is None for r in reports[:-1])  # live refreshes carry slices, not volumes
    vol = trainer.volumes[0]
    assert live[0].slices[0] == vol.n_slices // 2  # the focused slice first
    assert live[0].labels.shape == (len(live[0].slices), *vol.slice_shape)
    assert reports[-1].prediction is not None  # the last report carries the whole volume
    assert all(set(r.losses) >= {"loss", "supervised"} for r in reports)


def test_a_session_takes_labels_pause_focus_and_stop_before_and_during_its_run(tmp_path):
    """The one control path (core.session): calls made before the trainer exists are kept for it."""
    from napari_semiseg.core.session import LocalSession

    vol = tiny_volume(labeled=(1,))
    session = LocalSession([vol], fast_config(iterations=None), out_dir=tmp_path / "m", focus=(0, 4))
    assert not session.has_model
    with pytest.raises(InputError, match="no model yet"):
        session.save(tmp_path / "x")
    session.send(LabelUpdate(vol.labels.copy(), {1, 3}))
    session.pause()
    reports = session.reports()
    first = next(reports)
    assert first.paused and session.trainer.focus == (0, 4) and first.iteration == 0
    session.resume()
    session.focus(2)
    r = next(reports)
    assert not r.paused and session.trainer.sampler.n_labeled == 2 and session.trainer.focus == (0, 2)
    session.send(LabelUpdate(vol.labels.copy(), {1, 3, 5}))
    next(reports)
    assert session.trainer.sampler.n_labeled == 3 and vol.labeled == {1, 3, 5}
    session.stop()
    rest = list(reports)
    assert rest[-1].finished and rest[-1].checkpoint and (tmp_path / "m" / "config.json").exists()


def test_stop_ends_cleanly_and_saves(tmp_path):
    trainer = Trainer([tiny_volume()], fast_config(iterations=None, minutes=None), out_dir=tmp_path / "m")
    gen = trainer.run()
    for i, r in enumerate(gen):
        if i == 3:
            trainer.stop()
        if r.finished:
            break
    assert r.finished and r.checkpoint and (tmp_path / "m" / "model.safetensors").exists()
    with pytest.raises(StopIteration):
        next(gen)


def test_pause_yields_without_training():
    trainer = Trainer([tiny_volume()], fast_config(iterations=100))
    gen = trainer.run()
    next(gen)
    trainer.pause()
    it = trainer.iteration
    paused = [next(gen) for _ in range(3)]
    assert all(p.paused for p in paused) and trainer.iteration == it
    trainer.resume()
    assert not next(gen).paused


def test_save_load_round_trip_and_resume(tmp_path):
    vol = tiny_volume()
    trainer = Trainer([vol], fast_config(method="mean-teacher", iterations=5), out_dir=tmp_path / "m")
    final = trainer.train()
    method, meta = load_method(tmp_path / "m")
    assert meta["iteration"] == 5 and meta["method"] == "mean-teacher"
    again = predict_volume(method.predictor(), vol, InputSpec(meta["patch"], meta["context"], meta["scale"]))
    np.testing.assert_array_equal(again.labels, final.prediction[0].labels)
    resumed = Trainer([vol], fast_config(method="mean-teacher", iterations=3), resume_from=tmp_path / "m")
    for k, v in resumed.method.state_dict().items():
        torch.testing.assert_close(v, trainer.method.state_dict()[k].cpu())
    assert resumed.optimiser.state_dict()["state"]  # momentum buffers restored
    r = resumed.train()
    assert r.iteration == 8
    with pytest.raises(InputError):
        Trainer([vol], fast_config(method="supervised"), resume_from=tmp_path / "m")


def test_seeded_cpu_training_is_reproducible():
    def run():
        t = Trainer([tiny_volume()], fast_config(method="mean-teacher", iterations=3, seed=5))
        t.train()
        return t.method.state_dict()

    a, b = run(), run()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_trainer_refuses_bad_setups():
    with pytest.raises(InputError, match="No labeled slice"):
        Trainer([tiny_volume(labeled=())], fast_config())
    with pytest.raises(InputError, match="Unknown method"):
        Trainer([tiny_volume()], fast_config(method="nope"))
    with pytest.raises(InputError, match="CUDA"):
        if torch.cuda.is_available():
            raise InputError("CUDA present: nothing to check")
        Trainer([tiny_volume()], fast_config(device="cuda"))


# ------------------------------------------------------------------------------------------ interpolation

def test_shape_interpolation_between_discs():
    yy, xx = np.mgrid[:41, :41]
    lab = np.zeros((5, 41, 41), np.uint8)
    lab[0][(yy - 20) ** 2 + (xx - 20) ** 2 <= 4 ** 2] = 1
    lab[4][(yy - 20) ** 2 + (xx - 20) ** 2 <= 12 ** 2] = 1
    out = interpolate_labels(lab, [0, 4])
    radius = np.sqrt(out[2].sum() / np.pi)
    assert radius == pytest.approx(8.0, abs=0.6)  # halfway between 4 and 12
    np.testing.assert_array_equal(out[0], lab[0])
    # outside the labeled range stays empty, and a class on one side only tapers halfway
    lab2 = np.zeros((7, 41, 41), np.uint8)
    lab2[1][(yy - 20) ** 2 + (xx - 20) ** 2 <= 8 ** 2] = 2
    lab2[5, 0, 0] = 1
    out2 = interpolate_labels(lab2, [1, 5])
    assert not out2[0].any() and not out2[6].any()
    assert (out2[2] == 2).sum() > 0 and (out2[4] == 2).sum() == 0


def test_batch_stats_forward_leaves_the_teacher_untouched():
    from napari_semiseg.core.methods.base import batch_stats_forward

    m = build_method("mean-teacher", 1, 2)
    m.teacher.eval()
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    x = torch.rand(3, 1, 16, 16) * 5 + 2  # far from the initial running statistics
    out = batch_stats_forward(m.teacher, x)
    assert out.shape == (3, 2, 16, 16)
    for k, v in m.teacher.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not m.teacher.training
    # it normalises with the batch's own statistics, unlike eval mode
    assert not torch.allclose(out, m.teacher(x))


def test_recalibrated_prediction_does_not_modify_the_network():
    vol = tiny_volume(n=10)
    trainer = Trainer([vol], fast_config(method="mean-teacher", iterations=3))
    trainer.train()
    net = trainer.method.predictor()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    predict_volume(net, vol, trainer.spec)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_a_session_run_to_the_end_says_where_it_trains_and_predicts():
    from napari_semiseg.core.session import LocalSession

    session = LocalSession([tiny_volume()], fast_config(iterations=3))
    about = session.build()
    assert about == {"device": "cpu", "precision": session.trainer.precision, "iteration": 0}
    last = session.run()
    assert last.finished and session.iteration == 3
    assert session.predict()[0].labels.shape == tiny_volume().spatial_shape
