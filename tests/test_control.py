"""WebSocket control of `genrestream run --control`: the token, the loopback rule, what sources may be added.

Every test starts a real ``genrestream run`` subprocess on a loopback port and
talks to it with a real WebSocket client; http sources come from a real HTTP
server on loopback (``http_server``), files from ../shared/audio/free.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import FREE_AUDIO, REPO, free_port, genrestream_cmd, needs_shared

LONG = FREE_AUDIO / "drumandbass_admiral_bob_choice.ogg"  # 25 s
REFUSED = "control: missing or wrong token"
TOKEN_ENV = "GENRESTREAM_CONTROL_TOKEN"


def _env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return env


class Client:
    """A WebSocket client of the server that keeps every message it received, as text."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.raw: list[str] = []

    def until(self, predicate, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            self.raw.append(text)
            event = json.loads(text)
            if predicate(event):
                return event
        raise AssertionError("timed out")

    def control(self, **message) -> dict:
        """Send one control message and return its control_result (replies come in order, one per message)."""
        self.ws.send(json.dumps({"type": "control", **message}))
        return self.until(lambda e: e["type"] == "control_result")

    def status(self, stream: str, state: str) -> dict:
        return self.until(lambda e: e["type"] == "status" and e["stream"] == stream and e["state"] == state)


@contextmanager
def running(tmp_path: Path, *args: str, env: dict[str, str]):
    """``genrestream run --control ... ARGS`` on a free loopback port; yields (client, output).

    ``output`` is filled on exit with the process's stdout + stderr (files, not
    pipes: ``-vv`` writes more than a pipe holds), after SIGINT and exit 0.
    """
    from websockets.sync.client import connect

    port = free_port()
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    output: dict[str, str] = {}
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(genrestream_cmd("-vv", "run", "--control", "--jsonl", "--port", str(port), *args),
                                cwd=REPO, stdout=out, stderr=err, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ws = connect(f"ws://127.0.0.1:{port}/ws", open_timeout=2)
                    break
                except OSError:
                    assert proc.poll() is None, err_path.read_text()
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.2)
            output["proc"] = proc  # for signals (SIGHUP)
            with ws:
                yield Client(ws), output
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, err_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output["stdout"], output["stderr"] = out_path.read_text(), err_path.read_text()


@needs_shared
def test_token_is_required_checked_and_never_shown(tmp_path, http_server):
    token = "tok-" + secrets.token_urlsafe(16)
    url = http_server.route("/live/dnb.ogg", LONG.read_bytes())
    gate = threading.Event()
    http_server.hold_audio_until(gate)  # the stream stays running (connecting) until it is removed
    add = {"action": "add", "stream": "x", "source": url}
    try:
        with running(tmp_path, "--control-token", token, env=_env()) as (client, output):
            # Missing, wrong and non-string tokens: refused, same words, nothing added.
            for bad in ({}, {"token": token + "x"}, {"token": token[:-1]}, {"token": ""}, {"token": 123},
                        {"token": None}, {"token": [token]}):
                reply = client.control(**add, **bad)
                assert reply["ok"] is False and reply["detail"] == REFUSED, (bad, reply)
                assert "token" not in reply["request"], reply
            reply = client.control(action="remove", stream="x", token=token)
            assert reply["ok"] is False and "no running stream 'x'" in reply["detail"], reply  # x was never added
            assert not any(json.loads(t).get("stream") == "x" for t in client.raw)

            # The right token adds x (an http source); a wrong one cannot remove it; the right one does.
            reply = client.control(**add, token=token)
            assert reply["ok"] is True and reply["detail"] == "added x", reply
            assert reply["request"] == {"type": "control", **add}
            client.status("x", "connecting")
            reply = client.control(action="remove", stream="x", token="guess")
            assert reply["ok"] is False and reply["detail"] == REFUSED
            reply = client.control(action="remove", stream="x", token=token)
            assert reply["ok"] is True and reply["detail"] == "removed x", reply
            assert [json.loads(t)["detail"] for t in client.raw
                    if json.loads(t)["type"] == "status" and json.loads(t)["state"] == "ended"] == ["removed"]

            # Without --control-allow-files only http(s) sources may be added, even with the token.
            for source, kind in ((str(LONG), "a file path"), (LONG.as_uri(), "a file:// URL"), ("mic", "a microphone"),
                                 ("mic:0", "a microphone"), ("ftp://127.0.0.1/a.ogg", "a ftp:// URL")):
                reply = client.control(action="add", stream="f", source=source, token=token)
                assert reply["ok"] is False, reply
                assert kind in reply["detail"] and "--control-allow-files" in reply["detail"], reply
            reply = client.control(action="remove", stream="f", token=token)
            assert "no running stream 'f'" in reply["detail"], reply

            # A short message, which websockets' DEBUG frame log would show whole.
            client.ws.send(json.dumps({"type": "control", "token": token}))
            reply = client.until(lambda e: e["type"] == "control_result")
            assert reply["ok"] is False and "'stream' (the stream id) is required" in reply["detail"], reply
    finally:
        gate.set()

    assert token not in "".join(client.raw)
    assert "control: added stream x" in output["stderr"]  # the log is there, and at DEBUG level
    assert "DEBUG" in output["stderr"]
    assert token not in output["stdout"] and token not in output["stderr"]


@needs_shared
def test_token_from_the_environment_and_files_allowed(tmp_path):
    token = "env-" + secrets.token_urlsafe(16)
    with running(tmp_path, "--control-allow-files", "--realtime", env=_env(token)) as (client, output):
        reply = client.control(action="add", stream="a", source=str(LONG))
        assert reply["ok"] is False and reply["detail"] == REFUSED
        reply = client.control(action="add", stream="a", source=str(LONG), token=token)
        assert reply["ok"] is True, reply
        client.status("a", "playing")
        reply = client.control(action="add", stream="b", source=LONG.as_uri(), token=token)
        assert reply["ok"] is True, reply
        client.status("b", "playing")
        for stream in ("a", "b"):
            assert client.control(action="remove", stream=stream, token=token)["ok"] is True
    assert token not in "".join(client.raw)
    assert token not in output["stdout"] and token not in output["stderr"]


@needs_shared
def test_loopback_without_token_needs_none(tmp_path):
    """No token on loopback: control works as before (``localhost`` counts as loopback)."""
    with running(tmp_path, "--host", "localhost", "--control-allow-files", "--realtime",
                 env=_env("")) as (client, _):  # an empty token counts as none
        reply = client.control(action="add", stream="a", source=str(LONG))
        assert reply["ok"] is True, reply
        client.status("a", "playing")
        assert client.control(action="remove", stream="a")["ok"] is True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "radio.example", ""])
@pytest.mark.parametrize("token", [None, ""])
def test_control_beyond_loopback_without_token_refuses_to_start(host, token):
    done = subprocess.run(genrestream_cmd("run", "--control", "--host", host, "--port", str(free_port())),
                          cwd=REPO, capture_output=True, text=True, env=_env(token), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--control-token" in done.stderr and TOKEN_ENV in done.stderr, done.stderr
    assert "needs a token" in done.stderr and "loopback" in done.stderr, done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    from stream.cli import _is_loopback

    assert _is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.1", "localhost.example", "::ffff:8.8.8.8"])
def test_not_loopback_hosts(host):
    from stream.cli import _is_loopback

    assert not _is_loopback(host)
