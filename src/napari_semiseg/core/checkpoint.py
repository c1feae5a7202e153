"""Model folders: saved as one unit, guarded against concurrent writers, loaded as data only.

A model folder holds ``config.json`` (what the network is and how to feed it),
``model.safetensors`` (its weights) and, for resuming, the optimiser's state as
``optimiser.safetensors`` + ``optimiser.json``. Nothing is ever unpickled.

Saving writes a complete new folder beside the old one and swaps the two (atomically where the
system can exchange two names, otherwise with two renames that a later load repairs), so a kill at
any moment leaves the previous good model or the new one, never the weights of one model with the
config of another. A lock file beside the folder keeps two trainings from writing into it at once.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

from .errors import InputError
from .files import _fsync, _umask, write_error

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
OPTIMISER_NAME = "optimiser.safetensors"
OPTIMISER_META = "optimiser.json"
LEGACY_OPTIMISER = "optimiser.pt"  # older versions pickled it: never loaded
MODEL_FILES = {CONFIG_NAME, WEIGHTS_NAME, OPTIMISER_NAME, OPTIMISER_META, LEGACY_OPTIMISER}
MODEL_SUBFOLDER = "model"  # where `train --out DIR` puts the model, beside the masks
FORMAT = "napari-semiseg model"


# ------------------------------------------------------------------------------------------- lock

class FolderLock:
    """An exclusive lock on a model folder, held by the one process (or thread) writing into it.

    The lock file lives beside the folder, not inside it, because the folder itself is swapped. The
    operating system releases it when its holder dies, however it dies.
    """

    def __init__(self, folder: str | os.PathLike):
        from filelock import FileLock

        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder.parent / f".{self.folder.name}.lock"), is_singleton=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> FolderLock:
        from filelock import Timeout

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise InputError(f"Another napari-semiseg training is writing into {self.folder}: wait for it to "
                             "finish, or choose another folder.") from None
        except OSError as err:
            raise write_error(self.folder.parent, err, "model") from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ------------------------------------------------------------------------------------------- save

def is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() or (folder / WEIGHTS_NAME).is_file()


def check_replaceable(folder: Path) -> None:
    """A folder about to be replaced whole must be empty or a model folder: never the user's files."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder: choose a folder for the model.")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in MODEL_FILES)
        if others:
            raise InputError(f"{folder} holds other files ({', '.join(others[:3])}{' …' if len(others) > 3 else ''}); "
                             "a model folder is replaced whole, so choose an empty or new folder.")


def save_model(folder: str | os.PathLike, weights: dict[str, torch.Tensor], metadata: dict,
               optimiser_state: dict | None = None, lock: FolderLock | None = None) -> Path:
    """Write the model into ``folder`` as one unit (see the module's docstring)."""
    return install_model(folder, lambda new: _write_files(new, weights, metadata, optimiser_state), lock)


def install_model(folder: str | os.PathLike, write, lock: FolderLock | None = None) -> Path:
    """``write(new)`` fills a fresh hidden folder beside ``folder``, which then replaces ``folder`` in
    one step: a model folder is never seen half written, and never replaces the user's own files."""
    folder = Path(folder)
    check_replaceable(folder)
    with nullcontext() if lock is not None and lock.held else FolderLock(folder):
        parent = folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(parent, folder.name, "new")
        try:
            new = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=str(parent)))
        except OSError as err:
            raise write_error(parent, err, "model") from None
        try:
            write(new)
            for p in new.iterdir():
                _fsync(str(p))
                os.chmod(p, 0o666 & ~_umask())
            os.chmod(new, 0o777 & ~_umask())  # mkdtemp makes it private
            _swap_in(new, folder)
        except OSError as err:
            raise write_error(parent, err, "model") from None
        finally:
            if new.exists():
                shutil.rmtree(new, ignore_errors=True)
    return folder


def _write_files(new: Path, weights, metadata: dict, optimiser_state: dict | None) -> None:
    from safetensors.torch import save_file

    save_id = secrets.token_hex(8)  # ties the weights to their config: a mixed folder is detected
    metadata = {**metadata, "save_id": save_id}
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    save_file(state, str(new / WEIGHTS_NAME), metadata={"save_id": save_id})
    if optimiser_state is not None:
        tensors, meta = _flatten_optimiser(optimiser_state)
        save_file(tensors, str(new / OPTIMISER_NAME), metadata={"save_id": save_id})
        (new / OPTIMISER_META).write_text(json.dumps({**meta, "save_id": save_id}))
    (new / CONFIG_NAME).write_text(json.dumps(metadata, indent=2))


