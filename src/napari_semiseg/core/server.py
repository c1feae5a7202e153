"""The training server (``napari-semiseg serve``): sessions on a machine with a GPU, driven over
HTTP and a websocket by the widget (core.remote_session) wherever the viewer runs.

Every request carries ``Authorization: Bearer TOKEN``; a missing or wrong token is answered 401
with one sentence. Each token is a client: it sees and controls only the sessions it started.
Bodies are compressed ``.npz`` messages (core.wire), size-checked before they are read and again
before they are inflated. Each session trains in its own child process (core.process_session), so
one session's crash or out-of-memory kill leaves the server and the other sessions running.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import queue
import secrets
import shutil
import tempfile
import threading
import zipfile
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from .errors import InputError
from .process_session import ProcessSession
from .label_sync import ChangedSlices, LabelCopy
from .trainer import TrainConfig
from .wire import SERVER_CHOOSES, pack, report_message, unpack

DEFAULT_MAX_UPLOAD_MB = 2048


class ServerSession:
    """One client's training run: the child process, the labels as the server has them, and the
    report stream fanned out to the client's websocket (a reconnecting one gets what follows)."""

    def __init__(self, sid: str, owner: str, volume: dict, config: TrainConfig, folder: Path, focus: int):
        self.id, self.owner, self.folder = sid, owner, folder
        self.labels = LabelCopy(volume["labels"], volume["axis"])  # as the client has them
        self.session = ProcessSession([volume], config, out_dir=folder / "model", focus=(0, focus))
        self.subscribers: list[queue.Queue] = []
        self.ending: list[tuple] = []  # the last messages (final report, or the failure), replayed to late subscribers
        self.state, self.iteration = "starting", 0
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, name=f"semiseg-session-{sid[:6]}", daemon=True).start()

    def _publish(self, message: tuple, final: bool = False) -> None:
        with self._lock:
            if final:
                self.ending.append(message)
            for q in self.subscribers:
                q.put(message)

    def _drain(self) -> None:
        try:
            for report in self.session.reports():
                self.iteration = report.iteration
                self.state = "finished" if report.finished else ("paused" if report.paused else "training")
                self._publish(report_message(report), final=report.finished)
        except Exception as err:  # noqa: BLE001 - the client hears of it in one sentence
            self.state = "failed"
            self._publish(({"error": str(err).split("\n")[0] or type(err).__name__}, None), final=True)

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        with self._lock:
            for message in self.ending:
                q.put(message)
            self.subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self.subscribers:
                self.subscribers.remove(q)

    def update_labels(self, slices: np.ndarray, planes: np.ndarray, labeled) -> None:
        """The changed slices only; the server's copy of the labels is completed and sent on."""
        self.session.send(self.labels.apply(ChangedSlices(slices, planes, labeled)))

    def summary(self) -> dict:
        return {"id": self.id, "state": self.state, "iteration": self.iteration}

    def idle(self, doing: str) -> bool:
        """True when the run has ended; False when it is paused; InputError while it trains."""
        ended = self.state in ("finished", "failed")
        if not (ended or self.session.paused):
            raise InputError(f"Pause or stop training before {doing}.")
        return ended

    def model_zip(self) -> bytes:
        """The model as a zip of its folder: saved now when paused, the last save when the run ended."""
        ended = self.idle("fetching the model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.folder / "model" if ended else self.session.save(Path(tmp) / "model")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(Path(folder).iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        z.write(f, f.name)
        return buf.getvalue()

    def close(self) -> None:
        self.session.stop()
        self.session.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _config_from(meta: dict) -> TrainConfig:
    given = meta.get("config") or {}
    if not isinstance(given, dict):
        raise InputError("config must be an object of training settings.")
    known = {f.name for f in fields(TrainConfig)}
    refused = sorted(set(given) & set(SERVER_CHOOSES))
    unknown = sorted(set(given) - known)
    if refused:
        raise InputError(f"The server chooses {', '.join(refused)} itself.")
    if unknown:
        raise InputError(f"Unknown training settings: {', '.join(unknown)}.")
    config = TrainConfig(**given)
    config.check()
    return config


def _volume_from(meta: dict, arrays: dict) -> tuple[dict, int]:
    image, labels, labeled = arrays.get("image"), arrays.get("labels"), arrays.get("labeled")
    if image is None or labels is None or labeled is None:
        raise InputError("A new session needs image, labels and labeled.")
    channels = bool(meta.get("channels", False))
    spatial = image.shape[:-1] if channels else image.shape
    if len(spatial) not in (2, 3) or labels.shape != spatial:
        raise InputError(f"The labels have shape {labels.shape}; the image's spatial shape is {spatial}.")
    if not np.issubdtype(image.dtype, np.number) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError("The image must hold numbers and the labels integers.")
    axis = int(meta.get("axis", 0)) if len(spatial) == 3 else 0
    if not 0 <= axis < len(spatial):
        raise InputError(f"axis {axis} does not exist.")
    volume = {"image": image, "labels": np.array(labels), "labeled": {int(i) for i in labeled.ravel()},
              "axis": axis, "channels": channels, "name": str(meta.get("name", "image"))[:200]}
    return volume, int(meta.get("focus", 0))


def create_app(tokens: list[str], *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, root: str | Path | None = None):
    if not tokens:
        raise InputError("The server needs at least one token.")
    max_bytes = int(max_upload_mb * 2**20)
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="semiseg-server-"))
    clients = {hashlib.sha256(t.encode()).hexdigest()[:16]: t for t in tokens}
    sessions: dict[str, ServerSession] = {}

    @asynccontextmanager
    async def lifespan(app):
        yield
        for s in list(sessions.values()):  # the server stops: each run saves its model and ends
            s.close()

    app = FastAPI(title="napari-semiseg training server", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)

    def client_of(authorization: str | None) -> str:
        """The client a bearer token names; 401 for anything else."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            for cid, token in clients.items():
                if hmac.compare_digest(given.encode(), token.encode()):
                    return cid
        raise HTTPException(401, "A valid 'Authorization: Bearer TOKEN' header is required.")

    def session_of(request_auth: str | None, sid: str) -> ServerSession:
        cid = client_of(request_auth)
        s = sessions.get(sid)
        if s is None or s.owner != cid:  # another client's session is as absent as a missing one
            raise HTTPException(404, f"There is no session {sid[:40]} of yours on this server.")
        return s

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            raise HTTPException(413, f"The body is larger than this server accepts ({max_upload_mb:.0f} MiB).")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"The body is larger than this server accepts ({max_upload_mb:.0f} MiB).")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.exception_handler(HTTPException)
    async def one_sentence(request, exc: HTTPException):
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    @app.exception_handler(InputError)
    async def bad_input(request, exc: InputError):
        return PlainTextResponse(str(exc), status_code=400)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    async def bad_request(request, exc):
        return PlainTextResponse("The request's parameters or contents are malformed.", status_code=400)

    @app.get("/sessions")
    def list_sessions(request: Request):
        cid = client_of(request.headers.get("authorization"))
        return [s.summary() for s in sessions.values() if s.owner == cid]

    @app.post("/sessions")
    async def start_session(request: Request):
        cid = client_of(request.headers.get("authorization"))
        meta, arrays = unpack(await body_of(request), max_bytes)
        config = _config_from(meta)
        volume, focus = _volume_from(meta, arrays)
        sid = secrets.token_urlsafe(12)
        folder = root / sid
        folder.mkdir(parents=True)
        s = await asyncio.to_thread(ServerSession, sid, cid, volume, config, folder, focus)
        sessions[sid] = s
        return JSONResponse({"id": sid}, status_code=201)

    @app.get("/sessions/{sid}")
    def get_session(sid: str, request: Request):
        return session_of(request.headers.get("authorization"), sid).summary()

    @app.post("/sessions/{sid}/labels")
    async def labels(sid: str, request: Request):
        s = session_of(request.headers.get("authorization"), sid)
        meta, arrays = unpack(await body_of(request), max_bytes)
        s.update_labels(arrays.get("slices", np.zeros(0, np.int64)), arrays.get("planes", np.zeros(0, np.uint8)),
                        meta.get("labeled") or [])
        return {"ok": True}

    @app.post("/sessions/{sid}/{command}")
    def control(sid: str, command: str, request: Request, slice: int | None = None, volume: int = 0):
        s = session_of(request.headers.get("authorization"), sid)
        if command == "focus" and slice is not None:
            s.session.focus(slice, volume)
        elif command in ("pause", "resume", "stop"):
            getattr(s.session, command)()
        else:
            raise HTTPException(404, f"Unknown command '{command[:40]}'.")
        return {"ok": True}

    @app.get("/sessions/{sid}/model")
    async def model(sid: str, request: Request):
        s = session_of(request.headers.get("authorization"), sid)
        return Response(await asyncio.to_thread(s.model_zip), media_type="application/zip")

    @app.get("/sessions/{sid}/prediction")
    async def prediction(sid: str, request: Request):
        s = session_of(request.headers.get("authorization"), sid)
        s.idle("asking for a whole prediction")
        p = (await asyncio.to_thread(s.session.predict))[0]
        return Response(pack({}, labels=p.labels, uncertainty=p.uncertainty, scores=p.slice_scores),
                        media_type="application/octet-stream")

    @app.delete("/sessions/{sid}")
    async def end_session(sid: str, request: Request):
        s = session_of(request.headers.get("authorization"), sid)
        sessions.pop(sid, None)
        await asyncio.to_thread(s.close)
        return {"ok": True}

    @app.websocket("/sessions/{sid}/reports")
    async def reports(websocket: WebSocket, sid: str):
        try:
            s = session_of(websocket.headers.get("authorization"), sid)
        except HTTPException as exc:
            await websocket.close(code=1008, reason=str(exc.detail))
            return
        await websocket.accept()
        q = s.subscribe()

        async def until_disconnected():  # the client sends nothing: a receive returns only when it leaves
            try:
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
            except Exception:  # noqa: BLE001 - gone either way
                pass

        gone = asyncio.create_task(until_disconnected())
        try:
            while not gone.done() and sid in sessions:
                try:
                    meta, payload = await asyncio.to_thread(q.get, True, 0.5)
                except queue.Empty:
                    continue
                await websocket.send_json(meta)
                if payload is not None:
                    await websocket.send_bytes(payload)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            gone.cancel()
            s.unsubscribe(q)

    return app


def serve(host: str = "127.0.0.1", port: int = 8765, tokens: list[str] | None = None, *,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None, announce=print) -> None:
    """Run the server until interrupted; a token is generated (and printed) when none is given."""
    import uvicorn

    tokens = list(tokens or [secrets.token_urlsafe(24)])
    scheme = "https" if ssl_certfile else "http"
    announce(f"napari-semiseg training server on {scheme}://{host}:{port}")
    for t in tokens:
        announce(f"token: {t}")
    uvicorn.run(create_app(tokens, max_upload_mb=max_upload_mb), host=host, port=port, log_level="warning",
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=10)
