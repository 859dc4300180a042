"""The streaming engine: sources in, events out.

For every stream::

    source thread ──blocks──▶ ring buffer ──window every hop──▶ features (worker pool)
        ──▶ InferenceBatcher (one ONNX Runtime call for all streams ready this tick)
        ──▶ GenreSmoother ──▶ events ──▶ publishers

A source runs in a thread of its own (decoding and network I/O block), and
hands blocks to the event loop through a bounded queue: when the engine falls
behind, a file source waits (backpressure) instead of piling up memory.
Windows end at exact sample positions (``window_length``, then every
``hop_length``), so the windows, and hence the events, do not depend on how
the source happened to cut its blocks.

A failing stream publishes a ``status`` event with state ``failed`` and the
reason, and the others carry on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import numpy as np

from . import events
from .features import MIN_SAMPLES, gtzan_features
from .model import GenreModel
from .ringbuffer import RingBuffer
from .smoothing import GenreSmoother, SmootherConfig
from .sources import AudioSource, SourceError

log = logging.getLogger(__name__)

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

    Parameters
    ----------
    model : GenreModel
    max_batch : int
        Largest batch sent to ONNX Runtime at once.
    """

    def __init__(self, model: GenreModel, max_batch: int = 1024) -> None:
        self.model = model
        self.max_batch = int(max_batch)
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.rows = 0

    async def predict(self, feature_row: np.ndarray) -> np.ndarray:
        """Queue one feature vector (shape (57,)) and wait for its probabilities (shape (n_labels,))."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="inference-batcher")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((feature_row, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let every stream that is ready in this tick add its window
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if self._pending:
                self._wakeup.set()
            if not batch:
                continue
            try:
                probabilities = self.model.predict(np.stack([row for row, _ in batch]))
            except Exception as exc:  # noqa: BLE001 - hand the error to every waiter
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            for (_, future), p in zip(batch, probabilities):
                if not future.done():
                    future.set_result(p)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


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


class _Stream:
    def __init__(self, stream_id: str, source: AudioSource, engine: "Engine") -> None:
        info = engine.model.info
        self.id = stream_id
        self.source = source
        self.ring = RingBuffer(info.window_length)
        self.next_end = info.window_length
        self.smoother = GenreSmoother(info.labels, engine.smoother_config)
        self.inflight: deque[tuple[asyncio.Future, float, bool]] = deque()
        self.summary = StreamSummary(stream_id, source.spec)
        self.title = ""


class Engine:
    """Runs many streams through one model.

    Parameters
    ----------
    model : GenreModel
        The model; its metadata gives sample_rate, window_s and the default hop_s.
    publishers : iterable of Publisher
        Every event goes to each of them.
    hop_s : float or None
        Seconds between windows; None for the model's default.
    realtime : bool
        Pace file sources at playback speed (live sources are paced by nature).
    smoother_config : SmootherConfig or None
        Smoothing settings; ``window_s`` is taken from the model.
    feature_workers : int or None
        Threads computing features; None for the number of CPUs.

    Raises
    ------
    ValueError
        If ``hop_s`` is not positive.
    """

    def __init__(
        self,
        model: GenreModel,
        publishers: Iterable[Publisher] = (),
        hop_s: float | None = None,
        realtime: bool = False,
        smoother_config: SmootherConfig | None = None,
        feature_workers: int | None = None,
    ) -> None:
        self.model = model
        info = model.info
        self.hop_s = float(hop_s if hop_s is not None else info.hop_s)
        if self.hop_s <= 0:
            raise ValueError(f"hop_s: expected a positive number of seconds, got {hop_s}")
        self.hop_length = max(1, int(round(self.hop_s * info.sample_rate)))
        self.realtime = realtime
        base = smoother_config or SmootherConfig()
        self.smoother_config = SmootherConfig(
            average_windows=base.average_windows,
            switch_margin=base.switch_margin,
            min_dwell_s=base.min_dwell_s,
            unknown_threshold=base.unknown_threshold,
            window_s=info.window_s,
        )
        self.publishers = list(publishers)
        self.workers = int(feature_workers or os.cpu_count() or 1)
        self.states = events.StreamStates()
        self._streams: dict[str, _Stream] = {}
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._batcher: InferenceBatcher | None = None

    # -- set-up ---------------------------------------------------------------
    def add(self, source: AudioSource, stream_id: str) -> str:
        """Add a stream before :meth:`run`.

        Raises
        ------
        ValueError
            If ``stream_id`` is already in use.
        """
        if stream_id in self._streams:
            raise ValueError(f"stream_id: {stream_id!r} is already in use")
        self._streams[stream_id] = _Stream(stream_id, source, self)
        return stream_id

    @property
    def stream_ids(self) -> list[str]:
        """Ids of the streams added so far."""
        return list(self._streams)

    def stop(self) -> None:
        """Ask every source to stop (thread-safe); :meth:`run` then returns."""
        self._stop.set()
        for st in self._streams.values():
            st.source.close()

    # -- events ---------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        """Record an event as the stream's current state and hand it to every publisher."""
        self.states.update(event)
        for publisher in self.publishers:
            try:
                publisher.publish(event)
            except Exception:  # noqa: BLE001 - a broken publisher must not stop classification
                log.exception("publisher %s failed on a %s event", type(publisher).__name__, event.get("type"))

    def _status(self, st: _Stream, state: str, detail: str = "") -> None:
        st.summary.state, st.summary.detail = state, detail
        self.emit(
            events.status(st.id, state, detail, source=st.source.spec, stats=st.source.stats.as_dict())
        )

    # -- running --------------------------------------------------------------
    async def run(self) -> dict[str, StreamSummary]:
        """Run every stream until it ends or fails (or :meth:`stop`).

        Returns
        -------
        dict of str to StreamSummary
        """
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="features")
        self._batcher = InferenceBatcher(self.model)
        try:
            await asyncio.gather(*(self._run_stream(st) for st in self._streams.values()))
        finally:
            await self._batcher.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        return {sid: st.summary for sid, st in self._streams.items()}

    def _reader(self, st: _Stream, loop: asyncio.AbstractEventLoop, q: asyncio.Queue) -> None:
        """Source thread: decode, coalesce to ~0.25 s blocks, pace, hand over."""
        sample_rate = self.model.info.sample_rate
        min_block = sample_rate // 4
        pace = self.realtime and st.source.is_file
        started = time.monotonic()
        sent = 0
        pending: list[np.ndarray] = []
        pending_n = 0

        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(q.put(item), loop).result()

        try:
            for block in st.source.blocks(sample_rate):
                if self._stop.is_set():
                    break
                pending.append(block)
                pending_n += block.shape[0]
                if pending_n < min_block:
                    continue
                chunk = np.concatenate(pending)
                pending, pending_n = [], 0
                if pace:
                    delay = started + sent / sample_rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sent += chunk.shape[0]
                put(chunk)
            if pending:
                put(np.concatenate(pending))
            put(_END)
        except SourceError as exc:
            put(exc)
        except Exception as exc:  # noqa: BLE001 - report, never crash the other streams
            log.exception("source %s failed", st.source.spec)
            put(SourceError(st.source.spec, f"{type(exc).__name__}: {exc}"))

    async def _run_stream(self, st: _Stream) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(maxsize=32)
        self._status(st, "connecting", f"opening {st.source.spec}")
        thread = threading.Thread(
            target=self._reader, args=(st, loop, q), name=f"source-{st.id}", daemon=True
        )
        thread.start()
        playing = False
        try:
            while True:
                item = await q.get()
                if item is _END:
                    break
                if isinstance(item, SourceError):
                    st.source.stats.last_error = item.reason
                    log.error("stream %s failed: %s", st.id, item)
                    await self._drain(st)
                    self._status(st, "failed", str(item))
                    return
                if not playing:
                    playing = True
                    self._status(st, "playing", f"decoding {st.source.spec}")
                await self._feed(st, item)
            await self._drain(st)
            await self._finish(st)
            self._status(st, "ended", "end of stream")
        except Exception as exc:  # noqa: BLE001 - one stream's bug must not end the others
            log.exception("stream %s crashed", st.id)
            self._status(st, "failed", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            st.source.close()

    async def _feed(self, st: _Stream, block: np.ndarray) -> None:
        pos = 0
        n = block.shape[0]
        while pos < n:
            take = min(st.next_end - st.ring.total, n - pos)
            st.ring.write(block[pos : pos + take])
            pos += take
            if st.ring.total == st.next_end:
                await self._submit(st, st.ring.latest(st.ring.capacity), st.ring.total)
                st.next_end += self.hop_length
        st.summary.audio_s = st.ring.total / self.model.info.sample_rate

    async def _submit(self, st: _Stream, window: np.ndarray, end_sample: int, partial: bool = False) -> None:
        assert self._pool is not None
        future = asyncio.get_running_loop().run_in_executor(self._pool, _analyse, window, self.model.info.sample_rate)
        st.inflight.append((future, end_sample / self.model.info.sample_rate, partial))
        while len(st.inflight) >= self.workers:
            await self._complete_oldest(st)

    async def _drain(self, st: _Stream) -> None:
        while st.inflight:
            await self._complete_oldest(st)

    async def _complete_oldest(self, st: _Stream) -> None:
        assert self._batcher is not None
        future, stream_time_s, partial = st.inflight.popleft()
        try:
            feature_row, rms = await future
            probabilities = await self._batcher.predict(feature_row)
        except Exception:  # noqa: BLE001 - skip the window, keep the stream
            log.exception("stream %s: window ending at %.2f s failed", st.id, stream_time_s)
            return
        silent = rms < self.model.info.silence_rms
        step = st.smoother.update(probabilities, stream_time_s, silent=silent)
        st.summary.windows += 1
        extra: dict[str, Any] = {}
        if partial:
            extra["partial"] = True
        if silent:
            extra["silent"] = True
        if st.title:
            extra["title"] = st.title
        self.emit(
            events.prediction(
                st.id, stream_time_s, self.model.labels, probabilities, step.genre, step.confidence, **extra
            )
        )
        if step.change is not None:
            self._emit_change(st, step.change)

    def _emit_change(self, st: _Stream, change) -> None:
        self.emit(
            events.genre_change(
                st.id,
                change.genre,
                change.previous,
                change.confidence,
                self.model.labels,
                change.probabilities,
                change.onset_s,
                change.stream_time_s,
                self.model.info.tag,
            )
        )

    async def _finish(self, st: _Stream) -> None:
        """End of stream: classify a short stream on what it had; settle a pending change."""
        sample_rate = self.model.info.sample_rate
        held = st.ring.total
        if st.summary.windows == 0 and held >= max(MIN_SAMPLES, MIN_PARTIAL_S * sample_rate):
            await self._submit(st, st.ring.latest(min(held, st.ring.capacity)), held, partial=True)
            await self._drain(st)
        change = st.smoother.flush(held / sample_rate)
        if change is not None:
            self._emit_change(st, change)


def _analyse(window: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Worker thread: the window's feature vector and its RMS."""
    rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))
    return gtzan_features(window, sample_rate).astype(np.float32), rms
