"""``genrestream dashboard``: the live dashboard, fed by Redis alone.

::

    genrestream dashboard --redis-url redis://HOST:6379/0 [--host 127.0.0.1] [--port 8765]

It serves what ``genrestream run`` serves (the dashboard's static files,
``/ws``, ``/healthz``, ``/metrics``: :class:`stream.server.EventServer`, so
the dashboard's JavaScript is the same), but its events come from Redis:

1. it subscribes to ``genrestream:events`` (PUBLISH), holding back what
   arrives meanwhile;
2. it reads the snapshot: ``HGETALL genrestream:current`` (the latest
   genre_change of every stream), then the newest ``--recent`` entries of the
   ``genrestream:events`` stream (XADD: genre_change and status), oldest
   first;
3. it then passes on the live messages, dropping any event it already has
   (by ``seq`` per stream, i.e. by ``id``).

So it serves a ``genrestream cluster``, a ``genrestream run --redis-url``,
or any service that publishes our events. When Redis goes away it keeps the
dashboard up, retries with backoff, and reads a fresh snapshot once Redis is
back. Needs no extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any, Sequence

from . import events
from .publishers import CHANNEL, CURRENT_KEY, STREAM_KEY

log = logging.getLogger("genrestream.dashboard")

RECENT_ENTRIES = 1000
"""XADD entries read for the snapshot, newest first (a status and a genre_change or two per stream)."""


def _decode(raw: Any) -> dict | None:
    """An event from a Redis value (bytes or str of JSON), or None if it is not one of ours."""
    try:
        event = json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("stream"), str) or "type" not in event:
        return None
    return event


class RedisFeed:
    """Feeds an :class:`stream.server.EventServer` (and its ``states``) from Redis.

    Parameters
    ----------
    url : str
        ``redis://host:port/db``.
    server : stream.server.EventServer
        Gets every new event through ``publish``; its ``states`` get the snapshot.
    recent : int
        XADD entries read for the snapshot.
    max_backoff_s : float
        Longest wait between reconnection attempts, in seconds.

    Attributes
    ----------
    received, duplicates, snapshots : int
        Live events passed on; events dropped as already seen; snapshots read.
    """

    def __init__(self, url: str, server, recent: int = RECENT_ENTRIES, max_backoff_s: float = 5.0) -> None:
        self.url = url
        self.server = server
        self.states: events.StreamStates = server.states
        self.recent = int(recent)
        self.max_backoff_s = max_backoff_s
        self._seq: dict[str, int] = {}  # stream -> highest seq seen
        self.received = 0
        self.duplicates = 0
        self.snapshots = 0
        self.ready = asyncio.Event()  # set once the first snapshot is in

    def _is_new(self, event: dict) -> bool:
        seq = event.get("seq")
        if not isinstance(seq, int):
            return True  # a publisher without ids: nothing to compare
        if seq <= self._seq.get(event["stream"], -1):
            return False
        self._seq[event["stream"]] = seq
        return True

    async def _snapshot(self, client) -> int:
        """HGETALL current, then the recent XADD entries oldest first, into ``states``; returns events taken."""
        taken = 0
        current = await client.hgetall(CURRENT_KEY)
        entries = await client.xrevrange(STREAM_KEY, count=self.recent) if self.recent > 0 else []
        backlog = [e for e in (_decode(v) for v in current.values()) if e is not None]
        for _, fields in reversed(entries):
            event = _decode(fields.get(b"event", fields.get("event")))
            if event is not None:
                backlog.append(event)
        backlog.sort(key=lambda e: (e.get("seq") if isinstance(e.get("seq"), int) else 0))
        for event in backlog:
            if self._is_new(event):
                self.states.update(event)
                taken += 1
        self.snapshots += 1
        return taken

    def _deliver(self, event: dict) -> None:
        if not self._is_new(event):
            self.duplicates += 1
            return
        self.states.update(event)
        self.server.publish(event)
        self.received += 1

    async def run(self) -> None:
        """Subscribe, snapshot, then pass live events on, for ever (reconnecting)."""
        import redis.asyncio as aioredis
        import redis.exceptions

        backoff = 0.2
        while True:
            client = aioredis.from_url(self.url, socket_connect_timeout=2.0, health_check_interval=30)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                # Subscribed first, snapshot second: what is published meanwhile waits in the subscription.
                taken = await self._snapshot(client)
                log.info("dashboard: snapshot of %d events (%d streams) from %s", taken,
                         len({e["stream"] for e in self.states.snapshot()}), self.url)
                for event in self.states.snapshot():  # clients connected before a reconnection catch up
                    self.server.publish(event)
                self.ready.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None or message.get("type") != "message":
                        continue
                    event = _decode(message["data"])
                    if event is not None:
                        self._deliver(event)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("dashboard: redis %s unreachable (%s); retrying in %.1f s", self.url, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is gone anyway
                    pass


async def serve(redis_url: str, host: str = "127.0.0.1", port: int = 8765, recent: int = RECENT_ENTRIES,
                stop: asyncio.Event | None = None) -> None:
    """Serve the dashboard from Redis until ``stop`` is set (or for ever).

    Raises
    ------
    OSError
        If the address is in use or not available.
    """
    from prometheus_client import CollectorRegistry

    from .server import EventServer

    server = EventServer(events.StreamStates(), host, port, registry=CollectorRegistry())
    await server.start()
    feed = RedisFeed(redis_url, server, recent=recent)
    task = asyncio.create_task(feed.run(), name="redis-feed")
    try:
        if stop is None:
            await task
        else:
            await stop.wait()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await server.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genrestream dashboard",
        description="Serve the live dashboard from Redis alone (genrestream:current, the genrestream:events stream, "
                    "then the live PUBLISH messages): for genrestream cluster, genrestream run --redis-url, or any "
                    "service that publishes genrestream events.")
    parser.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--recent", type=int, default=RECENT_ENTRIES,
                        help=f"XADD entries read for the snapshot (default {RECENT_ENTRIES})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``genrestream dashboard`` (registered under the entry-point group ``genrestream.commands``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.recent < 0:
        print(f"genrestream dashboard: --recent: expected 0 or more, got {args.recent}", file=sys.stderr)
        return 2

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await serve(args.redis_url, args.host, args.port, args.recent, stop)

    try:
        asyncio.run(_main())
    except OSError as exc:
        print(f"genrestream dashboard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0
