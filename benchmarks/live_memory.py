"""Memory and reconnect times of a live stream that drops every minute.

Runs the real engine in this process against a loopback radio server (MP3 at
128 kbit/s with ICY titles, paced in real time) that closes the connection
and stops listening for ``--down-s`` seconds every ``--drop-every-s``
seconds, for ``--minutes`` minutes. Prints the process's resident memory
(RSS, from /proc/self/status) over time, and for every drop: how long the
source took to play again once the server was back (``back->playing``), and
the gap reported to the engine (``gap_s``).

Usage::

    .venv/bin/python benchmarks/live_memory.py                # 10 minutes, a drop every 60 s
    .venv/bin/python benchmarks/live_memory.py --minutes 2 --drop-every-s 20 --model path/to/model.onnx

Needs ../shared/audio/free (or GENRESTREAM_SHARED) and the ffmpeg CLI (to make the MP3).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mib() -> float:
    """Resident set size of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class DroppingRadio:
    """A loopback MP3 radio that goes away for ``down_s`` every ``every_s`` seconds."""

    def __init__(self, audio: bytes, bytes_per_s: float, every_s: float, down_s: float) -> None:
        self.audio, self.bytes_per_s = audio, bytes_per_s
        self.every_s, self.down_s = every_s, down_s
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.back_at: list[float] = []  # monotonic times the server came back
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _listen(self) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(8)
        s.settimeout(0.2)
        return s

    def _run(self) -> None:
        listener = self._listen()
        up_since = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - up_since >= self.every_s:  # drop everything, go away
                listener.close()
                for c in self._clients:
                    try:
                        c.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._clients.clear()
                if self._stop.wait(self.down_s):
                    return
                listener = self._listen()
                up_since = time.monotonic()
                self.back_at.append(up_since)
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                continue
            self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        listener.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(4096)
                if not more:
                    return
                data += more
            metaint = 16000
            conn.sendall((f"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-name: Dropping FM\r\n"
                          f"icy-metaint: {metaint}\r\n\r\n").encode())
            started, sent, pos, until_meta, n_title = time.monotonic(), 0, 0, metaint, 0
            while not self._stop.is_set():
                due = int(self.bytes_per_s * (2.0 + time.monotonic() - started))  # 2 s burst
                if sent >= due:
                    time.sleep(0.05)
                    continue
                n = min(due - sent, until_meta)
                chunk = (self.audio[pos:] + self.audio)[:n]
                pos = (pos + n) % len(self.audio)
                conn.sendall(chunk)
                sent += n
                until_meta -= n
                if until_meta == 0:
                    n_title += 1
                    text = f"StreamTitle='Track {n_title // 30}';".encode()  # a new title every ~30 s
                    k = -(-len(text) // 16)
                    conn.sendall(bytes([k]) + text.ljust(16 * k, b"\0"))
                    until_meta = metaint
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for c in self._clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)


class Recorder:
    """An engine publisher that keeps what the benchmark needs, not every event."""

    def __init__(self) -> None:
        self.statuses: list[tuple[float, dict]] = []
        self.predictions = 0
        self.titles = 0

    async def start(self) -> None:
        pass

    def publish(self, event: dict) -> None:
        if event["type"] == "status":
            self.statuses.append((time.monotonic(), event))
        elif event["type"] == "prediction":
            self.predictions += 1
        elif event["type"] == "metadata":
            self.titles += 1

    async def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--drop-every-s", type=float, default=60.0)
    parser.add_argument("--down-s", type=float, default=5.0, help="seconds the server stays away at each drop")
    parser.add_argument("--hop-s", type=float, default=5.0,
                        help="seconds between windows (default 5: one window costs ~2 s of CPU here)")
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--sample-every-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    from stream.engine import Engine
    from stream.model import GenreModel
    from stream.sources import open_source

    shared = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared"))
    clip = shared / "audio" / "free" / "jazz_kevin_macleod_vibe_ace.ogg"
    ffmpeg = shutil.which("ffmpeg")
    if not clip.exists() or ffmpeg is None:
        print(f"needs {clip} and the ffmpeg CLI", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        mp3 = Path(tmp) / "radio.mp3"
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(clip), "-c:a", "libmp3lame",
                        "-b:a", "128k", "-ar", "44100", str(mp3)], check=True)
        audio = mp3.read_bytes()

    model = GenreModel(args.model)
    radio = DroppingRadio(audio, 128000 / 8, args.drop_every_s, args.down_s)
    recorder = Recorder()
    engine = Engine(model, [recorder], hop_s=args.hop_s)
    source = open_source(f"http://127.0.0.1:{radio.port}/live.mp3", stall_timeout_s=10.0)
    source_events: list[tuple[float, object]] = []  # (monotonic, item) as the source yields them
    blocks = source.blocks

    def timed_blocks(sample_rate: int):
        for item in blocks(sample_rate):
            if not hasattr(item, "shape"):
                source_events.append((time.monotonic(), item))
            yield item

    source.blocks = timed_blocks
    engine.add(source, "dropping-fm")

    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while True:
            samples.append((time.monotonic() - t0, rss_mib()))
            print(f"t={samples[-1][0]:7.1f} s  RSS {samples[-1][1]:7.1f} MiB  threads {threading.active_count()}"
                  f"  predictions {recorder.predictions}", flush=True)
            if stop.wait(args.sample_every_s):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(args.minutes * 60, engine.stop)
        await engine.run()

    asyncio.run(run())
    stop.set()
    sampler.join()
    samples.append((time.monotonic() - t0, rss_mib()))
    radio.close()

    # reconnect times, as the source saw them (the engine may lag behind when features are slow)
    playing = [(t, item) for t, item in source_events if getattr(item, "state", "") == "playing"]
    gaps = [item.duration_s for _, item in source_events if hasattr(item, "duration_s")]
    print("\nreconnects (server back -> source playing again; connecting -> audio; reported gap):")
    delays, connects = [], []
    for i, back in enumerate(radio.back_at):
        after = [(t, item) for t, item in playing if t >= back]
        if after:
            t, item = after[0]
            delays.append(t - back)
            m = re.search(r"\(([0-9.]+) s from connecting to audio", item.detail)
            if m:
                connects.append(float(m.group(1)))
            print(f"  drop {i + 1}: {delays[-1]:.2f} s after the server was back; "
                  f"{m.group(1) if m else '?'} s connecting->audio; gap {gaps[i] if i < len(gaps) else '?':.2f} s")
    rss = [r for _, r in samples]
    settled = [r for t, r in samples if t >= 60] or rss[-1:]
    print(f"\nRSS MiB: start {rss[0]:.1f}, max {max(rss):.1f}, end {rss[-1]:.1f} "
          f"(after the first minute: min {min(settled):.1f}, max {max(settled):.1f})")
    if connects:
        print(f"connecting->audio s: median {sorted(connects)[len(connects) // 2]:.2f}, max {max(connects):.2f}")
    if delays:
        median = sorted(delays)[len(delays) // 2]
        print(f"back->playing s: median {median:.2f}, max {max(delays):.2f} over {len(delays)} drops")
    final = engine.states.current("dropping-fm").get("status", {})
    print(f"predictions {recorder.predictions}, titles {recorder.titles}, stats {final.get('stats')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
