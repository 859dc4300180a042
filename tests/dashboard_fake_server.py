"""A stand-in for genrestream's dashboard server, for browser tests.

It serves :data:`dashboard.STATIC_DIR` over HTTP and a WebSocket at ``/ws`` on
one host and port, like the real server, and sends scripted events in the real
event schema (schema 1). Like the real server it remembers the latest
status, metadata, genre_change and prediction of every stream and sends them
to each client that connects, before any live event.

It runs its own asyncio event loop in a background thread, so synchronous tests
(for example with Playwright's sync API) can drive it::

    with FakeDashboardServer() as server:
        server.send(status("radio1", "playing"))
        ...  # point a browser at server.url
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import mimetypes
import threading
from collections import defaultdict
from http import HTTPStatus
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dashboard import STATIC_DIR

GTZAN_LABELS = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

Event = Mapping[str, Any]


# --------------------------------------------------------------- event helpers

def _wall(t: float) -> str:
    seconds = int(t)
    return f"2026-11-20T23:{(seconds // 60) % 60:02d}:{seconds % 60:02d}.000Z"


def probabilities(top: str, p: float = 0.8) -> dict[str, float]:
    """Probabilities over the GTZAN labels with ``p`` on ``top``, rest spread evenly."""
    rest = (1.0 - p) / (len(GTZAN_LABELS) - 1)
    return {label: (p if label == top else rest) for label in GTZAN_LABELS}


def content_probabilities(speech: float, other: float = 0.05) -> dict[str, float]:
    """A content head's output ({music, speech, other}: p) with ``speech`` and ``other``, music the rest."""
    if not (0.0 <= speech and 0.0 <= other and speech + other <= 1.0):
        raise ValueError(f"speech, other: expected non-negative with a sum <= 1, got {speech}, {other}")
    return {"music": round(1.0 - speech - other, 6), "speech": speech, "other": other}


def prediction(stream: str, t: float, smoothed: str, *, genre: str | None = None,
               confidence: float = 0.8, title: str | None = None,
               probs: Mapping[str, float] | None = None,
               content: Mapping[str, float] | None = None,
               tags: Sequence[tuple[str, float]] | None = None) -> dict[str, Any]:
    """A ``prediction`` event; ``content`` and ``tags`` (``[(tag, p), ...]``) as the new default model sends them."""
    top = genre or (smoothed if smoothed in GTZAN_LABELS else "rock")
    event: dict[str, Any] = {
        "schema": 1, "type": "prediction", "stream": stream, "stream_time_s": float(t),
        "probabilities": dict(probs) if probs is not None else probabilities(top, confidence),
        "genre": top, "smoothed": smoothed, "confidence": confidence, "wall_time": _wall(t),
    }
    if title is not None:
        event["title"] = title
    if content is not None:
        event["content"] = dict(content)
    if tags is not None:
        event["tags"] = [[tag, p] for tag, p in tags]   # JSON has no tuples: a list of [tag, p] pairs
    return event


def genre_change(stream: str, t: float, genre: str, previous: str, *, onset_s: float | None = None,
                 confidence: float = 0.7, content: Mapping[str, float] | None = None,
                 model: str = "gtzan-mlp@1") -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": 1, "type": "genre_change", "stream": stream, "genre": genre, "previous": previous,
        "confidence": confidence, "probabilities": probabilities(genre, confidence),
        "onset_s": float(t - 8.5 if onset_s is None else onset_s), "stream_time_s": float(t),
        "wall_time": _wall(t), "model": model,
    }
    if content is not None:
        event["content"] = dict(content)
    return event


def status(stream: str, state: str, detail: str = "", *, source: str | None = None,
           stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"schema": 1, "type": "status", "stream": stream, "state": state,
                             "detail": detail, "wall_time": _wall(0)}
    if source is not None:
        event["source"] = source
    if stats is not None:
        event["stats"] = dict(stats)
    return event


# ------------------------------------------------------------------ the server

class FakeDashboardServer:
    """Static files plus a scripted event WebSocket on 127.0.0.1, in a thread."""

    SNAPSHOT_TYPES = ("status", "metadata", "genre_change", "prediction")  # as stream.events.StreamStates

    def __init__(self, static_dir: Path = STATIC_DIR, host: str = "127.0.0.1") -> None:
        self.static_dir = Path(static_dir).resolve()
        self.host = host
        self.port: int | None = None
        self.accepting = True                     # False: /ws answers 503
        self.http_log: list[tuple[str, int]] = []  # (path, status) of plain HTTP requests
        self.connections = 0                      # WebSocket connections accepted so far
        self._latest: dict[str, dict[str, Event]] = defaultdict(dict)
        self._clients: dict[ServerConnection, asyncio.Queue[str | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle --
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "FakeDashboardServer":
        self._thread = threading.Thread(target=self._run, name="fake-dashboard-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake dashboard server did not start")
        if self._error is not None:
            raise RuntimeError("fake dashboard server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> "FakeDashboardServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, 0, process_request=self._process_request,
                         ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            for queue in self._clients.values():
                queue.put_nowait(None)

    # -- HTTP --
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            if not self.accepting:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not accepting\n")
            return None                           # proceed with the WebSocket handshake
        name = "index.html" if path == "/" else path.lstrip("/")
        target = (self.static_dir / name).resolve()
        if "/" in name or target.parent != self.static_dir or not target.is_file():
            self.http_log.append((path, 404))
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        body = target.read_bytes()
        ctype = CONTENT_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = Headers([
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ])
        self.http_log.append((path, 200))
        return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)

    # -- WebSocket --
    async def _handler(self, connection: ServerConnection) -> None:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        # Snapshot and registration happen without yielding, so no live event
        # can overtake or miss the snapshot.
        for stream in sorted(self._latest):
            for kind in self.SNAPSHOT_TYPES:
                event = self._latest[stream].get(kind)
                if event is not None:
                    queue.put_nowait(json.dumps(event))
        self._clients[connection] = queue
        self.connections += 1
        try:
            while (message := await queue.get()) is not None:
                await connection.send(message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(connection, None)
            await connection.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server loop and wait for its result."""
        assert self._loop is not None, "server not started"

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def _broadcast(self, messages: list[str], events: list[Event | None]) -> None:
        for event in events:
            if event is not None and event.get("type") in self.SNAPSHOT_TYPES and isinstance(event.get("stream"), str):
                self._latest[event["stream"]][event["type"]] = event
        for queue in self._clients.values():
            for message in messages:
                queue.put_nowait(message)

    # -- test API (call from any thread) --
    def send(self, *events: Event) -> None:
        """Remember ``events`` for later snapshots and send them to every client."""
        self._call(self._broadcast, [json.dumps(e) for e in events], list(events))

    def send_raw(self, *messages: str) -> None:
        """Send text frames verbatim (not remembered for snapshots)."""
        self._call(self._broadcast, list(messages), [])

    def load(self, events: Iterable[Event]) -> None:
        """Set the remembered state as if ``events`` had been sent, without sending."""
        def remember() -> None:
            for event in events:
                self._latest[event["stream"]][event["type"]] = event
        self._call(remember)

    def client_count(self) -> int:
        return self._call(len, self._clients)

    def wait_for_clients(self, n: int = 1, timeout: float = 5.0) -> None:
        import time
        deadline = time.monotonic() + timeout
        while self.client_count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} WebSocket client(s), have {self.client_count()}")
            time.sleep(0.02)

    def drop_clients(self) -> None:
        """Close every WebSocket connection (the server keeps running)."""
        def drop() -> None:
            for queue in self._clients.values():
                queue.put_nowait(None)
        self._call(drop)
