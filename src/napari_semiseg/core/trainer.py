"""The training loop as a generator of small reports.

``Trainer.run()`` yields a :class:`Report` every ``report_every`` steps; at most every
``refresh_seconds`` a report also carries the predictor's (EMA teacher's) prediction of every
volume. Between steps it accepts, through ``generator.send``, a :class:`LabelUpdate`; ``pause``,
``resume`` and ``stop`` may be called from another thread. The trainer never touches a GUI.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .inference import Prediction, autocast_for, predict_volume
from .io import InputError
from .methods import build_method
from .methods.base import Method, TrainState
from .sampling import TwoStreamSampler
from .volume import Normalisation, Volume, choose_canvas

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
OPTIMISER_NAME = "optimiser.pt"


@dataclass
class TrainConfig:
    method: str = "mean-teacher"
    method_settings: dict = field(default_factory=dict)
    iterations: int | None = None  # stop after this many steps ...
    minutes: float | None = None  # ... or after this much time; neither: until stopped
    batch_size: int = 8
    labeled_batch: int = 4
    optimiser: str = "adamw"  # "adamw" | "sgd" (the field's, too slow for minute budgets)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # "poly" | "constant"
    max_side: int = 256
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Report:
    iteration: int
    losses: dict[str, float]
    lr: float
    slices_per_second: float
    elapsed: float
    progress: float | None
    prediction: list[Prediction] | None = None  # one per volume, at the refresh interval
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


class Trainer:
    def __init__(self, volumes: list[Volume], config: TrainConfig | None = None, *,
                 resume_from: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None):
        if not volumes:
            raise InputError("Nothing to train on: no image was given.")
        self.volumes = volumes
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir) if out_dir else None
        c = self.config
        if c.labeled_batch < 1 or c.batch_size < c.labeled_batch:
            raise InputError("The batch needs at least one labeled slice and no more labeled than in total.")
        chans = {v.n_channels for v in volumes}
        if len(chans) != 1:
            raise InputError("All images must have the same number of channels.")
        self.device = choose_device(c.device)
        self.precision = resolve_precision(c.precision, self.device)
        self.channels_last = c.channels_last if c.channels_last is not None else channels_last_pays(
            self.device, self.precision)
        if c.threads:
            torch.set_num_threads(max(1, int(c.threads)))
        _seed_everything(c.seed)

        self.iteration = 0
        self._resumed_meta: dict = {}
        if resume_from is not None:
            self.method, meta = load_method(resume_from)
            self._resumed_meta = meta
            if meta["method"] != c.method:
                raise InputError(f"The saved model was trained with {meta['method']}, not {c.method}.")
            self.canvas = int(meta["canvas"])
            self.context = int(meta["context"])
            self.n_classes = int(meta["n_classes"])
            self.iteration = int(meta.get("iteration", 0))
        else:
            self.context = c.context if any(v.is_3d for v in volumes) else 0
            self.canvas = choose_canvas([v.slice_shape for v in volumes], c.max_side)
            self.n_classes = max(2, max(max(v.classes_present()) for v in volumes) + 1)
            in_ch = volumes[0].n_channels * (2 * self.context + 1)
            self.method = build_method(c.method, in_ch, self.n_classes, c.method_settings)
        self._check_labels_fit()
        self.method.to(self.device)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.optimiser = self._make_optimiser()
        if resume_from is not None:
            opt_path = Path(resume_from) / OPTIMISER_NAME
            if opt_path.exists():
                self.optimiser.load_state_dict(torch.load(opt_path, map_location=self.device, weights_only=True))
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16" and self.device.type == "cuda")

        unl_batch = c.batch_size - c.labeled_batch if c.method != "supervised" else 0
        extra = read_unlabeled_folder(c.unlabeled_dir, volumes[0]) if c.unlabeled_dir else []
        self.sampler = TwoStreamSampler(volumes, self.canvas, self.context, c.labeled_batch, unl_batch,
                                        seed=c.seed, augment=c.augment, extra_unlabeled=extra,
                                        unlabeled_source=c.unlabeled_source)
        self.method.bind_labeled_bank(self.sampler)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._pending: list[LabelUpdate] = []
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
        """Queue new labels; applied between two steps (also reachable through ``send``)."""
        with self._lock:
            self._pending.append(update)

    # ---- internals
    def _check_labels_fit(self) -> None:
        for v in self.volumes:
            top = max(v.classes_present())
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
            parts.append(elapsed / (60.0 * c.minutes))
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
            self._check_labels_fit()
            self.sampler.refresh()
            self.method.bind_labeled_bank(self.sampler)

    def predict(self, keep_probabilities: bool = False) -> list[Prediction]:
        net = self.method.predictor()
        return [predict_volume(net, v, self.canvas, self.context, device=self.device, precision=self.precision,
                               channels_last=self.channels_last, uncertainty_fn=self.method.uncertainty,
                               keep_probabilities=keep_probabilities) for v in self.volumes]

    def step(self, progress: float | None) -> dict[str, float]:
        """One optimiser step on one two-stream batch."""
        batch = self.sampler.next().to(self.device)
        if self.channels_last:
            batch.x_l = batch.x_l.contiguous(memory_format=torch.channels_last)
            batch.x_u = batch.x_u.contiguous(memory_format=torch.channels_last)
        for g in self.optimiser.param_groups:
            g["lr"] = self._lr(progress)
        state = TrainState(self.iteration, progress)
        self.method.train()
        with autocast_for(self.device, self.precision):
            losses = self.method.training_step(batch, state)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"The loss became {loss.item()} at iteration {self.iteration}: "
                                     "try a lower learning rate.")
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        self.method.after_step(state)
        self.iteration += 1
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    def run(self):
        """Generator: train until the budget is spent or ``stop()``; yields :class:`Report`."""
        c = self.config
        start_iter = self.iteration
        t0 = time.perf_counter()
        paused_time = 0.0
        last_refresh = None
        window_t, window_n = t0, 0
        rate = 0.0
        losses: dict[str, float] = {}
        while True:
            if self._paused.is_set() and not self._stop.is_set():
                p0 = time.perf_counter()
                cmd = yield Report(self.iteration, losses, self._lr(None), 0.0, p0 - t0 - paused_time,
                                   None, paused=True)
                self._handle(cmd)
                time.sleep(0.05)
                paused_time += time.perf_counter() - p0
                continue
            elapsed = time.perf_counter() - t0 - paused_time
            progress = self._progress(start_iter, elapsed)
            if self._stop.is_set() or (progress is not None and progress >= 1.0):
                break
            self._apply_pending()
            losses = self.step(progress)
            window_n += self.sampler.labeled_batch + self.sampler.unlabeled_batch
            now = time.perf_counter()
            if now - window_t >= 1.0:
                rate = window_n / (now - window_t)
                window_t, window_n = now, 0
            elapsed = now - t0 - paused_time
            due = (last_refresh is None and elapsed >= c.first_refresh_seconds) or (
                last_refresh is not None and now - last_refresh >= c.refresh_seconds)
            if due or self.iteration % c.report_every == 0:
                pred = None
                if due:
                    pred = self.predict()
                    last_refresh = time.perf_counter()
                cmd = yield Report(self.iteration, losses, self._lr(progress), rate, elapsed,
                                   self._progress(start_iter, elapsed), pred)
                self._handle(cmd)
        elapsed = time.perf_counter() - t0 - paused_time
        checkpoint = str(self.save(self.out_dir)) if self.out_dir else None
        yield Report(self.iteration, losses, self._lr(1.0), rate, elapsed, self._progress(start_iter, elapsed),
                     self.predict() if c.final_prediction else None, finished=True, checkpoint=checkpoint)

    def _handle(self, cmd) -> None:
        if isinstance(cmd, LabelUpdate):
            self.update_labels(cmd)
        elif cmd == "stop":
            self.stop()
        elif cmd == "pause":
            self.pause()
        elif cmd == "resume":
            self.resume()

    def train(self, progress_bar: bool = False) -> Report:
        """Run to the end without a GUI; return the final report."""
        bar = _ProgressBar(self.config) if progress_bar else None
        last = None
        for last in self.run():
            if bar is not None:
                bar.update(last)
        if bar is not None:
            bar.close()
        return last

    # ---- persistence
    def metadata(self) -> dict:
        v0 = self.volumes[0]
        return {
            "format": "napari-semiseg model",
            "version": __version__,
            "method": self.config.method,
            "method_settings": asdict(self.method.settings),
            "n_classes": self.n_classes,
            "in_channels": self.method.in_channels,
            "image_channels": v0.n_channels,
            "context": self.context,
            "canvas": self.canvas,
            "max_side": self.config.max_side,
            "axis": v0.axis,
            "normalisation": v0.normalisation.to_dict(),
            "iteration": self.iteration,
            "train_config": self.config.to_dict(),
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.method.state_dict().items()}
        _atomic(out / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
        _atomic(out / OPTIMISER_NAME, lambda p: torch.save(self.optimiser.state_dict(), p))
        _atomic(out / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(self.metadata(), indent=2)))
        return out


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_dir(path: str | os.PathLike) -> Path:
    """Accept the folder ``train --out`` wrote, or any file inside it."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"Model not found: {p}.")
    d = p if p.is_dir() else p.parent
    if not (d / CONFIG_NAME).exists() or not (d / WEIGHTS_NAME).exists():
        raise InputError(f"{p} is not a napari-semiseg model: it needs {CONFIG_NAME} and {WEIGHTS_NAME}.")
    return d