def _swap_in(new: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(new, folder)
        return
    if _exchange(new, folder):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the previous model
        return
    old = folder.parent / f".{folder.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
    os.replace(folder, old)  # a kill right here leaves only ``old``: model_dir() puts it back
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove_leftovers(parent: Path, name: str, kind: str) -> None:
    for p in parent.glob(f".{name}.{kind}-*"):
        shutil.rmtree(p, ignore_errors=True)


def _flatten_optimiser(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimiser state -> tensors (safetensors) + plain JSON; no pickle anywhere."""
    tensors, scalars = {}, {}
    for pid, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


# ------------------------------------------------------------------------------------------- load

def model_dir(path: str | os.PathLike) -> Path:
    """The model folder for what the user gave: the folder ``train --out`` wrote, the model folder
    itself, or any file in it. A save interrupted between its two renames is repaired here."""
    p = Path(path)
    _restore_interrupted_swap(p)
    if not p.exists():
        raise InputError(f"Model not found: {p}.")
    d = p if p.is_dir() else p.parent
    if not is_model_folder(d):
        _restore_interrupted_swap(d / MODEL_SUBFOLDER)
        if is_model_folder(d / MODEL_SUBFOLDER):
            d = d / MODEL_SUBFOLDER
    if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
        raise InputError(f"{p} is not a napari-semiseg model: it needs {CONFIG_NAME} and {WEIGHTS_NAME}.")
    return d


def _restore_interrupted_swap(folder: Path) -> None:
    if folder.exists() or not folder.parent.is_dir():
        return
    olds = sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda q: q.stat().st_mtime)
    if olds:
        try:
            os.replace(olds[-1], folder)
        except OSError:
            pass


def read_metadata(d: Path) -> dict:
    try:
        meta = json.loads((d / CONFIG_NAME).read_text(), parse_constant=lambda c: float(c))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{CONFIG_NAME} in {d} is damaged ({type(err).__name__}): it is not readable JSON.") from None
    return check_metadata(meta, d)


def check_metadata(meta, d: Path) -> dict:
    """Every field a prediction relies on, with its type and range: a damaged file is one sentence."""
    from .methods import METHODS

    where = f"{CONFIG_NAME} in {d}"
    if not isinstance(meta, dict):
        raise InputError(f"{where} is not a napari-semiseg model description (it holds a {type(meta).__name__}).")

    def whole(key, lo, hi, default=None):
        v = meta.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise InputError(f"{where} is damaged: '{key}' must be a whole number from {lo} to {hi}, not {v!r}.")
        return v

    if meta.get("method") not in METHODS:
        raise InputError(f"{where} names an unknown method {meta.get('method')!r}: it is damaged or from a newer "
                         "version of napari-semiseg.")
    whole("n_classes", 2, 256)
    whole("image_channels", 1, 16, 1)
    whole("context", 0, 8)
    whole("canvas", 16, 16384)
    whole("patch", 16, 16384, meta.get("canvas"))
    scale = meta.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 1:
        raise InputError(f"{where} is damaged: 'scale' must be a number above 0 and at most 1, not {scale!r}.")
    overlap = meta.get("window_overlap", 0.25)
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0 <= overlap < 1:
        raise InputError(f"{where} is damaged: 'window_overlap' must be a number in [0, 1), not {overlap!r}.")
    whole("axis", 0, 2, 0)
    whole("iteration", 0, 10**12, 0)
    if whole("in_channels", 1, 1024) != meta.get("image_channels", 1) * (2 * meta["context"] + 1):
        raise InputError(f"{where} is damaged: in_channels {meta['in_channels']} does not match "
                         f"{meta.get('image_channels', 1)} channel(s) with {meta['context']} context slice(s).")
    norm = meta.get("normalisation")
    if not isinstance(norm, dict) or norm.get("mode") not in ("percentile", "window") or not all(
            isinstance(norm.get(k), (int, float)) and not isinstance(norm.get(k), bool)
            and math.isfinite(norm.get(k)) for k in ("low", "high")) or not norm["low"] < norm["high"]:
        raise InputError(f"{where} is damaged: 'normalisation' must give a mode (percentile or window) and finite "
                         f"low < high bounds, not {norm!r}.")
    if not isinstance(meta.get("method_settings", {}), dict):
        raise InputError(f"{where} is damaged: 'method_settings' must be a set of named settings.")
    return meta


def load_method(path: str | os.PathLike, user_settings: dict | None = None):
    """Rebuild a method from a saved model: JSON + safetensors, checked, nothing unpickled.

    Settings that reach outside the model (an encoder path, downloads) are the user's alone: the
    file's values are dropped and ``user_settings`` (the user's own, for this run) apply instead.
    """
    from safetensors import safe_open

    from .methods import METHODS, build_method

    d = model_dir(path)
    meta = read_metadata(d)
    settings_cls = METHODS[meta["method"]].Settings
    settings = {k: v for k, v in (meta.get("method_settings") or {}).items() if k not in settings_cls.LOCAL_ONLY}
    settings.update(user_settings or {})
    method = build_method(meta["method"], int(meta["in_channels"]), int(meta["n_classes"]), settings)
    weights_path = d / WEIGHTS_NAME
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            file_id = (f.metadata() or {}).get("save_id")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on damage
        raise InputError(f"{WEIGHTS_NAME} in {d} is damaged or truncated ({type(err).__name__}): "
                         "retrain, or use an earlier copy of the model.") from None
    if file_id and meta.get("save_id") and file_id != meta["save_id"]:
        raise InputError(f"The weights and {CONFIG_NAME} in {d} come from two different saves: the folder was "
                         "mixed by hand or by an older version; retrain or restore one complete copy.")
    try:
        method.load_state_dict(state)
    except RuntimeError:
        raise InputError(f"The weights in {d} do not fit the network its {CONFIG_NAME} describes: the folder "
                         "is damaged or mixed from two models.") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"The weights in {d} contain NaN or infinite values ({bad[0]}): the model is damaged; "
                         "retrain, or use an earlier copy.")
    return method, meta


def load_optimiser_state(path: str | os.PathLike) -> dict | None:
    """The optimiser state saved with a model, or None when there is none (or only the old pickled one)."""
    from safetensors.torch import load_file

    d = model_dir(path)
    if not (d / OPTIMISER_NAME).is_file() or not (d / OPTIMISER_META).is_file():
        return None
    try:
        tensors = load_file(str(d / OPTIMISER_NAME))
        meta = json.loads((d / OPTIMISER_META).read_text())
        state: dict = {}
        for key, value in list(tensors.items()) + list(meta["scalars"].items()):
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        groups = meta["param_groups"]
        if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                   for g in groups):
            raise ValueError("param_groups")
    except Exception as err:  # noqa: BLE001
        raise InputError(f"The optimiser state in {d} is damaged ({type(err).__name__}): delete {OPTIMISER_NAME} "
                         f"and {OPTIMISER_META} to resume with a fresh optimiser.") from None
    return {"state": state, "param_groups": groups}


def weights_are_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------- predict

def volume_for_model(image, meta: dict, *, channels: bool, name: str = "image"):
    """A Volume configured as the saved model expects (axis, normalisation), or one sentence saying why not."""
    from .volume import Normalisation, Volume

    spatial = image.ndim - (1 if channels else 0)
    have = image.shape[-1] if channels else 1
    if have != int(meta.get("image_channels", 1)):
        raise InputError(f"The model expects images with {meta.get('image_channels', 1)} channel(s), but {name} "
                         f"has {have}: use a model trained on images like this one.")
    if spatial == 2 and int(meta["context"]) > 0:
        raise InputError(f"This model was trained on 3D volumes (it reads {2 * int(meta['context']) + 1} "
                         f"neighbouring slices at once), but {name} is a 2D image: use a model trained on 2D images.")
    axis = int(meta.get("axis", 0)) if spatial == 3 else 0
    return Volume(image, axis=axis, channels=channels, normalisation=Normalisation.from_dict(meta["normalisation"]),
                  name=name)


def predict_with_model(method, meta: dict, volume, device: str = "auto"):
    """Predict ``volume`` with a method loaded by :func:`load_method`, at the model's working scale."""
    from .inference import InputSpec, Runtime, predict_volume
    from .trainer import channels_last_pays, choose_device, resolve_precision, spec_of

    dev = choose_device(device)
    method.to(dev)
    precision = resolve_precision("auto", dev)
    channels_last = channels_last_pays(dev, precision)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    patch, scale = spec_of(meta, [volume.slice_shape])
    spec = InputSpec(patch, int(meta["context"]), scale, float(meta.get("window_overlap", 0.25)))
    return predict_volume(method.predictor(), volume, spec, Runtime(dev, precision, channels_last),
                          uncertainty_fn=method.uncertainty)
