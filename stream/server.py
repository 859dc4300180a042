"""One HTTP port for everything a browser or a subscriber needs.

``ws://HOST:PORT/ws``
    Every event, as JSON text, to every client. A client that connects is
    first sent the current state of every stream (its latest status,
    genre_change and prediction), then live events.
``http://HOST:PORT/``
    The dashboard (static files from :data:`dashboard.STATIC_DIR`).
``/healthz``
    ``ok``.
Client messages on ``/ws``
    ``{"type": "control", "action": "add", "stream": ID, "source": SOURCE}`` and
    ``{"type": "control", "action": "remove", "stream": ID}`` add and remove
    streams while running (``genrestream run --control``);
    ``{"type": "control", "action": "model", "path": NAME_OR_FILE}`` swaps the
    model (it takes over at each stream's next window; one that fails to
    load is refused and the old one stays); the reply is a
    ``control_result`` to that client. When the server has a control token,
    every control message carries it as ``"token"``; a missing or wrong one
    is refused and changes nothing. The token is never echoed nor logged.
``/metrics``
    Prometheus metrics (the engine's registry, see :mod:`stream.metrics`).

Built on websockets' asyncio server (websockets >= 14): plain HTTP requests
are answered from ``process_request`` before any WebSocket handshake.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from . import events

log = logging.getLogger(__name__)

LAGGING_CLIENT_BYTES = 256 * 1024
"""Unread bytes after which a WebSocket client is sent changes only, no predictions."""

DROP_CLIENT_BYTES = 2 * 1024 * 1024
"""Unread bytes after which a WebSocket client's connection is dropped."""


def _buffered_bytes(connection: ServerConnection) -> int:
    transport = getattr(connection, "transport", None)
    return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

WS_PATH = "/ws"

#: The refusal for a missing, wrong or non-string token: one message for all, so as not to help guessing.
TOKEN_REFUSED = "control: missing or wrong token"

# websockets logs every frame at DEBUG (``-vv``), control messages and their
# token included; with a token the server's connections log through this
# logger instead, which never goes below INFO.
# (A filter rather than a level, so that -q still silences its INFO lines.)
_quiet_ws_log = logging.getLogger(__name__ + ".websockets")
_quiet_ws_log.addFilter(lambda record: record.levelno >= logging.INFO)


def _static_dir() -> Path:
    from dashboard import STATIC_DIR

    return Path(STATIC_DIR)


def _response(status: int, reason: str, body: bytes, content_type: str, cache: str = "no-cache") -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, reason, headers, body)


