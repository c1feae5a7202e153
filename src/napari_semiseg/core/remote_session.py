"""A training session on a remote server (``napari-semiseg serve``): the interface of
:class:`~.session.LocalSession` over HTTP and a websocket.

The image is uploaded once, compressed; a label update sends only the slices that changed since the
last one; reports stream back on a websocket with the pseudo-labels of the slices the viewer focuses
on. A dropped websocket is reopened and the run goes on; a server that is gone or restarted is
one sentence (:class:`ServerLost`), and the labels in the viewer are never touched by any of it.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import InputError
from .label_sync import LabelCopy
from .session import LatestSender
from .trainer import LabelUpdate, Report, TrainConfig
from .wire import SERVER_CHOOSES, pack, report_from, unpack

RECONNECT_SECONDS = 20.0  # how long a dropped connection is retried before the server counts as lost
MAX_MESSAGE_BYTES = 4 << 30


class ServerLost(InputError):
    """The server cannot be reached, or no longer knows the session (it was restarted)."""


class SessionGone(ServerLost):
    """The server answers but no longer knows the session: it was restarted. Retrying cannot help."""


class RemoteSession:
    """``volumes``: the keyword arguments of one :class:`~.volume.Volume` (or a function that makes
    them), as for :class:`~.process_session.ProcessSession`."""

    def __init__(self, url: str, token: str, volumes, config: TrainConfig, *, focus: tuple[int, int] | None = None,
                 timeout: float = 60.0):
        import httpx

        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)
        self._start = (volumes, config, focus)
        self._lock = threading.Lock()
        self._sent: LabelCopy | None = None  # the labels as the server has them
        self._paused = False
        self.id: str | None = None
        self.iteration = 0
        self.bytes_up = self.bytes_down = self.bytes_live = 0  # bytes_live: the live refreshes' pseudo-labels
        self._ws = None
        self._updates = LatestSender(self._post_labels, "semiseg-label-sender")

    # ---- HTTP
    def _request(self, method: str, path: str, **kw):
        import httpx

        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as err:
            raise ServerLost(f"The training server at {self.url} cannot be reached ({type(err).__name__}).") from None
        self.bytes_up += len(kw.get("content", b"") or b"")
        self.bytes_down += len(r.content)
        if r.status_code == 404 and self.id is not None and path.startswith(f"/sessions/{self.id}"):
            raise SessionGone("The training server no longer knows this session (it was restarted): press Train "
                             "to start a new one; your labels are untouched.")
        if r.status_code >= 400:
            raise InputError(f"The training server refused: {r.text.strip()[:300]}")
        return r

    def check(self) -> list[dict]:
        """The caller's sessions on the server: the smallest request that proves URL and token."""
        return self._request("GET", "/sessions").json()

    # ---- the run
    def build(self) -> dict:
        if self.id is not None:
            return {"device": "server", "iteration": self.iteration}
        volumes, config, focus = self._start
        args = (volumes() if callable(volumes) else volumes)[0]
        labels = np.asarray(args["labels"])
        axis = int(args.get("axis", 0)) if labels.ndim == 3 else 0
        settings = {k: v for k, v in asdict(config).items() if k not in SERVER_CHOOSES}
        meta = {"config": settings, "axis": axis, "channels": bool(args.get("channels", False)),
                "name": str(args.get("name", "image")), "focus": int(focus[1]) if focus else 0}
        body = pack(meta, image=np.asarray(args["image"]), labels=labels,
                    labeled=np.array(sorted(args["labeled"]), np.int64))
        self.id = self._request("POST", "/sessions", content=body).json()["id"]
        self._sent = LabelCopy(labels, axis)
        if self._paused:
            self.pause()
        return {"device": "server", "iteration": 0}

    def _connect(self):
        from websockets.sync.client import connect

        ws_url = ("wss:" if self.url.startswith("https") else "ws:") + self.url.split(":", 1)[1]
        return connect(f"{ws_url}/sessions/{self.id}/reports", additional_headers=self._headers,
                       max_size=MAX_MESSAGE_BYTES, open_timeout=10)

    def _reconnect(self):
        """Open the report stream again after a drop; ServerLost when the server stays away."""
        from websockets.exceptions import InvalidStatus, WebSocketException

        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                self._request("GET", f"/sessions/{self.id}")  # SessionGone here: restarted, no retry
                return self._connect()
            except SessionGone:
                raise
            except ServerLost:
                if time.monotonic() > deadline:
                    raise
            except (OSError, InvalidStatus, WebSocketException, TimeoutError):
                if time.monotonic() > deadline:
                    raise ServerLost(f"The connection to the training server at {self.url} was lost.") from None
            time.sleep(0.5)

    def reports(self) -> Iterator[Report]:
        from websockets.exceptions import ConnectionClosed

        self.build()
        self._ws = self._reconnect()
        try:
            while True:
                try:
                    meta = json.loads(self._ws.recv())
                    payload = self._ws.recv() if ("slices" in meta or "prediction" in meta) else None
                except (ConnectionClosed, OSError, TimeoutError):
                    self._ws = self._reconnect()
                    continue
                if "error" in meta:
                    raise InputError(meta["error"])
                self.bytes_down += len(payload or b"")
                if "slices" in meta:
                    self.bytes_live += len(payload)
                report = report_from(meta, payload, MAX_MESSAGE_BYTES)
                self.iteration = report.iteration
                yield report
                if report.finished:
                    return
        finally:
            if self._ws is not None:
                self._ws.close()

    def drop_connection(self) -> None:
        """Close the report stream as a network failure would (the run goes on; reports() reconnects)."""
        if self._ws is not None:
            self._ws.close()

    def predict(self) -> list:
        from .inference import Prediction

        _, a = unpack(self._request("GET", f"/sessions/{self.id}/prediction").content, MAX_MESSAGE_BYTES)
        return [Prediction(a["labels"], a["uncertainty"], a["scores"])]

    def save(self, path: str | os.PathLike) -> Path:
        """Fetch the model into the folder ``path`` (the run paused or ended), installed as a local save is."""
        from .checkpoint import MODEL_FILES, install_model

        if self.id is None:
            raise InputError("There is no model yet: train first.")
        data = self._request("GET", f"/sessions/{self.id}/model").content

        def extract(new: Path) -> None:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for name in z.namelist():
                    if name not in MODEL_FILES:
                        raise InputError("The server sent a model with unexpected files.")
                    (new / name).write_bytes(z.read(name))

        return install_model(path, extract)

    # ---- control
    def send(self, update: LabelUpdate) -> None:
        """Only the slices that changed since the last update go to the server, from another thread
        (see LatestSender)."""
        self._updates.put(update)

    def wait_for_sends(self, timeout: float = 30.0) -> bool:
        return self._updates.wait(timeout)

    def _post_labels(self, update: LabelUpdate) -> None:
        with self._lock:
            if self._sent is None:
                return
            change = self._sent.changes(update)
            body = pack({"labeled": sorted(change.labeled)}, slices=change.slices, planes=change.planes)
            self._request("POST", f"/sessions/{self.id}/labels", content=body)
            self._sent.write(change)

    def focus(self, slice_index: int, volume_index: int = 0) -> None:
        if self.id is not None:
            self._request("POST", f"/sessions/{self.id}/focus", params={"slice": int(slice_index),
                                                                          "volume": int(volume_index)})

    def pause(self) -> None:
        self._paused = True
        if self.id is not None:
            self._request("POST", f"/sessions/{self.id}/pause")

    def resume(self) -> None:
        self._paused = False
        if self.id is not None:
            self._request("POST", f"/sessions/{self.id}/resume")

    def stop(self) -> None:
        self._paused = False
        if self.id is not None:
            try:
                self._request("POST", f"/sessions/{self.id}/stop")
            except ServerLost:
                pass  # nothing left to stop

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def has_model(self) -> bool:
        return self.id is not None

    def close(self) -> None:
        """End the session on the server (its model is gone with it: fetch it first with save)."""
        if self.id is not None:
            try:
                self._request("DELETE", f"/sessions/{self.id}")
            except (ServerLost, InputError):
                pass
        self._http.close()
