"""Native resolution at any size (issue 11): exact tiling, patch sampling, lazy images, live sweeps."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_semiseg.core.inference import InputSpec, Runtime, predict_volume, stitched
from napari_semiseg.core.methods import METHODS
from napari_semiseg.core.sampling import TwoStreamSampler
from napari_semiseg.core.trainer import TrainConfig, Trainer
from napari_semiseg.core.volume import Volume, choose_patch


@pytest.mark.parametrize("shape", [(1, 5000), (17, 17), (3504, 2336), (300, 260)])
def test_tiling_gives_back_the_image_and_a_constant_without_seams(shape):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, *shape), dtype=np.float32))
    spec = InputSpec(patch=128, overlap=0.25)
    back = stitched(x, spec, lambda t: t)  # a network that returns its input
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-5)  # every pixel, the last row and column too
    const = stitched(x, spec, lambda t: torch.full_like(t[:, :1], 0.7))
    assert const.shape == (1, 1, *shape)
    assert float((const - 0.7).abs().max()) < 1e-5  # no seam, no border, no gap


def test_a_small_image_is_padded_never_resized():
    assert choose_patch([(35, 51)], None, "cpu") == 64
    assert choose_patch([(999, 960)], None, "cpu") == 128 and choose_patch([(999, 960)], None, "cuda") == 512
    assert choose_patch([(999, 960)], 100, "cpu") == 112  # the user's, rounded to the network's multiple
    vol = Volume(np.random.default_rng(0).random((3, 35, 51)).astype(np.float32))
    assert vol.geometry().working == (35, 51)


def _blob_volume(size=400, radius=6):
    img = np.zeros((1, size, size), np.float32)
    lab = np.zeros((1, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    blob = (yy - 300) ** 2 + (xx - 90) ** 2 <= radius ** 2
    img[0][blob] = 1.0
    lab[0][blob] = 1
    return Volume(img, lab, {0}, axis=0)


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_labeled_patches_hit_the_labeled_structure_at_the_set_rate(fraction):
    vol = _blob_volume()
    sampler = TwoStreamSampler([vol], patch=48, context=0, labeled_batch=8, unlabeled_batch=0, seed=0,
                               augment=False, foreground_fraction=fraction)
    hits = torch.cat([(sampler.next().y_l > 0).flatten(1).any(1) for _ in range(50)]).float().mean().item()
    by_chance = (48 * 48) / (400 * 400) * 2  # a random 48-px window rarely holds a 6-px blob
    if fraction == 0.0:
        assert hits < 0.1
    else:
        assert fraction - 0.12 <= hits <= fraction + by_chance + 0.12


class CountingArray:
    """An array that records every read, standing in for a file too big to load (dask reads through it)."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[tuple] = []
        self.lock = threading.Lock()

    def __getitem__(self, key):
        out = self.data[key]
        with self.lock:
            self.reads.append(np.shape(out))
        return out


def test_a_dask_backed_image_trains_and_predicts_without_being_loaded_whole():
    import dask.array as da

    rng = np.random.default_rng(0)
    raw = (rng.random((24, 96, 80)) * 100).astype(np.float32)
    lab = np.zeros(raw.shape, np.uint8)
    lab[:, 30:60, 20:50] = 1
    raw[lab == 1] += 150
    store = CountingArray(raw)
    lazy = da.from_array(store, chunks=(1, 96, 80))
    vol = Volume(lazy, np.where(np.isin(np.arange(24), [4, 12, 20])[:, None, None], lab, 0), {4, 12, 20}, axis=0)
    trainer = Trainer([vol], TrainConfig(method="mean-teacher", iterations=4, batch_size=4, labeled_batch=2,
                                         patch_size=32, context=1, device="cpu", precision="fp32",
                                         first_refresh_seconds=1e9, refresh_seconds=1e9, final_prediction=False))
    trainer.train()
    pred = trainer.predict()[0]
    assert pred.labels.shape == raw.shape
    whole = int(np.prod(raw.shape))
    assert store.reads and max(int(np.prod(r)) for r in store.reads) <= 96 * 80  # one slice at a time, at most
    assert all(int(np.prod(r)) < whole for r in store.reads)
    assert len(store.reads) >= 24  # and every slice was read for the prediction


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_and_predicts_on_patches_of_a_larger_image(method):
    rng = np.random.default_rng(1)
    img = rng.random((6, 90, 70)).astype(np.float32) * 0.3
    lab = np.zeros(img.shape, np.uint8)
    lab[:, 20:45, 10:30] = 1
    lab[:, 55:80, 40:62] = 2
    img[lab == 1] += 0.5
    img[lab == 2] += 0.9
    labeled = {1, 4}
    vol = Volume(img, np.where(np.isin(np.arange(6), list(labeled))[:, None, None], lab, 0), labeled, axis=0)
    settings = {"sa_mode": "off"} if method == "sra-seg" else {}
    trainer = Trainer([vol], TrainConfig(method=method, iterations=3, batch_size=4, labeled_batch=2, patch_size=32,
                                         device="cpu", precision="fp32", method_settings=settings,
                                         first_refresh_seconds=1e9, refresh_seconds=1e9))
    assert trainer.patch == 32 and trainer.sampler.next().x_l.shape[-2:] == (32, 32)
    last = trainer.train()
    pred = last.prediction[0]
    assert last.iteration == 3 and pred.labels.shape == img.shape  # predicted whole, by sliding window
    assert np.isfinite(pred.uncertainty).all() and 0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1


