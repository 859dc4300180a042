"""Feature extractors in worker processes, so one engine uses every core.

The feature work holds the GIL most of the time, so threads cannot spread it
over cores (measured: a second feature thread on a second core bought
nothing, benchmarks/README.md). :class:`FeatureProcessPool` keeps each
stream's extractor in one of N worker processes (spawned, so the parent's
threads and sockets are not forked) and hands blocks to it over a pipe.
:meth:`FeatureProcessPool.extractor` returns a proxy with the extractor's
interface (``push``, ``reset``, ``samples_seen``, ``nbytes``) whose calls
block the calling thread, not the process: the engine calls them from its
thread pool as it calls a local extractor.

A stream stays on one process for its life, so its blocks are processed in
order; streams are placed on the process with the fewest.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _worker(conn, kind: str, frontend_params: dict, hop_length: int) -> None:
    """Worker process: a dict of extractors, driven by (op, request, stream, payload) messages."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:
        pass
    from stream.frontends import frontend_from_params
    from stream.frontends.windowing import BatchFeatures

    frontend = frontend_from_params(frontend_params)

    def make_extractor():
        return BatchFeatures(frontend, hop_length) if kind == "batch" else frontend.extractor(hop_length)
    extractors: dict[str, Any] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        op, request, stream_id, payload = message
        try:
            if op == "push":
                extractor = extractors.get(stream_id)
                if extractor is None:
                    extractor = extractors[stream_id] = make_extractor()
                # plain tuples: what a local extractor's push returns, and picklable
                result: Any = [(int(end), np.asarray(features)) for end, features in extractor.push(payload)]
            elif op == "reset":
                if stream_id in extractors:
                    extractors[stream_id].reset()
                result = None
            elif op == "drop":
                extractors.pop(stream_id, None)
                result = None
            elif op == "nbytes":
                extractor = extractors.get(stream_id)
                result = extractor.nbytes if extractor is not None else 0
            else:
                raise ValueError(f"unknown operation {op!r}")
            conn.send((request, result, None))
        except Exception as exc:  # noqa: BLE001 - report to the caller, keep serving the others
            conn.send((request, None, f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, context, index: int, args: tuple) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_worker, args=(child, *args), name=f"genrestream-features-{index}",
                                       daemon=True)
        self.process.start()
        child.close()
        self.streams = 0
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._pending_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"features-{index}-replies", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                request, result, error = self.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an unreadable reply: fail every caller rather than hang them
                log.exception("feature worker %s: unreadable reply", self.process.name)
                break
            with self._pending_lock:
                future = self._pending.pop(request, None)
            if future is None:
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(RuntimeError(f"feature worker: {error}"))
        with self._pending_lock:  # the worker is gone: nobody will answer
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(RuntimeError("feature worker process ended"))

    def call(self, request: int, op: str, stream_id: str, payload: Any = None) -> Any:
        future: Future = Future()
        with self._pending_lock:
            self._pending[request] = future
        with self._send_lock:
            self.conn.send((op, request, stream_id, payload))
        return future.result()

    def close(self) -> None:
        try:
            with self._send_lock:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()
        self._reader.join(timeout=5)


class ProcessExtractor:
    """Proxy of one stream's extractor in a worker process (see :class:`FeatureProcessPool`)."""

    def __init__(self, pool: "FeatureProcessPool", worker: _Worker, stream_id: str) -> None:
        self._pool = pool
        self._worker = worker
        self._stream_id = stream_id
        self.samples_seen = 0

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Like the local extractor's ``push``; blocks the calling thread until the worker answers.

        Raises
        ------
        RuntimeError
            If the worker failed on the block or has ended.
        """
        block = np.ascontiguousarray(block, dtype=np.float32)
        out = self._worker.call(self._pool._next(), "push", self._stream_id, block)
        self.samples_seen += block.shape[0]
        return out

    def reset(self) -> None:
        self._worker.call(self._pool._next(), "reset", self._stream_id)
        self.samples_seen = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the extractor's state in its worker process."""
        return int(self._worker.call(self._pool._next(), "nbytes", self._stream_id))

    def close(self) -> None:
        """Free the extractor in the worker."""
        try:
            self._worker.call(self._pool._next(), "drop", self._stream_id)
        except (RuntimeError, OSError):
            pass
        self._worker.streams -= 1


class FeatureProcessPool:
    """N worker processes holding the feature extractors of every stream.

    Parameters
    ----------
    processes : int >= 1
        Worker processes; one per core is the useful number.
    kind : {"incremental", "batch"}
        Which extractor the workers run.
    frontend_params : dict
        The model's frontend (``frontend.params()``), rebuilt in each worker.
    hop_length : int
        Samples between window ends.

    Raises
    ------
    ValueError
        If ``processes`` < 1 or ``kind`` is unknown.
    """

    def __init__(self, processes: int, kind: str, frontend_params: dict, hop_length: int) -> None:
        if int(processes) < 1:
            raise ValueError(f"processes: expected at least 1, got {processes}")
        if kind not in ("incremental", "batch"):
            raise ValueError(f"kind: expected 'incremental' or 'batch', got {kind!r}")
        context = mp.get_context("spawn")
        args = (kind, dict(frontend_params), int(hop_length))
        self._workers = [_Worker(context, i, args) for i in range(int(processes))]
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        log.info("features in %d worker processes", len(self._workers))

    def _next(self) -> int:
        with self._counter_lock:
            return next(self._counter)

    def extractor(self, stream_id: str) -> ProcessExtractor:
        """A proxy extractor for a new stream, on the least loaded process."""
        worker = min(self._workers, key=lambda w: w.streams)
        worker.streams += 1
        return ProcessExtractor(self, worker, stream_id)

    def close(self) -> None:
        """Stop the worker processes."""
        for worker in self._workers:
            worker.close()
