"""Decoding in many source threads of one process: with the decode lock and without it.

Usage (from the repository)::

    .venv/bin/python benchmarks/decode_threads.py                    # 1, 8 and 30 threads, 6 s each
    .venv/bin/python benchmarks/decode_threads.py --threads 1,40 --seconds 10

Every stream of ``genrestream run`` has a source thread that demuxes, decodes, converts and
resamples (:class:`stream.sources.AVSource`, :class:`stream.sources.decode.AudioDecoder`). Each
packet is a handful of calls into FFmpeg, numpy and soxr that release the GIL and take it back.
This script decodes the music clips of ``../shared/audio/free`` (``GENRESTREAM_SHARED``) as fast as
possible in N threads, looping, as the sources do, and prints per N: audio seconds decoded per wall
second (all threads), CPU-ms per audio second, and cores used; once with
:data:`stream.sources.decode.DECODE_LOCK` (one packet decoded at a time), once with a lock that
does nothing (every thread at once, as before the lock), alternately in the same process. On a
shared virtual machine compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def decode_for(clips, n_threads: int, seconds: float) -> dict:
    from stream.sources import AVSource

    stop, decoded = threading.Event(), {}

    def worker(i: int) -> None:
        samples = 0
        while not stop.is_set():
            for block in AVSource(str(clips[i % len(clips)])).blocks(16000):
                if isinstance(block, np.ndarray):
                    samples += block.shape[0]
                if stop.is_set():
                    break
        decoded[i] = samples / 16000

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    cpu0, t0 = time.process_time(), time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    audio_s = sum(decoded.values())
    return {"audio_s_per_s": audio_s / wall, "cpu_ms_per_audio_s": 1000 * cpu / audio_s, "cores": cpu / wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,8,30")
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args(argv)
    from stream.sources import decode

    shared = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared"))
    clips = sorted(p for p in (shared / "audio" / "free").glob("*.ogg") if not p.name.startswith(("speech_", "nature_")))
    if not clips:
        print(f"no clips in {shared / 'audio' / 'free'} (set GENRESTREAM_SHARED)")
        return 2
    the_lock = decode.DECODE_LOCK
    print(f"# decoding {len(clips)} Ogg clips to 16 kHz mono in N threads, {args.seconds:g} s per run; {os.cpu_count()} CPUs")
    print("| threads | decode lock: audio-s per s | CPU-ms per audio-s | cores | no lock: audio-s per s | CPU-ms per audio-s | cores |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.threads.split(",")):
        decode.DECODE_LOCK = the_lock
        locked = decode_for(clips, n, args.seconds)
        decode.DECODE_LOCK = _NoLock()
        free = decode_for(clips, n, args.seconds)
        decode.DECODE_LOCK = the_lock
        print(f"| {n} | {locked['audio_s_per_s']:.0f} | {locked['cpu_ms_per_audio_s']:.2f} | {locked['cores']:.2f} "
              f"| {free['audio_s_per_s']:.0f} | {free['cpu_ms_per_audio_s']:.2f} | {free['cores']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
