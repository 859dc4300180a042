"""Shared fixtures: the ../shared data, free ports, a real redis-server, a loopback HTTP server."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared")).resolve()
FREE_AUDIO = SHARED / "audio" / "free"
PARITY_AUDIO = SHARED / "audio" / "gtzan-parity"
GTZAN_TABLES = SHARED / "data" / "gtzan"

needs_shared = pytest.mark.skipif(
    not (FREE_AUDIO.is_dir() and GTZAN_TABLES.is_dir()),
    reason=f"shared data not found at {SHARED} (set GENRESTREAM_SHARED to the folder with audio/ and data/)",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def genrestream_cmd(*args: str) -> list[str]:
    """The console script as a new user runs it, from this interpreter's environment."""
    exe = Path(sys.executable).with_name("genrestream")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "stream.cli", *args]


def window_ends_s(model, path, hop_s: float = 1.0) -> list[float]:
    """Stream times at which a model's windows over a whole file must end: ``window_length + k * hop`` samples,
    the hop snapped to the model's frontend grid (musicnn: 1.0 s → 1.008 s)."""
    from stream.sources import AVSource

    sr, frontend = model.info.sample_rate, model.frontend
    n = sum(b.shape[0] for b in AVSource(str(path)).blocks(sr) if hasattr(b, "shape"))
    hop = frontend.snap_hop(int(round(hop_s * sr)))
    return [round((frontend.window_length + k * hop) / sr, 3) for k in range((n - frontend.window_length) // hop + 1)]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set GENRESTREAM_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on its own loopback port, for this test session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (scripts/test.sh installs Debian's redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    gate: threading.Event | None = None

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        status, content_type, body = route
        if self.gate is not None and content_type.startswith("audio/"):
            self.gate.wait(timeout=30)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LoopbackHTTP:
    """A real HTTP server on 127.0.0.1 serving fixed routes: {path: (status, content_type, body)}."""

    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"routes": {}, "gate": None})
        self.handler = handler
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, path: str, body: bytes, content_type: str = "audio/ogg", status: int = 200) -> str:
        self.handler.routes[path] = (status, content_type, body)
        return f"http://127.0.0.1:{self.port}{path}"

    def hold_audio_until(self, event: threading.Event) -> None:
        """Answer audio requests only once ``event`` is set."""
        self.handler.gate = event

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LoopbackHTTP()
    yield server
    server.close()
