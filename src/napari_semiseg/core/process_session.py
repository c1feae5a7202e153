"""Training in a separate process: the same methods as :class:`~.session.LocalSession`, with the
trainer in a spawned child (spawned, not forked: a fork of a process holding Qt, CUDA or OpenMP
threads can deadlock). If the child dies (out-of-memory kill, a crash in a native library, SIGKILL),
the viewer lives on: :meth:`ProcessSession.reports` raises :class:`TrainingProcessDied` with one
sentence, and the model folder keeps the last checkpoint to resume from.

Messages are pickled; any array of 1 MiB or more crosses through shared memory instead of the pipe
(copied in by the sender, out by the receiver, which then frees the segment). A label update sends
the slices that changed (:mod:`.label_sync`): both sides keep a copy of the labels.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from .errors import InputError, is_out_of_memory
from .label_sync import LabelCopy
from .session import LatestSender
from .trainer import LabelUpdate, Report, TrainConfig

SHARE_ABOVE = 1 << 20  # bytes: arrays this large go through shared memory
REPLY_SECONDS = 600.0  # a save or a whole-volume prediction on a slow machine


class TrainingProcessDied(InputError):
    """The training process ended without saying why (killed, or crashed in native code)."""


# ---------------------------------------------------------------------------------- messages

class _SharingPickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.bytes_shared = 0

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray) and obj.nbytes >= SHARE_ABOVE and not obj.dtype.hasobject:
            shm = SharedMemory(create=True, size=obj.nbytes)
            np.ndarray(obj.shape, obj.dtype, buffer=shm.buf)[...] = obj
            name = shm.name
            shm.close()  # the receiver unlinks it
            self.bytes_shared += obj.nbytes
            return _from_shared, (name, obj.shape, obj.dtype.str)
        return NotImplemented


def _from_shared(name: str, shape, dtype: str) -> np.ndarray:
    shm = SharedMemory(name=name)
    try:
        return np.array(np.ndarray(shape, np.dtype(dtype), buffer=shm.buf))  # the receiver's own copy
    finally:
        shm.close()
        shm.unlink()


class Channel:
    """One end of the pipe: whole messages, large arrays by shared memory; safe from several threads."""

    def __init__(self, conn):
        self.conn = conn
        self._send_lock = threading.Lock()
        self.bytes_piped = self.bytes_shared = 0  # what this end has sent, for benchmarks

    def send(self, message) -> None:
        buf = io.BytesIO()
        pickler = _SharingPickler(buf)
        pickler.dump(message)
        with self._send_lock:
            self.conn.send_bytes(buf.getbuffer())
            self.bytes_piped += buf.getbuffer().nbytes
            self.bytes_shared += pickler.bytes_shared

    def receive(self):
        """The next message; EOFError when the other end is gone."""
        return pickle.loads(self.conn.recv_bytes())


# ---------------------------------------------------------------------------------- the child

def _child_main(conn) -> None:
    """The training process: build the session from the first message, stream its reports, answer
    commands until told to close (or until the viewer's end of the pipe is gone)."""
    from .session import LocalSession
    from .volume import Volume

    channel = Channel(conn)
    start = channel.receive()
    if start["nice"] and hasattr(os, "nice"):
        os.nice(start["nice"])
        # Linux: beyond nice 19, the idle class runs the trainer only on CPU time the viewer leaves free, and a
        # waking viewer thread preempts it at once (the CT's slice changes: RESULTS §13)
        if hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except OSError:  # not allowed in this container or kernel: nice alone
                pass
    volume_args = start["volumes"]
    copies = _label_copies(volume_args)
    session = LocalSession(lambda: [Volume(**a) for a in volume_args], start["config"],
                           resume_from=start["resume_from"], out_dir=start["out_dir"], focus=start["focus"])
    closing = threading.Event()

    def serve_commands():
        while True:
            try:
                command, *args = channel.receive()
            except (EOFError, OSError):  # the viewer is gone: end the run, its model is saved on stop
                session.stop()
                closing.set()
                return
            try:
                if command == "close":
                    closing.set()
                    session.stop()
                    return
                if command == "send":  # whole labels: this volume's first update, or one sent before the start
                    update = args[0]
                    copies[update.volume_index] = _copy_of_whole(update, [a.get("axis", 0) for a in volume_args])
                    session.send(update)
                elif command == "slices":
                    session.send(copies[args[0].volume_index].apply(args[0]))
                elif command in ("focus", "pause", "resume", "stop"):
                    getattr(session, command)(*args)
                elif command == "save":
                    channel.send(("reply", str(session.save(*args))))
                elif command == "predict":
                    channel.send(("reply", session.predict()))
            except Exception as err:  # noqa: BLE001 - each becomes the caller's one sentence
                channel.send(("reply-error", _describe(err)))

    threading.Thread(target=serve_commands, name="semiseg-commands", daemon=True).start()
    try:
        channel.send(("built", session.build()))
        for report in session.reports():
            channel.send(("report", report))
        channel.send(("finished",))
    except Exception as err:  # noqa: BLE001
        channel.send(("error", _describe(err)))
    closing.wait()


def _copy_of_whole(update: LabelUpdate, axes: list[int]) -> LabelCopy:
    """The copy after an update sent whole (each side makes the same one)."""
    return LabelCopy(update.labels, axes[update.volume_index], update.volume_index)


def _label_copies(volume_args: list[dict]) -> dict[int, LabelCopy]:
    """Each labeled volume's labels as the other side has them at the start."""
    return {i: LabelCopy(a["labels"], a.get("axis", 0), i) for i, a in enumerate(volume_args)
            if a.get("labels") is not None}


def _describe(err: BaseException) -> dict:
    return {"message": str(err).split("\n")[0] or type(err).__name__, "type": type(err).__name__,
            "input": isinstance(err, InputError), "memory": is_out_of_memory(err)}


def _as_error(info: dict) -> Exception:
    if info["input"]:
        return InputError(info["message"])
    if info["memory"]:
        return MemoryError(info["message"])
    return RuntimeError(f"{info['type']}: {info['message']}")


def _death_sentence(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        why = {signal.SIGKILL: " (what the system sends when memory runs out)",
               signal.SIGSEGV: " (a crash in a native library)"}.get(sig, "")
        return f"The training process was killed by {name}{why}."
    return f"The training process ended unexpectedly (exit status {exitcode})."


# ---------------------------------------------------------------------------------- the viewer's side

class ProcessSession:
    """A training session in a spawned child process; the interface of :class:`~.session.LocalSession`.

    ``volumes`` are the keyword arguments of :class:`~.volume.Volume` (image, labels, labeled, axis,
    channels, name), or a function that makes them: the child builds the volumes.
    """

    def __init__(self, volumes, config: TrainConfig, *, resume_from: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, focus: tuple[int, int] | None = None, nice: int = 0):
        self._start = (volumes, config, resume_from, out_dir, focus)
        self._nice = nice  # added to the child's niceness (Unix): > 0 gives the caller's process the CPU first
        self._lock = threading.Lock()
        self._early: list[tuple] = []  # commands given before the child was started
        self._reports: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._paused = False
        self._built: dict | None = None
        self._closed = False
        self.iteration = 0
        self.bytes_live = 0  # the live refreshes' pseudo-labels received, for benchmarks
        self._axes: list[int] = []
        self.process = None
        self.channel: Channel | None = None
        self._copies: dict[int, LabelCopy] = {}  # the labels as the child has them
        self._updates = LatestSender(self._deliver, "semiseg-label-sender")

    # ---- the run
    def build(self) -> dict:
        """Start the child and wait until its trainer is built: ``{"device": ..., "precision": ...}``."""
        if self._built is not None:
            return self._built
        volumes, config, resume_from, out_dir, focus = self._start
        args = [dict(a, image=np.asarray(a["image"])) for a in (volumes() if callable(volumes) else volumes)]
        ctx = mp.get_context("spawn")
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_child_main, args=(theirs,), name="semiseg-training", daemon=True)
        process.start()
        theirs.close()
        channel = Channel(ours)
        channel.send({"volumes": args, "config": config, "resume_from": resume_from,
                      "out_dir": None if out_dir is None else str(out_dir), "focus": focus, "nice": self._nice})
        with self._lock:
            self.process, self.channel = process, channel
            self._axes = [a.get("axis", 0) for a in args]
            self._copies = _label_copies(args)
            for command in self._early:
                if command[0] == "send":  # sent whole: the child's copy becomes these labels
                    self._copies[command[1].volume_index] = _copy_of_whole(command[1], self._axes)
                self.channel.send(command)
            self._early.clear()
        threading.Thread(target=self._read, name="semiseg-reader", daemon=True).start()
        if self._closed:  # closed while it was starting
            self.close()
        kind, *rest = self._reports.get()
        if kind != "built":
            self._raise(kind, rest)
        self._built = rest[0]
        self.iteration = self._built["iteration"]
        return self._built

    def _read(self) -> None:
        """Sort the child's messages: replies to commands, and everything else (the report stream)."""
        while True:
            try:
                message = self.channel.receive()
            except (EOFError, OSError):
                self._reports.put(("died",))
                self._replies.put(("died",))
                return
            (self._replies if message[0].startswith("reply") else self._reports).put(message)

    def _raise(self, kind: str, rest) -> None:
        if kind == "error":
            raise _as_error(rest[0])
        self.process.join(5)
        raise TrainingProcessDied(_death_sentence(self.process.exitcode))

    def reports(self) -> Iterator[Report]:
        self.build()
        while True:
            kind, *rest = self._reports.get()
            if kind == "report":
                self.iteration = rest[0].iteration
                if rest[0].slices is not None:
                    s = rest[0].slices
                    self.bytes_live += s.labels.nbytes + s.uncertainty.nbytes + s.scores.nbytes
                yield rest[0]
            elif kind == "finished":
                return
            else:
                self._raise(kind, rest)

    def predict(self) -> list:
        return self._ask("predict")

    def save(self, path: str | os.PathLike) -> Path:
        return Path(self._ask("save", str(path)))

    def _ask(self, *command):
        if self._built is None:
            raise InputError("There is no model yet: train first.")
        self.channel.send(command)
        try:
            kind, *rest = self._replies.get(timeout=REPLY_SECONDS)
        except queue.Empty:
            raise InputError(f"The training process did not answer '{command[0]}' within "
                             f"{REPLY_SECONDS:.0f} s.") from None
        if kind == "reply":
            return rest[0]
        if kind == "reply-error":
            raise _as_error(rest[0])
        raise TrainingProcessDied(_death_sentence(self.process.exitcode))

    # ---- control (any thread, before or during the run)
    def _command(self, *command) -> None:
        with self._lock:
            if self.channel is None:
                self._early.append(command)
                return
        try:
            self.channel.send(command)
        except (OSError, ValueError):  # the child is gone; reports() says so
            pass

    def send(self, update: LabelUpdate) -> None:
        """New trusted labels; the slices that changed go to the child from another thread (see
        LatestSender)."""
        self._updates.put(update, key=update.volume_index)

    def wait_for_sends(self, timeout: float = 30.0) -> bool:
        return self._updates.wait(timeout)

    def _deliver(self, update: LabelUpdate) -> None:
        with self._lock:
            if self.channel is None:  # not started: sent whole with the start (see build)
                self._early.append(("send", update))
                return
            copy = self._copies.get(update.volume_index)
        if copy is None:  # a volume that had no labels: sent whole once
            self._command("send", update)
            self._copies[update.volume_index] = _copy_of_whole(update, self._axes)
            return
        change = copy.changes(update)
        self._command("slices", change)
        copy.write(change)

    def focus(self, slice_index: int, volume_index: int = 0) -> None:
        self._command("focus", int(slice_index), int(volume_index))

    def pause(self) -> None:
        self._paused = True
        self._command("pause")

    def resume(self) -> None:
        self._paused = False
        self._command("resume")

    def stop(self) -> None:
        self._paused = False
        self._command("stop")

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def has_model(self) -> bool:
        return self._built is not None and self.process is not None and self.process.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """End the child (after its run has saved its model); killed if it does not end in ``timeout``."""
        self._closed = True
        if self.process is None:
            return
        self._command("close")
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.channel.conn.close()
