"""CPU cost of musicnn's log-mel frontend: incremental vs every window from scratch.

Feeds the music clips of ``../shared/audio/free`` (decoded once, soxr HQ to
16 kHz; synthetic audio if absent) to several interleaved streams, and prints
CPU ms per second of audio for

* incremental: :class:`stream.frontends.logmel.IncrementalLogMel`, blocks of
  ``--block-s`` (the engine's sources deliver about 0.25 s at a time);
* from scratch: :func:`stream.frontends.logmel.window_input` on the last
  48128 samples at every window end (what the engine's reference extractor
  does),

both at hop ``--hop-s`` (snapped to 256 samples), and their ratio, plus the
state per stream. BLAS is limited to one thread (librosa's mel product; a
serving process runs one stream per worker thread). CPU time is
``time.process_time`` of this process; each measurement is repeated and the
median reported (other jobs on the machine inflate CPU time).

Usage::

    .venv/bin/python benchmarks/logmel_speed.py [--streams 4] [--seconds 40] [--hop-s 1.0]
        [--block-s 0.25] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.frontends.logmel import (
    SAMPLE_RATE,
    WINDOW_LENGTH,
    IncrementalLogMel,
    snap_hop,
    window_input,
)

SHARED = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared")).resolve()


def _audio(seconds: float, n: int) -> list[np.ndarray]:
    """``n`` mono float32 signals of ``seconds`` at 16 kHz: shared music if present, else synthetic."""
    files = sorted(
        p for p in (SHARED / "audio" / "free").glob("*.ogg") if not p.name.startswith(("speech", "nature"))
    )
    from _sources import looped_signals

    return looped_signals(seconds, n, SAMPLE_RATE, files[: max(n, 4)])


def _incremental(audio: list[np.ndarray], hop: int, block: int) -> tuple[float, int, int]:
    """CPU seconds, windows and state bytes of interleaved streams fed ``block`` samples at a time."""
    streams = [IncrementalLogMel(hop) for _ in audio]
    windows = 0
    t = time.process_time()
    for pos in range(0, audio[0].shape[0], block):
        for inc, y in zip(streams, audio):
            windows += len(inc.push(y[pos : pos + block]))
    return time.process_time() - t, windows, max(s.nbytes for s in streams)


def _from_scratch(audio: list[np.ndarray], hop: int) -> tuple[float, int]:
    """CPU seconds and windows of ``window_input`` on every window of every stream."""
    windows = 0
    t = time.process_time()
    for end in range(WINDOW_LENGTH, audio[0].shape[0] + 1, hop):
        for y in audio:
            window_input(y[end - WINDOW_LENGTH : end])
            windows += 1
    return time.process_time() - t, windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4, help="interleaved streams")
    ap.add_argument("--seconds", type=float, default=40.0, help="audio per stream")
    ap.add_argument("--hop-s", type=float, default=1.0)
    ap.add_argument("--block-s", type=float, default=0.25, help="block size fed to the incremental extractor")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (0: leave as is)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    limiter = None
    if args.blas_threads > 0:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.blas_threads)
    audio = _audio(args.seconds, args.streams)
    hop = snap_hop(round(args.hop_s * SAMPLE_RATE))
    block = max(1, round(args.block_s * SAMPLE_RATE))
    audio_s = len(audio) * audio[0].shape[0] / SAMPLE_RATE
    IncrementalLogMel(hop).push(audio[0][: WINDOW_LENGTH + hop])  # warm-up: librosa import, filter bank
    window_input(audio[0][:WINDOW_LENGTH])

    inc_runs, ref_runs = [], []
    for _ in range(args.repeats):
        cpu, inc_windows, nbytes = _incremental(audio, hop, block)
        inc_runs.append(cpu)
        cpu, ref_windows = _from_scratch(audio, hop)
        ref_runs.append(cpu)
    assert inc_windows == ref_windows, (inc_windows, ref_windows)
    inc_ms = float(np.median(inc_runs)) / audio_s * 1e3
    ref_ms = float(np.median(ref_runs)) / audio_s * 1e3
    result = {
        "hop_length": hop,
        "hop_s": hop / SAMPLE_RATE,
        "block_length": block,
        "streams": len(audio),
        "audio_s": audio_s,
        "windows": inc_windows,
        "incremental_cpu_ms_per_audio_s": round(inc_ms, 3),
        "from_scratch_cpu_ms_per_audio_s": round(ref_ms, 3),
        "ratio_from_scratch_to_incremental": round(ref_ms / inc_ms, 1),
        "incremental_cpu_ms_per_window": round(float(np.median(inc_runs)) / inc_windows * 1e3, 3),
        "from_scratch_cpu_ms_per_window": round(float(np.median(ref_runs)) / ref_windows * 1e3, 3),
        "state_bytes_per_stream": int(nbytes),
        "window_samples_bytes": WINDOW_LENGTH * 4,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"hop {hop} samples ({hop / SAMPLE_RATE:.3f} s), blocks of {block}, {len(audio)} streams x "
          f"{audio[0].shape[0] / SAMPLE_RATE:.0f} s, {inc_windows} windows, median of {args.repeats} runs")
    print(f"incremental:   {inc_ms:8.3f} CPU-ms per audio second ({result['incremental_cpu_ms_per_window']} per window)")
    print(f"from scratch:  {ref_ms:8.3f} CPU-ms per audio second ({result['from_scratch_cpu_ms_per_window']} per window)")
    print(f"ratio from scratch / incremental: {ref_ms / inc_ms:.1f}x")
    print(f"state per stream: {nbytes / 1024:.1f} KiB (a window of samples: {WINDOW_LENGTH * 4 / 1024:.0f} KiB); "
          f"load average {result['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
