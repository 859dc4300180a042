"""Real servers on loopback for the live-source tests: a radio server, live HLS, Icecast 2.

:class:`RadioServer` speaks HTTP/1.x (and SHOUTcast's ``ICY 200 OK``) over a
real socket, and can misbehave on purpose: drop, stall, send garbage or a
page, redirect, serve playlists. :class:`LiveHLS` publishes pre-made segments
one by one, so the playlist grows while a client reads it.
:class:`Icecast` runs Debian's icecast2 on a free port with a config written
to a temporary folder. Everything is killed by ``close()``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tests.conftest import REPO, free_port

FFMPEG = shutil.which("ffmpeg")
ICECAST = shutil.which("icecast2") or shutil.which("icecast")


def encode(src: Path, dst: Path, *args: str) -> Path:
    """Encode ``src`` with the ffmpeg CLI (``args`` are the output options)."""
    if not dst.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
                       check=True, timeout=120)
    return dst


def icy_block(title: str, encoding: str = "utf-8") -> bytes:
    """One ICY metadata block (length byte included) carrying ``StreamTitle``."""
    text = f"StreamTitle='{title}';StreamUrl='';".encode(encoding)
    n = -(-len(text) // 16)
    return bytes([n]) + text.ljust(16 * n, b"\0")


@dataclass
class Stream:
    """A paced endless audio stream with optional ICY titles and misbehaviour."""

    audio: bytes
    bytes_per_s: float
    content_type: str = "audio/mpeg"
    metaint: int = 0  # 0: no ICY metadata even if asked
    title_at: Callable[[float], str] | None = None  # elapsed seconds -> title
    title_encoding: str = "utf-8"
    icy_status: bool = False  # answer "ICY 200 OK" like SHOUTcast v1
    speed: float = 1.0  # multiple of real time
    burst_s: float = 2.0  # seconds of audio sent at once on connect
    drop_after_s: float | None = None  # close each connection after this long
    stall_after_s: float | None = None  # stop sending (keep the socket open) after this long
    garbage: bool = False  # send random bytes instead of the audio


class RadioServer:
    """A threaded loopback server with routes: path -> handler; HTTPS when given a server ``tls`` context."""

    def __init__(self, tls=None) -> None:
        self.tls = tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.routes: dict[str, Callable] = {}
        self.requests: list[tuple[str, dict]] = []
        self.connections: dict[str, int] = {}
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="radio-accept", daemon=True)
        self._accept.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    # -- routes ---------------------------------------------------------------
    def static(self, path: str, body: bytes | Callable[[], bytes], content_type: str = "audio/ogg",
               status: int = 200, headers: dict | None = None, length: bool = True) -> str:
        def handler(conn: socket.socket, request: dict) -> None:
            data = body() if callable(body) else body
            extra = dict(headers or {})
            if length:
                extra["Content-Length"] = str(len(data))
            self._head(conn, status, content_type, extra)
            conn.sendall(data)

        self.routes[path] = handler
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def handler(conn: socket.socket, request: dict) -> None:
            self._head(conn, status, "text/plain", {"Location": location, "Content-Length": "0"})

        self.routes[path] = handler
        return self.url(path)

    def raw(self, path: str, data: bytes) -> str:
        def handler(conn: socket.socket, request: dict) -> None:
            conn.sendall(data)

        self.routes[path] = handler
        return self.url(path)

    def stream(self, path: str, spec: Stream) -> str:
        self.routes[path] = lambda conn, request: self._stream(conn, request, spec)
        return self.url(path)

    # -- serving --------------------------------------------------------------
    @staticmethod
    def _head(conn: socket.socket, status: int, content_type: str, headers: dict, icy: bool = False) -> None:
        from http import HTTPStatus

        line = f"ICY {status} OK" if icy else f"HTTP/1.0 {status} {HTTPStatus(status).phrase}"
        lines = [line, f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in headers.items())]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _stream(self, conn: socket.socket, request: dict, spec: Stream) -> None:
        headers = {"icy-name": "Loopback FM", "Cache-Control": "no-cache"}
        metaint = spec.metaint if request["headers"].get("icy-metadata") == "1" else 0
        if metaint:
            headers["icy-metaint"] = str(metaint)
        self._head(conn, 200, spec.content_type, headers, icy=spec.icy_status)
        rng = np.random.default_rng(0)
        started = time.monotonic()
        sent = 0  # audio bytes
        pos = 0
        until_meta = metaint
        last_title = None
        while not self._stop.is_set():
            elapsed = time.monotonic() - started
            if spec.drop_after_s is not None and elapsed >= spec.drop_after_s:
                return
            if spec.stall_after_s is not None and elapsed >= spec.stall_after_s:
                self._stop.wait(0.1)
                continue
            due = int(spec.bytes_per_s * (spec.burst_s + elapsed * spec.speed))
            if sent >= due:
                time.sleep(0.02)
                continue
            n = min(due - sent, 8192)
            if spec.garbage:
                chunk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            else:
                chunk = spec.audio[pos : pos + n]
                if len(chunk) < n:
                    chunk += spec.audio[: n - len(chunk)]
                pos = (pos + n) % len(spec.audio)
            out = bytearray()
            view = memoryview(chunk)
            while view:
                if metaint and until_meta == 0:
                    title = spec.title_at(elapsed) if spec.title_at else None
                    if title is not None and title != last_title:
                        out += icy_block(title, spec.title_encoding)
                        last_title = title
                    else:
                        out += b"\0"
                    until_meta = metaint
                take = len(view) if not metaint else min(len(view), until_meta)
                out += view[:take]
                view = view[take:]
                until_meta -= take
            conn.sendall(bytes(out))
            sent += n

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), name="radio-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self._clients.add(conn)
        try:
            conn.settimeout(10)
            if self.tls is not None:
                raw, conn = conn, self.tls.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._clients.discard(raw)
                    self._clients.add(conn)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                more = conn.recv(4096)
                if not more:
                    return
                data += more
            lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            path = urllib.parse.urlsplit(target).path
            request = {"method": method, "path": path, "headers": headers}
            self.requests.append((path, headers))
            with self._lock:
                self.connections[path] = self.connections.get(path, 0) + 1
            handler = self.routes.get(path)
            if handler is None:
                body = b"<html><body>404 Not Found</body></html>"
                self._head(conn, 404, "text/html", {"Content-Length": str(len(body))})
                conn.sendall(body)
                return
            handler(conn, request)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(conn)
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


class LiveHLS:
    """A live HLS playlist over pre-made segments: one more becomes visible every ``segment_s / speed``.

    Parameters
    ----------
    server : RadioServer
    folder : Path
        Holds ``segNNN.ts`` files made by ffmpeg's hls muxer.
    path : str
        Route of the playlist.
    segment_s : float
        Target duration of the segments.
    window : int
        Segments listed at once (a sliding window, as live servers do).
    start_with : int
        Segments visible when the first request comes.
    speed : float
        How much faster than real time segments appear.
    """

    def __init__(self, server: RadioServer, folder: Path, path: str = "/live/index.m3u8", segment_s: float = 2.0,
                 window: int = 5, start_with: int = 3, speed: float = 1.0) -> None:
        self.server = server
        self.segments = sorted(folder.glob("seg*.ts"))
        self.durations = [segment_s] * len(self.segments)
        vod = folder / "vod.m3u8"  # ffmpeg's own list, for the real segment durations
        if vod.exists():
            found = [float(line.split(":", 1)[1].rstrip(",")) for line in vod.read_text().splitlines()
                     if line.startswith("#EXTINF:")]
            if len(found) == len(self.segments):
                self.durations = found
        self.segment_s = segment_s
        self.window = window
        self.start_with = start_with
        self.speed = speed
        self.t0: float | None = None
        self.end = False
        self.playlist_requests = 0
        base = path.rsplit("/", 1)[0]
        for seg in self.segments:
            server.static(f"{base}/{seg.name}", seg.read_bytes(), content_type="video/mp2t")
        self.url = server.static(path, self._playlist, content_type="application/vnd.apple.mpegurl")

    def visible(self) -> int:
        if self.t0 is None:
            self.t0 = time.monotonic()
        grown = int((time.monotonic() - self.t0) * self.speed / self.segment_s)
        return min(len(self.segments), self.start_with + grown)

    def _playlist(self) -> bytes:
        self.playlist_requests += 1
        n = self.visible()
        first = max(0, n - self.window)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(np.ceil(self.segment_s))}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for seg, duration in zip(self.segments[first:n], self.durations[first:n]):
            lines += [f"#EXTINF:{duration:.3f},", seg.name]
        if self.end and n == len(self.segments):
            lines.append("#EXT-X-ENDLIST")
        return ("\n".join(lines) + "\n").encode()


class Icecast:
    """Debian's icecast2 on a free loopback port, with its config and logs in a temporary folder.

    As root, icecast refuses to run unless told to change to another user:
    the config then names ``icecast2`` (Debian's package creates it) or
    ``nobody``, and the folder (made under /tmp, whose parents that user can
    traverse, unlike pytest's private ``tmp_path``) is given to it.
    """

    SOURCE_PASSWORD = "hackme-source"
    ADMIN_PASSWORD = "hackme-admin"

    def __init__(self, port: int | None = None) -> None:
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="genrestream-icecast-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        folder = self.folder
        (folder / "log").mkdir()
        owner = ""
        if os.geteuid() == 0:
            import grp

            for user in ("icecast2", "nobody"):
                try:
                    entry = pwd.getpwnam(user)
                except KeyError:
                    continue
                group = grp.getgrgid(entry.pw_gid).gr_name
                owner = f"<changeowner><user>{user}</user><group>{group}</group></changeowner>"
                for path in (folder, folder / "log"):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                break
        share = Path("/usr/share/icecast2")
        self.config = folder / "icecast.xml"
        self.config.write_text(f"""<icecast>
  <location>loopback</location><admin>test@localhost</admin>
  <limits><clients>100</clients><sources>4</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout><source-timeout>5</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>32768</burst-size></limits>
  <authentication><source-password>{self.SOURCE_PASSWORD}</source-password>
    <relay-password>{self.SOURCE_PASSWORD}</relay-password>
    <admin-user>admin</admin-user><admin-password>{self.ADMIN_PASSWORD}</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{self.port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <mount><mount-name>/live.mp3</mount-name><charset>ISO8859-1</charset></mount>
  <fileserve>1</fileserve>
  <paths><basedir>{share}</basedir><logdir>{folder / 'log'}</logdir><webroot>{share / 'web'}</webroot>
    <adminroot>{share / 'admin'}</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
""")

    def start(self, timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen([ICECAST, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"icecast exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("icecast did not start listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def source_client(self, audio: Path, mount: str = "/live.mp3") -> subprocess.Popen:
        """ffmpeg as the station's source client: ``audio`` looped, MP3 at 128 kbit/s, in real time."""
        url = f"icecast://source:{self.SOURCE_PASSWORD}@127.0.0.1:{self.port}{mount}"
        return subprocess.Popen(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(audio),
             "-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100", "-content_type", "audio/mpeg",
             "-ice_name", "Loopback FM", "-f", "mp3", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def mount_ready(self, mount: str = "/live.mp3") -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{mount}", timeout=2) as r:
                return r.status == 200 and bool(r.read(1))
        except OSError:
            return False

    def set_title(self, title: str, mount: str = "/live.mp3", charset: str = "UTF-8") -> None:
        """The admin API's ``updinfo``, as a station's automation sends it."""
        query = urllib.parse.urlencode({"mount": mount, "mode": "updinfo", "song": title, "charset": charset})
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/metadata?{query}")
        import base64

        token = base64.b64encode(f"admin:{self.ADMIN_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as r:
            body = r.read()
        if b"successful" not in body.lower():
            raise RuntimeError(f"icecast refused the title: {body[:200]!r}")

    def error_log(self) -> str:
        try:
            return (self.folder / "log" / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class EngineRun:
    """The real engine in a thread of its own, with every event kept; stop it with :meth:`stop`."""

    def __init__(self, model_path: Path, sources: dict, hop_s: float = 5.0, realtime: bool = False) -> None:
        import asyncio

        from stream.engine import Engine
        from stream.model import GenreModel

        self.events: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Collector:
            async def start(self) -> None:
                pass

            def publish(self, event: dict) -> None:
                event = dict(event, _t=time.monotonic())
                with outer._lock:
                    outer.events.append(event)

            async def close(self) -> None:
                pass

        self.engine = Engine(GenreModel(model_path), [Collector()], hop_s=hop_s, realtime=realtime, feature_workers=2)
        for stream_id, source in sources.items():
            self.engine.add(source, stream_id)
        self.summaries = None
        self._thread = threading.Thread(target=lambda: setattr(self, "summaries", asyncio.run(self.engine.run())),
                                        name="engine-run", daemon=True)
        self._thread.start()

    def snapshot(self, stream: str | None = None, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.events if (stream is None or e["stream"] == stream)
                    and (kind is None or e["type"] == kind)]

    def wait_for(self, predicate: Callable[["EngineRun"], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.1)
        if not predicate(self):
            statuses = [(e["stream"], e["state"], e["detail"]) for e in self.snapshot(kind="status")]
            raise AssertionError(f"timed out waiting for {what}; statuses: {statuses}")

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.engine.stop()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the engine did not stop"


def stand_in_model(path: Path | None = None) -> Path:
    """The light shipped model (``gtzan-mlp``, about 10 ms of CPU a window).

    The live tests are about sources, gaps and events, not about which genre
    wins, so they run the cheapest real model whatever the default is.
    ``path`` is not used (it named a generated stand-in once).
    """
    from stream.model import shipped_model_path

    return shipped_model_path("gtzan-mlp")


__all__ = ["RadioServer", "Stream", "LiveHLS", "Icecast", "EngineRun", "encode", "icy_block", "stand_in_model", "REPO"]
