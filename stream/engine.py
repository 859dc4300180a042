"""The streaming engine: sources in, events out.

For every stream::

    source thread ──blocks──▶ feature extractor (worker pool; incremental: each STFT frame once)
        ──windows every hop──▶ InferenceBatcher (one ONNX Runtime call for all streams ready this tick)
        ──▶ GenreSmoother ──▶ events ──▶ publishers

A source runs in a thread of its own (decoding and network I/O block), and
hands blocks to the event loop through a bounded queue: when the engine falls
behind, a file source waits (backpressure) instead of piling up memory.
Windows end at exact sample positions (``window_length``, then every
``hop_length`` samples of the stream), so the windows, and hence the events,
do not depend on how the source happened to cut its blocks. Each stream is
processed in order (push, predict, smooth, emit); the streams run
concurrently, and the batcher collects the windows that several of them
complete in the same tick.

A failing stream publishes a ``status`` event with state ``failed`` and the
reason, and the others carry on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import numpy as np

from . import events
from .frontends.windowing import BatchFeatures, WindowRMS
from .metrics import EngineMetrics
from .model import CONTENT_HEAD, GENRE_HEAD, TAGS_HEAD, GenreModel
from .ringbuffer import RingBuffer
from .smoothing import DEFAULT_PROFILE, GenreSmoother, SmootherConfig
from .sources import AudioSource, SourceError, SourceGap, SourceMetadata, SourceStatus

log = logging.getLogger(__name__)

TOP_TAGS = 5
"""A prediction event carries this many of the model's tags, most probable first."""

STATS_EVERY_S = 10.0
"""A prediction event carries the source's statistics once per this many seconds of stream time."""

SOURCE_JOIN_TIMEOUT_S = 10.0
"""How long a stream waits, once closed, for its source thread to return."""

MAX_BATCH = 8
"""Most windows per ONNX Runtime call. On the CPU a batch buys musicnn nothing (24 windows cost 41.8 ms each against
35.0 alone), while ONNX Runtime's memory arena keeps what its largest batch needed, about 31 MiB a musicnn window,
for good: uncapped, an engine that fell behind reached 33 MiB per stream (benchmarks/README.md)."""

MAX_BATCH_GPU = 512
"""Most windows per call on a GPU (CUDA provider): one call per tick over every ready window of every stream."""

MAX_BATCH_FRAME_STAGE = 1
"""Most windows per call on the CPU for a model split into a frame and a window stage (:mod:`stream.framestage`).
Batching buys the stages nothing on the CPU (15.6, 15.6 and 15.9 CPU-ms per window at batches of 1, 2 and 8), while
the memory each inference worker's sessions keep (ONNX Runtime's arena) grows from 94 MiB after batches of one window
to 443 MiB after batches of eight (``benchmarks/model_stages.py``)."""


def max_batch_for(model: GenreModel) -> int:
    """Most windows per ONNX Runtime call for ``model``: one call per tick on a GPU, small batches on the CPU."""
    if model.provider != "CPUExecutionProvider":
        return MAX_BATCH_GPU
    return MAX_BATCH_FRAME_STAGE if getattr(model, "stages", None) is not None else MAX_BATCH


MAX_HANDOVER_S = 2.0
"""Longest audio a source thread gathers before handing it to the engine (the first window may be longer)."""

MIN_PARTIAL_S = 1.0
"""A stream that ends before one full window is classified on what it had, if at least this long."""


class Publisher(Protocol):
    """Where events go: WebSocket clients, Redis, stdout, a list."""

    async def start(self) -> None: ...

    def publish(self, event: dict[str, Any]) -> None:
        """Take one event; must not block (queue it if sending takes time)."""

    async def close(self) -> None: ...


