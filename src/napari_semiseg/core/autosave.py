"""Autosave of the user's annotations and of the session's model, one slot per image.

A slot is a folder named after the image plus a hash of its source path and a sample of its
voxels, so two images called "scan" never share one. It holds ``labels.npz`` (the painted labels
with a small JSON description inside the same file, written atomically: never half a save) and the
session's ``model/`` folder. Saving runs on a background thread, a short while after the last edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write

SAMPLE_VOXELS = 1 << 20


def default_root() -> Path:
    """``$NAPARI_SEMISEG_HOME/autosave``, by default ``~/.napari-semiseg/autosave``."""
    home = os.environ.get("NAPARI_SEMISEG_HOME")
    return (Path(home) if home else Path.home() / ".napari-semiseg") / "autosave"


def image_key(data, source_path: str | None = None) -> str:
    """A short hash of where the image came from and what it holds (a strided sample: no full copy)."""
    h = hashlib.sha256()
    h.update(repr((tuple(data.shape), str(data.dtype))).encode())
    if source_path:
        h.update(os.path.realpath(source_path).encode())
    if isinstance(data, np.ndarray):
        step = max(1, int(np.ceil((np.prod(data.shape, dtype=np.float64) / SAMPLE_VOXELS) ** (1 / max(1, data.ndim)))))
        parts = [data[tuple(slice(None, None, step) for _ in data.shape)]]
    else:  # a lazy array (dask, zarr): three slices, so that keying it reads three chunks, not all of them
        parts = [data[int(i)] for i in sorted({0, data.shape[0] // 2, data.shape[0] - 1})]
    for part in parts:
        h.update(np.ascontiguousarray(np.asarray(part)).tobytes())
    return h.hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60] or "image"


@dataclass
class Slot:
    folder: Path

    @classmethod
    def for_image(cls, root: str | os.PathLike, name: str, data, source_path: str | None = None) -> Slot:
        return cls(Path(root) / f"{_safe(name)}-{image_key(data, source_path)}")

    @property
    def labels_path(self) -> Path:
        return self.folder / "labels.npz"

    @property
    def model_folder(self) -> Path:
        return self.folder / "model"

    @property
    def previous_labels_path(self) -> Path:
        return self.folder / "labels-previous.npz"

    def keep_previous(self) -> None:
        """Before a new session's first save: the last session's labels stay as ``labels-previous.npz``."""
        if self.labels_path.is_file():
            os.replace(self.labels_path, self.previous_labels_path)

    def save_labels(self, labels: np.ndarray, info: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {**info, "saved": time.time(), "shape": list(labels.shape)}

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, labels=labels, info=np.array(json.dumps(info)))

        atomic_write(self.labels_path, write, "autosaved labels")

    def load_labels(self) -> tuple[np.ndarray, dict] | None:
        """The autosaved labels and their description; None when there are none (or they are unreadable)."""
        if not self.labels_path.is_file():
            return None
        try:
            with np.load(self.labels_path, allow_pickle=False) as z:
                return np.asarray(z["labels"]), json.loads(str(z["info"]))
        except Exception:  # noqa: BLE001 - a damaged autosave is no autosave; the user's layer is untouched
            return None


class Autosaver:
    """Saves ``snapshot()`` into ``slot`` on a background thread, ``delay`` seconds after the last edit.

    ``snapshot`` returns (labels, info) and is called on the saver's thread; ``flush`` saves now, on
    the caller's thread, if anything changed (the viewer is closing).
    """

    def __init__(self, slot: Slot, snapshot, delay: float = 2.0, on_error=None):
        self.slot, self.snapshot, self.delay = slot, snapshot, delay
        self.on_error = on_error or (lambda err: None)
        self.saves = 0
        self._dirty_since: float | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="semiseg-autosave", daemon=True)
        self._thread.start()

    def mark_dirty(self) -> None:
        with self._cond:
            self._dirty_since = time.monotonic()
            self._cond.notify()

    def flush(self) -> None:
        with self._cond:
            dirty, self._dirty_since = self._dirty_since is not None, None
        if dirty:
            self._save()

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._dirty_since is None
                                            or time.monotonic() - self._dirty_since < self.delay):
                    wait = None if self._dirty_since is None else self.delay - (time.monotonic() - self._dirty_since)
                    self._cond.wait(timeout=wait)
                if self._closed:
                    return
                self._dirty_since = None
            self._save()

    def _save(self) -> None:
        with self._write_lock:
            try:
                labels, info = self.snapshot()
                if self.saves == 0:
                    self.slot.keep_previous()
                self.slot.save_labels(labels, info)
                self.saves += 1
            except Exception as err:  # noqa: BLE001 - reported to the user, never raised into the GUI
                self.on_error(err)
