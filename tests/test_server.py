"""The training server on loopback, driven by a real HTTP and websocket client: tokens, isolation,
bad bodies, a whole remote session, a dropped connection, and the server killed mid-training."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from napari_semiseg.core.checkpoint import load_method
from napari_semiseg.core.errors import InputError
from napari_semiseg.core.remote_session import RemoteSession, ServerLost
from napari_semiseg.core.trainer import LabelUpdate
from napari_semiseg.core.wire import pack
from test_distributed import free_port
from test_engine import fast_config
from test_process_session import volume_args

TOKENS = ("token-of-a", "token-of-b")


def start_server(max_upload_mb=20, port=None):
    port = free_port() if port is None else port
    proc = subprocess.Popen([sys.executable, "-m", "napari_semiseg", "serve", "--port", str(port),
                             "--token", TOKENS[0], "--token", TOKENS[1], "--max-upload-mb", str(max_upload_mb)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/sessions", headers=auth(TOKENS[0])).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    output = proc.stdout.read()
    proc.stdout.close()
    raise RuntimeError(output)


def auth(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server():
    proc, url = start_server()
    yield proc, url
    proc.terminate()  # as Ctrl+C would: each run saves its model and ends
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        proc.stdout.close()


def test_every_request_needs_the_token_and_bad_bodies_are_refused_in_one_sentence(server):
    _, url = server
    for headers in ({}, auth("wrong"), {"Authorization": "Basic token-of-a"}):
        r = httpx.get(f"{url}/sessions", headers=headers)
        assert r.status_code == 401 and r.text == "A valid 'Authorization: Bearer TOKEN' header is required."
    assert httpx.get(f"{url}/sessions", headers=auth(TOKENS[0])).json() == []
    post = lambda body, **kw: httpx.post(f"{url}/sessions", content=body, headers=auth(TOKENS[0]), **kw)  # noqa: E731
    r = post(b"\x00garbage" * 100)
    assert r.status_code == 400 and "not a napari-semiseg message" in r.text
    r = post(b"x" * (21 * 2**20))  # above --max-upload-mb, refused from its declared length
    assert r.status_code == 413 and "larger than this server accepts" in r.text
    bomb = pack({}, image=np.zeros((64, 512, 1024), np.float32))  # 128 MiB of zeros, 130 kB compressed
    r = post(bomb)
    assert r.status_code == 400 and "would expand to 128 MiB" in r.text
    args = volume_args()
    r = post(pack({"config": {"unlabeled_dir": "/etc"}}, image=args["image"], labels=args["labels"],
                  labeled=np.array([1])))
    assert r.status_code == 400 and "server chooses unlabeled_dir itself" in r.text
    assert httpx.get(f"{url}/sessions", headers=auth(TOKENS[0])).status_code == 200  # none of it harmed the server


def test_a_remote_session_trains_takes_a_correction_streams_pseudo_labels_and_gives_its_model(server, tmp_path):
    _, url = server
    args = volume_args(n=6, size=40)
    session = RemoteSession(url, TOKENS[0], [args], fast_config(iterations=None, minutes=None, refresh_seconds=0.5,
                                                               first_refresh_seconds=0.2), focus=(0, 2))
    try:
        uploaded = session.bytes_up
        session.build()
        assert session.bytes_up - uploaded < args["image"].nbytes  # compressed
        assert session.check()[0]["id"] == session.id
        reports = session.reports()
        live = next(r for r in reports if r.slices is not None)
        assert live.slices.labels.shape[1:] == (40, 40) and 2 in live.slices.slices
        corrected = args["labels"].copy()
        corrected[3, 10:14, 10:14] = 1
        before = session.bytes_up
        session.send(LabelUpdate(corrected, {1, 3, 4}))
        assert session.wait_for_sends()
        assert session.bytes_up - before < corrected.nbytes / 2  # the changed slice only
        session.drop_connection()  # as a network failure would: reports go on after a reconnect
        after_drop = next(reports)
        assert after_drop.iteration >= live.iteration
        session.pause()
        next(r for r in reports if r.paused)
        method, meta = load_method(session.save(tmp_path / "model"))
        assert meta["n_classes"] == 3
        session.resume()
        session.stop()
        last = list(reports)[-1]
        assert last.finished and last.prediction[0].labels.shape == args["image"].shape
    finally:
        session.close()
    assert httpx.get(f"{url}/sessions", headers=auth(TOKENS[0])).json() == []


def test_one_client_cannot_see_or_stop_anothers_session(server):
    _, url = server
    session = RemoteSession(url, TOKENS[0], [volume_args()], fast_config(iterations=None, minutes=None))
    try:
        session.build()
        other = auth(TOKENS[1])
        assert httpx.get(f"{url}/sessions", headers=other).json() == []
        for method, path in (("GET", ""), ("POST", "/stop"), ("GET", "/model"), ("DELETE", "")):
            r = httpx.request(method, f"{url}/sessions/{session.id}{path}", headers=other)
            assert r.status_code == 404 and "no session" in r.text
        malformed = pack({"labeled": "abc"}, slices=np.array([0]), planes=np.zeros((1, 20, 20), np.uint8))
        r = httpx.post(f"{url}/sessions/{session.id}/labels", content=malformed, headers=auth(TOKENS[0]))
        assert r.status_code == 400 and "not a list of whole numbers" in r.text
        assert httpx.get(f"{url}/sessions/{session.id}", headers=auth(TOKENS[0])).json()["state"] != "failed"
    finally:
        session.stop()
        session.close()


def test_a_server_killed_mid_training_is_one_sentence_and_the_labels_are_untouched():
    proc, url = start_server()
    args = volume_args()
    labels = args["labels"].copy()
    session = RemoteSession(url, TOKENS[0], [args], fast_config(iterations=None, minutes=None, refresh_seconds=0.5,
                                                               first_refresh_seconds=0.2))
    reports = session.reports()
    next(reports)
    proc.kill()
    proc.wait(30)
    with pytest.raises(ServerLost, match="cannot be reached|was lost"):
        for _ in reports:
            pass
    proc.stdout.close()
    np.testing.assert_array_equal(args["labels"], labels)
    with pytest.raises(InputError):
        session.save("unused")


def test_a_restarted_server_is_reported_as_such():
    proc, url = start_server()
    session = RemoteSession(url, TOKENS[0], [volume_args()], fast_config(iterations=None, minutes=None))
    reports = session.reports()
    next(reports)
    proc.kill()
    proc.wait(30)
    proc.stdout.close()
    again, _ = start_server(port=int(url.rsplit(":", 1)[1]))  # the same address, none of its sessions
    try:
        with pytest.raises(ServerLost, match="no longer knows this session"):
            for _ in reports:
                pass
    finally:
        again.kill()
        again.wait(30)
        again.stdout.close()


def test_the_widget_trains_on_the_server_and_survives_losing_it(make_napari_viewer, fresh_notifications, qtbot,
                                                                 tmp_path):
    from gui_session import AXIS, WIDGET, click, notifications, paint_reference
    from napari_semiseg.napari.controller import PSEUDO

    proc, url = start_server()
    try:
        viewer = make_napari_viewer()
        viewer.open_sample("napari-semiseg", "hippocampus")
        _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", WIDGET)
        c = widget.controller
        widget.axis_spin.setValue(AXIS)
        widget.place_combo.setCurrentText("server")
        widget.server_url_edit.setText(url)
        widget.server_token_edit.setText("not-the-token")
        widget.batch_spin.setValue(4)
        widget.labeled_batch_spin.setValue(2)
        widget.refresh_spin.setValue(1)
        labels = viewer.layers["annotations"]
        paint_reference(labels, slices=(12, 21))
        click(widget, "train_button")
        qtbot.waitUntil(lambda: not c.running, timeout=30000)
        assert any("Bearer TOKEN" in e for e in notifications("error"))  # the wrong token, in one sentence

        widget.server_token_edit.setText(TOKENS[0])
        click(widget, "train_button")
        qtbot.waitUntil(lambda: c.state.slice_scores is not None, timeout=60000)
        assert viewer.layers[PSEUDO].data.any()  # pseudo-labels from the server
        sent = c.session.bytes_up
        paint_reference(labels, slices=(16,))  # a correction: one slice goes up
        qtbot.waitUntil(lambda: c.session.bytes_up > sent, timeout=10000)
        assert c.session.bytes_up - sent < labels.data.nbytes
        click(widget, "pause_button")
        qtbot.waitUntil(lambda: c.paused, timeout=10000)
        saved = c.save_model(tmp_path / "fetched")
        assert load_method(saved)[1]["method"] == "mean-teacher"
        click(widget, "pause_button")  # resume
        before = np.array(labels.data, copy=True)
        proc.kill()
        qtbot.waitUntil(lambda: not c.running, timeout=60000)
        error = notifications("error")[-1]
        assert "training server" in error and "labels are untouched" in error
        np.testing.assert_array_equal(labels.data, before)
        c.shutdown()
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
