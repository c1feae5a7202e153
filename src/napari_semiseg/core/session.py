"""One control path to a training run: what the widget talks to, wherever the training runs.

A session is started from volumes and a config. It takes label updates (``send``), the slice the
user is looking at (``focus``), ``pause``, ``resume``, ``stop`` and ``save``, and gives a stream
of :class:`~.trainer.Report` (``reports``). Every control call is safe from any thread and may come
before the run has started. :class:`LocalSession` trains in this process, in the thread that
iterates its reports; a separate process or a remote server is another implementation of the same
methods (issue 14).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import InputError
from .trainer import LabelUpdate, Report, TrainConfig, Trainer


class LatestSender:
    """Delivers label updates from a thread of its own, newest only for each volume: the caller (the
    viewer's GUI thread) returns at once, and an update still waiting is replaced by a newer one of
    the same volume (each holds that volume's whole labels). Copying a CT's 79 MB of labels, or
    posting a slice to a server, in the GUI thread stalled the viewer for 0.45 s and 1 s
    (benchmarks/RESULTS.md §13)."""

    def __init__(self, deliver: Callable, name: str):
        self._deliver = deliver
        self._cv = threading.Condition()
        self._items: dict = {}  # key (volume index) -> the newest update waiting
        self._busy = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def put(self, item, key=0) -> None:
        with self._cv:
            self._items.pop(key, None)  # a replaced update goes to the back: updates keep their order
            self._items[key] = item
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items:
                    self._cv.wait()
                key = next(iter(self._items))
                item, self._busy = self._items.pop(key), True
            try:
                self._deliver(item)
            except Exception:  # noqa: BLE001 - a lost trainer is reported by its report stream
                pass
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def wait(self, timeout: float = 30.0) -> bool:
        """Until every update given so far is delivered; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not (self._items or self._busy), timeout)


class LocalSession:
    """Training in this process. The trainer is built by the first ``next()`` on :meth:`reports`, in
    the thread that iterates them: building it (normalisation statistics, the network) held the
    viewer's GUI thread for 0.4 s. ``volumes`` may be a function that makes them, so that their
    intensity statistics are computed there too."""

    def __init__(self, volumes: list | Callable[[], list], config: TrainConfig, *,
                 resume_from: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 focus: tuple[int, int] | None = None):
        self._build = (volumes, config, resume_from, out_dir)
        self._lock = threading.Lock()
        self._early: list[LabelUpdate] = []  # updates sent before the trainer existed
        self._focus = focus
        self._paused = self._stopped = False
        self.trainer: Trainer | None = None  # for inspection in this process only; control goes through here

    # ---- the run
    def build(self) -> dict:
        """Build the trainer now, in this thread (:meth:`reports` does it otherwise), and say where
        and how it trains, and from which iteration: ``{"device": "cpu", "precision": "bf16", "iteration": 0}``."""
        with self._lock:
            built = self.trainer is not None
        if not built:
            volumes, config, resume_from, out_dir = self._build
            trainer = Trainer(volumes() if callable(volumes) else volumes, config, resume_from=resume_from,
                              out_dir=out_dir)
            with self._lock:
                self.trainer = trainer
                for update in self._early:
                    trainer.update_labels(update)
                self._early.clear()
                if self._focus is not None:
                    trainer.set_focus(self._focus[1], self._focus[0])
                if self._paused:
                    trainer.pause()
                if self._stopped:
                    trainer.stop()
        return {"device": self.trainer.device.type, "precision": self.trainer.precision,
                "iteration": self.trainer.iteration}

    def reports(self) -> Iterator[Report]:
        """Train, yielding reports, until the budget is spent or :meth:`stop`."""
        self.build()
        yield from self.trainer.run()

    def run(self, progress_bar: bool = False) -> Report:
        """Train to the end here, without a GUI (a progress bar on the terminal); the last report."""
        self.build()
        return self.trainer.train(progress_bar=progress_bar)

    @property
    def iteration(self) -> int:
        return self.trainer.iteration if self.trainer is not None else 0

    def predict(self) -> list:
        """Every volume predicted whole by the model as it is now."""
        if self.trainer is None:
            raise InputError("There is no model yet: train first.")
        return self.trainer.predict()

    # ---- control (any thread, before or during the run)
    def send(self, update: LabelUpdate) -> None:
        """New trusted labels; the trainer takes them between two steps."""
        with self._lock:
            if self.trainer is None:
                self._early.append(update)
            else:
                self.trainer.update_labels(update)

    def focus(self, slice_index: int, volume_index: int = 0) -> None:
        """The slice on screen: the next live refresh predicts it first."""
        with self._lock:
            self._focus = (int(volume_index), int(slice_index))
            if self.trainer is not None:
                self.trainer.set_focus(int(slice_index), int(volume_index))

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            if self.trainer is not None:
                self.trainer.pause()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            if self.trainer is not None:
                self.trainer.resume()

    def stop(self) -> None:
        """End the run (a paused one too); the trainer saves its model before it ends."""
        with self._lock:
            self._stopped, self._paused = True, False
            if self.trainer is not None:
                self.trainer.resume()
                self.trainer.stop()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def has_model(self) -> bool:
        return self.trainer is not None

    def close(self) -> None:
        """Nothing outlives a run here (the other sessions end their process or server session)."""

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model into ``path`` (a paused or ended run: a running one is refused)."""
        with self._lock:
            trainer = self.trainer
        if trainer is None:
            raise InputError("There is no model yet: train first.")
        return trainer.save(path)
