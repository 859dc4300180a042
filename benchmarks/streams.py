"""How many streams genrestream classifies per CPU core, how fast events arrive, what a stream costs.

Usage (from the repository, after ``scripts/setup.sh train test``)::

    .venv/bin/python benchmarks/streams.py                    # every phase, the default model
    .venv/bin/python benchmarks/streams.py --quick            # smoke run
    .venv/bin/python benchmarks/streams.py --model gtzan-mlp  # a shipped name or an ONNX path
    .venv/bin/python benchmarks/streams.py --models gtzan-mlp,musicnn-msd   # both, one session, one table
    .venv/bin/python benchmarks/streams.py --json results.json --profile
    .venv/bin/python benchmarks/streams.py --phases throughput,naive

Streams are the music clips of ``../shared/audio/free`` (``GENRESTREAM_SHARED``),
decoded once as serving decodes them (to the model's sample rate) and played
from memory (looping, each stream from its own place in its clip), through the
real :class:`stream.engine.Engine` with the model ``--model`` (a shipped name
or a path, :func:`stream.model.resolve_model`; default ``$GENRESTREAM_MODEL``,
else :data:`stream.model.DEFAULT_MODEL_NAME`) at the model's default hop (or
``--hop-s``), snapped by its frontend (musicnn-msd: 1.008 s). Everything that
depends on the model (sample rate, window, hop, model input) comes from it.
``--models a,b`` runs every phase for each model in turn, in one process, and
prints one table with a row group per model. Phases, per model:

1. ``throughput`` (1 core): streams read as fast as possible; CPU seconds of
   the process per classified window in steady state (after every stream's
   first window) give *streams per core* = stream-seconds / CPU-seconds.
2. ``ladder`` (1 core): N streams in real time, N going up (×1.5) and then
   bisected; a rung is *sustained* when the p99, over every window due in
   the measured interval, of (event published − moment the window's last sample
   was due) is at most one hop (a window never published counts as infinitely
   late). Reports the most streams sustained.
3. ``latency`` (every allowed core, default engine and ONNX Runtime settings, a
   fresh process): N real-time streams (``--latency-streams``; default what
   this run says the cores hold: the ladder's 1-core figure, else the
   throughput estimate, times the cores, at most 100); an EventServer
   (WebSocket) and a RedisPublisher to a redis-server started for the run; a
   WebSocket client and a Redis subscriber, each in a process of its own, stamp
   ``time.monotonic()`` on receipt of every prediction. Latency = receipt −
   ``window_done_monotonic_s`` (the engine's "window complete" stamp) and
   receipt − the moment the window was due. The baseline is the same path with
   no engine work: synthetic events of the same shape at the same rate,
   stamped when published.
4. ``memory`` (in the latency run): RSS before the streams and during them, per
   stream; CPU per stream = process CPU / (N × wall); and a tracemalloc
   breakdown of what one stream holds, from a smaller run.
5. ``naive`` (1 core): the tutorials' way, per window. gtzan-mlp: the 57
   features on the whole window (:func:`stream.frontends.gtzan.gtzan_features`),
   then a Keras ``model.predict`` on that one window. musicnn-msd: librosa's
   log-mel of that window's audio, then TensorFlow on that one patch (musicnn's
   own checkpoint, :func:`export.musicnn.tf_predict`), then the Keras heads.
   Its windows per CPU-second are the baseline of phase 1's.

The 1-core phases give ONNX Runtime one intra-op thread (a 1-core machine's
default; more threads on one pinned core spin against each other); the latency
phase leaves it at its default, as serving does.

The machine may be busy: every figure is printed next to a baseline measured
in the same run, and a calibration (a fixed FFT workload on the pinned core)
at the start and the end says how much of the core the run got.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

os.environ.setdefault("GENRESTREAM_DEVICE", "cpu")  # "per CPU core": never probe for CUDA
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("bench")
INF = float("inf")
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")  # BLAS threads: they matter (see README)
REDIS_CHANNEL = "genrestream:events"  # stream.publishers.CHANNEL

ENGINE_KW: dict[str, Any] = {}
"""Extra Engine keyword arguments (``--engine-kw``); the latency process gets them through its config."""

CALIBRATED_PHASES = ("throughput", "naive")
"""CPU-time phases bracketed by the calibration: on a shared virtual machine the same work costs up to ×2 more CPU
time at some moments than at others (another guest on the same physical core), so the engine/naive ratio is also
given with each side divided by the calibration measured around it."""

LATENCY_MAX_STREAMS = 100
"""Most streams the latency phase picks by itself (the issue's target per core)."""

TARGETS = {
    "streams_per_core": 100.0,
    "p99_latency_ms": 50.0,
    "memory_per_stream_mb": 2.0,
    "naive_ratio": 30.0,
}


# -- small tools ---------------------------------------------------------------
def say(msg: str = "") -> None:
    print(msg, flush=True)


def rss_kib() -> dict[str, int]:
    """VmRSS and RssAnon of this process, KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def steal_s(cpus) -> float:
    """Seconds the hypervisor gave the given CPUs to other guests (/proc/stat's ``steal``), summed.

    On a virtual machine whose host is oversubscribed a pinned core loses part of its time to
    other guests: a real-time rung can then fail at well under one core of CPU time. Each
    real-time run reports this as a share of its cores, beside its own CPU share."""
    ticks = os.sysconf("SC_CLK_TCK")
    wanted = {f"cpu{c}" for c in cpus}
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted and len(fields) > 8:
                total += int(fields[8])
    return total / ticks


def pin(cpus) -> None:
    """Set the CPU affinity of every thread of this process (sched_setaffinity(0) is one thread only)."""
    cpus = set(cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # the thread ended


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (works with inf for windows never delivered); None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x == INF:
        return "never"
    return f"{x * 1000:.1f} ms"


def _batches(stats: dict | None) -> str:
    """", model batches: mean m, largest k windows" (empty when there were none)."""
    if not stats or not stats.get("batches"):
        return ""
    return f"; model batches: mean {stats['mean']:.2g}, largest {stats['max']} windows"


def _due_p99(lags: dict) -> str:
    """Why a run did not keep up, from :func:`window_lags`: due→receipt p99 over one hop, or windows never delivered."""
    p99 = lags.get("due_p99_s")
    if p99 == INF:
        return "more than 1 % of the due windows never arrived"
    return f"due→receipt p99 {ms(p99)} > one hop"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or a == INF or b == INF:
        return "n/a"
    return f"×{a / b:.3g}"


async def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


class ThreadCPU:
    """CPU seconds per thread group (from /proc/self/task), sampled every ``interval`` s.

    Threads are named from :mod:`threading` (digits folded to ``#``:
    ``source-s#``, ``features_#``, ``MainThread``); threads Python does not
    know (ONNX Runtime, BLAS, numba) are ``native:<comm>``.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.tick = os.sysconf("SC_CLK_TCK")
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[int, tuple[str, float]]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        out = {}
        for tid_s in os.listdir("/proc/self/task"):
            tid = int(tid_s)
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / self.tick
            name = names.get(tid)
            if name is None:
                name = "native:" + stat[stat.index("(") + 1 : stat.rindex(")")]
            out[tid] = (re.sub(r"\d+", "#", name), cpu)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self.sample())

    def start(self) -> ThreadCPU:
        first = self.sample()
        self.base = {tid: cpu for tid, (_, cpu) in first.items()}
        self.last = dict(first)
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.last.update(self.sample())
        groups: dict[str, float] = {}
        for tid, (name, cpu) in self.last.items():
            groups[name] = groups.get(name, 0.0) + cpu - self.base.get(tid, 0.0)
        return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


class ThreadProfiler:
    """cProfile over every thread started while active, timed by each thread's CPU clock."""

    def __init__(self) -> None:
        self.profiles: list = []

    def __enter__(self) -> ThreadProfiler:
        import cProfile

        def hook(frame, event, arg):  # first profile event of a new thread: hand over to cProfile
            p = cProfile.Profile(time.thread_time)
            self.profiles.append(p)
            p.enable()

        threading.setprofile(hook)
        self._main = cProfile.Profile(time.thread_time)
        self.profiles.append(self._main)
        self._main.enable()
        return self

    def __exit__(self, *exc) -> None:
        self._main.disable()
        threading.setprofile(None)

    def report(self, top: int = 30) -> str:
        import io
        import pstats

        out = io.StringIO()
        stats = None
        for p in self.profiles:
            try:
                stats = pstats.Stats(p, stream=out) if stats is None else stats.add(p)
            except (TypeError, ValueError):  # a profile that recorded nothing
                continue
        if stats is None:
            return "(nothing profiled)"
        stats.strip_dirs()
        out.write(f"-- top {top} by cumulative CPU time (all threads, time.thread_time) --\n")
        stats.sort_stats("cumulative").print_stats(top)
        out.write(f"-- top {top} by own CPU time --\n")
        stats.sort_stats("tottime").print_stats(top)
        return out.getvalue()


class BatchSizes:
    """A model that remembers the size of every batch it is given; everything else is the wrapped model's.

    ONNX Runtime's memory arena keeps what its largest batch needed, so the largest batch explains RSS.
    """

    def __init__(self, model) -> None:
        self._model = model
        self.sizes: list[int] = []

    def predict(self, x, keys=None, end_samples=None):
        self.sizes.append(len(x))  # from the inference thread: list.append is atomic
        return self._model.predict(x, keys, end_samples)

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def stats(self) -> dict:
        n = self.sizes
        return {"batches": len(n), "mean": (sum(n) / len(n)) if n else None, "max": max(n, default=None)}


class Recorder:
    """A publisher that stamps every prediction event as the engine hands it over."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, str, float, float | None]] = []

    async def start(self) -> None:
        pass

    def publish(self, event: dict[str, Any]) -> None:
        if event.get("type") == "prediction":
            self.rows.append((time.monotonic(), time.process_time(), event["stream"], event["stream_time_s"],
                              event.get("window_done_monotonic_s")))

    async def close(self) -> None:
        pass


def calibrate(core: int | None) -> dict:
    """A fixed FFT workload (≈ the STFT of one 10 s window, 30 times) on the pinned core.

    ``cpu_s`` says how fast the core is; ``share`` = CPU / wall says how much of
    it this process got (1.0 on an idle machine).
    """
    import numpy as np

    if core is not None:
        pin({core})
    x = np.random.default_rng(0).standard_normal((431, 2048)).astype(np.float32)
    np.fft.rfft(x, axis=1)
    cpu0, t0 = time.process_time(), time.monotonic()
    for _ in range(30):
        np.abs(np.fft.rfft(x, axis=1))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    return {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4), "share": round(cpu / wall, 3) if wall else None,
            "loadavg": loadavg()}


# -- runs of the engine ----------------------------------------------------------
async def stop_engine(engine, task: asyncio.Task, timeout_s: float = 3.0) -> bool:
    """engine.stop(); wait for run() (it drains windows in flight); cancel it after ``timeout_s``."""
    engine.stop()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if done:
        task.result()
        return True
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return False


async def run_fast(model, clips, n: int, audio_s: float, hop_s: float, workers: int | None,
                   seed: int = 0, profiler: ThreadProfiler | None = None) -> dict:
    """n streams of audio_s seconds each, as fast as possible; steady-state CPU per window."""
    from _sources import make_sources

    inference_workers = 1 if workers == 1 else None  # the 1-core phases (one feature worker): one inference thread

    from stream.engine import Engine

    rec = Recorder()
    tap = BatchSizes(model)
    engine = Engine(tap, [rec], hop_s=hop_s, realtime=False, feature_workers=workers, trace_latency=True, **{"inference_workers": inference_workers, **ENGINE_KW})
    hop_s, hop_length = engine.hop_s, engine.hop_length  # as the frontend snapped it
    sources = make_sources(clips, n, duration_s=audio_s, block_length=hop_length / 4, pace="engine", seed=seed)
    for sid, src in sources.items():
        engine.add(src, sid)
    threads = ThreadCPU().start()
    cpu0, t0 = time.process_time(), time.monotonic()
    if profiler is not None:
        with profiler:
            summaries = await engine.run()
    else:
        summaries = await engine.run()
    cpu1, t1 = time.process_time(), time.monotonic()
    groups = threads.stop()

    rows = sorted(rec.rows)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, (_, _, sid, _, _) in enumerate(rows):
        first.setdefault(sid, i)
        last[sid] = i
    out: dict[str, Any] = {
        "streams": n, "audio_s_per_stream": audio_s, "workers": engine.workers,
        "windows": len(rows), "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0,
        "audio_s": sum(s.audio_s for s in summaries.values()),
        "failed": [sid for sid, s in summaries.items() if s.state == "failed"],
        "threads_cpu_s": {k: round(v, 3) for k, v in groups.items() if v >= 0.005},
        "batch_sizes": tap.stats(),
    }
    steady = None
    if len(first) == n and rows:
        a = max(first.values())  # every stream has had its first window
        b = min(last.values())  # no stream has ended yet
        if b > a:
            windows = b - a
            cpu = rows[b][1] - rows[a][1]
            wall = rows[b][0] - rows[a][0]
            if cpu > 0:
                steady = {"windows": windows, "cpu_s": cpu, "wall_s": wall,
                          "cpu_s_per_window": cpu / windows, "streams_per_core": windows * hop_s / cpu,
                          "cores_used": cpu / wall if wall > 0 else None}
    out["steady"] = steady
    out["warm_cpu_s"] = (rows[max(first.values())][1] - cpu0) if rows and len(first) == n else None
    if steady is None and rows:  # too short for a steady interval: whole run, warm-up included
        out["steady"] = {"windows": len(rows), "cpu_s": out["cpu_s"], "wall_s": out["wall_s"],
                         "cpu_s_per_window": out["cpu_s"] / len(rows),
                         "streams_per_core": len(rows) * hop_s / out["cpu_s"], "cores_used": out["cpu_s"] / out["wall_s"],
                         "note": "whole run (no steady interval)"}
    return out


class Hooks:
    """Callbacks of :func:`run_realtime` (all optional coroutines taking the engine)."""

    async def before(self, engine) -> None: ...

    async def at_measure(self, engine) -> None: ...

    async def after(self, engine) -> dict:
        return {}


def window_lags(sources: dict, t0: float, t1: float, window_s: float, hop_s: float,
                receipts: dict[tuple[str, int], tuple[float, float | None]]) -> dict:
    """Every window due in [t0, t1) and when it arrived (``receipts[(stream, round(stream_time_s*1000))]``
    = (receipt time, window_done stamp)).

    Returns lags (receipt − due; inf if never received) and hop-to-event
    (receipt − the engine's window_done stamp, received windows only).
    """
    due_lags, done_lags, series = [], [], []
    for sid, src in sources.items():
        if src.t_zero is None:
            k = int((t1 - t0) / hop_s)
            due_lags.extend([INF] * k)
            continue
        k = max(0, math.ceil((t0 - src.t_zero - window_s) / hop_s - 1e-9))
        while True:
            tau = window_s + k * hop_s
            due = src.t_zero + tau
            if due >= t1:
                break
            if due >= t0:
                got = receipts.get((sid, round(tau * 1000)))
                if got is None:
                    due_lags.append(INF)
                else:
                    due_lags.append(got[0] - due)
                    series.append((due, got[0] - due))
                    if got[1] is not None:
                        done_lags.append(got[0] - got[1])
            k += 1
    received = sum(1 for x in due_lags if x != INF)
    any_done = [t - done for t, done in receipts.values() if done is not None]
    series.sort()
    third = len(series) // 3
    drift = None
    if third >= 3:
        drift = sum(x for _, x in series[-third:]) / third - sum(x for _, x in series[:third]) / third
    return {
        "expected": len(due_lags), "received": received,
        "due_p50_s": pct(due_lags, 50), "due_p99_s": pct(due_lags, 99), "due_max_s": max(due_lags) if due_lags else None,
        "done_p50_s": pct(done_lags, 50), "done_p99_s": pct(done_lags, 99), "done_max_s": max(done_lags) if done_lags else None,
        "drift_s": drift,
        "received_any": len(receipts), "any_done_p50_s": pct(any_done, 50), "any_done_p99_s": pct(any_done, 99),
    }


async def run_realtime(model, clips, n: int, *, hop_s: float, workers: int | None, measure_s: float,
                       settle_s: float, pace: str = "source", preroll_s: float = 0.0, seed: int = 0,
                       hooks: Hooks | None = None, sample_rss: bool = False) -> dict:
    """n streams in real time, added one by one over one hop (unsynchronised); measure after warm-up."""
    from _sources import make_sources

    inference_workers = 1 if workers == 1 else None  # the 1-core phases (one feature worker): one inference thread

    from stream.engine import Engine

    hooks = hooks or Hooks()
    info = model.info
    rec = Recorder()
    tap = BatchSizes(model)
    engine = Engine(tap, [rec], hop_s=hop_s, realtime=True, feature_workers=workers, trace_latency=True, **{"inference_workers": inference_workers, **ENGINE_KW})
    hop_s, hop_length = engine.hop_s, engine.hop_length  # as the frontend snapped it
    await hooks.before(engine)
    rss_before = rss_kib()
    sources = make_sources(clips, n, duration_s=None, block_length=hop_length / 4, pace=pace,
                           preroll_s=preroll_s, seed=seed)
    task = asyncio.create_task(engine.run(forever=True), name="engine")
    await asyncio.sleep(0)
    t_start = time.monotonic()
    for i, (sid, src) in enumerate(sources.items()):
        await sleep_until(t_start + i * hop_s / n)
        engine.add(src, sid)
    t_added = time.monotonic()
    await sleep_until(t_added + max(0.0, info.window_s - preroll_s) + settle_s)
    await hooks.at_measure(engine)
    threads = ThreadCPU().start()
    cpus = sorted(os.sched_getaffinity(0))
    t0, cpu0, steal0 = time.monotonic(), time.process_time(), steal_s(cpus)
    rss: list[dict] = []

    async def sample() -> None:
        while True:
            rss.append(rss_kib())
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample()) if sample_rss else None
    await sleep_until(t0 + measure_s)
    t1, cpu1, steal1 = time.monotonic(), time.process_time(), steal_s(cpus)
    groups = threads.stop()
    if sampler is not None:
        sampler.cancel()
    await asyncio.sleep(hop_s)  # windows due just before t1 may still be on their way
    clean = await stop_engine(engine, task)
    extra = await hooks.after(engine)

    receipts = {(sid, round(tau * 1000)): (t, done) for t, _, sid, tau, done in rec.rows}
    out = {
        "streams": n, "workers": engine.workers, "measure_s": t1 - t0, "cpu_s": cpu1 - cpu0,
        "cores_used": (cpu1 - cpu0) / (t1 - t0), "stopped_cleanly": clean,
        "steal_share": (steal1 - steal0) / (t1 - t0) / len(cpus),
        "in_process": window_lags(sources, t0, t1, info.window_s, hop_s, receipts),
        "rss_before_kib": rss_before, "rss_during_kib": rss, "t0": t0, "t1": t1,
        "threads_cpu_s": {k: round(v, 3) for k, v in groups.items() if v >= 0.005},
        "batch_sizes": tap.stats(),
        **extra,
    }
    lags = out["in_process"]
    out["sustained"] = bool(lags["expected"]) and lags["due_p99_s"] is not None and lags["due_p99_s"] <= hop_s
    out["_sources"] = sources
    return out


# -- phase 1: throughput ---------------------------------------------------------
def phase_throughput(args, sub: Subject) -> dict:
    model, clips, hop = sub.model, sub.clips, sub.hop_s
    info = model.info
    pin({args.core})
    say(f"\n## 1. throughput, as fast as possible, 1 core (cpu {args.core}), feature_workers=1, hop {hop:g} s")
    probe_audio = info.window_s + args.probe_hops * hop
    probe = asyncio.run(run_fast(model, clips, 1, probe_audio, hop, workers=1, seed=args.seed))
    ps = probe["steady"]
    say(f"  probe: 1 stream × {probe_audio:g} s: {probe['windows']} windows, {probe['cpu_s']:.2f} CPU-s "
        f"(absolute), steady {ps['cpu_s_per_window'] * 1000:.1f} CPU-ms/window → {ps['streams_per_core']:.3g} streams/core")
    per_window = ps["cpu_s_per_window"]
    warm = probe["warm_cpu_s"] or per_window
    per_stream = warm + args.main_hops * per_window
    n_main = int(min(args.max_streams, args.cpu_budget_s / per_stream))
    result: dict[str, Any] = {"probe": probe}
    chosen = probe
    if n_main >= 4:
        main_audio = info.window_s + args.main_hops * hop
        say(f"  main: {n_main} streams × {main_audio:g} s (fits the CPU budget of {args.cpu_budget_s:g} s)...")
        main = asyncio.run(run_fast(model, clips, n_main, main_audio, hop, workers=1, seed=args.seed))
        result["main"] = main
        chosen = main
    else:
        say(f"  main run skipped: {args.cpu_budget_s:g} CPU-s fit only {n_main} stream(s) of "
            f"{args.main_hops} hops at this cost; the probe is the measurement")
    s = chosen["steady"]
    result.update({
        "streams": chosen["streams"], "windows": s["windows"], "cpu_s": s["cpu_s"],
        "cpu_s_per_window": s["cpu_s_per_window"], "windows_per_cpu_s": 1.0 / s["cpu_s_per_window"],
        "streams_per_core": s["streams_per_core"], "cores_used": s["cores_used"],
        "threads_cpu_s": chosen["threads_cpu_s"], "failed": chosen["failed"], "batch_sizes": chosen["batch_sizes"],
    })
    say(f"  => {chosen['streams']} streams, {s['windows']} steady windows in {s['cpu_s']:.2f} CPU-s "
        f"({s['wall_s']:.1f} s wall, {s['cores_used']:.2f} cores used): "
        f"{s['cpu_s_per_window'] * 1000:.2f} CPU-ms per window, {s['streams_per_core']:.3g} real-time streams per core "
        f"(CPU-time estimate)" + _batches(chosen["batch_sizes"]))
    total = sum(chosen["threads_cpu_s"].values()) or 1.0
    say("  where the CPU went, by thread (whole run, warm-up included; native:* = threads Python did not start: "
        "OpenBLAS, ONNX Runtime):")
    for name, cpu in list(chosen["threads_cpu_s"].items())[:8]:
        say(f"    {name:<32} {cpu:8.2f} CPU-s  {100 * cpu / total:5.1f} %")
    if args.profile:
        n_prof = chosen["streams"]
        audio = info.window_s + min(args.main_hops, 5) * hop if chosen is not probe else probe_audio
        say(f"  profiling a separate run ({n_prof} streams × {audio:g} s; profiled numbers are slower)...")
        prof = ThreadProfiler()
        asyncio.run(run_fast(model, clips, n_prof, audio, hop, workers=1, seed=args.seed, profiler=prof))
        report = prof.report(args.profile_top)
        result["profile"] = report
        say(report)
    return result


# -- phase 2: real-time ladder ------------------------------------------------------
def phase_ladder(args, sub: Subject, estimate: float | None, share: float | None) -> dict:
    model, clips, hop = sub.model, sub.clips, sub.hop_s
    thr_ms = 1000 * hop / estimate if estimate else None  # CPU-ms per window as fast as possible
    pin({args.core})
    if args.ladder_start:
        n = args.ladder_start
    elif estimate:
        # real time has costed 1.2-1.9x the CPU per window of as-fast-as-possible, and latency grows before
        # the core is full: start at half the estimate
        n = max(1, int(estimate * min(1.0, share or 1.0) * 0.5))
    else:
        n = 1
    say(f"\n## 2. real-time capacity, 1 core (cpu {args.core}), feature_workers=1, hop {hop:g} s, "
        f"{args.ladder_seconds:g} s measured per rung after {model.info.window_s:g} s warm-up")
    say("  sustained = p99 over every window due in the interval of (event published − window due) ≤ one hop")
    lo, hi = 0, None
    rungs = []
    for _ in range(args.ladder_rungs):
        r = asyncio.run(run_realtime(model, clips, n, hop_s=hop, workers=1, measure_s=args.ladder_seconds,
                                     settle_s=args.settle_s, pace=args.pace, preroll_s=args.preroll_s, seed=args.seed))
        lags = r["in_process"]
        r.pop("_sources")
        published = lags["received"]
        cpu_ms = 1000 * r["cpu_s"] / published if published else None
        rung = {"streams": n, "sustained": r["sustained"], "cores_used": r["cores_used"], "steal_share": r["steal_share"],
                "cpu_ms_per_window": cpu_ms, "cpu_per_stream_cores": r["cores_used"] / n,
                "expected": lags["expected"], "received": lags["received"],
                "due_p50_s": lags["due_p50_s"], "due_p99_s": lags["due_p99_s"], "done_p99_s": lags["done_p99_s"],
                "drift_s": lags["drift_s"], "batch_sizes": r["batch_sizes"]}
        rungs.append(rung)
        say(f"  N={n:<4} {'sustained' if r['sustained'] else 'NOT sustained':<14} windows {lags['received']}/{lags['expected']}, "
            f"due→event p50 {ms(lags['due_p50_s'])} p99 {ms(lags['due_p99_s'])}, window_done→event p99 {ms(lags['done_p99_s'])}, "
            f"CPU {r['cores_used']:.2f} of the core, host steal {r['steal_share']:.2f}"
            + (f", {cpu_ms:.1f} CPU-ms per window published" + (f" (×{cpu_ms / thr_ms:.2f} of as-fast-as-possible)" if thr_ms else "")
               if cpu_ms else "") + _batches(r["batch_sizes"]))
        if r["sustained"]:
            lo = max(lo, n)
        else:
            hi = n if hi is None else min(hi, n)
        if hi is None:
            if n >= args.max_streams:
                break
            n = min(args.max_streams, max(n + 1, math.ceil(n * 1.5)))
        elif lo == 0:
            if hi <= 1:
                break
            n = max(1, hi // 2)
        else:
            if hi - lo <= max(1, lo // 10):
                break
            n = (lo + hi) // 2
        time.sleep(0.5)
    fail_share = min((r["cores_used"] for r in rungs if not r["sustained"]), default=None)
    bracketed = lo > 0 or hi == 1
    if not bracketed:
        say(f"  => no rung sustained within --ladder-rungs {args.ladder_rungs}: fewer than {hi} streams")
    say(f"  => most streams sustained in real time on 1 core: {lo}"
        + (f" (first failure at {hi}, where the process got {fail_share:.2f} of the core)" if hi else ""))
    best = max((r for r in rungs if r["sustained"]), key=lambda r: r["streams"], default=None)
    if best:
        say(f"     at N={best['streams']}: {100 * best['cpu_per_stream_cores']:.2f} % of a core per stream"
            + (f", {best['cpu_ms_per_window']:.1f} CPU-ms per window" if best["cpu_ms_per_window"] else ""))
    return {"max_sustained": lo, "lowest_failed": hi, "bracketed": bracketed, "rungs": rungs,
            "core_share_at_failure": fail_share, "best_rung": best}


# -- phase 3 + 4: latency, memory, CPU per stream (fresh process) ---------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on a free loopback port (no persistence)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self) -> str | None:
        exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if exe is None:
            return None
        port = _free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    self.url = f"redis://127.0.0.1:{port}/0"
                    client.close()
                    return self.url
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        self.stop()
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def ws_client_main(url: str, ready, stop, out) -> None:
    """WebSocket client process: stamp every prediction event on receipt."""
    import json as _json

    async def main() -> list:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        rows = []
        async with connect(url, max_size=2**20, ping_interval=None) as ws:
            ready.set()

            async def watch() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                await ws.close()

            watcher = asyncio.create_task(watch())
            try:
                async for message in ws:
                    t = time.monotonic()
                    event = _json.loads(message)
                    if event.get("type") == "prediction" and "window_done_monotonic_s" in event:
                        rows.append((event["stream"], event["stream_time_s"], t, event["window_done_monotonic_s"]))
            except ConnectionClosed:
                pass
            watcher.cancel()
        return rows

    try:
        out.put(("ws", asyncio.run(main()), None))
    except BaseException:  # noqa: BLE001 - report to the parent
        out.put(("ws", [], traceback.format_exc()))


def redis_client_main(url: str, ready, stop, out) -> None:
    """Redis subscriber process: stamp every prediction event on receipt."""
    import json as _json

    rows = []
    try:
        import redis

        client = redis.Redis.from_url(url)
        sub = client.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(REDIS_CHANNEL)
        while sub.get_message(timeout=0.2) is not None:  # the subscribe confirmation
            pass
        ready.set()
        while not stop.is_set():
            message = sub.get_message(timeout=0.1)
            if message is None:
                continue
            t = time.monotonic()
            event = _json.loads(message["data"])
            if event.get("type") == "prediction" and "window_done_monotonic_s" in event:
                rows.append((event["stream"], event["stream_time_s"], t, event["window_done_monotonic_s"]))
        sub.close()
        client.close()
        out.put(("redis", rows, None))
    except BaseException:  # noqa: BLE001
        out.put(("redis", rows, traceback.format_exc()))


class LatencyHooks(Hooks):
    """EventServer + RedisPublisher + a client process each; transport baseline before the streams."""

    def __init__(self, cfg: dict, n: int) -> None:
        self.cfg, self.n = cfg, n
        self.server = self.redis = None
        self.procs: list = []
        self.transport: dict = {}

    async def before(self, engine) -> None:
        from stream.publishers import RedisPublisher
        from stream.server import EventServer

        self.server = EventServer(engine.states, "127.0.0.1", 0, registry=engine.metrics.registry)
        await self.server.start()
        engine.publishers.append(self.server)
        if self.cfg["redis_url"]:
            self.redis = RedisPublisher(self.cfg["redis_url"], metrics=engine.metrics)
            await self.redis.start()
            engine.publishers.append(self.redis)
        ctx = mp.get_context("spawn")
        self.stop_flag = ctx.Event()
        self.out = ctx.Queue()
        clients = [("ws", ws_client_main, f"ws://127.0.0.1:{self.server.port}/ws")]
        if self.redis is not None:
            clients.append(("redis", redis_client_main, self.cfg["redis_url"]))
        readies = []
        for name, target, url in clients:
            ready = ctx.Event()
            p = ctx.Process(target=target, args=(url, ready, self.stop_flag, self.out), name=f"bench-{name}-client", daemon=True)
            p.start()
            self.procs.append(p)
            readies.append(ready)
        deadline = time.monotonic() + 60
        while not all(r.is_set() for r in readies):
            if time.monotonic() > deadline or any(not p.is_alive() for p in self.procs):
                raise RuntimeError("the client processes did not connect")
            await asyncio.sleep(0.05)
        await self._transport_baseline(engine)

    async def _transport_baseline(self, engine) -> None:
        """Synthetic prediction events, at the streams' event rate, through the same server and Redis."""
        import numpy as np

        from stream import events

        info = engine.model.info
        labels = engine.model.labels
        probs = np.full(len(labels), 1.0 / len(labels), dtype=np.float32)
        extra: dict[str, Any] = {}  # the same fields as the model's real events
        if info.content_labels:
            extra["content"] = events.label_probabilities(info.content_labels, np.full(len(info.content_labels), 1 / 3))
        if info.tag_labels:
            extra["tags"] = events.top_labels(info.tag_labels, np.linspace(0.9, 0.1, len(info.tag_labels)), 5)
        rate = self.n / self.cfg["hop_s"]
        seconds = self.cfg["transport_s"]
        start = time.monotonic()
        k = 0
        while True:
            due = start + k / rate
            if due >= start + seconds:
                break
            await sleep_until(due)
            event = events.prediction(f"transport-{k % self.n:03d}", 10.0 + k // self.n, labels, probs, labels[0],
                                      0.1, window_done_monotonic_s=time.monotonic(), **extra)
            self.server.publish(event)
            if self.redis is not None:
                self.redis.publish(event)
            k += 1
        self.transport_events = k
        await asyncio.sleep(0.5)

    async def after(self, engine) -> dict:
        self.stop_flag.set()
        loop = asyncio.get_running_loop()
        got = {}
        for _ in self.procs:
            try:
                name, rows, err = await loop.run_in_executor(None, self.out.get, True, 30)
            except queue.Empty:
                break
            got[name] = (rows, err)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
        if self.redis is not None:
            await self.redis.close()
        await self.server.close()
        return {"client_rows": got, "transport_events": getattr(self, "transport_events", 0),
                "redis_publisher": None if self.redis is None else
                {"sent": self.redis.sent, "failures": self.redis.failures, "dropped": self.redis.dropped}}


class TraceHooks(Hooks):
    """tracemalloc snapshots before the streams and once they are warm."""

    async def before(self, engine) -> None:
        import tracemalloc

        gc.collect()
        tracemalloc.start(1)
        self.snap0 = tracemalloc.take_snapshot()

    async def at_measure(self, engine) -> None:
        import tracemalloc

        gc.collect()
        self.snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()

    async def after(self, engine) -> dict:
        import tracemalloc

        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = self.snap1.filter_traces(skip).compare_to(self.snap0.filter_traces(skip), "lineno")
        return {"trace_diff": [(str(d.traceback[0]).replace(str(REPO) + "/", ""), d.size_diff, d.count_diff)
                               for d in diff if d.size_diff != 0]}


async def _latency_child(cfg: dict) -> dict:
    from _sources import read_clips

    from stream.model import GenreModel

    logging.basicConfig(level=cfg["log_level"], format="%(levelname)s %(name)s: %(message)s")
    ENGINE_KW.update(cfg["engine_kw"])
    model = GenreModel(cfg["model"])
    clips = read_clips(Path(cfg["clips"]), model.info.sample_rate)
    hop = cfg["hop_s"]
    # warm every lazy thing (numba JIT, imports, ONNX Runtime) before the baseline RSS
    await run_fast(model, clips, 1, model.info.window_s + 2 * hop, hop, workers=None, seed=cfg["seed"] + 1)
    gc.collect()
    n = cfg["streams"]
    hooks = LatencyHooks(cfg, n)
    r = await run_realtime(model, clips, n, hop_s=hop, workers=None, measure_s=cfg["measure_s"],
                           settle_s=cfg["settle_s"], pace=cfg["pace"], preroll_s=cfg["preroll_s"],
                           seed=cfg["seed"], hooks=hooks, sample_rss=True)
    sources = r.pop("_sources")
    info = model.info
    clients = {}
    transport = {}
    for name, (rows, err) in r.pop("client_rows").items():
        stream_rows = [x for x in rows if not x[0].startswith("transport-")]
        trans = [t - done for sid, _, t, done in rows if sid.startswith("transport-")]
        receipts = {(sid, round(tau * 1000)): (t, done) for sid, tau, t, done in stream_rows}
        clients[name] = window_lags(sources, r["t0"], r["t1"], info.window_s, hop, receipts)
        if err:
            clients[name]["error"] = err
        transport[name] = {"events": len(trans), "sent": r.get("transport_events"),
                           "p50_s": pct(trans, 50), "p99_s": pct(trans, 99), "max_s": max(trans) if trans else None}
    r["clients"] = clients
    r["transport"] = transport
    during = r.pop("rss_during_kib")
    before = r["rss_before_kib"]
    if during:
        med = sorted(x["VmRSS"] for x in during)[len(during) // 2]
        med_anon = sorted(x.get("RssAnon", 0) for x in during)[len(during) // 2]
        r["memory"] = {"rss_before_kib": before["VmRSS"], "rss_during_median_kib": med, "rss_during_max_kib": max(x["VmRSS"] for x in during),
                       "per_stream_kib": (med - before["VmRSS"]) / n,
                       "per_stream_anon_kib": (med_anon - before.get("RssAnon", 0)) / n,
                       "window_bytes": info.window_length * 4, "window_s": info.window_s}
    r["cpu_per_stream_cores"] = r["cpu_s"] / (n * r["measure_s"])
    # per-structure memory from a smaller traced run
    k = cfg["trace_streams"]
    if k:
        t = TraceHooks()
        tr = await run_realtime(model, clips, k, hop_s=hop, workers=None, measure_s=1.0, settle_s=cfg["settle_s"],
                                pace=cfg["pace"], preroll_s=cfg["preroll_s"], seed=cfg["seed"] + 2, hooks=t)
        diff = tr["trace_diff"]
        total = sum(d[1] for d in diff)
        r["tracemalloc"] = {"streams": k, "sustained": tr["sustained"], "per_stream_bytes": total / k,
                            "top": [(where, size / k, count / k) for where, size, count in
                                    sorted(diff, key=lambda d: -d[1])[:10]]}
    return r


def latency_child_main(cfg: dict, out) -> None:
    try:
        result = asyncio.run(_latency_child(cfg))
        out.put(result)
    except BaseException:  # noqa: BLE001
        out.put({"error": traceback.format_exc()})


def latency_streams(args, sub: Subject, estimate: float | None, ladder: dict | None, cores: int) -> tuple[int, str]:
    """Streams of the latency phase: ``--latency-streams``, else what this run says ``cores`` hold.

    Per core: the ladder's most streams sustained in real time on one core when phase 2 ran and found
    some, else phase 1's CPU-time estimate (a 1-stream probe on the pinned core when phase 1 did not
    run either); times the cores, at most :data:`LATENCY_MAX_STREAMS`. The CPU-time estimate alone
    overshoots: real time costs more per window than as fast as possible, and tail latency grows
    before a core is full.
    """
    given = sub.latency_streams
    if given:
        return given, "--latency-streams"
    if ladder and ladder.get("bracketed", True) and ladder.get("max_sustained"):
        per_core = ladder["max_sustained"]
        n = max(1, min(LATENCY_MAX_STREAMS, int(cores * per_core)))
        return n, f"the ladder: {per_core} sustained on 1 core × {cores} cores" + (
            f", at most {LATENCY_MAX_STREAMS}" if n == LATENCY_MAX_STREAMS else "")
    how = "phase 1's CPU-time estimate"
    if not estimate:
        pin({args.core})
        probe = asyncio.run(run_fast(sub.model, sub.clips, 1, sub.model.info.window_s + args.probe_hops * sub.hop_s,
                                     sub.hop_s, workers=1, seed=args.seed))
        estimate = probe["steady"]["streams_per_core"]
        how = "a 1-stream probe"
    n = max(1, min(LATENCY_MAX_STREAMS, int(cores * estimate)))
    return n, f"{how}: {estimate:.3g} streams per core × {cores} cores" + (
        f", at most {LATENCY_MAX_STREAMS}" if n == LATENCY_MAX_STREAMS else "")


def phase_latency(args, sub: Subject, all_cpus, estimate: float | None = None, ladder: dict | None = None) -> dict:
    model, clips_path, hop = sub.model, sub.clips_path, sub.hop_s
    n, why = latency_streams(args, sub, estimate, ladder, len(all_cpus))
    pin(all_cpus)
    say(f"\n## 3-4. latency, memory and CPU per stream: {n} real-time streams ({why}), {len(all_cpus)} cores, "
        f"default engine and ONNX Runtime settings, {args.latency_seconds:g} s measured (fresh process)")
    redis = RedisServer()
    url = redis.start()
    if url is None:
        say("  redis-server not found or did not start: the Redis subscriber is skipped")
    cfg = {"model": str(model.path), "clips": str(clips_path), "redis_url": url, "hop_s": hop, "streams": n,
           "measure_s": args.latency_seconds, "settle_s": args.settle_s, "pace": args.pace,
           "preroll_s": args.preroll_s, "seed": args.seed, "transport_s": args.transport_seconds,
           "trace_streams": args.trace_streams, "log_level": logging.getLogger().level, "engine_kw": ENGINE_KW}
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=latency_child_main, args=(cfg, out), name="bench-engine")
    timeout = 120 + 3 * args.latency_seconds + 2 * model.info.window_s
    try:
        child.start()
        deadline = time.monotonic() + timeout
        result = None
        while result is None:
            try:
                result = out.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    result = {"error": f"the engine process died (exit code {child.exitcode})"}
                elif time.monotonic() > deadline:
                    result = {"error": f"the engine process did not finish in {timeout:.0f} s"}
        child.join(10)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(5)
        redis.stop()
    result["streams_chosen_by"] = why
    result["cores"] = len(all_cpus)
    if "error" in result:
        say("  FAILED: " + result["error"])
        return result
    lags = result["in_process"]
    say(f"  engine (in process): windows {lags['received']}/{lags['expected']} published in time window, "
        f"{'sustained' if result['sustained'] else 'NOT sustained'}; CPU {result['cores_used']:.2f} cores"
        + (f", host steal {result['steal_share']:.2f} of each core" if result.get("steal_share") is not None else ""))
    for name, c in result["clients"].items():
        t = result["transport"].get(name, {})
        say(f"  {name:<5} client: received {c['received']}/{c['expected']} windows; window_done→receipt "
            f"p50 {ms(c['done_p50_s'])} p99 {ms(c['done_p99_s'])} max {ms(c['done_max_s'])}; "
            f"due→receipt p50 {ms(c['due_p50_s'])} p99 {ms(c['due_p99_s'])}")
        if c["received"] < c["expected"]:
            say(f"        all {c['received_any']} prediction events received in the run: window_done→receipt "
                f"p50 {ms(c['any_done_p50_s'])} p99 {ms(c['any_done_p99_s'])}")
        say(f"        baseline, transport only ({t.get('events')}/{t.get('sent')} synthetic events): "
            f"p50 {ms(t.get('p50_s'))} p99 {ms(t.get('p99_s'))} → engine/transport p99 {ratio(c['done_p99_s'], t.get('p99_s'))}")
        if c.get("error"):
            say("        client error: " + c["error"].strip().splitlines()[-1])
    m = result.get("memory")
    if m:
        say(f"  memory: RSS {m['rss_before_kib'] / 1024:.0f} MiB before the streams (absolute), median "
            f"{m['rss_during_median_kib'] / 1024:.0f} MiB with {n} → {m['per_stream_kib'] / 1024:.2f} MiB per stream "
            f"(anonymous {m['per_stream_anon_kib'] / 1024:.2f} MiB); baseline: a {m['window_s']:g} s float32 window is "
            f"{m['window_bytes'] / 2**20:.2f} MiB → {ratio(m['per_stream_kib'] * 1024, m['window_bytes'])}"
            + _batches(result.get("batch_sizes")) + " (ONNX Runtime's memory arena keeps what its largest batch needed)")
    say(f"  CPU per stream: {100 * result['cpu_per_stream_cores']:.2f} % of a core ({result['cpu_s']:.1f} CPU-s over "
        f"{result['measure_s']:.1f} s, absolute); by thread: "
        + ", ".join(f"{k} {v:.1f}" for k, v in list(result.get("threads_cpu_s", {}).items())[:5]))
    tm = result.get("tracemalloc")
    if tm:
        say(f"  tracemalloc, {tm['streams']} streams ({'sustained' if tm['sustained'] else 'not sustained'}): "
            f"{tm['per_stream_bytes'] / 2**20:.2f} MiB of Python/numpy allocations per stream; largest:")
        for where, size, count in tm["top"][:8]:
            say(f"    {size / 1024:9.1f} KiB {count:7.1f} blocks  {where}")
    return result


# -- phase 5: the naive way ------------------------------------------------------------
def _artifact_files(pattern: str) -> list[Path]:
    folder = REPO / "artifacts"
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if REPO in path.parents else str(path)


def _keras_model(n_labels: int, n_features: int, path: Path | None = None):
    """``path``, else a trained Keras model of ``n_features`` inputs from artifacts/, else the same architecture untrained."""
    import keras

    found = [path] if path else _artifact_files("**/*.keras")
    try:
        import training.model as tm  # registers the custom layer; has build_model
    except Exception:  # noqa: BLE001
        tm = None
    problem = ""
    for where in found[:8]:
        try:
            candidate = keras.saving.load_model(where)
        except Exception as exc:  # noqa: BLE001 - same architecture untrained is as good for speed
            problem = f" ({where} did not load: {str(exc).splitlines()[0][:120]})"
            continue
        if candidate.input_shape[-1] == n_features:  # not a musicnn head (200 inputs) from another run
            return candidate, f"trained {_shown(where)}"
        problem = f" ({_shown(where)} takes {candidate.input_shape[-1]} inputs, not {n_features})"
    if tm is not None:
        return (tm.build_model(n_labels, n_features=n_features),
                "training.model.build_model (untrained; weights do not change speed)" + problem)
    inputs = keras.Input(shape=(n_features,))
    x = keras.layers.Normalization()(inputs)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return (keras.Model(inputs, keras.layers.Dense(n_labels, activation="softmax")(x)),
            f"Normalization→256→128→{n_labels} MLP (untrained)" + problem)


def _musicnn_heads(info, n_embedding: int, path: Path | None = None):
    """The Keras heads of a musicnn model: ``[(name, keras.Model)]`` and what they are.

    ``path`` (``--keras``) or the newest ``artifacts/**/genre_head.keras``: a heads training run
    (``genre_head.keras``, and ``content_head.keras`` when the model has a content head); else
    :func:`training.heads.build_head` untrained, with the model's numbers of labels (weights do not change speed).
    """
    import keras
    import numpy as np

    wanted = [("genre", len(info.labels))] + ([("content", len(info.content_labels))] if info.content_labels else [])
    try:
        from training.heads import build_head
        from training.model import Standardize  # noqa: F401 - registers the layer for load_model
    except Exception as exc:
        raise RuntimeError(f"training.heads does not import ({exc}); `scripts/setup.sh train` installs its needs") from exc
    folders = [path] if path else [p.parent for p in _artifact_files("**/genre_head.keras")][::-1]
    problem = ""
    for folder in folders[:4]:
        folder = Path(folder)
        try:
            heads = [(name, keras.saving.load_model(folder / f"{name}_head.keras")) for name, _ in wanted]
        except Exception as exc:  # noqa: BLE001 - untrained heads of the same shape are as good for speed
            problem = f" ({folder} did not give the heads: {str(exc).splitlines()[0][:120]})"
            continue
        if all(m.input_shape[-1] == n_embedding and m.output_shape[-1] == k for (_, m), (_, k) in zip(heads, wanted)):
            return heads, f"trained heads from {_shown(folder)}"
        problem = f" ({_shown(folder)}: heads of other shapes)"
    zeros, ones = np.zeros(n_embedding, np.float32), np.ones(n_embedding, np.float32)
    heads = [(name, build_head(n_embedding, k, zeros, ones, name=f"{name}_head")) for name, k in wanted]
    return heads, ("training.heads.build_head " + " + ".join(f"{name} ({k})" for name, k in wanted)
                   + ", untrained (weights do not change speed)" + problem)


def _naive_window(clips, hop_length: int, window_length: int):
    """Window ``w`` of the naive loop: clip ``w % len(clips)``, from sample ``(w // len(clips)) * hop_length``, looping."""
    import numpy as np

    def window(w: int) -> np.ndarray:
        clip = clips[w % len(clips)].samples
        start = (w // len(clips)) * hop_length
        return clip[np.arange(start, start + window_length) % clip.shape[0]]

    return window


def _naive_result(args, sub: Subject, what: str, cpu_by_part: dict[str, float], wall: float, extra: dict) -> dict:
    n = args.naive_windows
    cpu = sum(cpu_by_part.values())
    out = {"model": what, "windows": n, "cpu_s": cpu, "wall_s": wall,
           **{f"{part}_cpu_s": v for part, v in cpu_by_part.items()},
           "parts": list(cpu_by_part), "cpu_s_per_window": cpu / n, "windows_per_cpu_s": n / cpu,
           "streams_per_core": n * sub.hop_s / cpu, "cores_used": cpu / wall, **extra}
    parts = ", ".join(f"{part} {1000 * v / n:.1f}" for part, v in cpu_by_part.items())
    say(f"  {n} windows: {1000 * cpu / n:.1f} CPU-ms per window ({parts}; absolute) → {out['windows_per_cpu_s']:.3g} "
        f"windows per CPU-s = {out['streams_per_core']:.3g} real-time streams per core at hop {sub.hop_s:g} s "
        f"({out['cores_used']:.2f} cores used)")
    return out


def _naive_gtzan(args, sub: Subject, tf) -> dict:
    import numpy as np

    from stream.frontends.gtzan import gtzan_features

    model, clips = sub.model, sub.clips
    info = model.info
    say(f"\n## 5. the naive way, 1 core (cpu {args.core}): per window, gtzan_features on the whole window, then "
        f"Keras model.predict on that window alone")
    keras_path = args.keras if args.keras is not None and not args.keras.is_dir() else None
    keras_model, what = _keras_model(len(info.labels), model.frontend.input_shape[0], keras_path)
    say(f"  model: {what}; TensorFlow {tf.__version__}")
    window = _naive_window(clips, sub.hop_length, info.window_length)
    x = gtzan_features(window(0), info.sample_rate).astype(np.float32)  # warm-up: JIT, graph tracing
    keras_model.predict(x[None], verbose=0)
    pin({args.core})  # TensorFlow made its threads by now
    feat_cpu = pred_cpu = 0.0
    t0 = time.monotonic()
    for w in range(1, args.naive_windows + 1):
        y = window(w)
        c0 = time.process_time()
        x = gtzan_features(y, info.sample_rate).astype(np.float32)
        c1 = time.process_time()
        keras_model.predict(x[None], verbose=0)
        c2 = time.process_time()
        feat_cpu += c1 - c0
        pred_cpu += c2 - c1
    return _naive_result(args, sub, what, {"features": feat_cpu, "predict": pred_cpu}, time.monotonic() - t0, {})


def _naive_musicnn(args, sub: Subject, tf) -> dict:
    import librosa
    import numpy as np

    model, clips = sub.model, sub.clips
    info, fe = model.info, model.frontend
    p = fe.params()
    say(f"\n## 5. the naive way, 1 core (cpu {args.core}): per window, librosa.feature.melspectrogram of the window's "
        f"audio (sr {p['sample_rate']}, n_fft {p['n_fft']}, hop_length {p['hop_length']}, {p['n_mels']} mels, "
        f"center={p['center']}, {p['log']}), then TensorFlow on that one patch (musicnn's checkpoint, frozen graph, "
        f"1 thread), then the Keras heads on its embedding")
    try:
        from export.musicnn import load_checkpoint, tf_predict
    except Exception as exc:  # noqa: BLE001
        say(f"  skipped: export.musicnn does not import ({exc})")
        return {"skipped": f"export.musicnn: {exc}"}
    t = time.monotonic()
    try:
        checkpoint = load_checkpoint("MSD_musicnn")  # the wheel, from the cache or PyPI (export.musicnn.fetch_wheel)
    except Exception as exc:  # noqa: BLE001 - no network, no cache: say so, go on
        say(f"  skipped: musicnn's checkpoint is not available ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return {"skipped": f"checkpoint: {exc}"}
    say(f"  backbone: {checkpoint.name} from the musicnn {checkpoint.wheel_sha256[:12]} wheel, read in "
        f"{time.monotonic() - t:.1f} s; TensorFlow {tf.__version__}")

    def logmel(y: np.ndarray) -> np.ndarray:
        S = librosa.feature.melspectrogram(y=y, sr=p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop_length"],
                                           n_mels=p["n_mels"], center=False)
        return np.log10(10000 * S + 1).T.astype(np.float32)

    window = _naive_window(clips, sub.hop_length, info.window_length)
    patch = logmel(window(0))  # warm-up: librosa's caches, the TF session, Keras tracing
    if patch.shape != tuple(fe.input_shape):
        raise RuntimeError(f"naive log-mel: shape {patch.shape}, the model takes {tuple(fe.input_shape)}")
    out = tf_predict(patch[None], checkpoint, graph="frozen", threads=1)
    heads, what = _musicnn_heads(info, out["embedding"].shape[-1], args.keras if args.keras and args.keras.is_dir() else None)
    say(f"  heads: {what}")
    for _, head in heads:
        np.asarray(head(out["embedding"], training=False))
        head.predict(out["embedding"], verbose=0)
    # the same audio through the model under test: does the naive way compute the same thing?
    tags_diff = float(np.max(np.abs(model.predict(fe.window_input(window(0))[None])["tags"] - out["tags"]))) \
        if "tags" in info.heads else None
    pin({args.core})  # TensorFlow made its threads by now
    cpu = {"logmel": 0.0, "backbone": 0.0, "heads": 0.0}
    predict_cpu = wall = 0.0
    for w in range(1, args.naive_windows + 1):
        y = window(w)
        t0, c0 = time.monotonic(), time.process_time()
        patch = logmel(y)
        c1 = time.process_time()
        emb = tf_predict(patch[None], checkpoint, graph="frozen", threads=1)["embedding"]
        c2 = time.process_time()
        for _, head in heads:  # a direct call: Keras' model.predict costs far more (measured apart below)
            np.asarray(head(emb, training=False))
        t3, c3 = time.monotonic(), time.process_time()
        for _, head in heads:
            head.predict(emb, verbose=0)
        predict_cpu += time.process_time() - c3
        wall += t3 - t0
        cpu["logmel"] += c1 - c0
        cpu["backbone"] += c2 - c1
        cpu["heads"] += c3 - c2
    n = args.naive_windows
    res = _naive_result(args, sub, what, cpu, wall, {"heads_predict_cpu_s": predict_cpu, "tags_max_abs_diff": tags_diff,
                                                      "checkpoint": checkpoint.name})
    say(f"  (the heads through Keras model.predict instead: {1000 * predict_cpu / n:.1f} CPU-ms per window, not in "
        f"the baseline; TensorFlow's tags against the model's on the same window: max |diff| "
        + (f"{tags_diff:.2g})" if tags_diff is not None else "n/a)"))
    return res


def phase_naive(args, sub: Subject) -> dict:
    try:
        t_import = time.monotonic()
        import keras  # noqa: F401
        import tensorflow as tf
    except ImportError as exc:
        say(f"\n## 5. the naive way: skipped, TensorFlow/Keras not installed ({exc}); `scripts/setup.sh train` installs it")
        return {"skipped": str(exc)}
    log.info("TensorFlow imported in %.1f s", time.monotonic() - t_import)
    name = sub.model.frontend.name
    if name == "genrestream.gtzan57":
        return _naive_gtzan(args, sub, tf)
    if name == "musicnn-logmel":
        return _naive_musicnn(args, sub, tf)
    say(f"\n## 5. the naive way: skipped, no naive way written for frontend {name!r}")
    return {"skipped": f"frontend {name}"}


# -- the report ------------------------------------------------------------------------
def summary_table(res: dict, hop: float) -> list[dict]:
    rows = []
    thr, lad, lat, nai = (res.get(k) or {} for k in ("throughput", "ladder", "latency", "naive"))
    nai_ok = "windows_per_cpu_s" in nai

    if lad:
        est = thr.get("streams_per_core")
        share = lad.get("core_share_at_failure")
        rows.append({"metric": f"real-time streams per core, hop {hop:g} s (measured ladder)",
                     "measured": lad["max_sustained"] if lad.get("bracketed", True) else
                     f"< {lad['lowest_failed']} (no rung sustained within the rung budget)",
                     "target": f"≥ {TARGETS['streams_per_core']:g}",
                     "met": lad["max_sustained"] >= TARGETS["streams_per_core"],
                     "baseline": (f"CPU-time estimate {est:.3g} (ladder = ×{lad['max_sustained'] / est:.2f} of it)" if est else "")
                     + (f"; process got {share:.2f} of the core at the first failing rung" if share is not None else "")})
    if thr:
        rows.append({"metric": f"streams per core from CPU time (as fast as possible, steady state, {thr['streams']} streams)",
                     "measured": f"{thr['streams_per_core']:.3g} ({1000 * thr['cpu_s_per_window']:.1f} CPU-ms per window)",
                     "target": f"≥ {TARGETS['streams_per_core']:g}",
                     "met": thr["streams_per_core"] >= TARGETS["streams_per_core"],
                     "baseline": f"naive {nai['streams_per_core']:.3g} → ×{thr['streams_per_core'] / nai['streams_per_core']:.3g}" if nai_ok else ""})
    if lat and "clients" in lat:
        for name, c in lat["clients"].items():
            t = lat["transport"].get(name, {})
            p99 = c["done_p99_s"]
            valid = lat["sustained"]
            rows.append({"metric": f"hop-to-event p50 / p99, {name} client, {lat['streams']} streams, {lat.get('cores', 'all')} cores",
                         "measured": f"{ms(c['done_p50_s'])} / {ms(p99)}" + ("" if valid else
                                     f" (engine NOT keeping up: {_due_p99(c)}; "
                                     f"{c['received']}/{c['expected']} windows due in the interval arrived; "
                                     f"all {c['received_any']} received: p50 {ms(c['any_done_p50_s'])} / p99 {ms(c['any_done_p99_s'])})"),
                         "target": f"p99 ≤ {TARGETS['p99_latency_ms']:g} ms",
                         "met": bool(valid and p99 is not None and p99 * 1000 <= TARGETS["p99_latency_ms"]),
                         "baseline": f"transport only p50 {ms(t.get('p50_s'))} / p99 {ms(t.get('p99_s'))} → ×{p99 / t['p99_s']:.3g}"
                         if p99 and t.get("p99_s") else "",
                         "due_p99": ms(c["due_p99_s"]), "received": f"{c['received']}/{c['expected']}"})
        m = lat.get("memory")
        if m:
            mb = m["per_stream_kib"] / 1024
            rows.append({"metric": f"memory per stream (RSS, {lat['streams']} streams)", "measured": f"{mb:.2f} MiB",
                         "target": f"≤ {TARGETS['memory_per_stream_mb']:g} MB",
                         "met": m["per_stream_kib"] * 1024 <= TARGETS["memory_per_stream_mb"] * 1e6,
                         "baseline": f"{m['window_s']:g} s float32 window {m['window_bytes'] / 2**20:.2f} MiB → ×{m['per_stream_kib'] * 1024 / m['window_bytes']:.2f}; "
                                     f"RSS before streams {m['rss_before_kib'] / 1024:.0f} MiB"
                                     + (f"; largest model batch {lat['batch_sizes']['max']} windows"
                                        if (lat.get("batch_sizes") or {}).get("max") else "")})
        cps = lat.get("cpu_per_stream_cores")
        best = (lad or {}).get("best_rung")
        if cps is not None and not lat["sustained"] and best:
            naive_cps = nai["cpu_s_per_window"] / hop if nai_ok else None
            c = best["cpu_per_stream_cores"]
            rows.append({"metric": f"CPU per stream (real time, {best['streams']} streams sustained on 1 core, ladder)",
                         "measured": f"{100 * c:.2f} % of a core",
                         "target": f"≤ {100 / TARGETS['streams_per_core']:g} % (follows from 100/core)",
                         "met": c <= 1 / TARGETS["streams_per_core"],
                         "baseline": f"naive {100 * naive_cps:.1f} % → ×{c / naive_cps:.3g}" if naive_cps else ""})
        if cps is not None:
            naive_cps = nai["cpu_s_per_window"] / hop if nai_ok else None
            rows.append({"metric": f"CPU per stream (real time, {lat['streams']} streams, {lat.get('cores', 'all')} cores)",
                         "measured": f"{100 * cps:.2f} % of a core" + ("" if lat["sustained"] else " (saturated)"),
                         "target": f"≤ {100 / TARGETS['streams_per_core']:g} % (follows from 100/core)",
                         "met": bool(lat["sustained"] and cps <= 1 / TARGETS["streams_per_core"]),
                         "baseline": (f"naive {100 * naive_cps:.1f} % → ×{cps / naive_cps:.3g}" if lat["sustained"]
                                      else f"naive {100 * naive_cps:.1f} %; no ratio: a saturated engine's CPU is not a per-stream cost")
                         if naive_cps else ""})
    if nai_ok and not thr:
        rows.append({"metric": "naive way, windows per CPU-second (1 core; run the throughput phase for the ratio)",
                     "measured": f"{nai['windows_per_cpu_s']:.3g} ({1000 * nai['cpu_s_per_window']:.1f} CPU-ms per window)",
                     "target": "—", "met": None, "baseline": "this is the baseline"})
    if thr and nai_ok:
        r = thr["windows_per_cpu_s"] / nai["windows_per_cpu_s"]
        rows.append({"metric": "engine / naive, windows per CPU-second (1 core)", "measured": f"×{r:.3g}",
                     "target": f"≥ ×{TARGETS['naive_ratio']:g}", "met": r >= TARGETS["naive_ratio"],
                     "baseline": f"engine {thr['windows_per_cpu_s']:.3g} vs naive {nai['windows_per_cpu_s']:.3g} windows/CPU-s "
                                 f"({1000 * thr['cpu_s_per_window']:.1f} vs {1000 * nai['cpu_s_per_window']:.1f} CPU-ms per window; absolute)"})
    return rows


def comparison_table(models: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """The main figures of every model side by side: ``[(metric, [value per model])]``."""

    def get(r: dict, *keys):
        for k in keys:
            r = r.get(k) if isinstance(r, dict) else None
        return r

    def row(metric: str, fn) -> tuple[str, list[str]]:
        values = []
        for r in models.values():
            try:
                v = fn(r)
            except (KeyError, TypeError, ZeroDivisionError):
                v = None
            values.append("—" if v is None else str(v))
        return metric, values

    def naive_parts(r):
        n = get(r, "naive")
        if not n or "cpu_s_per_window" not in n:
            return None
        parts = n.get("parts", [])
        return (f"{1000 * n['cpu_s_per_window']:.1f} ("
                + ", ".join(f"{k} {1000 * n[k + '_cpu_s'] / n['windows']:.1f}" for k in parts) + ")")

    def latency(r, client):
        lat = get(r, "latency")
        c = get(lat, "clients", client)
        if not c:
            return None
        return (f"{ms(c['done_p50_s'])} / {ms(c['done_p99_s'])}"
                + ("" if lat["sustained"] else f" (NOT keeping up: {_due_p99(c)}; "
                                                f"{c['received']}/{c['expected']} due windows arrived)"))

    def ladder(r):
        lad = get(r, "ladder")
        if not lad:
            return None
        if not lad.get("bracketed", True):
            return f"< {lad['lowest_failed']}"
        best = lad.get("best_rung") or {}
        return f"{lad['max_sustained']}" + (f" (first failure {lad['lowest_failed']})" if lad.get("lowest_failed") else "") + (
            f", {best['cpu_ms_per_window']:.1f} CPU-ms per window" if best.get("cpu_ms_per_window") else "")

    def thr(r: dict) -> dict:
        return r["throughput"]

    def speed_ratio(r):
        cal_t, cal_n = r.get("throughput_calibration_ms"), r.get("naive_calibration_ms")
        if not cal_t or not cal_n:
            return None
        ct, cn = sum(cal_t) / 2, sum(cal_n) / 2
        ratio = (thr(r)["windows_per_cpu_s"] * ct) / (r["naive"]["windows_per_cpu_s"] * cn)
        return f"×{ratio:.3g} (calibration {ct:.0f} / {cn:.0f} CPU-ms)"

    return [
        row("model input; window; hop", lambda r: f"{r['model']['input_shape']}; {r['model']['window_s']:g} s; "
                                                  f"{r['model']['hop_s']:g} s"),
        row("engine CPU-ms per window (1 core, as fast as possible, steady state)",
            lambda r: f"{1000 * thr(r)['cpu_s_per_window']:.1f} ({thr(r)['streams']} streams)"),
        row("engine windows per CPU-second", lambda r: f"{thr(r)['windows_per_cpu_s']:.3g}"),
        row("streams per core from CPU time, at the hop", lambda r: f"{thr(r)['streams_per_core']:.3g}"),
        row("real-time streams sustained on 1 pinned core (ladder)", ladder),
        row("naive CPU-ms per window (parts)", naive_parts),
        row("naive windows per CPU-second (baseline)", lambda r: f"{r['naive']['windows_per_cpu_s']:.3g}"),
        row("engine / naive, windows per CPU-second", lambda r: f"×{thr(r)['windows_per_cpu_s'] / r['naive']['windows_per_cpu_s']:.3g}"),
        row("engine / naive, each side per unit of core speed (calibration around each phase)", speed_ratio),
        row("latency phase: streams, cores, kept up?", lambda r: f"{r['latency']['streams']} on {r['latency']['cores']}, "
                                                              + ("yes" if r["latency"]["sustained"] else "**no**")),
        row("hop-to-event p50 / p99, WebSocket client", lambda r: latency(r, "ws")),
        row("hop-to-event p50 / p99, Redis subscriber", lambda r: latency(r, "redis")),
        row("transport only p99, WebSocket / Redis (baseline)",
            lambda r: f"{ms(r['latency']['transport']['ws']['p99_s'])} / {ms(get(r, 'latency', 'transport', 'redis', 'p99_s'))}"),
        row("memory per stream (RSS, latency phase)", lambda r: f"{r['latency']['memory']['per_stream_kib'] / 1024:.2f} MiB"),
        row("CPU per stream (latency phase)", lambda r: f"{100 * r['latency']['cpu_per_stream_cores']:.2f} % of a core"),
        row("calibration: share of the pinned core, start → end",
            lambda r: f"{r['calibration_start']['share']:.2f} → {r['calibration_end']['share']:.2f}"),
    ]


def print_comparison(models: dict[str, dict]) -> None:
    say("| metric | " + " | ".join(models) + " |")
    say("| --- |" + " --- |" * len(models))
    for metric, values in comparison_table(models):
        if all(v == "—" for v in values):
            continue
        say(f"| {metric} | " + " | ".join(values) + " |")


def _finite(x):
    """JSON has no Infinity: a window never delivered is written as the string "inf"."""
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def print_table(rows: list[dict]) -> None:
    """Markdown; a row with only ``group`` starts a model's row group."""
    say("| metric | measured | target | met? | baseline (same run) |")
    say("| --- | --- | --- | --- | --- |")
    for r in rows:
        if "group" in r:
            say(f"| **{r['group']}** | | | | |")
            continue
        say(f"| {r['metric']} | {r['measured']} | {r['target']} | {'—' if r['met'] is None else 'yes' if r['met'] else '**no**'} | {r['baseline']} |")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Numbers on a busy machine are noisy; read them against the baselines printed beside them.")
    p.add_argument("--quick", action="store_true", help="smoke run: shorter phases, fewer rungs")
    p.add_argument("--phases", default="throughput,ladder,latency,naive",  # the GPU check always runs
                   help="comma-separated subset of throughput,ladder,latency,naive (memory is part of latency)")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    from stream.model import DEFAULT_MODEL_NAME, SHIPPED_MODELS

    p.add_argument("--model", help=f"a shipped model's name ({', '.join(SHIPPED_MODELS)}) or an ONNX path "
                   f"(default: $GENRESTREAM_MODEL, else {DEFAULT_MODEL_NAME})")
    p.add_argument("--models", help="comma-separated models (names or paths): every phase for each, in turn, "
                   "in one run and one table, e.g. gtzan-mlp,musicnn-msd")
    p.add_argument("--keras", type=Path, help="Keras model(s) of the naive way: a .keras file for gtzan-mlp, a heads "
                   "training run folder (genre_head.keras, content_head.keras) for musicnn-msd (default: from "
                   "artifacts/, else the same architecture untrained)")
    p.add_argument("--hop-s", type=float, help="hop in seconds (default: the model's; snapped by its frontend)")
    p.add_argument("--core", type=int, help="CPU to pin the 1-core phases to (default: the first allowed)")
    p.add_argument("--pace", choices=("source", "engine"), default="source",
                   help="real-time pacing by the sources like live streams (default) or by the engine (file sources)")
    p.add_argument("--preroll-s", type=float, default=0.0, help="seconds each paced stream bursts on start (default 0)")
    p.add_argument("--settle-s", type=float, help="seconds after the first windows before measuring")
    p.add_argument("--probe-hops", type=int, help="hops of the 1-stream throughput probe")
    p.add_argument("--main-hops", type=int, help="hops per stream of the main throughput run")
    p.add_argument("--cpu-budget-s", type=float, help="CPU seconds for the main throughput run")
    p.add_argument("--max-streams", type=int, help="most streams in the throughput run and the ladder")
    p.add_argument("--ladder-start", type=int, help="first rung (default: from the throughput estimate and the core share)")
    p.add_argument("--ladder-rungs", type=int, help="most rungs of the ladder")
    p.add_argument("--ladder-seconds", type=float, help="seconds measured per rung")
    p.add_argument("--latency-streams", help="streams of the latency phase: N, or N1,N2 per model of --models "
                   f"(default: the ladder's 1-core figure, else the throughput estimate, × the allowed cores, at most {LATENCY_MAX_STREAMS})")
    p.add_argument("--latency-seconds", type=float, help="seconds measured in the latency phase")
    p.add_argument("--transport-seconds", type=float, help="seconds of the transport-only baseline")
    p.add_argument("--trace-streams", type=int, help="streams of the tracemalloc run (0: skip)")
    p.add_argument("--naive-windows", type=int, help="windows timed the naive way")
    p.add_argument("--engine-kw", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Engine(...) keyword argument, e.g. features=batch (VALUE parsed as JSON if it can be); repeatable")
    p.add_argument("--profile", action="store_true", help="cProfile a throughput run (all threads, CPU time) and print the top functions")
    p.add_argument("--profile-top", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    defaults = {  # (default run, --quick)
        "settle_s": (2.0, 1.0), "probe_hops": (8, 3), "main_hops": (20, 5), "cpu_budget_s": (40.0, 8.0),
        "max_streams": (400, 200), "ladder_rungs": (7, 2), "ladder_seconds": (20.0, 5.0),
        "latency_seconds": (30.0, 5.0), "transport_seconds": (5.0, 2.0), "trace_streams": (20, 0),
        "naive_windows": (20, 5),
    }
    for key, (normal, quick) in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, quick if a.quick else normal)
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    kw = {}
    for item in a.engine_kw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--engine-kw: expected KEY=VALUE, got {item!r}")
        try:
            kw[key] = json.loads(value)
        except ValueError:
            kw[key] = value
    a.engine_kw = kw
    unknown = set(a.phases) - {"throughput", "ladder", "latency", "naive"}
    if unknown:
        p.error(f"--phases: unknown {sorted(unknown)}")
    if a.model and a.models:
        p.error("--model and --models: give one of them")
    a.model_specs = [x.strip() for x in a.models.split(",") if x.strip()] if a.models else [a.model]
    if not a.model_specs:
        p.error("--models: expected comma-separated model names or paths")
    if a.hop_s is not None and not a.hop_s > 0:
        p.error(f"--hop-s: expected a positive number of seconds, got {a.hop_s}")
    counts: list[int | None] = [None] * len(a.model_specs)
    if a.latency_streams:
        try:
            given = [int(x) for x in a.latency_streams.split(",")]
        except ValueError:
            p.error(f"--latency-streams: expected N or N1,N2,..., got {a.latency_streams!r}")
        if any(n < 1 for n in given) or len(given) not in (1, len(a.model_specs)):
            p.error(f"--latency-streams: expected one positive count or one per model ({len(a.model_specs)}), "
                    f"got {a.latency_streams!r}")
        counts = given * len(a.model_specs) if len(given) == 1 else given
    a.latency_counts = counts
    return a


@dataclass
class Subject:
    """One model under test and what its phases share.

    Attributes
    ----------
    spec : str or None
        ``--model`` / one of ``--models`` as given (None: the default).
    model : GenreModel
        Loaded with one ONNX Runtime intra-op thread, for the 1-core phases.
    hop_s : float
        The hop in use, seconds (the model's default or ``--hop-s``, snapped by the frontend).
    hop_length : int
        The same in samples at the model's sample rate.
    clips : list of _sources.Clip
        The music clips decoded at the model's sample rate.
    clips_path : Path
        Their cache file (how the latency process gets them).
    latency_streams : int or None
        ``--latency-streams`` for this model (None: from the throughput estimate).
    """

    spec: str | None
    model: Any
    hop_s: float
    hop_length: int
    clips: list
    clips_path: Path
    latency_streams: int | None = None


def shipped_name(path: Path) -> str | None:
    """The shipped model's name of a model file, or None."""
    from stream.model import SHIPPED_MODELS, shipped_model_path

    for name in SHIPPED_MODELS:
        try:
            if shipped_model_path(name).resolve() == Path(path).resolve():
                return name
        except OSError:
            continue
    return None


def run_subject(args, spec: str | None, latency_n: int | None, all_cpus: list[int]) -> dict:
    """Every phase of ``args.phases`` for one model; its results."""
    from _sources import decode_cost, load_clips, music_files

    from stream.engine import Engine
    from stream.model import GenreModel

    model = GenreModel(spec, intra_op_threads=1)  # the 1-core phases: one ONNX Runtime thread
    info = model.info
    probe = Engine(model, hop_s=args.hop_s, **ENGINE_KW)
    hop_s, hop_length = probe.hop_s, probe.hop_length
    engine_mode = getattr(probe, "features", "per-window batch (no features option)")
    name = shipped_name(model.path)
    say(f"\n# model {info.tag}: {model.path} ({'shipped as ' + repr(name) if name else 'NOT a shipped model'}, "
        f"{model.provider}); frontend {model.frontend.name} v{model.frontend.version}, input {tuple(model.frontend.input_shape)}, "
        f"{info.sample_rate} Hz, window {info.window_s:g} s, hop {hop_s:g} s ({hop_length} samples"
        + (f"; {args.hop_s:g} s asked" if args.hop_s is not None and abs(args.hop_s - hop_s) > 1e-9 else
           "; the model's default" if args.hop_s is None else "") + ")")
    say(f"engine: features={engine_mode}" + (f", extra {ENGINE_KW}" if ENGINE_KW else "")
        + "; ONNX Runtime: 1 intra-op thread in the 1-core phases, its default in the latency phase")
    cal0 = calibrate(args.core)
    say(f"calibration (fixed FFT workload on cpu {args.core}): {cal0['cpu_s'] * 1000:.0f} CPU-ms, "
        f"got {cal0['share']:.2f} of the core; load average {cal0['loadavg']}")
    t = time.monotonic()
    clips, clips_path = load_clips(info.sample_rate)
    dc = decode_cost(music_files()[0], info.sample_rate)
    say(f"audio: {len(clips)} music clips at {info.sample_rate} Hz, {sum(c.seconds for c in clips):.0f} s, ready in "
        f"{time.monotonic() - t:.1f} s; decoding+resampling as serving does costs {dc['cpu_s_per_audio_s'] * 1000:.2f} "
        f"CPU-ms per audio second (not in the engine figures: {1 / dc['cpu_s_per_audio_s']:.0f} streams/core for decoding alone)")
    # one short stream first: JIT compilation and lazy imports are paid once per process, not by a phase
    t = time.monotonic()
    asyncio.run(run_fast(model, clips, 1, info.window_s + hop_s, hop_s, workers=1, seed=args.seed + 3))
    say(f"warm-up (1 stream, {info.window_s + hop_s:g} s of audio): {time.monotonic() - t:.1f} s")
    pin(all_cpus)
    sub = Subject(spec, model, hop_s, hop_length, clips, clips_path, latency_n)
    res: dict[str, Any] = {
        "model": {"spec": spec, "path": str(model.path), "shipped_name": name, "tag": info.tag,
                  "provider": model.provider, "frontend": model.frontend.name,
                  "input_shape": list(model.frontend.input_shape), "sample_rate": info.sample_rate,
                  "window_s": info.window_s, "hop_s": hop_s, "hop_length": hop_length},
        "engine": {"features": engine_mode, "kw": ENGINE_KW},
        "calibration_start": cal0, "decode_cost": dc,
    }

    def run_phase(phase: str, fn, *a) -> None:
        if phase not in args.phases:
            return
        before = calibrate(args.core) if phase in CALIBRATED_PHASES else None
        pin(all_cpus)
        try:
            res[phase] = fn(*a)
        except KeyboardInterrupt:
            raise
        except Exception:  # noqa: BLE001 - report it, go on with the other phases
            tb = traceback.format_exc()
            say(f"  phase {phase} FAILED:\n{tb}")
            res[phase + "_error"] = tb
        finally:
            pin(all_cpus)
        if before is not None:
            after = calibrate(args.core)
            pin(all_cpus)
            res[phase + "_calibration_ms"] = [1000 * before["cpu_s"], 1000 * after["cpu_s"]]
            say(f"  core speed around this phase (calibration): {1000 * before['cpu_s']:.0f} → {1000 * after['cpu_s']:.0f} CPU-ms")

    run_phase("throughput", phase_throughput, args, sub)
    est = (res.get("throughput") or {}).get("streams_per_core")
    run_phase("ladder", phase_ladder, args, sub, est, cal0["share"])
    run_phase("latency", phase_latency, args, sub, all_cpus, est, res.get("ladder"))
    run_phase("naive", phase_naive, args, sub)
    cal1 = calibrate(args.core)
    pin(all_cpus)
    res["calibration_end"] = cal1
    say(f"\ncalibration after {info.tag}: {cal1['cpu_s'] * 1000:.0f} CPU-ms (start {cal0['cpu_s'] * 1000:.0f}), got "
        f"{cal1['share']:.2f} of the core (start {cal0['share']:.2f}); load average {cal1['loadavg']}")
    res["table"] = summary_table(res, hop_s)
    return res


def gpu_check(args) -> dict:
    """Whether ONNX Runtime's CUDA provider is usable here; with a GPU, the engine's figures on it.

    With a GPU: every model of the run, as many streams as the CPU-time estimate allows, read as fast as
    possible through an engine whose model runs on CUDA (batches up to stream.engine.MAX_BATCH_GPU: one call
    per tick over every ready window), streams per second of GPU wall time and the batch sizes.
    """
    import onnxruntime as ort

    from stream.model import GenreModel, _cuda_usable, resolve_model

    usable, why = _cuda_usable(ort, resolve_model(args.model_specs[0]).read_bytes())
    if not usable:
        say(f"\n## GPU: none usable here ({why}); every figure below is the CPU's")
        return {"usable": False, "reason": why}
    say(f"\n## GPU: CUDAExecutionProvider usable ({why})")
    out: dict[str, Any] = {"usable": True, "reason": why, "models": {}}
    previous = os.environ.get("GENRESTREAM_DEVICE")
    os.environ["GENRESTREAM_DEVICE"] = "cuda"
    try:
        import stream.model as sm
        sm._PROVIDER_CACHE = None
        from _sources import load_clips

        for spec in args.model_specs:
            model = GenreModel(spec)
            clips, _ = load_clips(model.info.sample_rate)
            n = args.max_streams or 200
            r = asyncio.run(run_fast(model, clips, n, model.info.window_s + 30.0, args.hop_s, workers=None,
                                     seed=args.seed))
            stats = r["batch_sizes"]
            rate = r.get("windows", 0) / max(1e-9, r.get("wall_s", 0.0))
            hop_s = args.hop_s or model.info.hop_s
            say(f"  {model.info.tag} on {model.provider}: {n} streams as fast as possible, {rate:.0f} windows per "
                f"wall second = about {rate * hop_s:.0f} real-time streams at hop {hop_s:g} s (every core feeding it); "
                f"batches mean {stats['mean']:.1f}, largest {stats['max']}")
            out["models"][spec or "default"] = {"streams": n, "windows_per_s": rate, "batches": stats, **r}
    finally:
        if previous is None:
            os.environ.pop("GENRESTREAM_DEVICE", None)
        else:
            os.environ["GENRESTREAM_DEVICE"] = previous
        import stream.model as sm
        sm._PROVIDER_CACHE = None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    ENGINE_KW.update(args.engine_kw)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    all_cpus = sorted(os.sched_getaffinity(0))
    if args.core is None:
        args.core = all_cpus[0]

    from stream.model import resolve_model

    for spec in args.model_specs:  # a wrong name fails now, not after the first model's phases
        try:
            resolve_model(spec)
        except FileNotFoundError as exc:
            say(f"--model{'s' if args.models else ''}: {exc}")
            return 2
    say(f"# genrestream stream benchmark — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, git {git_describe()}")
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (allowed {all_cpus}), "
        f"load average {loadavg()}; Python {platform.python_version()}; "
        + ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in THREAD_ENV))
    res: dict[str, Any] = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git": git_describe(),
        "machine": {"cpus": os.cpu_count(), "allowed": all_cpus, "processor": platform.processor(), "python": platform.python_version(),
                    "thread_env": {k: os.environ.get(k) for k in THREAD_ENV}},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    res["gpu"] = gpu_check(args)
    load0 = loadavg()
    for spec, latency_n in zip(args.model_specs, args.latency_counts):
        r = run_subject(args, spec, latency_n, all_cpus)
        key = r["model"]["shipped_name"] or r["model"]["tag"]
        while key in res["models"]:
            key += "'"
        res["models"][key] = r
    load1 = loadavg()
    res["elapsed_s"] = time.monotonic() - started
    say(f"\n## results ({res['date_utc']}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} → {load1[0]:.1f}; "
        f"absolute numbers depend on the load, ratios less so)\n")
    rows: list[dict] = []
    for key, r in res["models"].items():
        if len(res["models"]) > 1:
            m = r["model"]
            rows.append({"group": f"{m['tag']}: window {m['window_s']:g} s, hop {m['hop_s']:g} s"})
        rows.extend(r["table"])
    print_table(rows)
    if len(res["models"]) > 1:
        say("")
        print_comparison(res["models"])
    say(f"\nelapsed {res['elapsed_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(res), indent=2, default=str))
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