class EventServer:
    """The WebSocket and dashboard server; also a publisher for the engine.

    Parameters
    ----------
    states : events.StreamStates
        The engine's record of every stream's latest events (sent to new clients).
    host : str
        Address to listen on (127.0.0.1 by default: loopback only).
    port : int
        TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    registry : prometheus_client.CollectorRegistry or None
        What ``/metrics`` serves; None for prometheus_client's default registry.
    on_control : async callable or None
        Handles ``{"type": "control", ...}`` messages from clients and returns
        the reply (a dict, sent back to that client only). None: control
        messages are refused. It is called with the request without its
        ``"token"``; a ValueError or KeyError it raises becomes ``ok: false``
        with the exception's text as ``detail``.
    control_token : str or None
        When set (non-empty), a control message is passed to ``on_control``
        only if its ``"token"`` equals this one (compared in constant time
        with :func:`hmac.compare_digest` on the UTF-8 bytes); otherwise the
        reply is ``ok: false``, detail :data:`TOKEN_REFUSED`. None or ``""``:
        no token is required. websockets' frame logging (DEBUG) is then
        off, since frames carry the token.

    Raises
    ------
    OSError
        From :meth:`start`, if the address is in use or not available.
    """

    def __init__(
        self, states: events.StreamStates, host: str = "127.0.0.1", port: int = 8765, registry=None, on_control=None,
        control_token: str | None = None,
    ) -> None:
        if control_token is not None and not isinstance(control_token, str):
            raise TypeError(f"control_token: expected a string or None, got {type(control_token).__name__}")
        self.states = states
        self.registry = registry
        self.on_control = on_control
        # surrogatepass: a token from the environment may hold undecodable bytes (surrogateescape)
        self._control_token = control_token.encode("utf-8", "surrogatepass") if control_token else None
        self.host = host
        self.port = port
        self.static_dir = _static_dir()
        self.clients: set[ServerConnection] = set()
        self._lagging: set[ServerConnection] = set()  # clients sent changes only, until they catch up
        self._server: Server | None = None
        self.sent = 0
        self.skipped = 0  # predictions not sent to lagging clients
        self.dropped = 0  # clients dropped for not reading

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=20,
            ping_timeout=20,
            max_size=2**16,
            **({"logger": _quiet_ws_log} if self._control_token is not None else {}),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        log.info("dashboard on %s, events on ws://%s:%d%s", self.url, self.host, self.port, WS_PATH)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _response(200, "OK", b"ok\n", "text/plain; charset=utf-8")
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

            return _response(200, "OK", generate_latest(self.registry or REGISTRY), CONTENT_TYPE_LATEST)
        name = "index.html" if path in ("", "/") else path.lstrip("/")
        target = (self.static_dir / name).resolve()
        if self.static_dir.resolve() not in target.parents or not target.is_file():
            return _response(404, "Not Found", b"not found\n", "text/plain; charset=utf-8")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript",):
            content_type += "; charset=utf-8"
        return _response(200, "OK", target.read_bytes(), content_type)

    async def _handler(self, connection: ServerConnection) -> None:
        # Snapshot and registration happen in one synchronous step, so the
        # client misses no event and gets none twice.
        for event in self.states.snapshot():
            broadcast([connection], events.dumps(event))
        self.clients.add(connection)
        try:
            async for message in connection:
                await connection.send(events.dumps(await self._control(message)))
        except ConnectionClosed as exc:  # a client that vanished or was too slow to answer pings: not an error here
            log.info("WebSocket client %s gone: %s", connection.remote_address, exc)
        finally:
            self.clients.discard(connection)
            self._lagging.discard(connection)

    def _token_ok(self, token: Any) -> bool:
        if self._control_token is None:
            return True
        if not isinstance(token, str):
            return False
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._control_token)

    async def _control(self, message: str | bytes) -> dict[str, Any]:
        """Answer one client message: ``{"type": "control", "action": ..., ...}``.

        The reply echoes the request as ``"request"``, without its ``"token"``.
        """
        try:
            request = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            return {"schema": events.SCHEMA, "type": "control_result", "ok": False, "detail": "expected a JSON object"}
        if not isinstance(request, dict) or request.get("type") != "control":
            return {"schema": events.SCHEMA, "type": "control_result", "ok": False,
                    "detail": 'expected {"type": "control", "action": "add" | "remove" | "model", ...}'}
        token = request.pop("token", None)
        if self.on_control is None:
            return {"schema": events.SCHEMA, "type": "control_result", "ok": False, "detail": "control is disabled"}
        if not self._token_ok(token):
            log.warning("control: refused a message with a missing or wrong token")
            return {"schema": events.SCHEMA, "type": "control_result", "request": request, "ok": False,
                    "detail": TOKEN_REFUSED}
        try:
            reply = await self.on_control(dict(request))
        except (ValueError, KeyError) as exc:
            reply = {"ok": False, "detail": str(exc)}
        return {"schema": events.SCHEMA, "type": "control_result", "request": request, **reply}

    # -- Publisher --------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        """Send an event to every client without waiting for any.

        A client that does not read keeps its events in the server's write
        buffer. Past :data:`LAGGING_CLIENT_BYTES` buffered, it is sent no more
        predictions (each is superseded by the next) but still every change,
        status and title; past :data:`DROP_CLIENT_BYTES` its connection is
        dropped at once (buffered events would be minutes old by the time it
        read them), so that it knows to reconnect, and gets a fresh snapshot.
        """
        if not self.clients:
            return
        text = events.dumps(event)
        prediction = event.get("type") == "prediction"
        receivers = []
        for connection in list(self.clients):
            buffered = _buffered_bytes(connection)
            if buffered > DROP_CLIENT_BYTES:
                log.warning("WebSocket client %s dropped: %d KiB of events unread", connection.remote_address,
                            buffered // 1024)
                self.clients.discard(connection)
                self.dropped += 1
                connection.transport.abort()
                continue
            if buffered > LAGGING_CLIENT_BYTES:
                if connection not in self._lagging:
                    self._lagging.add(connection)
                    log.info("WebSocket client %s is not keeping up: sending it changes only", connection.remote_address)
                if prediction:
                    self.skipped += 1
                    continue
            elif connection in self._lagging:
                self._lagging.discard(connection)
            receivers.append(connection)
        broadcast(receivers, text)
        self.sent += 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
