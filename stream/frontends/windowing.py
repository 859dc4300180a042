"""Cutting a stream into windows, the reference way, and the windows' loudness.

:class:`BatchFeatures` keeps the last window of audio in a ring buffer and runs
the frontend's batch function (``window_input``) on all of it every hop. It is
what the model was trained on, to the sample, and costs a whole window's work
per hop; each frontend's incremental extractor has the same interface and
costs work in proportion to the hop. The engine takes either
(``Engine(features="batch" | "incremental")``).

:class:`WindowRMS` follows a stream's samples and gives the RMS of any window
that has just ended: the engine calls a window silent by it, whatever the
frontend.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..ringbuffer import RingBuffer


class BatchFeatures:
    """Windows every hop, each computed from scratch with ``frontend.window_input``.

    Parameters
    ----------
    frontend : frontend object
        See :mod:`stream.frontends`; gives ``sample_rate`` and ``window_length``.
    hop_length : int > 0
        Samples between window ends (snapped with ``frontend.snap_hop``).

    Raises
    ------
    ValueError
        If ``hop_length`` is not positive.
    """

    def __init__(self, frontend, hop_length: int) -> None:
        if int(hop_length) <= 0:
            raise ValueError(f"hop_length: expected a positive number of samples, got {hop_length}")
        self.frontend = frontend
        self.sample_rate = int(frontend.sample_rate)
        self.window_length = int(frontend.window_length)
        self.hop_length = int(frontend.snap_hop(int(hop_length)))
        self._ring = RingBuffer(self.window_length)
        self.reset()

    def reset(self) -> None:
        """Forget all audio (after a gap); the next window ends ``window_length`` samples on."""
        self._ring.clear()
        self._next_end = self.window_length

    @property
    def samples_seen(self) -> int:
        """Samples pushed since the last reset."""
        return self._ring.total

    @property
    def nbytes(self) -> int:
        """Bytes of per-stream state (the ring buffer)."""
        return self._ring._data.nbytes

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Append samples; return the windows they completed.

        Parameters
        ----------
        block : np.ndarray [shape=(n,), dtype=float32]
            Mono samples at ``sample_rate``.

        Returns
        -------
        list of (end_sample, x)
            ``end_sample`` counts samples since the last reset; ``x`` is the
            model input of the window ``[end_sample - window_length,
            end_sample)`` (shape ``frontend.input_shape``). Windows end at
            ``window_length + k * hop_length``, however the input is cut.
        """
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        out = []
        pos, n = 0, block.shape[0]
        while pos < n:
            take = min(self._next_end - self._ring.total, n - pos)
            self._ring.write(block[pos : pos + take])
            pos += take
            if self._ring.total == self._next_end:
                out.append((self._ring.total, self.frontend.window_input(self._ring.latest(self.window_length))))
                self._next_end += self.hop_length
        return out


class WindowRMS:
    """The RMS of the windows of one stream, from running sums of squares.

    Sums of squares are kept per ``resolution`` samples, so a window's RMS is
    exact when its start and end fall on that grid and otherwise off by at most
    the ``resolution`` samples at its start (which only matters for telling
    silence, the use it has).

    Parameters
    ----------
    window_length : int > 0
        Samples per window.
    resolution : int > 0
        Samples per partial sum (default 256: 16 ms at 16 kHz, 12 ms at 22050 Hz).

    Raises
    ------
    ValueError
        If ``window_length`` or ``resolution`` is not positive.
    """

    def __init__(self, window_length: int, resolution: int = 256) -> None:
        if int(window_length) <= 0 or int(resolution) <= 0:
            raise ValueError(f"window_length, resolution: expected positive samples, got {window_length}, {resolution}")
        self.window_length = int(window_length)
        self.resolution = int(resolution)
        self._cumulative: deque[float] = deque(maxlen=self.window_length // self.resolution + 64)
        self.reset()

    def reset(self) -> None:
        """Forget all audio (after a gap)."""
        self._cumulative.clear()
        self._cumulative.append(0.0)  # sum of squares of samples [0, k * resolution) for the k kept
        self._first_k = 0
        self._total = 0.0  # sum of squares of every sample so far
        self._samples = 0
        self._partial = 0  # samples past the last grid point

    def push(self, block: np.ndarray) -> None:
        """Account for the next samples of the stream (mono, any dtype).

        A few numpy calls per block, whatever its length: this runs on the event loop, and a
        call per 256 samples (each releasing and retaking the GIL) made the loop wait behind
        every decoding thread of the process (benchmarks/README.md, "one process, many
        decoding sources")."""
        x = np.asarray(block, dtype=np.float64).reshape(-1)
        n, res = x.shape[0], self.resolution
        squares = x * x
        pos = 0
        if self._partial:  # complete the grid cell begun by the previous block
            take = min(res - self._partial, n)
            self._total += float(squares[:take].sum())
            self._partial += take
            pos = take
            if self._partial == res:
                self._append([self._total])
                self._partial = 0
        cells = (n - pos) // res
        if cells:
            sums = np.cumsum(squares[pos : pos + cells * res].reshape(cells, res).sum(axis=1)) + self._total
            self._append(sums.tolist())
            self._total = float(sums[-1])
            pos += cells * res
        if pos < n:
            self._total += float(squares[pos:].sum())
            self._partial = n - pos
        self._samples += n

    def _append(self, totals: list[float]) -> None:
        overflow = len(self._cumulative) + len(totals) - self._cumulative.maxlen
        if overflow > 0:
            self._first_k += overflow
        self._cumulative.extend(totals)

    def rms(self, end_sample: int) -> float:
        """RMS (linear, full scale 1.0) of the window ending at ``end_sample``, which must be the latest sample pushed
        or on the grid of a recent one."""
        end = min(int(end_sample), self._samples)
        start = max(0, end - self.window_length)
        k_start = min(max(start // self.resolution, self._first_k), self._first_k + len(self._cumulative) - 1)
        k_end = end // self.resolution
        last_k = self._first_k + len(self._cumulative) - 1
        end_sum = self._total if end == self._samples else self._cumulative[min(k_end, last_k) - self._first_k]
        start_sum = self._cumulative[k_start - self._first_k]
        n = max(1, end - k_start * self.resolution)
        return float(np.sqrt(max(0.0, end_sum - start_sum) / n))