def test_live_refresh_predicts_the_focused_slice_first_and_sweeps_the_whole_volume():
    rng = np.random.default_rng(2)
    img = rng.random((30, 40, 40)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[3, 10:20, 10:20] = 1
    vol = Volume(img, lab, {3}, axis=0)
    trainer = Trainer([vol], TrainConfig(iterations=2, batch_size=2, labeled_batch=1, device="cpu",
                                         refresh_budget_seconds=1e-6))  # the focus, its neighbours, one more
    trainer.set_focus(17)
    first = trainer.predict_live()
    assert first.slices[:3] == [17, 16, 18] and len(first.slices) == 4
    assert first.labels.shape == (4, 40, 40)
    seen = set(first.slices)
    trainer.config.refresh_budget_seconds = 0.05  # a little sweep each time
    for _ in range(30):
        seen |= set(trainer.predict_live().slices)
        if len(seen) == 30:
            break
    assert seen == set(range(30))  # every slice is covered after a few refreshes
    full = trainer.predict()[0]
    part = trainer.predict_live()
    for k, i in enumerate(part.slices):  # a refreshed slice equals the same slice of a whole prediction
        np.testing.assert_array_equal(part.labels[k], full.labels[i])


def test_a_coarser_working_scale_trains_and_predicts_at_native_size():
    rng = np.random.default_rng(3)
    img = rng.random((4, 120, 100)).astype(np.float32)
    lab = (img > 0.7).astype(np.uint8)
    vol = Volume(img, lab, {0, 2}, axis=0)
    trainer = Trainer([vol], TrainConfig(method="supervised", iterations=2, batch_size=2, labeled_batch=2,
                                         scale=0.5, device="cpu"))
    assert trainer.sampler.geometries[0].working == (60, 50) and trainer.patch == 64
    pred = trainer.train().prediction[0]
    assert pred.labels.shape == img.shape


def test_runtime_and_spec_predict_like_the_trainer():
    vol = Volume(np.random.default_rng(4).random((9, 30, 30)).astype(np.float32),
                 np.zeros((9, 30, 30), np.uint8), {0}, axis=0)
    trainer = Trainer([vol], TrainConfig(method="supervised", iterations=1, batch_size=2, labeled_batch=2,
                                         device="cpu", precision="fp32"))
    trainer.train()
    a = trainer.predict()[0]
    b = predict_volume(trainer.method.predictor(), vol, trainer.spec, Runtime(torch.device("cpu")))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.uncertainty, b.uncertainty, atol=1e-6)


def test_batch_norm_statistics_are_re_estimated_on_a_2d_image_larger_than_a_patch():
    from napari_semiseg.core.inference import prepare, recalibration_patches
    from napari_semiseg.core.networks import UNet2D

    net = UNet2D(1, 2).eval()
    spec, rt = InputSpec(patch=32), Runtime(torch.device("cpu"))
    large = Volume(np.random.default_rng(0).random((200, 150), dtype=np.float32), None, set())
    patches = recalibration_patches(large, spec, rt.device)
    assert len(patches) >= 8 and len({float(p.sum()) for p in patches}) > 1  # several different windows
    ready = prepare(net, large, spec, rt)
    assert ready is not net  # a re-estimated copy; the network itself is untouched
    bn = next(m for m in ready.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    small = Volume(np.random.default_rng(0).random((20, 30), dtype=np.float32), None, set())
    assert prepare(net, small, spec, rt) is net  # one padded window is too little to estimate from
