"""Soak: live streams from a local Icecast for an hour, with drops, Redis restarts and a slow WebSocket client.

Runs the real command, ``genrestream run URL... --redis-url ... --jsonl --port P``,
as a subprocess against

- a local **Icecast** (Debian's icecast2, :class:`tests.live_servers.Icecast`)
  with ``--streams`` mounts, each fed by an ffmpeg source client that loops a
  playlist of the clips of ``../shared/audio/free`` (music of several genres,
  speech, whale song; 45 s each, no two neighbours of one kind), so that the
  genre changes about every 45 s. Every ``--drop-every-min`` minutes the
  stations go away for ``--down-s`` seconds, alternately the whole Icecast
  (killed, then restarted on the same port) and only the source clients (the
  mounts 404 until they are back);
- a **redis-server** of its own (loopback, free port, ``appendonly yes``,
  ``appendfsync always`` in a temporary folder, as a deployment that keeps its
  stream runs it), restarted every ``--redis-restart-every-min`` minutes,
  alternately by SIGTERM (clean shutdown) and SIGKILL (crash), down for
  ``--redis-down-s`` seconds;
- two **WebSocket clients** on ``/ws``: a *slow* one that sleeps
  ``--slow-read-s`` after every message it reads (events arrive faster: one
  prediction per stream per hop) and a *control* one that reads as fast as it
  can. Neither sends pings (as browsers do not); each reconnects a second
  after it is closed.

Measured: RSS, threads and CPU of the genrestream process (and its children)
every ``--sample-every-s``; reconnects (status events of the ``--jsonl``
output, and the sources' own counters) and the time from a station's return
to every stream playing again; for each WebSocket client, whether the server
closed it, when, with what code, how far behind it was and how many of the
emitted predictions it received; and whether every ``genre_change`` the
engine emitted (its ``--jsonl`` stdout is its own record) is in the Redis
stream ``genrestream:events`` (XADD, field ``event``) at the end, across the
restarts: missing ones (matched on stream, stream_time_s and genre),
duplicates, order. Status events, also XADDed, are checked the same way.

Usage::

    .venv/bin/python benchmarks/soak.py                                  # 60 minutes, 20 streams
    .venv/bin/python benchmarks/soak.py --minutes 3 --drop-every-min 1 --redis-restart-every-min 1.5
    .venv/bin/python benchmarks/soak.py --minutes 60 --out soak.json     # also a JSON report
    .venv/bin/python benchmarks/soak.py --code HEAD                      # the engine from a copy of HEAD

Drops happen at (k + 1/2) x ``--drop-every-min`` and Redis restarts at
k x ``--redis-restart-every-min`` (k >= 1), so that with the defaults they
never coincide. Needs ``../shared/audio/free`` (or ``GENRESTREAM_SHARED``),
the ffmpeg CLI, icecast2 and redis-server (``scripts/test.sh`` installs them).
Everything listens on 127.0.0.1 and stops by itself after ``--minutes``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import free_port, genrestream_cmd
from tests.live_servers import FFMPEG, Icecast

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(*parts) -> None:
    print(*parts, flush=True)


# -- process figures from /proc ------------------------------------------------------
def _proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def proc_figures(pid: int) -> dict:
    """RSS (MiB), threads and CPU seconds (user + system) of ``pid`` and its children."""
    rss_kib = threads = ticks = 0
    pids = _proc_tree(pid)
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kib += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
        except OSError:
            continue
    return {"rss_mib": rss_kib / 1024, "threads": threads, "cpu_s": ticks / CLK_TCK, "processes": len(pids)}


def parse_wall_time(text: str) -> float:
    """An event's ``wall_time`` (ISO 8601, UTC) as a POSIX timestamp."""
    return datetime.fromisoformat(text).timestamp()


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None for fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 3600 * sum((t - mt) * (v - mv) for t, v in points) / den


# -- the stations ----------------------------------------------------------------------
def playlist_clips(shared: Path) -> list[tuple[str, list[Path]]]:
    """(kind, files) segments of ~45 s: each music clip of 25 s or more, the speech clips together, the whale.

    Raises
    ------
    FileNotFoundError
        If ``audio/free/CATALOGUE.csv`` is missing or lists fewer than four usable clips.
    """
    folder = shared / "audio" / "free"
    catalogue = folder / "CATALOGUE.csv"
    if not catalogue.is_file():
        raise FileNotFoundError(f"no {catalogue}: set GENRESTREAM_SHARED to the shared data folder")
    with catalogue.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if (folder / r["file"]).is_file()]
    segments = [(r["file"].split("_", 1)[0], [folder / r["file"]]) for r in rows
                if r["kind"] == "music" and float(r["seconds"]) >= 25]
    speech = [folder / r["file"] for r in rows if r["kind"] == "speech"]
    if speech:
        segments.append(("speech", speech))
    segments += [("nature", [folder / r["file"]]) for r in rows
                 if r["kind"] == "non-music" and float(r["seconds"]) >= 25]
    if len(segments) < 4:
        raise FileNotFoundError(f"{catalogue}: expected at least 4 clips of 25 s or more, found {len(segments)}")
    return segments


