"""Cutting a stream into windows, the reference way: the whole window every hop.

:class:`BatchFeatures` keeps the last window of audio in a ring buffer and
runs :func:`stream.frontends.gtzan.gtzan_features` on all of it every hop. It is
what the model was trained on, to the sample, and costs a whole window's work
per hop; :class:`stream.frontends.gtzan_incremental.IncrementalFeatures` has the same
interface and costs work in proportion to the hop. The engine takes either
(``Engine(features="batch" | "incremental")``).
"""

from __future__ import annotations

import numpy as np

from .gtzan import SAMPLE_RATE, gtzan_features
from ..ringbuffer import RingBuffer


class BatchFeatures:
    """Windows every hop, each computed from scratch with :func:`gtzan_features`.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz (22050, the features' rate).
    window_s, hop_s : float > 0
        Window length and hop in seconds.

    Raises
    ------
    ValueError
        If ``window_s`` or ``hop_s`` is not positive.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, window_s: float = 10.0, hop_s: float = 1.0) -> None:
        if window_s <= 0 or hop_s <= 0:
            raise ValueError(f"window_s, hop_s: expected positive seconds, got {window_s}, {hop_s}")
        self.sample_rate = int(sample_rate)
        self.window_length = int(round(window_s * sample_rate))
        self.hop_length = max(1, int(round(hop_s * sample_rate)))
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
        list of (end_sample, features)
            ``end_sample`` counts samples since the last reset; ``features``
            is an np.ndarray [shape=(57,), dtype=float64]. Windows end at
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
                out.append((self._ring.total, gtzan_features(self._ring.latest(self.window_length), self.sample_rate)))
                self._next_end += self.hop_length
        return out
