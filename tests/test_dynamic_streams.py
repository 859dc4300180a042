"""Streams added and removed while `genrestream run` runs: config reload and WebSocket control."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

from tests.conftest import FREE_AUDIO, REPO, free_port, genrestream_cmd, needs_shared

pytestmark = needs_shared

LONG = FREE_AUDIO / "drumandbass_admiral_bob_choice.ogg"  # 25 s
SHORT = FREE_AUDIO / "jazz_solo_trumpet_loop.ogg"  # 5.3 s


def _stream_toml(**streams: str) -> str:
    return "".join(f'[[streams]]\nname = "{name}"\nsource = "{source}"\n\n' for name, source in streams.items())


def _until(ws, predicate, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if predicate(event):
            return event
    raise AssertionError("timed out")


def test_config_reload_and_control_messages(tmp_path):
    from websockets.sync.client import connect

    config = tmp_path / "streams.toml"
    config.write_text(_stream_toml(a=str(LONG)))
    port = free_port()
    proc = subprocess.Popen(
        genrestream_cmd("run", "--config", str(config), "--config-poll-s", "0.2", "--control", "--realtime",
                        "--control-allow-files", "--port", str(port)),  # c below is a file
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/ws", open_timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        with ws:
            _until(ws, lambda e: e["type"] == "status" and e["stream"] == "a" and e["state"] == "playing")
            _until(ws, lambda e: e["type"] == "prediction" and e["stream"] == "a", timeout_s=30)

            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert 'genrestream_windows_total{stream="a"}' in metrics
            assert "genrestream_streams 1.0" in metrics
            assert "genrestream_inference_batch_size_bucket" in metrics
            assert 'genrestream_stream_lag_seconds{stream="a"}' in metrics
            time.sleep(1.5)  # the shares are over the time since the previous scrape (at least 1 s)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
            assert 0 < float(values["genrestream_cpu_share"]) <= 1, values["genrestream_cpu_share"]
            assert 0 < float(values["genrestream_inference_busy_share"]) < 1, values["genrestream_inference_busy_share"]
            assert float(values["genrestream_cpu_seconds_total"]) > 0

            # The file changes: a goes, b comes.
            config.write_text(_stream_toml(b=str(SHORT)))
            ended = _until(ws, lambda e: e["type"] == "status" and e["stream"] == "a" and e["state"] == "ended")
            assert ended["detail"] == "removed"
            _until(ws, lambda e: e["type"] == "status" and e["stream"] == "b" and e["state"] == "playing")

            # A control message adds c, another removes it.
            ws.send(json.dumps({"type": "control", "action": "add", "stream": "c", "source": str(LONG)}))
            reply = _until(ws, lambda e: e["type"] == "control_result")
            assert reply["ok"] is True, reply
            _until(ws, lambda e: e["type"] == "status" and e["stream"] == "c" and e["state"] == "playing")
            ws.send(json.dumps({"type": "control", "action": "remove", "stream": "c"}))
            removed = _until(ws, lambda e: e["type"] == "status" and e["stream"] == "c" and e["state"] == "ended")
            assert removed["detail"] == "removed"
            reply = _until(ws, lambda e: e["type"] == "control_result")
            assert reply["ok"] is True

            # Bad control messages get a clear refusal, and the server carries on.
            ws.send(json.dumps({"type": "control", "action": "explode", "stream": "b"}))
            assert "unknown action" in _until(ws, lambda e: e["type"] == "control_result")["detail"]
            ws.send("not json")
            assert _until(ws, lambda e: e["type"] == "control_result")["ok"] is False

            # A broken config is refused and the running streams stay.
            config.write_text("[[streams]\n")
            time.sleep(1.0)
            assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "keeping the running streams" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
