"""`genrestream dashboard`: the dashboard served from Redis alone, with real parts.

A real redis-server of the tests', the real console scripts (`genrestream run
--redis-url` fills Redis, then `genrestream dashboard` serves it), real
PUBLISH messages from a service of our own, and the dashboard in Debian's
Chromium through Playwright. tests/test_cluster.py also uses
:func:`serve_dashboard` against a running cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FREE_AUDIO, REPO, free_port, genrestream_cmd, needs_shared

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CLIPS = {"brahms": "classical_brahms_hungarian_dance_5.ogg", "whale": "nature_humpback_whale.ogg"}


@contextlib.contextmanager
def serve_dashboard(redis_url: str, timeout_s: float = 30.0):
    """Run ``genrestream dashboard`` on a free loopback port; yields its URL; SIGTERM must end it with 0."""
    port = free_port()
    proc = subprocess.Popen(genrestream_cmd("dashboard", "--redis-url", redis_url, "--port", str(port)),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"genrestream dashboard did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("genrestream dashboard did not stop on SIGTERM") from None
    assert proc.returncode == 0, stderr[-2000:]


def _event(kind: str, stream: str, seq: int, **fields) -> dict:
    from stream import events

    if kind == "status":
        event = events.status(stream, fields.pop("state"), fields.pop("detail", ""), **fields)
    else:
        labels = ["blues", "jazz"]
        event = events.genre_change(stream, fields.pop("genre"), fields.pop("previous", "unknown"), 0.9, labels,
                                    [0.1, 0.9], 1.0, 3.0, "external@1", **fields)
    return {**event, "seq": seq, "id": f"{stream}:{seq}", "worker": "elsewhere"}


@needs_shared
def test_dashboard_from_redis_alone_snapshot_then_live(redis_server):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import redis

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushall()
    # A `run` that has come and gone: what it left in Redis is all the dashboard has.
    args = ["run", "--redis-url", redis_server, "--no-server", "--model", "gtzan-mlp"]
    for name in CLIPS:
        args += ["--name", name]
    args += [str(FREE_AUDIO / clip) for clip in CLIPS.values()]
    subprocess.run(genrestream_cmd(*args), cwd=REPO, check=True, capture_output=True, timeout=120)
    current = {name: json.loads(v) for name, v in r.hgetall("genrestream:current").items()}
    assert set(current) == set(CLIPS), current

    with serve_dashboard(redis_server) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            sync_api.expect(page.locator("#connection")).to_have_text("connected", timeout=10_000)
            for name in CLIPS:
                card = page.locator(f'[data-stream="{name}"]')
                sync_api.expect(card).to_have_count(1, timeout=10_000)
                sync_api.expect(card.locator(".genre")).to_have_text(current[name]["genre"])
                sync_api.expect(card.locator(".state")).to_have_text("ended")
            # Live: another service publishes our events; its stream appears.
            r.publish("genrestream:events", json.dumps(_event("status", "outside", 10, state="playing",
                                                              detail="from another service")))
            r.publish("genrestream:events", json.dumps(_event("genre_change", "outside", 11, genre="jazz")))
            card = page.locator('[data-stream="outside"]')
            sync_api.expect(card.locator(".state")).to_have_text("playing", timeout=10_000)
            sync_api.expect(card.locator(".genre")).to_have_text("jazz")
            sync_api.expect(page.locator("[data-stream]")).to_have_count(3)
            page.screenshot(path="/tmp/dashboard_redis.png")
            assert errors == []
        finally:
            browser.close()


async def test_feed_snapshot_order_and_duplicates_dropped(redis_server):
    """The feed's own logic against the real Redis: snapshot from the hash and the stream, then live, by id."""
    import redis.asyncio as aioredis

    from stream import events
    from stream.publishers import RedisPublisher
    from stream.redis_dashboard import RedisFeed

    class Server:  # what the feed needs of an EventServer
        def __init__(self) -> None:
            self.states = events.StreamStates()
            self.published: list[dict] = []

        def publish(self, event: dict) -> None:
            self.published.append(event)

    client = aioredis.from_url(redis_server, decode_responses=True)
    await client.flushall()
    publisher = RedisPublisher(redis_server)
    await publisher.start()
    for event in (_event("status", "a", 1, state="connecting"), _event("status", "a", 2, state="playing"),
                  _event("genre_change", "a", 3, genre="jazz"), _event("status", "b", 5, state="playing")):
        publisher.publish(event)
    await publisher.close()

    server = Server()
    feed = RedisFeed(redis_server, server)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.ready.wait(), 10)
        a = server.states.current("a")
        assert a["status"]["state"] == "playing" and a["genre_change"]["genre"] == "jazz"
        assert server.states.current("b")["status"]["seq"] == 5
        server.published.clear()
        stale = _event("status", "a", 2, state="playing")
        fresh = _event("status", "a", 4, state="reconnecting")
        for event in (stale, fresh, fresh):
            await client.publish("genrestream:events", json.dumps(event))
        deadline = time.monotonic() + 10
        while len(server.published) < 1 or feed.duplicates < 2:
            assert time.monotonic() < deadline, (server.published, feed.duplicates)
            await asyncio.sleep(0.05)
        assert [e["id"] for e in server.published] == ["a:4"]
        assert server.states.current("a")["status"]["state"] == "reconnecting"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
