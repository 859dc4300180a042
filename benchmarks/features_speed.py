"""CPU cost of the features: incremental per hop vs batch per window, and the state per stream.

Runs :func:`stream.frontends.gtzan.gtzan_features` on whole windows (what the engine
does for every window today) and :class:`stream.frontends.gtzan_incremental.IncrementalFeatures`
on several interleaved streams fed one hop at a time (what a serving process
with many streams does), on the audio of ``../shared`` (synthetic audio if it is
absent), and prints:

* batch: CPU ms per window;
* incremental: CPU ms per hop per stream in steady state, the first window
  (which analyses a whole window of backlog), and the ratio to batch;
* streams one core could keep up with at this hop (features only; decoding and
  inference come on top);
* state bytes per stream (:attr:`IncrementalFeatures.nbytes`), next to the
  engine's ring buffer of one window of float32 samples;
* the window statistics: recomputing mean and variance over the window's
  per-frame matrix vs keeping running sums, per window.

BLAS is limited to one thread (``--blas-threads``): a serving process runs one
stream's features per worker thread, and OpenBLAS's own threads only compete
with them. CPU time is ``time.process_time`` of this process.

Usage::

    .venv/bin/python benchmarks/features_speed.py [--streams 8] [--seconds 40]
        [--hop-s 1.0] [--batch-windows 6] [--blas-threads 1] [--profile] [--json OUT]
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

from stream.frontends.gtzan import SAMPLE_RATE, gtzan_features  # noqa: E402
from stream.frontends.gtzan_incremental import IncrementalFeatures  # noqa: E402

SHARED = Path(os.environ.get("GENRESTREAM_SHARED", REPO.parent / "shared")).resolve()


def _audio(seconds: float, n: int) -> list[np.ndarray]:
    """``n`` mono float32 signals of ``seconds`` at 22050 Hz: shared music if present, else synthetic."""
    files = sorted((SHARED / "audio" / "gtzan-parity").glob("*.wav")) + sorted(
        p for p in (SHARED / "audio" / "free").glob("*.ogg") if not p.name.startswith(("speech", "nature"))
    )
    from _sources import looped_signals

    return looped_signals(seconds, n, SAMPLE_RATE, files)


def _stats_costs(n_frames: int, n_cols: int = 38, hop_frames: int = 43, reps: int = 2000) -> dict:
    """µs per window: mean/var recomputed over the (n_frames, n_cols) matrix vs running sums."""
    rng = np.random.default_rng(0)
    ring = rng.standard_normal((n_frames + hop_frames, n_cols))
    idx = np.arange(n_frames)
    t = time.process_time()
    for _ in range(reps):
        m = ring[idx]
        m.mean(axis=0)
        m.var(axis=0)
    recompute = (time.process_time() - t) / reps * 1e6
    s1 = ring[:n_frames].sum(axis=0)
    s2 = (ring[:n_frames] ** 2).sum(axis=0)
    new, old = ring[n_frames:], ring[:hop_frames]
    t = time.process_time()
    for _ in range(reps):
        s1 += new.sum(axis=0) - old.sum(axis=0)
        s2 += (new * new).sum(axis=0) - (old * old).sum(axis=0)
        mean = s1 / n_frames
        _ = s2 / n_frames - mean * mean
    running = (time.process_time() - t) / reps * 1e6
    return {"recompute_us": round(recompute, 1), "running_sums_us": round(running, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=8, help="interleaved incremental streams")
    ap.add_argument("--seconds", type=float, default=40.0, help="audio per stream")
    ap.add_argument("--hop-s", type=float, default=1.0)
    ap.add_argument("--batch-windows", type=int, default=6, help="windows timed with gtzan_features")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (0: leave as is)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the incremental steady state")
    ap.add_argument("--repeats", type=int, default=3, help="steady-state runs (median and min reported)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    limiter = None
    if args.blas_threads > 0:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.blas_threads)

    audio = _audio(args.seconds, args.streams)
    t = time.perf_counter()
    warm = IncrementalFeatures(hop_s=args.hop_s)
    warm.push(audio[0][: warm.window_length + warm.hop_length])
    warmup_s = time.perf_counter() - t  # numba compilation or cache load, librosa import, filterbanks
    from stream.frontends.gtzan_incremental import _N_TUNING_BINS, _chroma_filterbank

    for b in range(_N_TUNING_BINS):  # every tuning's chroma filterbank, as a long-running server has them
        _chroma_filterbank(b)

    # batch, per window
    N = warm.window_length
    gtzan_features(audio[0][:N])
    ends = np.linspace(N, len(audio[0]), args.batch_windows).astype(int)
    t = time.process_time()
    for i, e in enumerate(ends):
        gtzan_features(audio[i % len(audio)][e - N : e])
    batch_ms = (time.process_time() - t) / len(ends) * 1e3

    # incremental: first window, then steady state, streams interleaved hop by hop; repeated,
    # because other processes on the machine inflate CPU time (cache, SMT): min and median
    runs = []
    for rep in range(args.repeats):
        streams = [IncrementalFeatures(hop_s=args.hop_s) for _ in audio]
        hop = streams[0].hop_length
        t = time.process_time()
        for s, y in zip(streams, audio):
            assert len(s.push(y[:N])) == 1
        first_ms = (time.process_time() - t) / len(streams) * 1e3
        pos = N
        windows = 0
        profiler = None
        if args.profile and rep == 0:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        while pos + hop <= len(audio[0]):
            for s, y in zip(streams, audio):
                windows += len(s.push(y[pos : pos + hop]))
            pos += hop
        cpu = time.process_time() - t_cpu
        wall = time.perf_counter() - t_wall
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        else:
            runs.append((cpu / windows * 1e3, wall / windows * 1e3, first_ms))
    nbytes = max(s.nbytes for s in streams)
    runs.sort()
    hop_ms, wall_ms, first_ms = runs[len(runs) // 2]
    hop_ms_min = runs[0][0]
    stats = _stats_costs(streams[0].n_frames)
    result = {
        "hop_s": args.hop_s,
        "streams": len(streams),
        "windows": windows,
        "blas_threads": args.blas_threads or None,
        "warmup_s": round(warmup_s, 2),
        "batch_ms_per_window": round(batch_ms, 1),
        "incremental_ms_per_hop": round(hop_ms, 2),
        "incremental_ms_per_hop_min": round(hop_ms_min, 2),
        "incremental_wall_ms_per_hop": round(wall_ms, 2),
        "incremental_first_window_ms": round(first_ms, 1),
        "ratio_batch_to_incremental": round(batch_ms / hop_ms, 1),
        "streams_per_core_features_only": int(1000 * args.hop_s / hop_ms),
        "state_bytes_per_stream": int(nbytes),
        "engine_ring_bytes_per_stream": int(N * 4),
        "window_statistics": stats,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"batch gtzan_features:       {batch_ms:8.1f} ms CPU per window ({len(ends)} windows)")
    print(f"incremental, steady state:  {hop_ms:8.2f} ms CPU per hop of {args.hop_s:g} s, median of {len(runs)} runs "
          f"(min {hop_ms_min:.2f}; {windows} windows over {len(streams)} interleaved streams; wall {wall_ms:.2f} ms)")
    print(f"incremental, first window:  {first_ms:8.1f} ms CPU (a whole window of backlog)")
    print(f"ratio batch / incremental:  {batch_ms / hop_ms:8.1f}x")
    print(f"streams per core (features only, hop {args.hop_s:g} s): {result['streams_per_core_features_only']}")
    print(f"state per stream:           {nbytes / 1024:8.0f} KiB  (engine ring buffer: {N * 4 / 1024:.0f} KiB)")
    print(f"window statistics:          recompute over the per-frame matrix {stats['recompute_us']} us, "
          f"running sums {stats['running_sums_us']} us per window")
    print(f"warm-up (numba, librosa):   {warmup_s:8.2f} s; load average {result['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
