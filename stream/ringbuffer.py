"""A fixed-capacity ring buffer of audio samples, one per stream."""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Keeps the most recent ``capacity`` samples of a mono stream.

    Parameters
    ----------
    capacity : int > 0
        Number of samples kept (the analysis window length).

    Attributes
    ----------
    total : int
        Samples written since creation (or :meth:`clear`).

    Examples
    --------
    >>> rb = RingBuffer(4)
    >>> rb.write(np.arange(6, dtype=np.float32))
    >>> rb.latest(3)
    array([3., 4., 5.], dtype=float32)
    """

    def __init__(self, capacity: int) -> None:
        if int(capacity) <= 0:
            raise ValueError(f"capacity: expected a positive number of samples, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._write = 0  # index of the next sample to write
        self.total = 0

    def __len__(self) -> int:
        """Number of valid samples held (at most ``capacity``)."""
        return min(self.total, self.capacity)

    def clear(self) -> None:
        """Forget every sample (after a gap in the stream)."""
        self._write = 0
        self.total = 0

    def write(self, block: np.ndarray) -> None:
        """Append samples, overwriting the oldest.

        Parameters
        ----------
        block : np.ndarray [shape=(n,)]
            Mono samples; converted to float32.
        """
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        n = block.shape[0]
        self.total += n
        if n >= self.capacity:
            self._data[:] = block[-self.capacity :]
            self._write = 0
            return
        end = self._write + n
        if end <= self.capacity:
            self._data[self._write : end] = block
        else:
            first = self.capacity - self._write
            self._data[self._write :] = block[:first]
            self._data[: n - first] = block[first:]
        self._write = end % self.capacity

    def latest(self, n: int) -> np.ndarray:
        """Return a copy of the most recent ``n`` samples, oldest first.

        Returns
        -------
        np.ndarray [shape=(n,), dtype=float32]

        Raises
        ------
        ValueError
            If fewer than ``n`` samples are held.
        """
        if n > len(self):
            raise ValueError(f"n: asked for {n} samples, the buffer holds {len(self)}")
        start = (self._write - n) % self.capacity
        if start + n <= self.capacity:
            return self._data[start : start + n].copy()
        return np.concatenate((self._data[start:], self._data[: (start + n) - self.capacity]))