def make_playlists(segments: list[tuple[str, list[Path]]], n: int, per_mount: int, folder: Path) -> list[Path]:
    """One looping MP3 per mount: ``per_mount`` segments, no two neighbours (nor last and first) of one kind.

    Each file is encoded once (MP3 128 kbit/s, 44.1 kHz stereo, no ID3 or Xing
    frame), and a mount's playlist is the frames of its segments one after the
    other, which is a valid MP3 stream.
    """
    import random

    encoded: dict[Path, bytes] = {}
    for _, files in segments:
        for src in files:
            dst = folder / (src.stem + ".mp3")
            subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-ac", "2",
                            "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", "-id3v2_version", "0",
                            "-write_xing", "0", "-f", "mp3", str(dst)], check=True, timeout=120)
            encoded[src] = dst.read_bytes()
    out = []
    for i in range(n):
        rng = random.Random(1000 + i)
        for _ in range(1000):
            order = rng.sample(range(len(segments)), min(per_mount, len(segments)))
            kinds = [segments[j][0] for j in order]
            if all(kinds[k] != kinds[k - 1] for k in range(len(kinds))):
                break
        path = folder / f"mount{i:02d}.mp3"
        path.write_bytes(b"".join(encoded[f] for j in order for f in segments[j][1]))
        out.append(path)
    return out


