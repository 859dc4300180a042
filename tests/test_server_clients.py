"""WebSocket clients that do not read: the server keeps its memory and the other clients their events.

A real EventServer on loopback, a real websockets client that reads, and a
client that completes the WebSocket handshake over a plain socket and then
never reads a byte.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

from stream import events
from stream.server import DROP_CLIENT_BYTES, EventServer


def _silent_client(port: int) -> socket.socket:
    """A WebSocket client that shakes hands and never reads again (a small receive buffer, so it fills soon)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)  # only the handshake's own bytes
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_a_client_that_does_not_read_is_sent_changes_only_then_dropped():
    from websockets.asyncio.client import connect

    labels = [f"g{i}" for i in range(10)]
    padding = "x" * 2000  # about 2.4 kB per prediction

    async def main():
        server = EventServer(events.StreamStates(), "127.0.0.1", 0)
        await server.start()
        silent = await asyncio.to_thread(_silent_client, server.port)  # its handshake needs this loop
        received: list[dict] = []
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", max_queue=None) as reader:
                async def read():
                    async for message in reader:
                        received.append(json.loads(message))

                reading = asyncio.create_task(read())
                while len(server.clients) < 2:
                    await asyncio.sleep(0.01)
                changes = 0
                sent_bytes = 0
                for k in range(6000):
                    event = events.prediction("s", k, labels, [0.1] * 10, "g1", 0.1, title=padding)
                    server.publish(event)
                    sent_bytes += len(events.dumps(event))
                    if k % 100 == 0:
                        server.publish(events.genre_change("s", labels[k % 10], "g0", 0.5, labels, [0.1] * 10,
                                                           k, k, "m@1"))
                        changes += 1
                    if k % 20 == 0:
                        await asyncio.sleep(0.001)
                lagging_before_drop = (server.skipped, server.dropped)
                # Changes alone are never skipped: a client that does not even take those is dropped.
                for k in range(2000):
                    event = events.genre_change("s", labels[k % 10], "g0", 0.5, labels, [0.1] * 10, k, k, "m@1",
                                                note=padding)
                    server.publish(event)
                    sent_bytes += len(events.dumps(event))
                    changes += 1
                    if k % 20 == 0:
                        await asyncio.sleep(0.001)
                await asyncio.sleep(1.0)
                reading.cancel()
        finally:
            silent.close()
            await server.close()
        return server, received, changes, sent_bytes, lagging_before_drop

    server, received, changes, sent_bytes, (skipped, dropped) = asyncio.run(main())
    assert sent_bytes > 4 * DROP_CLIENT_BYTES  # enough to fill any buffer the silent client has
    assert skipped > 0 and dropped == 0, "behind on predictions: sent changes only, still connected"
    assert server.dropped == 1, "the client that does not take even the changes is dropped"
    # The reading client missed nothing, predictions included.
    assert sum(e["type"] == "genre_change" for e in received) == changes
    assert sum(e["type"] == "prediction" for e in received) == 6000
