"""Publishers that take events from the engine: JSON lines, Redis, a list.

``publish`` never blocks the engine: a publisher that talks to the network
queues the event and sends it from a task of its own. The WebSocket publisher
lives in :mod:`stream.server` with the server it belongs to.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from typing import Any, TextIO

from . import events

log = logging.getLogger(__name__)

CHANNEL = "genrestream:events"
"""Redis Pub/Sub channel for every event; ``CHANNEL:<stream>`` carries one stream's."""
STREAM_KEY = "genrestream:events"
"""Redis stream (XADD) of genre_change and status events."""
CURRENT_KEY = "genrestream:current"
"""Redis hash: stream id → its latest genre_change event (JSON)."""
STREAM_MAXLEN = 10000


class JsonLinesPublisher:
    """Writes every event as one JSON object per line (``--jsonl``).

    Parameters
    ----------
    out : text file
        Where to write; standard output by default.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    async def start(self) -> None:
        pass

    def publish(self, event: dict[str, Any]) -> None:
        self.out.write(events.dumps(event) + "\n")
        self.out.flush()

    async def close(self) -> None:
        self.out.flush()


class CollectingPublisher:
    """Keeps every event in :attr:`events` (offline classification, tests)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def start(self) -> None:
        pass

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def close(self) -> None:
        pass


class RedisPublisher:
    """Publishes events to Redis with redis-py's asyncio client.

    For every event: ``PUBLISH genrestream:events`` and
    ``PUBLISH genrestream:events:<stream>``. For ``genre_change`` and
    ``status`` events also ``XADD genrestream:events MAXLEN ~ 10000`` (field
    ``event``: the JSON). For ``genre_change`` also ``HSET genrestream:current
    <stream> <json>``.

    Redis being down does not stop classification: events wait in a bounded
    queue (the oldest are dropped, and counted, when it is full), the failure
    is logged once per outage and counted, and the sender retries with
    exponential backoff up to ``max_backoff_s``. Nothing is lost while the
    queue has room.

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    max_queue : int
        Events kept while Redis is unreachable.
    max_backoff_s : float
        Longest wait between reconnection attempts, in seconds.
    metrics : stream.metrics.EngineMetrics or None
        Where to record publish latency (queued → sent).

    Attributes
    ----------
    sent, failures, dropped : int
        Events sent; failed attempts; events dropped from a full queue.
    """

    def __init__(self, url: str, max_queue: int = 10000, max_backoff_s: float = 5.0, metrics=None) -> None:
        self.url = url
        self.metrics = metrics
        self.max_backoff_s = max_backoff_s
        self._queue: deque[dict[str, Any]] = deque()
        self._max_queue = int(max_queue)
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._client = None
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self.publish_latency_s: deque[float] = deque(maxlen=10000)

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(
            self.url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=30
        )
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._sender(), name="redis-publisher")

    def publish(self, event: dict[str, Any]) -> None:
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append({"event": event, "queued": time.monotonic()})
        if self._ready is not None:
            self._ready.set()

    async def _send(self, event: dict[str, Any]) -> None:
        payload = events.dumps(event)
        stream = event.get("stream", "")
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.publish(CHANNEL, payload)
            pipe.publish(f"{CHANNEL}:{stream}", payload)
            if event.get("type") in ("genre_change", "status"):
                pipe.xadd(STREAM_KEY, {"event": payload}, maxlen=STREAM_MAXLEN, approximate=True)
            if event.get("type") == "genre_change":
                pipe.hset(CURRENT_KEY, stream, payload)
            await pipe.execute()

    async def _sender(self) -> None:
        import redis.exceptions

        assert self._ready is not None
        backoff = 0.1
        down = False
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            item = self._queue[0]
            try:
                await self._send(item["event"])
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                self.failures += 1
                if not down:
                    log.warning("redis %s unreachable (%s); queueing events and retrying", self.url, exc)
                    down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except redis.exceptions.RedisError as exc:
                self.failures += 1
                log.error("redis refused a %s event, dropping it: %s", item["event"].get("type"), exc)
                self._queue.popleft()
                self.dropped += 1
                continue
            if down:
                log.info("redis %s reachable again; %d events queued", self.url, len(self._queue))
                down = False
            backoff = 0.1
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
            self.sent += 1
            latency_s = time.monotonic() - item["queued"]
            self.publish_latency_s.append(latency_s)
            if self.metrics is not None:
                self.metrics.publish_latency.labels("redis").observe(latency_s)

    async def close(self, timeout_s: float = 3.0) -> None:
        """Send what is queued (for at most ``timeout_s`` seconds), then disconnect."""
        deadline = time.monotonic() + timeout_s
        while self._queue and self._task is not None and not self._task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._queue:
            log.warning("redis: %d events not sent at shutdown", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.aclose()
