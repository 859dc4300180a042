"""Microphones and other sound-card inputs, through sounddevice (PortAudio)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .base import AudioSource, SourceError, SourceGap, SourceStatus
from .decode import MonoResampler
from .reconnect import ReconnectPolicy

log = logging.getLogger(__name__)


@dataclass
class MicrophoneSource(AudioSource):
    """Live input from a sound card through sounddevice (PortAudio).

    The device's own sample rate and channel count (up to 2) are used, and
    converted here. The audio callback runs in PortAudio's thread and only
    copies the block into a bounded :class:`queue.Queue` with ``put_nowait``
    (it never waits); when the queue is full the block is dropped and counted
    as an overflow, as is every PortAudio ``input_overflow``. Overflows are
    logged and reported in a ``status`` event (at most every
    ``report_interval_s``).

    If no block arrives for ``stall_timeout_s`` (a device unplugged or hung),
    the stream is closed and opened again with backoff, and the gap reported.

    Parameters
    ----------
    device : str or int or None
        Device name (a substring, as sounddevice matches it) or index; None
        for the default input.
    block_s : float
        Seconds per PortAudio block.
    queue_blocks : int
        Blocks the hand-over queue holds (``queue_blocks * block_s`` seconds).
    stall_timeout_s : float
        Seconds without input before the device is reopened.
    max_backoff_s : float
        Longest wait between reopen attempts.
    max_reconnects : int or None
        Reopen attempts in a row before failing; None for ever.
    """

    device: str | int | None = None
    block_s: float = 0.1
    queue_blocks: int = 600
    stall_timeout_s: float = 15.0
    max_backoff_s: float = 30.0
    max_reconnects: int | None = None
    report_interval_s: float = 10.0

    def __post_init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=int(self.queue_blocks))
        self._closed = threading.Event()
        self.native_rate = 0
        self.channels = 0

    def close(self) -> None:
        self._closed.set()

    def callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        """PortAudio's callback (its own thread): hand the block over without waiting.

        Parameters
        ----------
        indata : np.ndarray [shape=(frames, channels), dtype=float32]
            The input block; PortAudio reuses the buffer, so it is copied.
        status : sounddevice.CallbackFlags
            ``input_overflow`` counts as an overflow.
        """
        if status and getattr(status, "input_overflow", False):
            self.stats.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.stats.overflows += 1

    def _device_info(self, sd) -> dict:
        try:
            return sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise SourceError(self.spec, f"unknown input device {self.device!r}: {exc}") from exc

    def _open_stream(self, sd, info: dict):
        self.native_rate = int(info["default_samplerate"])
        self.channels = max(1, min(2, int(info["max_input_channels"])))
        try:
            return sd.InputStream(
                device=self.device,
                samplerate=self.native_rate,
                channels=self.channels,
                dtype="float32",
                blocksize=max(1, int(self.native_rate * self.block_s)),
                callback=self.callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise SourceError(self.spec, f"cannot open input device {info.get('name', self.device)!r}: {exc}") from exc

    def consume(
        self, sample_rate: int, resampler: "MonoResampler | None" = None
    ) -> Iterator[np.ndarray | SourceStatus]:
        """Turn queued callback blocks into mono blocks at ``sample_rate`` until a stall or :meth:`close`.

        Returns (ends) after ``stall_timeout_s`` without a block, or when closed.
        """
        resampler = resampler or MonoResampler(self.native_rate, sample_rate)
        waiting_from = time.monotonic()
        reported = self.stats.overflows
        last_report = time.monotonic()
        while not self._closed.is_set():
            try:
                block = self._queue.get(timeout=0.25)
            except queue.Empty:
                if time.monotonic() - waiting_from >= self.stall_timeout_s:
                    return
                continue
            waiting_from = time.monotonic()
            pcm = block.T  # (channels, frames)
            self.stats.seconds_decoded += pcm.shape[-1] / self.native_rate
            self.stats.bytes_read += block.nbytes
            out = resampler(pcm)
            if out.size:
                yield out
            if self.stats.overflows != reported and time.monotonic() - last_report >= self.report_interval_s:
                lost = self.stats.overflows - reported
                reported, last_report = self.stats.overflows, time.monotonic()
                log.warning("%s: %d input overflows (%d in all): audio was lost", self.spec, lost, reported)
                yield SourceStatus("playing", f"{reported} input overflows so far: audio was lost")

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray | SourceStatus | SourceGap]:
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio library missing
            raise SourceError(self.spec, f"sounddevice unusable: {exc}") from exc
        policy = ReconnectPolicy(max_backoff_s=self.max_backoff_s, max_reconnects=self.max_reconnects)
        attempt = 0
        drop_t: float | None = None  # when input stopped, for the gap (None: it has not)
        played = False  # some audio was ever yielded
        while not self._closed.is_set():
            played_here = False
            try:
                info = self._device_info(sd)
                stream = self._open_stream(sd, info)
            except SourceError as exc:
                if not played:  # the first opening decides: an unknown device is reported, not retried
                    raise
                reason = exc.reason
            else:
                log.info("%s: recording %r at %d Hz, %d channel(s)", self.spec, info["name"], self.native_rate,
                         self.channels)
                while not self._queue.empty():  # blocks from before a reopen belong before the gap
                    self._queue.get_nowait()
                resampler = MonoResampler(self.native_rate, sample_rate)
                try:
                    with stream, closing(self.consume(sample_rate, resampler)) as blocks:
                        for item in blocks:
                            if isinstance(item, np.ndarray):
                                if drop_t is not None:
                                    gap_s = time.monotonic() - drop_t
                                    yield SourceGap(gap_s, "input device reopened")
                                    yield SourceStatus("playing", f"input device reopened after a gap of {gap_s:.1f} s")
                                    drop_t, attempt = None, 0
                                played = played_here = True
                            yield item
                except sd.PortAudioError as exc:
                    reason = f"input device error: {exc}"
                else:
                    reason = f"stalled: no input for {self.stall_timeout_s:g} s"
                if self._closed.is_set():
                    return
                if not played:
                    raise SourceError(self.spec, reason)
                if played_here:
                    drop_t = time.monotonic() - (self.stall_timeout_s if reason.startswith("stalled") else 0.0)
            attempt += 1
            self.stats.last_error = reason
            if policy.max_reconnects is not None and attempt > policy.max_reconnects:
                raise SourceError(self.spec, f"gave up after {policy.max_reconnects} attempts to reopen: {reason}")
            delay = policy.backoff_s(attempt)
            self.stats.reconnects += 1
            log.warning("%s: %s; reopening in %.1f s (attempt %d)", self.spec, reason, delay, attempt)
            yield SourceStatus("reconnecting", f"{reason}; reopening the device in {delay:.1f} s (attempt {attempt})")
            if self._closed.wait(delay):
                return