class InferenceBatcher:
    """Collects the windows of all streams that are ready in one event-loop tick,
    and runs them through the model in one batch.

    The call runs in a thread of its own (ONNX Runtime releases the GIL), so
    the event loop keeps serving sources, clients and publishers while a large
    model computes; the windows that become ready meanwhile make the next batch.

    With ``workers`` > 1, that many batches run at once, each in a thread
    of its own (an ONNX Runtime session may be run from several threads):
    on the CPU, one single-threaded call per core uses every core without
    ONNX Runtime's intra-op threads, which parallelise a small model's
    operators poorly. Windows that become ready while every worker is busy
    make the next batch.

    Parameters
    ----------
    model : GenreModel
    max_batch : int or None
        Largest batch sent to ONNX Runtime at once; None: :func:`max_batch_for` the current
        model (it may be swapped).
    workers : int
        Batches in flight at once (threads calling ONNX Runtime).
    """

    def __init__(self, model: GenreModel, max_batch: int | None = None, metrics: EngineMetrics | None = None,
                 workers: int = 1) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch = None if max_batch is None else int(max_batch)
        self.workers = max(1, int(workers))
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Any, np.ndarray, Any, Any, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.rows = 0

    async def predict(self, x: np.ndarray, key: Any = None, end_sample: int | None = None,
                      model: GenreModel | None = None) -> dict[str, np.ndarray]:
        """Queue one window's model input (shape ``frontend.input_shape``) and wait for every head's
        probabilities (head name → shape (n_labels,)).

        ``key`` (the stream) and ``end_sample`` (where the window ends in the stream's sample grid) let a
        model with a frame stage reuse the frames this window shares with the stream's previous one.
        ``model`` (default: the batcher's) lets streams run different models while one is swapped in:
        windows are batched per model."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inference")
            self._slots = asyncio.Semaphore(self.workers)
            self._task = asyncio.create_task(self._run(), name="inference-batcher")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((model or self.model, x, key, end_sample, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let every stream that is ready in this tick add its window
            cap = self.max_batch or max_batch_for(self.model)
            batch, self._pending = self._pending[:cap], self._pending[cap:]
            if self._pending:
                self._wakeup.set()
            if not batch:
                continue
            groups: dict[int, list] = {}
            for row in batch:
                groups.setdefault(id(row[0]), []).append(row)
            for rows in groups.values():
                await self._slots.acquire()  # a free worker; meanwhile new windows queue for the next batch
                task = asyncio.create_task(self._run_batch(rows))
                self._running.add(task)
                task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if self._slots is not None:
            self._slots.release()

    async def _run_batch(self, batch: list) -> None:
        model = batch[0][0]
        try:
            started = time.perf_counter()
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, model.predict, np.stack([row[1] for row in batch]),
                [row[2] for row in batch], [row[3] for row in batch])
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.inference_latency.observe(elapsed)
                self.metrics.inference_busy_s += elapsed
                self.metrics.batch_size.observe(len(batch))
        except Exception as exc:  # noqa: BLE001 - hand the error to every waiter
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.rows += len(batch)
        for i, (*_, future) in enumerate(batch):
            if not future.done():
                future.set_result({head: values[i] for head, values in outputs.items()})

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


@dataclass
class StreamSummary:
    """How a stream ended, returned by :meth:`Engine.run`."""

    stream: str
    source: str
    state: str = "connecting"
    detail: str = ""
    windows: int = 0
    audio_s: float = 0.0


_END = object()


class _Abandoned(Exception):
    """The engine stopped listening to a source thread."""


class _Stream:
    def __init__(self, stream_id: str, source: AudioSource, engine: "Engine") -> None:
        info = engine.model.info
        self.id = stream_id
        self.source = source
        self.model = engine.model  # the model classifying this stream (a swap takes over at its next block)
        self.hop_length = engine.hop_length
        self.source_rate = info.sample_rate  # the rate its source decodes at, for good
        self.resampler: Any = None  # soxr.ResampleStream when the model's rate differs from source_rate
        # Source-rate samples the reader gathers before it hands a block over: up to the next window's end
        # (one hand-over per hop), set by the event loop after each block; read by the source thread.
        self.handover_samples = info.sample_rate // 4
        self.extractor: Any = None  # made when the stream starts (it may live in a worker process)
        # The audio before the first window, kept only until there is one: a
        # stream that ends sooner is classified on what it had.
        self.head: RingBuffer | None = RingBuffer(info.window_length)
        self.loudness = WindowRMS(info.window_length)  # tells silent windows, whatever the frontend
        self.base_time_s = 0.0  # stream time at which the extractor's audio began (moves on at gaps)
        self.smoother = GenreSmoother(info.labels, engine.smoother_config, content_labels=info.content_labels)
        self.summary = StreamSummary(stream_id, source.spec)
        self.title = ""
        self.removed = False
        self.closing: asyncio.Event | None = None  # set when the stream is asked to stop
        self.classified_s = 0.0  # stream time of the end of the newest classified window
        self.stats_sent_s = float("-inf")  # stream time of the last prediction that carried stats


class Engine:
    """Runs many streams through one model.

    Parameters
    ----------
    model : GenreModel
        The model; its metadata gives sample_rate, window_s and the default hop_s.
    publishers : iterable of Publisher
        Every event goes to each of them.
    hop_s : float or None
        Seconds between windows; None for the model's default. The frontend
        may round it to its frame grid (:attr:`hop_s` is the hop in use).
    realtime : bool
        Pace file sources at playback speed (live sources are paced by nature).
    smoother_config : SmootherConfig or None
        Smoothing settings (``window_s`` is taken from the model); None for
        the ``profile``'s.
    profile : str
        Smoothing profile (:data:`stream.smoothing.PROFILES`: ``"radio"``,
        the default, or ``"dj"``), for the model's window and this hop.
    feature_workers : int or None
        Threads computing features; None for the number of CPUs.
    feature_processes : int
        Run the feature extractors in this many worker processes
        (:class:`stream.procpool.FeatureProcessPool`) instead of threads of
        this process: the feature work holds the GIL, so only processes use
        more than one core. 0 (default): threads.
    features : {"incremental", "batch"}
        How windows get their model input: the frontend's incremental
        extractor (each STFT frame once; a hop costs work in proportion to
        the hop) or :class:`stream.frontends.windowing.BatchFeatures` (the
        reference: the frontend's batch function on the whole window every
        hop).
    inference_workers : int or None
        ONNX Runtime calls in flight at once (:class:`InferenceBatcher`);
        None: on the CPU, the cores divided by the model's intra-op threads
        (one single-threaded call per core with the default model settings),
        on a GPU 1.
    worker : str or None
        Added as ``worker`` to every event (``genrestream cluster``: the shard's name).
    trace_latency : bool
        Add ``window_done_monotonic_s`` (``time.monotonic()`` when the
        window's last sample was buffered; comparable across processes on one
        Linux machine) to prediction events, for latency benchmarks.

    Attributes
    ----------
    metrics : EngineMetrics
        Prometheus metrics, in a registry of the engine's own.
    states : events.StreamStates
        The latest events of every stream.

    Raises
    ------
    ValueError
        If ``hop_s`` is not positive, ``features`` is unknown or
        ``feature_processes`` is negative.
    """

    def __init__(
        self,
        model: GenreModel,
        publishers: Iterable[Publisher] = (),
        hop_s: float | None = None,
        realtime: bool = False,
        smoother_config: SmootherConfig | None = None,
        profile: str = DEFAULT_PROFILE,
        feature_workers: int | None = None,
        feature_processes: int = 0,
        features: str = "incremental",
        trace_latency: bool = False,
        worker: str | None = None,
        inference_workers: int | None = None,
    ) -> None:
        self.model = model
        self.worker = worker
        if inference_workers is None:
            cores = os.cpu_count() or 1
            threads = getattr(model, "intra_op_threads", None) or cores
            inference_workers = max(1, cores // threads) if model.provider == "CPUExecutionProvider" else 1
        self.inference_workers = int(inference_workers)
        if self.inference_workers < 1:
            raise ValueError(f"inference_workers: expected 1 or more, got {inference_workers}")
        self._seq: dict[str, int] = {}  # stream id -> the sequence number of its next event
        info = model.info
        requested_hop_s = float(hop_s if hop_s is not None else info.hop_s)
        if requested_hop_s <= 0:
            raise ValueError(f"hop_s: expected a positive number of seconds, got {hop_s}")
        if features not in ("incremental", "batch"):
            raise ValueError(f"features: expected 'incremental' or 'batch', got {features!r}")
        self.features = features
        self._requested_hop_s = None if hop_s is None else requested_hop_s
        self._profile, self._given_smoother_config = profile, smoother_config
        self.realtime = realtime
        self._configure(model)
        self.publishers = list(publishers)
        self.feature_processes = int(feature_processes)
        if self.feature_processes < 0:
            raise ValueError(f"feature_processes: expected 0 or more, got {feature_processes}")
        # With worker processes a pool thread only waits for its process: more threads keep them busy.
        self.workers = int(feature_workers or os.cpu_count() or 1)
        if self.feature_processes:
            self.workers = max(self.workers, 4 * self.feature_processes)
        self._process_pool = None
        self.trace_latency = trace_latency
        self.states = events.StreamStates()
        self._streams: dict[str, _Stream] = {}  # streams not yet ended (their state is large)
        self._ended: dict[str, StreamSummary] = {}  # streams that ended: only their summary
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._batcher: InferenceBatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._wake: asyncio.Event | None = None
        self.metrics = EngineMetrics(self._stream_metrics)
        _limit_blas_threads()

    def _configure(self, model: GenreModel) -> None:
        """hop_length, hop_s and smoother_config for ``model`` (its frame grid, its window)."""
        info = model.info
        requested_hop_s = self._requested_hop_s if self._requested_hop_s is not None else info.hop_s
        # The frontend may need the hop on its frame grid (log-mel: multiples of 256 samples).
        self.hop_length = model.frontend.snap_hop(max(1, int(round(requested_hop_s * info.sample_rate))))
        self.hop_s = self.hop_length / info.sample_rate
        if self._given_smoother_config is None:
            self.smoother_config = SmootherConfig.for_profile(self._profile, info.window_s, self.hop_s)
        else:
            self.smoother_config = dataclasses.replace(self._given_smoother_config, window_s=info.window_s)

    def set_model(self, model: GenreModel) -> None:
        """Swap the model while streams run (from the event loop's thread).

        Each running stream changes over at its next block of audio: with the
        same frontend its windows go on where they were and the next one is the
        new model's; otherwise its windows start afresh on the new frontend (as
        after a gap of no length), its audio resampled if the rates differ. Its
        smoother is kept when the labels are the same. Each stream publishes
        one ``status`` event naming the model (``model``: ``name@version``).
        No stream stops.

        Raises
        ------
        ValueError
            If the engine computes features in worker processes and the new
            model has another frontend (the workers are built for one).
        """
        if self._process_pool is not None and model.frontend.params() != self.model.frontend.params():
            raise ValueError("model: the feature worker processes compute another frontend; restart to change it")
        self.model = model
        self._configure(model)
        if self._batcher is not None:
            self._batcher.model = model
        for st in self._streams.values():
            if self._loop is None:  # not running yet: nothing computed, start with the new model
                st.model, st.hop_length = model, self.hop_length
                st.smoother = GenreSmoother(model.info.labels, self.smoother_config,
                                            content_labels=model.info.content_labels)
                st.head = RingBuffer(model.info.window_length)
                st.loudness = WindowRMS(model.info.window_length)
        log.info("model %s takes over at each stream's next block", model.info.tag)

    def _switch_model(self, st: _Stream) -> None:
        """Move one stream over to the engine's current model (see :meth:`set_model`)."""
        old, new = st.model, self.model
        now_s = self._stream_time_s(st)
        same_frontend = (new.frontend.params() == old.frontend.params() and self.hop_length == st.hop_length
                         and new.info.sample_rate == old.info.sample_rate)
        old.forget(st.id)
        st.model, st.hop_length = new, self.hop_length
        if not same_frontend:
            st.extractor = self._make_extractor(st.id)
            st.base_time_s = now_s
            st.head = RingBuffer(new.info.window_length)
            st.loudness = WindowRMS(new.info.window_length)
            st.resampler = None
            if new.info.sample_rate != st.source_rate:
                import soxr

                st.resampler = soxr.ResampleStream(st.source_rate, new.info.sample_rate, 1, dtype="float32")
        if (new.info.labels, new.info.content_labels) != (old.info.labels, old.info.content_labels) or \
                st.smoother.config != self.smoother_config:
            st.smoother = GenreSmoother(new.info.labels, self.smoother_config, content_labels=new.info.content_labels)
            st.smoother.reset(now_s)
        self._status(st, st.summary.state, f"classified by {new.info.tag} from stream time {now_s:.1f} s",
                     model=new.info.tag)

    # -- streams --------------------------------------------------------------
    def add(self, source: AudioSource, stream_id: str, start_time_s: float = 0.0) -> str:
        """Add a stream, before :meth:`run` or while it runs (from the event loop's thread).

        ``start_time_s`` is the stream time of its first sample (a stream resumed elsewhere after
        a gap goes on from where it was; default 0).

        Raises
        ------
        ValueError
            If ``stream_id`` is empty or in use by a stream that has not ended.
        """
        if not stream_id:
            raise ValueError("stream_id: expected a non-empty id")
        if stream_id in self._streams:
            raise ValueError(f"stream_id: {stream_id!r} is already in use")
        self._streams[stream_id] = st = _Stream(stream_id, source, self)
        st.base_time_s = float(start_time_s)
        if self._loop is not None:
            self._start(st)
        return stream_id

    def remove(self, stream_id: str) -> None:
        """Stop one stream (thread-safe); it ends with a status ``ended``, detail ``removed``.

        Raises
        ------
        KeyError
            If no stream has that id.
        """
        st = self._streams[stream_id]
        st.removed = True
        self._close(st)

    async def wait_stream(self, stream_id: str) -> None:
        """Wait until a running stream has ended (returns at once if it is not running)."""
        task = self._tasks.get(stream_id)
        if task is not None:
            await asyncio.wait([task])

    @property
    def stream_ids(self) -> list[str]:
        """Ids of the streams added and not yet ended."""
        return list(self._streams)

    @property
    def running_ids(self) -> list[str]:
        """Ids of the streams running now."""
        return list(self._tasks)

    def stop(self) -> None:
        """Ask every source to stop (thread-safe); :meth:`run` then returns."""
        self._stop.set()
        for st in list(self._streams.values()):
            self._close(st)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _close(self, st: _Stream) -> None:
        st.source.close()
        if self._loop is not None and st.closing is not None:
            self._loop.call_soon_threadsafe(st.closing.set)

    def _make_extractor(self, stream_id: str):
        if self._process_pool is not None:
            return self._process_pool.extractor(stream_id)
        if self.features == "batch":
            return BatchFeatures(self.model.frontend, self.hop_length)
        return self.model.frontend.extractor(self.hop_length)  # the current model's: a stream starts on it

    def _start(self, st: _Stream) -> None:
        st.extractor = self._make_extractor(st.id)
        self._tasks[st.id] = asyncio.get_running_loop().create_task(self._run_stream(st), name=f"stream-{st.id}")
        self.metrics.streams.set(len(self._tasks))
        if self._wake is not None:
            self._wake.set()

    def lag_s(self) -> dict[str, float]:
        """Seconds of audio received but not yet classified, by running stream (as ``/metrics`` reports)."""
        return {sid: lag for sid, _, lag in self._stream_metrics()}

    def _stream_metrics(self):
        for sid in list(self._tasks):
            st = self._streams.get(sid)
            if st is not None:
                received_s = st.base_time_s + st.extractor.samples_seen / st.model.info.sample_rate
                lag_s = max(0.0, received_s - max(st.classified_s, st.base_time_s)) if st.summary.windows else 0.0
                yield sid, st.source.stats, lag_s

    # -- events ---------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        """Give an event its ``seq`` and ``id`` (and ``worker``), record it as the stream's current
        state and hand it to every publisher.

        ``seq`` counts a stream's events; it starts from the wall clock in microseconds when the
        engine first emits for that stream, so that a restarted engine or shard continues above
        every ``seq`` it emitted before (ids never repeat unless the clock goes back), and
        ``id`` = ``"{stream}:{seq}"`` lets a consumer drop an event delivered twice.
        """
        stream_id = event.get("stream")
        if stream_id is not None:
            seq = self._seq.get(stream_id)
            if seq is None:
                seq = time.time_ns() // 1000
            self._seq[stream_id] = seq + 1
            event["seq"] = seq
            event["id"] = f"{stream_id}:{seq}"
        if self.worker is not None:
            event["worker"] = self.worker
        self.states.update(event)
        for publisher in self.publishers:
            try:
                publisher.publish(event)
            except Exception:  # noqa: BLE001 - a broken publisher must not stop classification
                log.exception("publisher %s failed on a %s event", type(publisher).__name__, event.get("type"))

    def _status(self, st: _Stream, state: str, detail: str = "", **extra: Any) -> None:
        st.summary.state, st.summary.detail = state, detail
        self.emit(
            events.status(st.id, state, detail, source=st.source.spec, stats=st.source.stats.as_dict(), **extra)
        )

    # -- running --------------------------------------------------------------
    async def run(self, forever: bool = False) -> dict[str, StreamSummary]:
        """Run every stream until it ends or fails, or until :meth:`stop`.

        Parameters
        ----------
        forever : bool
            Keep running when no stream is left (streams may be added later),
            until :meth:`stop`.

        Returns
        -------
        dict of str to StreamSummary
            Every stream run, by id.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="features")
        if self.feature_processes:
            from .procpool import FeatureProcessPool

            self._process_pool = await asyncio.get_running_loop().run_in_executor(
                None, FeatureProcessPool, self.feature_processes, self.features, self.model.frontend.params(),
                self.hop_length,
            )
        self._batcher = InferenceBatcher(self.model, metrics=self.metrics, workers=self.inference_workers)
        try:
            for st in list(self._streams.values()):
                self._start(st)
            while self._tasks or (forever and not self._stop.is_set()):
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([*self._tasks.values(), waker], return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                for sid, task in list(self._tasks.items()):
                    if task.done():
                        del self._tasks[sid]
                        self.metrics.forget(sid)
                        self._ended[sid] = self._streams.pop(sid).summary
                self.metrics.streams.set(len(self._tasks))
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()
            await self._batcher.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._process_pool is not None:
                self._process_pool.close()
                self._process_pool = None
            self._loop = None
        return {**self._ended, **{sid: st.summary for sid, st in self._streams.items()}}

    def _reader(self, st: _Stream, loop: asyncio.AbstractEventLoop, q: asyncio.Queue) -> None:
        """Source thread: decode, gather up to the next window's end, pace, hand over.

        A block is handed over once it holds the samples that complete the
        stream's next window (``st.handover_samples``, at most
        :data:`MAX_HANDOVER_S`): one hand-over per hop, however small the
        decoder's blocks, and never later than the window could be computed.
        A paced file hands a block over when its last sample is due.
        """
        sample_rate = st.source_rate
        pace = self.realtime and st.source.is_file
        started = time.monotonic()
        sent = 0
        pending: list[np.ndarray] = []
        pending_n = 0

        def put(item: Any) -> None:
            """Hand over, waiting while the queue is full (backpressure), unless the stream is going away."""
            coroutine = q.put(item)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            except RuntimeError:  # the loop is closed: the engine is gone
                coroutine.close()
                raise _Abandoned from None
            while True:
                try:
                    future.result(timeout=0.5)
                    return
                except concurrent.futures.TimeoutError:
                    if self._stop.is_set() or st.removed:
                        future.cancel()
                        raise _Abandoned from None

        try:
            for block in st.source.blocks(sample_rate):
                if self._stop.is_set():
                    break
                if not isinstance(block, np.ndarray):  # a status, gap or title: audio before it first
                    if pending:
                        put(np.concatenate(pending))
                        pending, pending_n = [], 0
                    if isinstance(block, SourceGap):
                        started, sent = time.monotonic(), 0
                    put(block)
                    continue
                pending.append(block)
                pending_n += block.shape[0]
                if pending_n < st.handover_samples:
                    continue
                chunk = np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, pending_n = [], 0
                if pace:
                    delay = started + (sent + chunk.shape[0]) / sample_rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sent += chunk.shape[0]
                put(chunk)
            if pending:
                put(np.concatenate(pending))
            put(_END)
        except _Abandoned:
            pass
        except SourceError as exc:
            try:
                put(exc)
            except _Abandoned:
                pass
        except Exception as exc:  # noqa: BLE001 - report, never crash the other streams
            log.exception("source %s failed", st.source.spec)
            try:
                put(SourceError(st.source.spec, f"{type(exc).__name__}: {exc}"))
            except _Abandoned:
                pass

    @staticmethod
    async def _next_item(st: _Stream, q: asyncio.Queue) -> Any:
        """The next item from the source thread, or _END once the stream is asked to stop."""
        if not q.empty():
            return q.get_nowait()
        assert st.closing is not None
        if st.closing.is_set():
            return _END
        getter = asyncio.ensure_future(q.get())
        closing = asyncio.ensure_future(st.closing.wait())
        await asyncio.wait({getter, closing}, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return _END

    async def _run_stream(self, st: _Stream) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(maxsize=32)
        st.closing = asyncio.Event()
        if st.removed or self._stop.is_set():
            st.closing.set()
        self._status(st, "connecting", f"opening {st.source.spec}")
        thread = threading.Thread(
            target=self._reader, args=(st, loop, q), name=f"source-{st.id}", daemon=True
        )
        thread.start()
        playing = False
        try:
            while True:
                item = await self._next_item(st, q)
                if item is _END:
                    break
                if isinstance(item, SourceError):
                    st.source.stats.last_error = item.reason
                    log.error("stream %s failed: %s", st.id, item)
                    self._status(st, "failed", str(item))
                    return
                if isinstance(item, SourceStatus):
                    playing = item.state == "playing"
                    self._status(st, item.state, item.detail)
                    continue
                if isinstance(item, SourceGap):
                    await self._gap(st, item)
                    continue
                if isinstance(item, SourceMetadata):
                    st.title = st.source.stats.title = item.title
                    st.smoother.hint_boundary(self._stream_time_s(st))
                    self.emit(events.metadata(st.id, item.title, self._stream_time_s(st)))
                    continue
                if not playing:
                    playing = True
                    self._status(st, "playing", f"decoding {st.source.spec}")
                await self._feed(st, item)
            await self._finish(st)
            self._status(st, "ended", "removed" if st.removed else "stopped" if self._stop.is_set() else "end of stream")
        except Exception as exc:  # noqa: BLE001 - one stream's bug must not end the others
            log.exception("stream %s crashed", st.id)
            self._status(st, "failed", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            # The source thread must be out of its library (PortAudio, FFmpeg)
            # before the process may exit: a device torn down under a thread
            # still reading it crashes the interpreter.
            st.source.close()
            st.model.forget(st.id)
            if hasattr(st.extractor, "close"):  # free its state in the worker process
                try:
                    await asyncio.shield(loop.run_in_executor(self._pool, st.extractor.close))
                except RuntimeError:  # the engine is shutting down: its worker processes go with it
                    pass
            await asyncio.shield(loop.run_in_executor(None, thread.join, SOURCE_JOIN_TIMEOUT_S))
            if thread.is_alive():
                log.warning("stream %s: source thread still busy %.0f s after close", st.id, SOURCE_JOIN_TIMEOUT_S)

    def _stream_time_s(self, st: _Stream) -> float:
        return st.base_time_s + st.extractor.samples_seen / st.model.info.sample_rate

    async def _gap(self, st: _Stream, gap: SourceGap) -> None:
        """Audio was lost: move stream time on, start windows and smoothing afresh."""
        before = self._stream_time_s(st)
        st.base_time_s = before + max(0.0, gap.duration_s)
        st.extractor.reset()
        st.model.forget(st.id)
        st.loudness.reset()
        st.smoother.reset(st.base_time_s)
        self._status(
            st, st.summary.state,
            f"gap of {gap.duration_s:.1f} s at stream time {before:.1f} s" + (f": {gap.detail}" if gap.detail else ""),
            gap_s=round(gap.duration_s, 3), gap_start_s=round(before, 3),
        )

    async def _feed(self, st: _Stream, block: np.ndarray) -> None:
        """Push one block; classify every window it completes, in order."""
        assert self._pool is not None
        arrived_monotonic_s = time.monotonic()
        if st.model is not self.model:
            self._switch_model(st)
        if st.resampler is not None:
            block = st.resampler.resample_chunk(block)
            if block.shape[0] == 0:
                return
        info = st.model.info
        if st.head is not None:
            st.head.write(block)
        st.loudness.push(block)
        windows = await asyncio.get_running_loop().run_in_executor(self._pool, st.extractor.push, block)
        st.summary.audio_s += block.shape[0] / info.sample_rate
        self._plan_handover(st)
        for end_sample, x in windows:
            st.head = None
            stream_time_s = st.base_time_s + end_sample / info.sample_rate
            silent = st.loudness.rms(end_sample) < info.silence_rms
            await self._classify(st, x, stream_time_s, arrived_monotonic_s, silent, end_sample=end_sample)

    def _plan_handover(self, st: _Stream) -> None:
        """Tell the source thread how many samples complete the stream's next window."""
        next_end = getattr(st.extractor, "next_end", None)
        if next_end is None:  # an extractor that does not say: quarter-second blocks
            st.handover_samples = st.source_rate // 4
            return
        needed = next_end - st.extractor.samples_seen  # at the model's rate
        if st.model.info.sample_rate != st.source_rate:
            needed = int(np.ceil(needed * st.source_rate / st.model.info.sample_rate)) + 1
        st.handover_samples = int(min(max(1, needed), MAX_HANDOVER_S * st.source_rate))

    async def _classify(
        self, st: _Stream, x: np.ndarray, stream_time_s: float, arrived_monotonic_s: float, silent: bool,
        partial: bool = False, end_sample: int | None = None,
    ) -> None:
        assert self._batcher is not None
        try:
            outputs = await self._batcher.predict(np.asarray(x, dtype=np.float32), st.id, end_sample, model=st.model)
        except Exception:  # noqa: BLE001 - skip the window, keep the stream
            log.exception("stream %s: window ending at %.2f s failed", st.id, stream_time_s)
            return
        info = st.model.info
        probabilities = outputs[GENRE_HEAD]
        content = outputs.get(CONTENT_HEAD)
        step = st.smoother.update(probabilities, stream_time_s, silent=silent, content=content)
        st.summary.windows += 1
        st.classified_s = stream_time_s
        self.metrics.windows.labels(st.id).inc()
        extra: dict[str, Any] = {}
        if content is not None:
            extra["content"] = events.label_probabilities(info.content_labels, content)
        if TAGS_HEAD in outputs:
            extra["tags"] = events.top_labels(info.tag_labels, outputs[TAGS_HEAD], TOP_TAGS)
        if partial:
            extra["partial"] = True
        if silent:
            extra["silent"] = True
        if st.title:
            extra["title"] = st.title
        if self.trace_latency:
            extra["window_done_monotonic_s"] = arrived_monotonic_s
        if stream_time_s - st.stats_sent_s >= STATS_EVERY_S or stream_time_s < st.stats_sent_s:
            extra["stats"] = st.source.stats.as_dict()
            st.stats_sent_s = stream_time_s
        self.emit(
            events.prediction(
                st.id, stream_time_s, info.labels, probabilities, step.genre, step.confidence, **extra
            )
        )
        self.metrics.hop_to_event.observe(time.monotonic() - arrived_monotonic_s)
        if step.change is not None:
            self._emit_change(st, step.change)

    def _emit_change(self, st: _Stream, change) -> None:
        extra: dict[str, Any] = {}
        if getattr(change, "content", None) is not None:
            extra["content"] = events.label_probabilities(st.model.info.content_labels, change.content)
        self.emit(
            events.genre_change(
                st.id,
                change.genre,
                change.previous,
                change.confidence,
                st.model.info.labels,
                change.probabilities,
                change.onset_s,
                change.stream_time_s,
                st.model.info.tag,
                **extra,
            )
        )

    async def _finish(self, st: _Stream) -> None:
        """End of stream: classify a short stream on what it had (padded as in training); settle a pending change."""
        frontend = st.model.frontend
        shortest = max(frontend.min_samples, MIN_PARTIAL_S * frontend.sample_rate)
        if st.summary.windows == 0 and st.head is not None and len(st.head) >= shortest:
            audio = st.head.latest(len(st.head))
            x = await asyncio.get_running_loop().run_in_executor(self._pool, frontend.window_input, audio)
            silent = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < st.model.info.silence_rms
            await self._classify(st, x, self._stream_time_s(st), time.monotonic(), silent, partial=True)
        change = st.smoother.flush(self._stream_time_s(st))
        if change is not None:
            self._emit_change(st, change)


def _limit_blas_threads() -> None:
    """One BLAS/OpenMP thread per process (threadpoolctl): the engine runs streams
    in parallel itself, and BLAS threads competing for the same cores multiplied
    the feature cost several times (benchmarks/README.md)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with librosa's scikit-learn; without it, leave BLAS alone
        return
    threadpool_limits(limits=1)