class Stations:
    """Icecast with one mount per playlist, each fed by an ffmpeg source client (copying, not encoding)."""

    def __init__(self, playlists: list[Path]) -> None:
        self.playlists = playlists
        self.mounts = [f"/s{i:02d}.mp3" for i in range(len(playlists))]
        self.icecast = Icecast()
        text = self.icecast.config.read_text()  # the tests' config allows 4 sources
        self.icecast.config.write_text(text.replace("<sources>4</sources>",
                                                    f"<sources>{len(playlists) + 4}</sources>"))
        self.sources: list[subprocess.Popen] = []
        self.source_starts = 0

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.icecast.port}{m}" for m in self.mounts]

    def start_icecast(self) -> None:
        for _ in range(50):  # the port may linger a moment after a kill
            try:
                self.icecast.start()
                return
            except RuntimeError:
                self.icecast.kill()
                time.sleep(0.2)
        raise RuntimeError(f"icecast did not come back on port {self.icecast.port}")

    def start_sources(self) -> None:
        url = f"icecast://source:{Icecast.SOURCE_PASSWORD}@127.0.0.1:{self.icecast.port}"
        for mount, playlist in zip(self.mounts, self.playlists):
            self.sources.append(subprocess.Popen(
                [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(playlist),
                 "-c:a", "copy", "-content_type", "audio/mpeg", "-ice_name", f"Soak {mount}", "-f", "mp3",
                 url + mount],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.source_starts += 1

    def kill_sources(self) -> None:
        for proc in self.sources:
            if proc.poll() is None:
                proc.kill()
        for proc in self.sources:
            proc.wait(timeout=10)
        self.sources = []

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Seconds until every mount serves audio."""
        t0 = time.monotonic()
        pending = list(self.mounts)
        while pending and time.monotonic() - t0 < timeout_s:
            pending = [m for m in pending if not self.icecast.mount_ready(m)]
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError(f"mounts not ready after {timeout_s} s: {pending}; "
                               f"icecast log: {self.icecast.error_log()[-2000:]}")
        return time.monotonic() - t0

    def sources_alive(self) -> int:
        return sum(1 for p in self.sources if p.poll() is None)

    def pids(self) -> list[int]:
        procs = [self.icecast.proc] + self.sources
        return [p.pid for p in procs if p is not None and p.poll() is None]

    def close(self) -> None:
        self.kill_sources()
        self.icecast.close()


# -- Redis -------------------------------------------------------------------------------
class Redis:
    """redis-server on a free loopback port with an append-only file fsynced at every write."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server not installed (scripts/test.sh installs Debian's redis-server)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.log = open(folder / "redis.log", "ab")  # noqa: SIM115 - closed by close()

    def start(self, timeout_s: float = 30.0) -> float:
        """Start and wait until it answers PING (the AOF loaded); return the seconds that took."""
        import redis

        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.folder), "--protected-mode", "yes"],
            stdout=self.log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.folder / 'redis.log'}")
            try:
                if client.ping():
                    client.close()
                    return time.monotonic() - t0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def stop(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=10)

    def xlen(self) -> int | None:
        try:
            with self.client() as c:
                return int(c.xlen("genrestream:events"))
        except Exception:  # noqa: BLE001 - down or restarting
            return None

    def entries(self) -> list[dict]:
        """Every event of the ``genrestream:events`` stream, oldest first."""
        out, start = [], "-"
        with self.client() as c:
            while True:
                batch = c.xrange("genrestream:events", min=start, max="+", count=5000)
                if not batch:
                    break
                for entry_id, fields in batch:
                    out.append(json.loads(fields[b"event"]))
                last = batch[-1][0].decode()
                ms, seq = last.split("-")
                start = f"{ms}-{int(seq) + 1}"
        return out

    def rss_mib(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return proc_figures(self.proc.pid)["rss_mib"]

    def close(self) -> None:
        self.stop(signal.SIGTERM)
        self.log.close()


# -- the engine ---------------------------------------------------------------------------
class EngineProcess:
    """``genrestream run`` as a subprocess; its ``--jsonl`` stdout read by a thread, stderr to a log file."""

    def __init__(self, args: list[str], log_path: Path, t0: float, code: Path | None = None) -> None:
        self.t0 = t0
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if code is None:  # the console script, from this checkout
            cmd = genrestream_cmd("run", *args)
        else:  # the same command from a copy of the code (PYTHONPATH comes before the editable install)
            cmd = [sys.executable, "-m", "stream.cli", "run", *args]
            env["PYTHONPATH"] = str(code)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=env, cwd=code or REPO)
        self.lock = threading.Lock()
        self.genre_changes: list[dict] = []
        self.statuses: list[dict] = []
        self.counts: Counter = Counter()
        self.predictions_per_s: Counter = Counter()  # int(seconds since t0) -> predictions read
        self.last_stats: dict[str, dict] = {}
        self.bad_lines = 0
        self.prediction_keys: list[tuple[float, str, float]] = []  # (seconds since t0, stream, stream_time_s)
        self.bytes_total = 0  # bytes of JSON emitted (a WebSocket client is sent the same text, less the newline)
        self.reader = threading.Thread(target=self._read, name="jsonl-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                self.bad_lines += 1
                continue
            t = time.monotonic() - self.t0
            kind = event.get("type")
            with self.lock:
                self.bytes_total += len(raw) - 1
                self.counts[kind] += 1
                if kind == "prediction":
                    self.predictions_per_s[int(t)] += 1
                    self.prediction_keys.append((t, event["stream"], event["stream_time_s"]))
                    if "stats" in event:
                        self.last_stats[event["stream"]] = event["stats"]
                elif kind == "genre_change":
                    self.genre_changes.append({k: v for k, v in event.items() if k != "probabilities"} | {"_t": t})
                elif kind == "status":
                    self.statuses.append({k: v for k, v in event.items() if k != "stats"} | {"_t": t})
                    if "stats" in event:
                        self.last_stats[event["stream"]] = event["stats"]

    def predictions_between(self, a: float, b: float) -> int:
        with self.lock:
            return sum(n for s, n in self.predictions_per_s.items() if a <= s < b)

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(timeout=30)
        self.log.close()
        return self.proc.returncode


# -- WebSocket clients ------------------------------------------------------------------------
class WSClient:
    """A ``/ws`` client in a thread: sleeps ``delay_s`` after each message; reconnects after a close."""

    def __init__(self, name: str, url: str, delay_s: float, t0: float, engine: EngineProcess) -> None:
        self.name, self.url, self.delay_s, self.t0, self.engine = name, url, delay_s, t0, engine
        self.connections: list[dict] = []
        self.keys: list[set] = []  # per connection: (stream, stream_time_s) of the predictions received
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"ws-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        while not self.stop_event.is_set():
            conn = {"opened_s": time.monotonic() - self.t0, "closed_s": None, "closed_by": None, "code": None,
                    "reason": None, "messages": 0, "predictions": 0, "max_lag_s": 0.0, "last_lag_s": None,
                    "bytes": 0, "emitted_bytes_at_open": self.engine.bytes_total, "last_message_s": None}
            conn_keys: set = set()
            try:
                ws = connect(self.url, ping_interval=None, open_timeout=10, close_timeout=2, max_size=2**20)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                conn.update(closed_s=conn["opened_s"], closed_by="connect failed", reason=str(exc))
                self.connections.append(conn)
                self.stop_event.wait(1.0)
                continue
            self.connections.append(conn)
            try:
                with ws:
                    self._read(ws, conn, conn_keys)
                conn["closed_by"] = "client (end of soak)"
            except ConnectionClosed as exc:
                conn["closed_by"] = "server" if exc.rcvd is not None else "connection lost"
                frame = exc.rcvd or exc.sent
                conn["code"], conn["reason"] = (frame.code, frame.reason) if frame is not None else (None, None)
            conn["closed_s"] = time.monotonic() - self.t0
            self.keys.append(conn_keys)
            if not self.stop_event.is_set():
                say(f"  [{conn['closed_s']:7.1f} s] ws {self.name}: closed by {conn['closed_by']} "
                    f"(code {conn['code']} {conn['reason']!r}) after {conn['closed_s'] - conn['opened_s']:.1f} s, "
                    f"{conn['messages']} messages, {conn['max_lag_s']:.1f} s behind at most")
                self.stop_event.wait(1.0)

    def _read(self, ws, conn: dict, keys: set) -> None:
        while not self.stop_event.is_set():
            try:
                message = ws.recv(timeout=1.0)
            except TimeoutError:
                continue
            event = json.loads(message)
            conn["messages"] += 1
            conn["bytes"] += len(message.encode() if isinstance(message, str) else message)
            conn["last_message_s"] = time.monotonic() - self.t0
            if event.get("type") == "prediction":
                conn["predictions"] += 1
                keys.add((event["stream"], event["stream_time_s"]))
                lag = time.time() - parse_wall_time(event["wall_time"])
                conn["last_lag_s"] = lag
                conn["max_lag_s"] = max(conn["max_lag_s"], lag)
            if self.delay_s:
                self.stop_event.wait(self.delay_s)

    def backlog_bytes(self) -> int | None:
        """Bytes emitted since the current connection opened that this client has not read yet."""
        if not self.connections or self.connections[-1]["closed_s"] is not None:
            return None
        conn = self.connections[-1]
        return max(0, self.engine.bytes_total - conn["emitted_bytes_at_open"] - conn["bytes"])

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


# -- the soak ---------------------------------------------------------------------------------
def compare(emitted: list[dict], stored: list[dict], key) -> dict:
    """Missing, duplicated and out-of-order events of ``emitted`` in ``stored`` (both oldest first)."""
    stored_keys = [key(e) for e in stored]
    counts = Counter(stored_keys)
    emitted_keys = [key(e) for e in emitted]
    missing = [e for e, k in zip(emitted, emitted_keys) if k not in counts]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    unknown = len(set(stored_keys) - set(emitted_keys))
    position = {}
    for i, k in enumerate(stored_keys):
        position.setdefault(k, i)
    order = [position[k] for k in emitted_keys if k in position]
    out_of_order = sum(1 for a, b in itertools.pairwise(order) if b < a)
    return {"emitted": len(emitted), "stored": len(stored), "missing": len(missing), "duplicates": duplicates,
            "stored_not_emitted": unknown, "out_of_order": out_of_order, "missing_events": missing[:50]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--drop-every-min", type=float, default=5.0)
    parser.add_argument("--down-s", type=float, default=5.0, help="seconds the stations stay away at each drop")
    parser.add_argument("--redis-restart-every-min", type=float, default=10.0)
    parser.add_argument("--redis-down-s", type=float, default=3.0, help="seconds Redis stays down at each restart")
    parser.add_argument("--slow-read-s", type=float, default=0.5, help="the slow client's sleep after each message")
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--hop-s", type=float, default=None, help="seconds between windows (default: the model's)")
    parser.add_argument("--segments-per-mount", type=int, default=8, help="45 s segments in a mount's playlist")
    parser.add_argument("--sample-every-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here (and the engine log next to it)")
    parser.add_argument("--code", default="checkout", metavar="checkout|REV",
                        help="run the engine from this checkout (default) or from a `git archive REV` copy of it "
                             "(HEAD, a commit): edits made to the checkout during the soak then do not reach it")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.minutes <= 0:
        parser.error("--streams and --minutes must be positive")

    shared = Path(os.environ.get("GENRESTREAM_SHARED") or (REPO.parent / "shared"))
    missing = [name for name, ok in (("ffmpeg", FFMPEG), ("icecast2", shutil.which("icecast2")),
                                     ("redis-server", shutil.which("redis-server"))) if not ok]
    if missing:
        say(f"needs {', '.join(missing)} (scripts/test.sh installs them)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="genrestream-soak-"))
    try:
        return _soak(args, parser, shared, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _soak(args: argparse.Namespace, parser: argparse.ArgumentParser, shared: Path, work: Path) -> int:
    stations = redis = engine = None
    clients: list[WSClient] = []
    try:
        segments = playlist_clips(shared)
        playlists = make_playlists(segments, args.streams, args.segments_per_mount, work)
        say(f"{args.streams} mounts, {len(segments)} segments of {len({k for k, _ in segments})} kinds; "
            f"playlists of {args.segments_per_mount} segments; work folder {work}")

        rev = "HEAD" if args.code == "checkout" else args.code
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                                capture_output=True, text=True, check=False).stdout.strip()
        if not commit:
            parser.error(f"--code: expected 'checkout' or a git revision of {REPO}, got {args.code!r}")
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False).stdout.split("\n")
        code_info = {"mode": args.code, "commit": commit,
                     "modified_files": [d[3:] for d in dirty if d.strip()] if args.code == "checkout" else []}
        code = None
        if args.code != "checkout":
            code = work / "code"
            code.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        say(f"engine code: {f'{args.code} = {commit[:10]} (a copy)' if code else 'this checkout at ' + commit[:10]}"
            f"{', modified: ' + ' '.join(code_info['modified_files']) if code_info['modified_files'] else ''}")

        redis = Redis(work / "redis")
        redis.start()
        stations = Stations(playlists)
        stations.start_icecast()
        stations.start_sources()
        say(f"icecast on port {stations.icecast.port}: every mount ready in {stations.wait_ready():.1f} s; "
            f"redis on port {redis.port} (appendonly, fsync always)")

        port = free_port()
        run_args = [*stations.urls(), *[a for i in range(args.streams) for a in ("--name", f"s{i:02d}")],
                    "--redis-url", redis.url, "--jsonl", "--port", str(port)]
        if args.model:
            run_args += ["--model", args.model]
        if args.hop_s:
            run_args += ["--hop-s", str(args.hop_s)]
        t0 = time.monotonic()
        t0_wall = time.time()
        log_path = work / "engine.log"
        engine = EngineProcess(run_args, log_path, t0, code)

        # every stream playing, then the clients
        deadline = t0 + 180  # numba compiles the extractor on a fresh copy
        while time.monotonic() < deadline:
            with engine.lock:
                playing = {s["stream"] for s in engine.statuses if s["state"] == "playing"}
            if len(playing) == args.streams or engine.proc.poll() is not None:
                break
            time.sleep(0.2)
        if engine.proc.poll() is not None or len(playing) < args.streams:
            say(f"the engine did not start every stream ({len(playing)} playing, exit {engine.proc.poll()}):\n"
                + log_path.read_text(errors="replace")[-3000:])
            return 1
        say(f"every stream playing {time.monotonic() - t0:.1f} s after the engine started")
        ws_url = f"ws://127.0.0.1:{port}/ws"
        clients = [WSClient("slow", ws_url, args.slow_read_s, t0, engine), WSClient("control", ws_url, 0.0, t0, engine)]

        duration_s = args.minutes * 60
        drop_every_s, redis_every_s = args.drop_every_min * 60, args.redis_restart_every_min * 60
        drops_at = [(k + 0.5) * drop_every_s for k in range(int(duration_s // drop_every_s) + 1)]
        drops_at = [t for t in drops_at if t < duration_s - 30]
        restarts_at = [k * redis_every_s for k in range(1, int(duration_s // redis_every_s) + 1)]
        restarts_at = [t for t in restarts_at if t < duration_s - 30]
        say(f"schedule: drops at {[round(t / 60, 2) for t in drops_at]} min, "
            f"redis restarts at {[round(t / 60, 2) for t in restarts_at]} min, end at {args.minutes} min")

        samples: list[dict] = []
        drops: list[dict] = []
        restarts: list[dict] = []
        next_sample = 0.0

        def sample(now: float) -> None:
            fig = proc_figures(engine.proc.pid)
            fig.update(t_s=round(now, 1), redis_rss_mib=redis.rss_mib(), xlen=redis.xlen(),
                       stations_rss_mib=round(sum(proc_figures(p)["rss_mib"] for p in stations.pids()), 1))
            with engine.lock:
                fig.update(predictions=engine.counts["prediction"], genre_changes=engine.counts["genre_change"],
                           statuses=engine.counts["status"])
            if samples:
                dt = fig["t_s"] - samples[-1]["t_s"]
                fig["cores"] = round((fig["cpu_s"] - samples[-1]["cpu_s"]) / dt, 3) if dt > 0 else None
            samples.append(fig)
            fig["ws_backlog_bytes"] = {c.name: c.backlog_bytes() for c in clients}
            fig["ws_lag_s"] = {c.name: (round(c.connections[-1]["last_lag_s"], 2) if c.connections
                                        and c.connections[-1]["last_lag_s"] is not None else None) for c in clients}
            ws = " ".join(f"{c.name} {len(c.connections)} conn, {fig['ws_lag_s'][c.name]} s behind" for c in clients)
            say(f"t={now:7.1f} s  RSS {fig['rss_mib']:6.1f} MiB  threads {fig['threads']:3d}  "
                f"cores {fig.get('cores') or 0:.2f}  predictions {fig['predictions']}  "
                f"changes {fig['genre_changes']}  xlen {fig['xlen']}  ws: {ws}")

        def drop(kind: str) -> None:
            at = time.monotonic() - t0
            if kind == "icecast":
                stations.icecast.kill()
                stations.kill_sources()
            else:
                stations.kill_sources()
            time.sleep(args.down_s)
            if kind == "icecast":
                stations.start_icecast()
            stations.start_sources()
            back = time.monotonic() - t0
            drops.append({"kind": kind, "at_s": round(at, 1), "back_s": round(back, 1)})
            say(f"  [{at:7.1f} s] drop {len(drops)}: {kind} away for {back - at:.1f} s")

        def restart_redis(sig: int) -> None:
            before = redis.xlen()
            at = time.monotonic() - t0
            redis.stop(sig)
            time.sleep(args.redis_down_s)
            load_s = redis.start()
            after = redis.xlen()
            restarts.append({"signal": signal.Signals(sig).name, "at_s": round(at, 1), "xlen_before": before,
                             "xlen_after": after, "start_s": round(load_s, 2)})
            say(f"  [{at:7.1f} s] redis restart {len(restarts)} ({signal.Signals(sig).name}): "
                f"XLEN {before} before, {after} after (answered {load_s:.2f} s after start)")

        while True:
            now = time.monotonic() - t0
            if engine.proc.poll() is not None:
                say(f"the engine exited early with {engine.proc.returncode}")
                break
            if now >= next_sample:
                sample(now)
                next_sample += args.sample_every_s
            if now >= duration_s:
                break
            if drops_at and now >= drops_at[0]:
                drops_at.pop(0)
                drop("icecast" if len(drops) % 2 == 0 else "sources")
                continue
            if restarts_at and now >= restarts_at[0]:
                restarts_at.pop(0)
                restart_redis(signal.SIGTERM if len(restarts) % 2 == 0 else signal.SIGKILL)
                continue
            time.sleep(0.5)

        # the end: metrics, clients off, the engine stopped (its Redis publisher flushes), then Redis read
        metrics_text = ""
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                metrics_text = r.read().decode()
        except OSError:
            pass
        for c in clients:
            c.stop()
        end_s = time.monotonic() - t0
        exit_code = engine.stop()
        stored = redis.entries()
        stations_alive = stations.sources_alive()
    finally:
        for c in clients:
            c.stop()
        if engine is not None and engine.proc.poll() is None:
            engine.stop()
        if stations is not None:
            stations.close()
        if redis is not None:
            redis.close()

    # -- figures ---------------------------------------------------------------------------
    changes = engine.genre_changes
    statuses = engine.statuses
    gc = compare(changes, [e for e in stored if e.get("type") == "genre_change"],
                 key=lambda e: (e["stream"], e["stream_time_s"], e["genre"]))
    st = compare([s for s in statuses], [e for e in stored if e.get("type") == "status"],
                 key=lambda e: (e["stream"], e["state"], e["wall_time"], e.get("detail")))
    for m in gc["missing_events"]:
        nearest = min(restarts, key=lambda r: abs(r["at_s"] - m["_t"]), default=None)
        m["nearest_redis_restart_s"] = None if nearest is None else nearest["at_s"]

    rss = [(s["t_s"], s["rss_mib"]) for s in samples]
    settled = [(t, r) for t, r in rss if t >= 300] or rss[len(rss) // 2:]
    reconnecting = Counter(s["stream"] for s in statuses if s["state"] == "reconnecting")
    source_reconnects = {k: v.get("reconnects") for k, v in engine.last_stats.items()}
    back_to_playing = []
    for d in drops:
        after = {}
        for s in statuses:
            if s["_t"] >= d["back_s"] and s["state"] == "playing" and s["stream"] not in after:
                after[s["stream"]] = s["_t"] - d["back_s"]
        d["streams_playing_again"] = len(after)
        d["all_playing_after_s"] = round(max(after.values()), 1) if len(after) == args.streams else None
        d["median_playing_after_s"] = round(sorted(after.values())[len(after) // 2], 1) if after else None
        back_to_playing.append(d["all_playing_after_s"])
    minutes = max(1, int(end_s // 60))
    per_minute = {
        "predictions": [engine.predictions_between(60 * m, 60 * (m + 1)) for m in range(minutes)],
        "genre_changes": [sum(1 for c in changes if 60 * m <= c["_t"] < 60 * (m + 1)) for m in range(minutes)],
    }
    ws_report = {}
    for c in clients:
        conns = c.connections
        closed_by_server = [x for x in conns if x["closed_by"] in ("server", "connection lost")]
        received = sum(x["predictions"] for x in conns)
        emitted = sum(engine.predictions_between(x["opened_s"], x["closed_s"] or end_s) for x in conns
                      if x["closed_by"] != "connect failed")
        missed = 0
        for x, keys in zip([x for x in conns if x["closed_by"] != "connect failed"], c.keys, strict=False):
            if x["last_message_s"] is None:
                continue
            a, b = x["opened_s"] + 2, min(x["last_message_s"], x["closed_s"] or end_s) - 2
            missed += sum(1 for t, sid, st_s in engine.prediction_keys if a <= t <= b and (sid, st_s) not in keys)
        ws_report[c.name] = {
            "predictions_missed": missed,
            "read_delay_s": c.delay_s, "connections": len(conns), "closed_by_server": len(closed_by_server),
            "close_codes": dict(Counter(f"{x['code']} {x['reason']}" for x in closed_by_server)),
            "median_connected_s_before_close": (sorted(x["closed_s"] - x["opened_s"] for x in closed_by_server)
                                                [len(closed_by_server) // 2] if closed_by_server else None),
            "max_lag_s": round(max((x["max_lag_s"] for x in conns), default=0.0), 2),
            "predictions_received": received, "predictions_emitted_while_connected": emitted,
            "max_backlog_mib": round(max((s["ws_backlog_bytes"].get(c.name) or 0 for s in samples), default=0) / 2**20, 2),
            "connections_detail": conns,
        }
    log_text = engine.log_path.read_text(errors="replace")
    levels = Counter(w for line in log_text.splitlines() for w in ("WARNING", "ERROR", "CRITICAL") if f" {w} " in line)
    errors = [line for line in log_text.splitlines() if " ERROR " in line and "connection handler failed" not in line][:20]
    server_closes = []  # the WebSocket server's own record: a close with an error is logged with its traceback
    last_stamp = None
    for line in log_text.splitlines():
        if line[:4].isdigit() and line[4:5] == "-":
            try:
                last_stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - t0_wall
            except ValueError:
                pass
        if line.startswith("websockets.exceptions.ConnectionClosed"):
            server_closes.append({"t_s": None if last_stamp is None else round(last_stamp, 1),
                                  "detail": line.split(": ", 1)[-1]})
    metric = {}
    for line in metrics_text.splitlines():
        for name in ("genrestream_buffer_overflows_total", "genrestream_reconnects_total"):
            if line.startswith(name):
                metric[name] = metric.get(name, 0) + float(line.rsplit(" ", 1)[1])
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_info, "duration_s": round(end_s, 1), "engine_exit_code": exit_code, "streams": args.streams,
        "load_average_end": os.getloadavg(),
        "rss_mib": {"first": rss[0][1] if rss else None, "peak": max(r for _, r in rss) if rss else None,
                    "last": rss[-1][1] if rss else None,
                    "slope_mib_per_hour_after_5_min": slope_per_hour(settled),
                    "min_after_5_min": min(r for _, r in settled) if settled else None,
                    "at_5_min": settled[0][1] if settled else None},
        "threads": {"first": samples[0]["threads"] if samples else None,
                    "max": max(s["threads"] for s in samples) if samples else None,
                    "last": samples[-1]["threads"] if samples else None},
        "cores_mean": (round((samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / (samples[-1]["t_s"] - samples[0]["t_s"]), 3)
                       if len(samples) > 1 else None),
        "events": dict(engine.counts), "bad_jsonl_lines": engine.bad_lines, "per_minute": per_minute,
        "drops": drops, "redis_restarts": restarts,
        "reconnecting_statuses": sum(reconnecting.values()),
        "source_reconnects_total": sum(v or 0 for v in source_reconnects.values()),
        "source_reconnects": source_reconnects, "metrics": metric,
        "genre_change_in_redis": gc, "status_in_redis": st, "websocket": ws_report,
        "websocket_closed_by_server_log": server_closes,
        "engine_log": {"lines": len(log_text.splitlines()), **levels, "errors": errors},
        "sources_alive_at_end": stations_alive, "samples": samples,
        "genre_changes": changes, "statuses": statuses,
    }

    # -- summary ---------------------------------------------------------------------------
    r = report["rss_mib"]
    slope = r["slope_mib_per_hour_after_5_min"]
    slow, ctl = ws_report.get("slow", {}), ws_report.get("control", {})
    ok_back = [b for b in back_to_playing if b is not None]
    rows = [
        ("duration", f"{end_s / 60:.1f} min, {args.streams} streams, engine exit {exit_code}"),
        ("RSS first / at 5 min / peak / last", (f"{r['first']:.1f} / {r['at_5_min']:.1f} / {r['peak']:.1f} / "
                                                f"{r['last']:.1f} MiB")),
        ("RSS slope after 5 min", "n/a" if slope is None else f"{slope:+.1f} MiB/hour ({len(settled)} samples)"),
        ("threads first / max / last", (f"{report['threads']['first']} / {report['threads']['max']} / "
                                        f"{report['threads']['last']}")),
        ("CPU of the engine", f"{report['cores_mean']} cores on average"),
        ("events", (f"{engine.counts['prediction']} predictions ({sum(per_minute['predictions']) / minutes:.0f}/min), "
                   f"{len(changes)} genre_change ({len(changes) / minutes:.1f}/min), {len(statuses)} status")),
        ("drops", (f"{len(drops)} ({', '.join(f'{n} {k}' for k, n in Counter(d['kind'] for d in drops).items())}); "
                  f"all streams playing again after {min(ok_back, default=float('nan')):.1f}-"
                  f"{max(ok_back, default=float('nan')):.1f} s; "
                  f"{sum(1 for b in back_to_playing if b is None)} drops left a stream not playing")),
        ("reconnects", (f"{report['reconnecting_statuses']} 'reconnecting' statuses, "
                        f"{report['source_reconnects_total']} counted by the sources")),
        ("Redis restarts survived", (f"{len(restarts)} ({', '.join(x['signal'] for x in restarts)}); "
                                     f"XLEN never fell: {all((x['xlen_after'] or 0) >= (x['xlen_before'] or 0) for x in restarts)}")),
        ("genre_change in XADD", (f"{gc['emitted']} emitted, {gc['stored']} stored: {gc['missing']} missing, "
                                  f"{gc['duplicates']} duplicates, {gc['out_of_order']} out of order")),
        ("status in XADD", (f"{st['emitted']} emitted, {st['stored']} stored: {st['missing']} missing, "
                            f"{st['duplicates']} duplicates")),
        ("WebSocket closes by the server (its log)",
         f"{len(server_closes)}: " + "; ".join(f"{c['t_s']} s {c['detail']}" for c in server_closes[:6])
         + (" ..." if len(server_closes) > 6 else "")),
        ("slow WebSocket client", (f"read every {args.slow_read_s} s: {slow.get('connections')} connections, "
                                   f"{slow.get('closed_by_server')} seen closed {slow.get('close_codes')}, "
                                   f"median {slow.get('median_connected_s_before_close') or 0:.0f} s connected before; "
                                   f"up to {slow.get('max_lag_s')} s behind; received "
                                   f"{slow.get('predictions_received')} of {slow.get('predictions_emitted_while_connected')} predictions")),
        ("control WebSocket client", (f"{ctl.get('connections')} connections, {ctl.get('closed_by_server')} closed by "
                                      f"the server; up to {ctl.get('max_lag_s')} s behind; received "
                                      f"{ctl.get('predictions_received')} of {ctl.get('predictions_emitted_while_connected')}"
                                      f" predictions, {ctl.get('predictions_missed')} missed")),
        ("engine log", f"{levels.get('WARNING', 0)} warnings, {levels.get('ERROR', 0)} errors"),
    ]
    say("\n| soak | result |\n| --- | --- |")
    for name, value in rows:
        say(f"| {name} | {value} |")
    if gc["missing"]:
        say("\nmissing genre_change events (first 10):")
        for m in gc["missing_events"][:10]:
            say(f"  t={m['_t']:.1f} s {m['stream']} {m['previous']}->{m['genre']} at {m['stream_time_s']} s "
                f"(nearest redis restart at {m['nearest_redis_restart_s']} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
        shutil.copy(engine.log_path, args.out.with_suffix(".engine.log"))
        say(f"\nreport: {args.out}; engine log: {args.out.with_suffix('.engine.log')}")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
