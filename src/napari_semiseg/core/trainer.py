"""The training loop as a generator of small reports.

``Trainer.run()`` yields a :class:`Report` every ``report_every`` steps; at most every
``refresh_seconds`` a report also carries the predictor's (EMA teacher's) prediction of a few
slices: the one the user is looking at (``set_focus``) and its neighbours first, then the next
slices of a rolling sweep, as many as ``refresh_budget_seconds`` allows, so the whole volume is
covered every few refreshes however large it is. The last report carries every volume whole.
Between steps it applies the :class:`LabelUpdate` queued by ``update_labels``; that, ``pause``,
``resume`` and ``stop`` may be called from another thread. The trainer never touches a GUI; the
widget reaches it only through a session (``core/session.py``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from . import distributed
from .checkpoint import FORMAT, FolderLock, load_method, load_optimiser_state, save_model, weights_are_finite
from .errors import InputError
from .inference import (InputSpec, Prediction, Runtime, SlicePrediction, autocast_for, predict_some,
                        predict_volume, prepare)
from .methods import METHODS, build_method
from .methods.base import RELABEL_RAMP_ITERATIONS, TrainState
from .sampling import TwoStreamSampler
from .streaming import StreamedDataSet, StreamingSampler
from .settings import check_types, require
from .volume import Volume, choose_patch

MAX_LABEL = 255  # pseudo-labels are uint8; a larger value is almost always an image read as labels


@dataclass
class TrainConfig:
    method: str = "mean-teacher"
    method_settings: dict = field(default_factory=dict)
    iterations: int | None = None  # stop after this many steps ...
    minutes: float | None = None  # ... or after this much time; neither: until stopped
    # With a time budget: the clock does not end training before this many steps, so a busy machine
    # trains longer instead of returning an undertrained model (the demo: 66 steps in 45 s beside
    # another job, 0.52 Dice against 0.79 at 491 steps).
    min_iterations: int | None = None
    batch_size: int | None = None  # None: 8 on a CPU, 16 on a GPU
    labeled_batch: int | None = None  # None: half the batch
    optimiser: str = "adamw"  # "adamw" | "sgd" (the field's, too slow for minute budgets)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # "poly" | "constant"
    patch_size: int | None = None  # training patch side; None: 128 on a CPU, 512 on a GPU (a small image's own)
    scale: float = 1.0  # working resolution: 1 = the image's own; 0.5 trains and predicts at half
    foreground_fraction: float = 0.33  # share of labeled patches centred on a labeled foreground pixel
    # share of labeled patches taken from the slices between two labeled ones of a 3D volume, labeled
    # where those two agree (slice_prior); off by default: a tie with the mean teacher, a small loss
    # without it, on the hippocampus session protocol (RESULTS §23.2); 0.25 is what was measured
    prior_share: float = 0.0
    window_overlap: float = 0.25  # sliding-window prediction: overlap of neighbouring windows
    refresh_budget_seconds: float = 1.0  # prediction time per live refresh (the focused slice always)
    context: int = 1  # neighbouring slices on each side fed as extra channels (3D only)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps"
    threads: int | None = None  # CPU threads for torch; None: all cores
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    channels_last: bool | None = None  # None: on where it pays (CPU bf16, CUDA)
    seed: int = 0
    report_every: int = 5
    refresh_seconds: float = 5.0
    first_refresh_seconds: float = 1.0
    augment: bool = True
    final_prediction: bool = True  # predict every volume when training ends
    unlabeled_dir: str | None = None  # a folder of extra unlabeled images (e.g. synthetic ones, as SRA-Seg uses)
    unlabeled_source: str = "real"  # "real": the unlabeled slices; "extra": only the folder; "both"
    checkpoint_seconds: float = 60.0  # a crash or kill loses at most this much training
    sync_batchnorm: bool = False  # under torchrun on GPUs: batch-norm statistics over every rank's batch
    loader_workers: int | None = None  # processes reading a streamed data set; None: 4 on a GPU, 1 on a CPU (0: none)
    relabel_ramp_iterations: int = RELABEL_RAMP_ITERATIONS  # unlabeled weight re-ramps after a correction; 0: off

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> TrainConfig:
        """Every setting's type and range, as one sentence, before anything is built or trained."""
        for name, value in check_types(TrainConfig, {f.name: getattr(self, f.name) for f in fields(self)},
                                       "engine").items():
            setattr(self, name, value)
        require(self.method in METHODS, f"Unknown method '{self.method}': choose one of {', '.join(METHODS)}.")
        for name in ("lr", "checkpoint_seconds"):
            require(getattr(self, name) > 0, f"The setting '{name}' must be above 0, not {getattr(self, name)}.")
        require(self.iterations is None or self.iterations >= 1,
                f"The step budget must be at least 1 iteration, not {self.iterations}.")
        require(self.minutes is None or self.minutes > 0, f"The time budget must be above 0 minutes, not {self.minutes}.")
        require(self.min_iterations is None or self.min_iterations >= 1,
                f"min_iterations must be at least 1 step, not {self.min_iterations}.")
        require(all(v is None or v >= 1 for v in (self.batch_size, self.labeled_batch)),
                "The batch needs at least one labeled patch: batch_size and labeled_batch must be at least 1.")
        batch, labeled = self.batch_size or 8, self.labeled_batch or max(1, (self.batch_size or 8) // 2)
        require(labeled <= batch,
                f"The batch needs at least one labeled patch and no more labeled ({labeled}) than in total ({batch}).")
        require(batch <= 4096, f"batch_size {batch} is far beyond what fits in memory.")
        require(self.patch_size is None or 16 <= self.patch_size <= 4096,
                f"patch_size must be from 16 to 4096 pixels, not {self.patch_size}.")
        require(0 < self.scale <= 1, f"scale must be above 0 and at most 1 (the image's own resolution), not {self.scale}.")
        require(0 <= self.foreground_fraction <= 1 and 0 <= self.window_overlap < 1,
                "foreground_fraction must be in [0, 1] and window_overlap in [0, 1).")
        require(0 <= self.prior_share < 1, "prior_share must be in [0, 1): at least one labeled patch comes "
                f"from a labeled slice, not {self.prior_share}.")
        require(self.refresh_budget_seconds > 0, "refresh_budget_seconds must be above 0.")
        require(0 <= self.context <= 8, f"context must be from 0 to 8 neighbouring slices, not {self.context}.")
        require(self.threads is None or self.threads >= 1, f"threads must be at least 1, not {self.threads}.")
        require(self.loader_workers is None or 0 <= self.loader_workers <= 64,
                f"loader_workers must be from 0 to 64, not {self.loader_workers}.")
        require(self.relabel_ramp_iterations >= 0,
                f"relabel_ramp_iterations must not be negative, not {self.relabel_ramp_iterations}.")
        require(self.report_every >= 1, f"report_every must be at least 1, not {self.report_every}.")
        require(self.first_refresh_seconds >= 0 and self.refresh_seconds >= 0,
                "refresh_seconds and first_refresh_seconds must not be negative.")
        require(0 <= self.momentum < 1 and self.weight_decay >= 0, "momentum must be in [0, 1) and weight_decay >= 0.")
        for name, choices in (("device", ("auto", "cpu", "cuda", "mps")), ("precision", ("auto", "fp32", "bf16", "fp16")),
                              ("optimiser", ("adamw", "sgd")), ("schedule", ("poly", "constant")),
                              ("unlabeled_source", ("real", "extra", "both"))):
            require(getattr(self, name) in choices,
                    f"The setting '{name}' must be one of {', '.join(choices)}, not '{getattr(self, name)}'.")
        return self


@dataclass
class Report:
    iteration: int
    losses: dict[str, float]
    lr: float
    slices_per_second: float
    elapsed: float
    progress: float | None
    prediction: list[Prediction] | None = None  # every volume whole, in the last report
    slices: SlicePrediction | None = None  # a few slices, at the refresh interval
    paused: bool = False
    finished: bool = False
    checkpoint: str | None = None


@dataclass
class LabelUpdate:
    """New trusted labels for one volume, sent to a running trainer."""

    labels: np.ndarray
    labeled: set[int]
    volume_index: int = 0


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA GPU is available: use --device auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("MPS was requested but is not available on this machine: use --device auto or cpu.")
    if name not in ("cpu", "cuda", "mps"):
        raise InputError(f"Unknown device '{name}': use auto, cpu, cuda or mps.")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 autocast makes CPU training faster rather than slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def channels_last_pays(device: torch.device, precision: str) -> bool:
    """Channels-last memory format speeds up convolutions on CUDA and in CPU bf16; not in CPU fp32."""
    return device.type == "cuda" or (device.type == "cpu" and precision == "bf16")


class _InMemory:
    """What the trainer needs to know of a list of volumes (a streamed data set answers the same)."""

    def __init__(self, volumes: list[Volume]):
        if not volumes:
            raise InputError("Nothing to train on: no image was given.")
        chans = {v.n_channels for v in volumes}
        if len(chans) != 1:
            raise InputError("All images must have the same number of channels.")
        self.volumes, self.n_channels = volumes, chans.pop()
        self.is_3d = any(v.is_3d for v in volumes)
        self.axis, self.normalisation = volumes[0].axis, volumes[0].normalisation

    def working_shapes(self, scale: float) -> list[tuple[int, int]]:
        return [v.geometry(scale).working for v in self.volumes]

    @property
    def top_class(self) -> int:
        return max(max(v.classes_present()) for v in self.volumes)


class Trainer:
    """Trains one method on volumes in memory (the session) or on a data set streamed from disk.

    Under torchrun every process builds a Trainer: one model, trained by DistributedDataParallel,
    each rank on its own shard; only rank 0 writes checkpoints and predicts.
    """

    def __init__(self, volumes: list[Volume] | StreamedDataSet, config: TrainConfig | None = None, *,
                 resume_from: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None):
        self.streamed = volumes if isinstance(volumes, StreamedDataSet) else None
        data = self.streamed or _InMemory(volumes)
        self.volumes: list[Volume] = [] if self.streamed else volumes
        self.config = (config or TrainConfig()).check()
        c = self.config
        self.ranks = distributed.start(c.device)
        self.out_dir = Path(out_dir) if out_dir and self.ranks.main else None  # rank 0 alone writes
        self.data = data
        self.device = distributed.device_of(self.ranks, choose_device(c.device))
        distributed.check_sync_batchnorm(c.sync_batchnorm, self.device)
        self.precision = resolve_precision(c.precision, self.device)
        self.channels_last = c.channels_last if c.channels_last is not None else channels_last_pays(
            self.device, self.precision)
        if c.threads:
            torch.set_num_threads(max(1, int(c.threads)))
        _seed_everything(c.seed)
        self.last_checkpoint: tuple[Path, int] | None = None

        self.iteration = 0
        if resume_from is not None:
            self.method, meta = load_method(resume_from, user_settings=c.method_settings)
            if meta["method"] != c.method:
                raise InputError(f"The saved model was trained with {meta['method']}, not {c.method}.")
            self.patch, self.scale = spec_of(meta, data.working_shapes(1.0))
            self.context = int(meta["context"])
            self.n_classes = int(meta["n_classes"])
            self.iteration = int(meta.get("iteration", 0))
        else:
            self.context = c.context if data.is_3d else 0
            self.scale = c.scale
            self.patch = choose_patch(data.working_shapes(c.scale), c.patch_size, self.device.type)
            top = data.top_class
            _check_label_range(top)
            self.n_classes = max(2, top + 1)
            in_ch = data.n_channels * (2 * self.context + 1)
            self.method = build_method(c.method, in_ch, self.n_classes, c.method_settings)
        self._check_labels_fit()
        self.method.to(self.device)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        # the same initial weights everywhere (DDP also broadcasts rank 0's); each rank its own noise
        rank = self.ranks.rank
        if rank:
            _seed_everything(c.seed + 7919 * rank)
        self._forward = distributed.wrap(self.method, self.device, c.sync_batchnorm) \
            if self.ranks.distributed else self.method.training_step
        self.optimiser = self._make_optimiser()
        if resume_from is not None:
            opt_state = load_optimiser_state(resume_from)
            if opt_state is not None:
                try:
                    self.optimiser.load_state_dict(opt_state)
                except (ValueError, KeyError, RuntimeError):
                    raise InputError(f"The optimiser state saved in {resume_from} does not fit this model: delete "
                                     "optimiser.safetensors and optimiser.json to resume with a fresh one.") from None
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16" and self.device.type == "cuda")

        batch = c.batch_size or (8 if self.device.type == "cpu" else 16)
        labeled = min(c.labeled_batch or max(1, batch // 2), batch)
        unl_batch = batch - labeled if c.method != "supervised" else 0
        shard = (rank, self.ranks.world)
        if self.streamed is not None:
            if c.unlabeled_dir:
                raise InputError("A streamed data set takes its unlabeled images from its own folder: put them "
                                 "in images/ without a label map instead of giving unlabeled_dir.")
            workers = c.loader_workers if c.loader_workers is not None else (4 if self.device.type == "cuda" else 1)
            self.sampler = StreamingSampler(self.streamed, self.patch, self.context, labeled, unl_batch,
                                            seed=c.seed + 7919 * rank, augment=c.augment, scale=self.scale,
                                            foreground_fraction=c.foreground_fraction, shard=shard, workers=workers)
        else:
            extra = read_unlabeled_folder(c.unlabeled_dir, volumes[0]) if c.unlabeled_dir else []
            self.sampler = TwoStreamSampler(volumes, self.patch, self.context, labeled, unl_batch,
                                            seed=c.seed + 7919 * rank, augment=c.augment, extra_unlabeled=extra,
                                            unlabeled_source=c.unlabeled_source, scale=self.scale,
                                            foreground_fraction=c.foreground_fraction, shard=shard,
                                            prior_share=c.prior_share)
        self.spec = InputSpec(self.patch, self.context, self.scale, c.window_overlap)
        self.runtime = Runtime(self.device, self.precision, self.channels_last)
        self.focus: tuple[int, int] = (0, self.volumes[0].n_slices // 2 if self.volumes else 0)
        self._sweep_next = 0
        self.method.bind_labeled_bank(self.sampler)
        # the model folder is this run's alone until it ends: a second training into it is refused now
        # (taken last, so that a failure above leaves no lock behind)
        self._folder_lock = FolderLock(self.out_dir).acquire() if self.out_dir else None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._pending: list[LabelUpdate] = []
        self._relabeled_at: int | None = None  # the step at which the labels last changed while training
        self._lock = threading.Lock()

    # ---- control (thread-safe)
    def stop(self) -> None:
        self._stop.set()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def update_labels(self, update: LabelUpdate) -> None:
        """Queue new labels; applied between two steps."""
        with self._lock:
            self._pending.append(update)

    # ---- internals
    def _check_labels_fit(self) -> None:
        for v in self.volumes:
            top = max(v.classes_present())
            _check_label_range(top)
            if top >= self.n_classes:
                raise InputError(f"Label {top} is beyond the {self.n_classes} classes this model was built for.")

    def _make_optimiser(self):
        c = self.config
        params = [p for p in self.method.trainable_parameters() if p.requires_grad]
        if c.optimiser == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.optimiser == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        raise InputError(f"Unknown optimiser '{c.optimiser}': use sgd or adamw.")

    def _progress(self, start_iter: int, elapsed: float) -> float | None:
        c = self.config
        parts = []
        if c.iterations:
            parts.append((self.iteration - start_iter) / c.iterations)
        if c.minutes:
            clock = elapsed / (60.0 * c.minutes)
            if c.min_iterations:  # whichever is longer: the clock or the floor of steps
                clock = min(clock, (self.iteration - start_iter) / c.min_iterations)
            parts.append(clock)
        return min(1.0, max(parts)) if parts else None

    def _lr(self, progress: float | None) -> float:
        c = self.config
        if c.schedule == "poly" and progress is not None:
            return c.lr * (1.0 - min(progress, 0.999)) ** 0.9
        return c.lr

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for up in pending:
            self.volumes[up.volume_index].set_labels(up.labels, up.labeled)
        if pending:
            self._relabeled_at = self.iteration
            self._check_labels_fit()
            self.sampler.refresh()
            self.method.bind_labeled_bank(self.sampler)

    def predict(self) -> list[Prediction]:
        """Every volume whole, a slice at a time (memory bounded)."""
        net = self.method.predictor()
        return [predict_volume(net, v, self.spec, self.runtime, uncertainty_fn=self.method.uncertainty)
                for v in self.volumes]

    def set_focus(self, slice_index: int, volume_index: int = 0) -> None:
        """The slice the user is looking at: the next live refresh predicts it (and its neighbours) first."""
        self.focus = (int(volume_index), int(slice_index))

    def predict_live(self) -> SlicePrediction:
        """The focused slice and its neighbours, then the sweep's next slices within the refresh budget."""
        vi, centre = self.focus
        vol = self.volumes[vi]
        n = vol.n_slices
        t0 = time.perf_counter()
        net = prepare(self.method.predictor(), vol, self.spec, self.runtime)
        done = [i for i in (centre, centre - 1, centre + 1) if 0 <= i < n]
        t1 = time.perf_counter()
        out = [predict_some(net, vol, done, self.spec, self.runtime, vi, self.method.uncertainty)]
        per_slice = (time.perf_counter() - t1) / len(done)
        budget = self.config.refresh_budget_seconds - (time.perf_counter() - t0)
        # at least one more slice each time: a slow machine still covers the volume, only more slowly
        k = min(n - len(done), max(1, int(budget / max(per_slice, 1e-4))))
        sweep = []
        while len(sweep) < k:
            i = self._sweep_next % n
            self._sweep_next += 1
            if i not in done:
                sweep.append(i)
        if sweep:
            out.append(predict_some(net, vol, sweep, self.spec, self.runtime, vi, self.method.uncertainty))
        return SlicePrediction(vi, [i for o in out for i in o.slices], np.concatenate([o.labels for o in out]),
                               np.concatenate([o.uncertainty for o in out]), np.concatenate([o.scores for o in out]))

    def step(self, progress: float | None) -> dict[str, float]:
        """One optimiser step on one two-stream batch."""
        state = TrainState(self.iteration, progress, self._relabeled_at, self.config.relabel_ramp_iterations)
        # with every slice labeled there is nothing unlabeled to learn from: the consistency term would
        # only cost steps (the loop protocol's fully labeled volume: -0.016 on 10 of 10, RESULTS §11.5)
        unlabeled = self.method.needs_unlabeled(state) and not (
            self.sampler.n_unlabeled == 0 and self.method.learns_without_unlabeled)
        batch = self.sampler.next(with_unlabeled=unlabeled).to(self.device)
        if self.channels_last:
            batch.x_l = batch.x_l.contiguous(memory_format=torch.channels_last)
            batch.x_u = batch.x_u.contiguous(memory_format=torch.channels_last)
        for g in self.optimiser.param_groups:
            g["lr"] = self._lr(progress)
        self.method.train()
        with autocast_for(self.device, self.precision):
            losses = self._forward(batch, state)  # through DDP's forward under torchrun: its hooks all-reduce
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"The loss became {loss.item()} at iteration {self.iteration}: "
                                     "try a lower learning rate.")
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        if self.ranks.distributed:  # batch-norm statistics too: the EMA teacher must stay identical
            distributed.average_buffers(self.method)
        self.method.after_step(state)
        self.iteration += 1
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    def run(self):
        """Generator: train until the budget is spent or ``stop()``; yields :class:`Report`."""
        try:
            yield from self._loop()
        finally:
            self.close()

    def _loop(self):
        c = self.config
        start_iter = self.iteration
        t0 = last_checkpoint = time.perf_counter()
        paused_time = 0.0
        last_refresh = None
        window_t, window_n = t0, 0
        rate = 0.0
        losses: dict[str, float] = {}
        while True:
            if self._paused.is_set() and not self._stop.is_set():
                p0 = time.perf_counter()
                yield Report(self.iteration, losses, self._lr(None), 0.0, p0 - t0 - paused_time, None, paused=True)
                time.sleep(0.05)
                paused_time += time.perf_counter() - p0
                continue
            elapsed = time.perf_counter() - t0 - paused_time
            progress = self._progress(start_iter, elapsed)
            stop = self._stop.is_set() or (progress is not None and progress >= 1.0)
            try:
                if self.ranks.distributed:  # rank 0's clock for all: the same steps and schedule everywhere
                    progress, stop = distributed.agree(progress, stop)
                if stop:
                    break
                self._apply_pending()
                losses = self.step(progress)
            except RuntimeError as err:
                if self.ranks.distributed and distributed.is_peer_failure(err):
                    raise distributed.PeerLost(self._peer_lost_message()) from None
                raise
            window_n += (self.sampler.labeled_batch + self.sampler.unlabeled_batch) * self.ranks.world
            now = time.perf_counter()
            if now - window_t >= 1.0:
                rate = window_n / (now - window_t)
                window_t, window_n = now, 0
            elapsed = now - t0 - paused_time
            due = bool(self.volumes) and not self.ranks.distributed and (
                (last_refresh is None and elapsed >= c.first_refresh_seconds) or (
                    last_refresh is not None and now - last_refresh >= c.refresh_seconds))
            checkpoint = None
            if self.out_dir and now - last_checkpoint >= c.checkpoint_seconds:
                checkpoint = str(self.save(self.out_dir))
                last_checkpoint = time.perf_counter()
            if due or checkpoint or self.iteration % c.report_every == 0:
                live = None
                if due:
                    live = self.predict_live()
                    last_refresh = time.perf_counter()
                yield Report(self.iteration, losses, self._lr(progress), rate, elapsed,
                             self._progress(start_iter, elapsed), slices=live, checkpoint=checkpoint)
        elapsed = time.perf_counter() - t0 - paused_time
        checkpoint = str(self.save(self.out_dir)) if self.out_dir else None
        final = c.final_prediction and self.volumes and self.ranks.main
        yield Report(self.iteration, losses, self._lr(1.0), rate, elapsed, self._progress(start_iter, elapsed),
                     self.predict() if final else None, finished=True, checkpoint=checkpoint)

    def train(self, progress_bar: bool = False) -> Report:
        """Run to the end without a GUI; return the final report."""
        bar = _ProgressBar(self.config) if progress_bar else None
        last = None
        try:
            for last in self.run():
                if bar is not None:
                    bar.update(last)
        finally:  # an error message must start on its own line, not after the bar
            if bar is not None:
                bar.close()
        return last

    # ---- persistence
    def _peer_lost_message(self) -> str:
        saved = (f"the last checkpoint, {self.last_checkpoint[0]} (iteration {self.last_checkpoint[1]}), is complete: "
                 f"continue with --resume {self.last_checkpoint[0]}") if self.last_checkpoint else \
            "no checkpoint was written yet" if self.ranks.main else "rank 0 holds the last checkpoint"
        return (f"Another training process of this run stopped (killed, crashed or out of memory) at iteration "
                f"{self.iteration}; {saved}.")

    def metadata(self) -> dict:
        d = self.data
        return {
            "format": FORMAT,
            "version": __version__,
            "method": self.config.method,
            "method_settings": asdict(self.method.settings),
            "n_classes": self.n_classes,
            "in_channels": self.method.in_channels,
            "image_channels": d.n_channels,
            "context": self.context,
            "canvas": self.patch,  # the name older versions read
            "patch": self.patch,
            "scale": self.scale,
            "window_overlap": self.config.window_overlap,
            "axis": d.axis,
            "normalisation": d.normalisation.to_dict(),
            "iteration": self.iteration,
            "train_config": self.config.to_dict(),
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Save the model (weights, config, optimiser state) into ``out_dir`` as one unit."""
        if not weights_are_finite(self.method):
            raise FloatingPointError(f"The network's weights became NaN or infinite at iteration {self.iteration}; "
                                     "the last good checkpoint is kept.")
        out = Path(out_dir)
        lock = self._folder_lock if self.out_dir is not None and out == self.out_dir else None
        save_model(out, self.method.state_dict(), self.metadata(), self.optimiser.state_dict(), lock=lock)
        self.last_checkpoint = (out, self.iteration)
        return out

    def close(self) -> None:
        """Give the model folder back to other writers (the run ended, however it ended)."""
        if self._folder_lock is not None:
            self._folder_lock.release()
        if self.streamed is not None:
            self.sampler.close()


def spec_of(meta: dict, slice_shapes) -> tuple[int, float]:
    """Patch side and working scale of a saved model. Models saved before native-resolution training
    squeezed each slice onto one canvas: their scale is what that squeeze was."""
    patch = int(meta.get("patch", meta["canvas"]))
    if "scale" in meta:
        return patch, float(meta["scale"])
    largest = max(max(s) for s in slice_shapes)
    return patch, min(1.0, patch / largest)


def _check_label_range(top: int) -> None:
    if top > MAX_LABEL:
        raise InputError(f"The labels hold the value {top}; napari-semiseg trains classes 1 to {MAX_LABEL}. Are these "
                         "labels an image, or 0/65535 masks? Renumber the classes 1, 2, 3, ….")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _ProgressBar:
    """A tqdm bar in percent of the budget (or in iterations when training runs until stopped)."""

    def __init__(self, config: TrainConfig):
        from tqdm import tqdm

        total = 100 if (config.iterations or config.minutes) else None
        self.bar = tqdm(total=total, unit="%" if total else "it", dynamic_ncols=True, leave=True)
        self.last = 0

    def update(self, r: Report) -> None:
        loss = r.losses.get("loss")
        self.bar.set_postfix_str(f"it {r.iteration} loss {loss:.3f} {r.slices_per_second:.0f} slices/s"
                                 if loss is not None else f"it {r.iteration}")
        if r.progress is not None:
            pct = int(r.progress * 100)
            self.bar.update(pct - self.last)
            self.last = pct
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def read_unlabeled_folder(folder: str | os.PathLike, like: Volume) -> list[Volume]:
    """Every image in ``folder`` as an unlabeled volume normalised like ``like``."""
    from .io import HDF5_SUFFIXES, READ_SUFFIXES, read_image, suffix_of

    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"The unlabeled-image folder {d} does not exist.")
    readable = [s for s in READ_SUFFIXES if s not in HDF5_SUFFIXES]
    files = sorted(p for p in d.iterdir() if p.is_file() and suffix_of(p) in readable)
    if not files:
        raise InputError(f"The folder {d} holds no image this tool reads.")
    out = []
    for p in files:
        img = read_image(p, as_labels=False)
        v = Volume(img.data, None, set(), axis=like.axis if img.data.ndim - img.rgb == 3 else 0, channels=img.rgb,
                   normalisation=like.normalisation, name=p.name)
        if v.n_channels != like.n_channels:
            raise InputError(f"{p.name} has {v.n_channels} channel(s) but the image being segmented has "
                             f"{like.n_channels}.")
        out.append(v)
    return out
