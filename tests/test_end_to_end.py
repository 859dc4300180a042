"""`genrestream run` end to end with real parts on loopback.

A real clip served over HTTP, the real console script, a real WebSocket
client, a real redis-server started by the tests and a real Redis subscriber.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

from tests.conftest import FREE_AUDIO, REPO, free_port, genrestream_cmd, needs_shared, window_ends_s

pytestmark = needs_shared

CLIP = FREE_AUDIO / "metal_el_senator_chaos_god.ogg"  # 45 s, 44.1 kHz stereo; the default model is sure it is metal


def _expected_window_ends_s() -> list[float]:
    from stream.model import GenreModel

    return window_ends_s(GenreModel(), CLIP)


def _wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), b""


def test_run_http_clip_to_websocket_redis_and_dashboard(http_server, redis_server):
    import redis
    from websockets.sync.client import connect

    url = http_server.route("/live/dnb.ogg", CLIP.read_bytes())
    gate = threading.Event()
    http_server.hold_audio_until(gate)  # the source waits until our clients are listening
    port = free_port()

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushall()
    pubsub = r.pubsub()
    pubsub.subscribe("genrestream:events", "genrestream:events:dnb")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    proc = subprocess.Popen(
        genrestream_cmd("run", url, "--name", "dnb", "--port", str(port), "--redis-url", redis_server, "--hop-s", "1"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(base + "/healthz")

        # The dashboard and its assets are served by the same process.
        status, ctype, body = _get(base + "/")
        assert status == 200 and ctype.startswith("text/html") and b"app.js" in body
        for asset, kind in (("/app.js", "javascript"), ("/style.css", "text/css")):
            status, ctype, body = _get(base + asset)
            assert status == 200 and kind in ctype and body, asset
        assert _get(base + "/no-such-file.js")[0] == 404
        assert _get(base + "/../pyproject.toml")[0] == 404

        received: list[dict] = []
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            gate.set()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                try:
                    event = json.loads(ws.recv(timeout=30))
                except TimeoutError:
                    break
                received.append(event)
                if event["type"] == "status" and event["state"] in ("ended", "failed"):
                    break
        rc = proc.wait(timeout=60)
        stderr = proc.stderr.read()
        assert rc == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # -- WebSocket -------------------------------------------------------------
    assert all(e["schema"] == 1 for e in received)
    states = [e["state"] for e in received if e["type"] == "status"]
    assert "playing" in states and states[-1] == "ended", states
    predictions = [e for e in received if e["type"] == "prediction"]
    # 45 s of audio: windows at exact positions (the default model: 3.008 s windows, the 1 s hop snapped to 1.008 s)
    assert [p["stream_time_s"] for p in predictions] == _expected_window_ends_s()
    # fresh source statistics ride on predictions every 10 s of stream time (status events come only at changes)
    with_stats = [p["stream_time_s"] for p in predictions if "stats" in p]
    assert with_stats[0] == predictions[0]["stream_time_s"] and len(with_stats) >= 2
    assert all(10.0 <= b - a < 11.1 for a, b in zip(with_stats, with_stats[1:])), with_stats
    last = [p for p in predictions if "stats" in p][-1]
    assert last["stats"]["seconds_decoded"] >= with_stats[-1] and last["stats"]["bytes_read"] > 0
    for p in predictions:
        assert p["stream"] == "dnb"
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-3
        assert p["genre"] == max(p["probabilities"], key=p["probabilities"].get)
        assert "smoothed" in p
    changes = [e for e in received if e["type"] == "genre_change"]
    assert changes, "no genre_change received"
    first = changes[0]
    assert first["previous"] == "unknown" and first["onset_s"] == 0.0
    assert first["model"].startswith("musicnn-msd@")
    assert first["wall_time"].endswith("Z") and "T" in first["wall_time"]
    assert {"genre", "confidence", "probabilities", "stream_time_s"} <= set(first)

    # -- Redis -----------------------------------------------------------------
    published: dict[str, list[dict]] = {"genrestream:events": [], "genrestream:events:dnb": []}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None:
            if len(published["genrestream:events"]) >= len(received):
                break
            continue
        if message["type"] == "message":
            published[message["channel"]].append(json.loads(message["data"]))
    assert len(published["genrestream:events"]) == len(published["genrestream:events:dnb"])
    ws_kinds = [(e["type"], e.get("stream_time_s"), e.get("state")) for e in received]
    redis_kinds = [(e["type"], e.get("stream_time_s"), e.get("state")) for e in published["genrestream:events"]]
    assert redis_kinds[-len(ws_kinds):] == ws_kinds or ws_kinds == redis_kinds[: len(ws_kinds)], (
        "Redis Pub/Sub and WebSocket saw different events"
    )

    entries = r.xrange("genrestream:events")
    kinds = [json.loads(fields["event"])["type"] for _, fields in entries]
    assert set(kinds) == {"status", "genre_change"}, kinds
    assert kinds.count("genre_change") == len(changes)
    current = json.loads(r.hget("genrestream:current", "dnb"))
    assert current["type"] == "genre_change" and current == {**changes[-1], "wall_time": current["wall_time"]}


def test_failing_sources_are_reported_and_the_good_one_carries_on(http_server):
    good = http_server.route("/good.ogg", CLIP.read_bytes())
    html = http_server.route("/page.ogg", b"<!doctype html><html><body>" + b"<p>radio</p>" * 500 + b"</body></html>",
                             content_type="text/html")
    missing = f"http://127.0.0.1:{http_server.port}/gone.mp3"
    refused = f"http://127.0.0.1:{free_port()}/stream.mp3"
    proc = subprocess.run(
        genrestream_cmd("run", good, html, missing, refused, "/no/such/file.ogg", "mic:no-such-device-xyz",
                        "--no-server", "--jsonl"),
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, "a failed stream makes the exit status non-zero"
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    final = {}
    for e in events:
        if e["type"] == "status":
            final[e["source"]] = e
    assert final[good]["state"] == "ended"
    assert sum(1 for e in events if e["type"] == "prediction" and e["stream"] == final[good]["stream"]) == len(
        _expected_window_ends_s())
    expectations = {
        html: "not audio",
        missing: "404",
        refused: "refused",
        "/no/such/file.ogg": "no such file",
        "mic:no-such-device-xyz": "device",
    }
    for source, reason in expectations.items():
        assert final[source]["state"] == "failed", (source, final[source])
        assert source in final[source]["detail"] and reason in final[source]["detail"], final[source]["detail"]
        assert final[source]["stats"]["last_error"]
        assert source in proc.stderr


def test_redis_down_does_not_stop_classification():
    port = free_port()  # nothing listens here
    proc = subprocess.run(
        genrestream_cmd("run", str(CLIP), "--no-server", "--jsonl", "--redis-url", f"redis://127.0.0.1:{port}/0"),
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sum(1 for e in events if e["type"] == "prediction") == len(_expected_window_ends_s())
    assert "unreachable" in proc.stderr
    assert proc.stderr.count("unreachable") == 1, "one log line per outage, not one per event"