def load_method(path: str | os.PathLike) -> tuple[Method, dict]:
    """Rebuild a method from a saved model without unpickling anything (JSON + safetensors)."""
    from safetensors.torch import load_file

    d = model_dir(path)
    try:
        meta = json.loads((d / CONFIG_NAME).read_text())
        method = build_method(meta["method"], int(meta["in_channels"]), int(meta["n_classes"]),
                              meta.get("method_settings"))
        state = load_file(str(d / WEIGHTS_NAME))
        method.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, OSError) as err:
        raise InputError(f"Could not load the model in {d}: {type(err).__name__}: {err}".split("\n")[0]) from None
    return method, meta


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


def volume_for_model(image: np.ndarray, meta: dict, *, channels: bool, name: str = "image") -> Volume:
    """A Volume configured as the saved model expects (axis, normalisation)."""
    spatial = image.ndim - (1 if channels else 0)
    if (image.shape[-1] if channels else 1) != int(meta.get("image_channels", 1)):
        raise InputError(f"The model expects {meta.get('image_channels', 1)} image channel(s); "
                         f"this image has {image.shape[-1] if channels else 1}.")
    axis = int(meta.get("axis", 0)) if spatial == 3 else 0
    return Volume(image, axis=axis, channels=channels, normalisation=Normalisation.from_dict(meta["normalisation"]),
                  name=name)


def predict_with_model(method: Method, meta: dict, volume: Volume, device: str = "auto") -> Prediction:
    """Predict ``volume`` with a method loaded by :func:`load_method`."""
    dev = choose_device(device)
    method.to(dev)
    precision = resolve_precision("auto", dev)
    channels_last = channels_last_pays(dev, precision)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    return predict_volume(method.predictor(), volume, int(meta["canvas"]), int(meta["context"]), device=dev,
                          precision=precision, channels_last=channels_last, uncertainty_fn=method.uncertainty)
