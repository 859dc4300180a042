"""Prometheus metrics of one engine (prometheus_client), served at ``/metrics``.

Each :class:`EngineMetrics` has a registry of its own, so several engines in
one process (tests, benchmarks) do not collide.

Metrics
-------
``genrestream_stream_lag_seconds{stream}``
    Audio received but not yet classified: stream time of the newest sample
    minus the end of the newest classified window (0 to one hop when the
    engine keeps up).
``genrestream_windows_total{stream}``
    Windows classified; ``rate()`` of it is windows per second.
``genrestream_inference_batch_size``, ``genrestream_inference_latency_seconds``
    Histograms of ONNX Runtime calls.
``genrestream_hop_to_event_seconds``
    Window complete (its last sample in the ring buffer) → its prediction event handed to the publishers.
``genrestream_publish_latency_seconds{publisher}``
    Event queued → sent, for publishers that queue (Redis).
``genrestream_buffer_overflows_total{stream}``, ``genrestream_reconnects_total{stream}``,
``genrestream_source_bytes_total{stream}``, ``genrestream_source_seconds_decoded_total{stream}``,
``genrestream_decode_errors_total{stream}``
    From each source's statistics, read at scrape time (decode errors: damaged
    packets skipped and demuxer errors read past).
``genrestream_streams``
    Streams running.
``genrestream_cpu_seconds_total``, ``genrestream_cpu_share``
    CPU time of the engine's process (user + system, ``os.times``), and its
    share of the machine (CPU seconds per wall second over the time since the
    previous scrape, at least 1 s, divided by the number of cores: 1.0 is
    every core busy). Feature worker processes (``--feature-processes``) are
    not counted.
``genrestream_inference_busy_share``
    Share of wall time since the previous scrape that ONNX Runtime calls took.
    Near 1 the inference thread never rests: the engine is at its limit, and
    ``genrestream_stream_lag_seconds`` starts to grow.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _SourceStatsCollector:
    """Reads every stream's SourceStats when Prometheus scrapes."""

    def __init__(self, streams: Callable[[], Iterable[tuple[str, object, float]]]) -> None:
        self._streams = streams

    def collect(self):
        overflows = CounterMetricFamily("genrestream_buffer_overflows", "Input blocks lost (device or queue overflow)", labels=["stream"])
        reconnects = CounterMetricFamily("genrestream_reconnects", "Reconnections of the source", labels=["stream"])
        bytes_read = CounterMetricFamily("genrestream_source_bytes", "Bytes read from the source", labels=["stream"])
        decoded = CounterMetricFamily("genrestream_source_seconds_decoded", "Seconds of audio decoded", labels=["stream"])
        decode_errors = CounterMetricFamily(
            "genrestream_decode_errors", "Damaged packets skipped and demuxer errors read past", labels=["stream"]
        )
        lag = GaugeMetricFamily("genrestream_stream_lag_seconds", "Audio received but not yet classified, in seconds", labels=["stream"])
        for stream_id, stats, lag_s in self._streams():
            overflows.add_metric([stream_id], stats.overflows)
            reconnects.add_metric([stream_id], stats.reconnects)
            bytes_read.add_metric([stream_id], stats.bytes_read)
            decoded.add_metric([stream_id], stats.seconds_decoded)
            decode_errors.add_metric([stream_id], stats.decode_errors)
            lag.add_metric([stream_id], lag_s)
        yield from (overflows, reconnects, bytes_read, decoded, decode_errors, lag)


class _CpuCollector:
    """The process's CPU time and share, and the inference thread's busy share, since the previous scrape."""

    MIN_INTERVAL_S = 1.0

    def __init__(self, busy_s: Callable[[], float]) -> None:
        self._busy_s = busy_s
        self._lock = threading.Lock()
        self._last = (time.monotonic(), self._cpu_s(), busy_s())
        self._shares = (0.0, 0.0)

    @staticmethod
    def _cpu_s() -> float:
        t = os.times()
        return t.user + t.system

    def shares(self) -> tuple[float, float]:
        """(cpu_share, inference_busy_share) over the time since the previous call (at least 1 s)."""
        with self._lock:
            now, cpu, busy = time.monotonic(), self._cpu_s(), self._busy_s()
            wall = now - self._last[0]
            if wall >= self.MIN_INTERVAL_S:
                cores = os.cpu_count() or 1
                self._shares = ((cpu - self._last[1]) / wall / cores, min(1.0, (busy - self._last[2]) / wall))
                self._last = (now, cpu, busy)
            return self._shares

    def collect(self):
        cpu_share, busy_share = self.shares()
        total = CounterMetricFamily("genrestream_cpu_seconds", "CPU time of the engine's process (user + system)")
        total.add_metric([], self._cpu_s())
        share = GaugeMetricFamily("genrestream_cpu_share",
                                  "CPU seconds per wall second since the previous scrape, over the number of cores")
        share.add_metric([], cpu_share)
        busy = GaugeMetricFamily("genrestream_inference_busy_share",
                                 "Share of wall time since the previous scrape spent in ONNX Runtime calls")
        busy.add_metric([], busy_share)
        yield from (total, share, busy)


class EngineMetrics:
    """The metrics of one :class:`stream.engine.Engine`.

    Parameters
    ----------
    streams : callable
        Returns ``(stream_id, SourceStats, lag_s)`` for every running stream.
    """

    def __init__(self, streams: Callable[[], Iterable[tuple[str, object, float]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.windows = Counter("genrestream_windows", "Windows classified", ["stream"], registry=r)
        self.batch_size = Histogram(
            "genrestream_inference_batch_size", "Windows per ONNX Runtime call", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_latency = Histogram(
            "genrestream_inference_latency_seconds", "Duration of one ONNX Runtime call", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.hop_to_event = Histogram(
            "genrestream_hop_to_event_seconds", "Window complete to prediction event published",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.publish_latency = Histogram(
            "genrestream_publish_latency_seconds", "Event queued to sent", ["publisher"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.streams = Gauge("genrestream_streams", "Streams running", registry=r)
        self.inference_busy_s = 0.0  # added to by the inference thread's caller after each call
        r.register(_SourceStatsCollector(streams))
        self.cpu = _CpuCollector(lambda: self.inference_busy_s)
        r.register(self.cpu)

    def forget(self, stream_id: str) -> None:
        """Drop the per-stream series of a removed stream."""
        try:
            self.windows.remove(stream_id)
        except KeyError:
            pass
