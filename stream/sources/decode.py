"""Decoding with PyAV, downmixing and rate conversion with soxr.

The decoding generator follows faster-whisper's ``decode_audio``: open with
PyAV, decode frame by frame, convert, yield. The channels are averaged (as
:func:`librosa.to_mono` does) and the rate converted by ``soxr`` in streaming
mode with librosa's default quality (``soxr_hq``), so the engine sees what
``librosa.load(path, sr=sample_rate)`` gives training.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

import numpy as np

from .base import SourceError, SourceStats, describe_av_error

log = logging.getLogger(__name__)


class MonoResampler:
    """Downmix by channel mean, then convert the rate with soxr in streaming mode.

    Parameters
    ----------
    in_rate, out_rate : int
        Sample rates in Hz.

    Notes
    -----
    ``soxr.ResampleStream`` with quality ``"HQ"``: the same filter as
    ``librosa.resample(res_type="soxr_hq")``, librosa's default.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import soxr

        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._stream = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")
        )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Convert one block.

        Parameters
        ----------
        block : np.ndarray [shape=(channels, n) or (n,)]
            Samples at ``in_rate``.
        last : bool
            Flush the resampler's delay line (end of stream).

        Returns
        -------
        np.ndarray [shape=(m,), dtype=float32]
        """
        mono = block if block.ndim == 1 else block.mean(axis=0)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono, last=last)


class AudioDecoder:
    """Decode the first audio stream of PyAV containers into mono float32 blocks.

    One decoder may serve several containers in turn (a looping file, a
    stream after a reconnect): the rate converter is kept while the input
    rate stays the same, so a loop is seamless.

    Parameters
    ----------
    spec : str
        The source, for error messages.
    stats : SourceStats
        ``seconds_decoded`` is counted here.
    sample_rate : int
        Output rate in Hz.
    tolerate_errors : int
        Packets in a row that may fail to decode (skipped) before it counts
        as an error; 0 for files, where any error is one.
    """

    def __init__(self, spec: str, stats: SourceStats, sample_rate: int, tolerate_errors: int = 0) -> None:
        import av

        self.spec = spec
        self.stats = stats
        self.sample_rate = int(sample_rate)
        self.tolerate_errors = int(tolerate_errors)
        self.resampler: MonoResampler | None = None
        self._to_float = av.AudioResampler(format="fltp")
        self.frames = 0  # frames decoded from the current container
        self.bad_packets = 0  # packets in a row that failed to decode
        self.last_audio_t = time.monotonic()

    def audio_stream(self, container):
        """The container's first audio stream, with a decoder.

        Raises
        ------
        SourceError
            ``not audio`` if it has no audio stream; ``unsupported codec`` if
            FFmpeg has no decoder for it.
        """
        if not container.streams.audio:
            raise SourceError(self.spec, "not audio: no audio stream in it")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            tag = getattr(stream, "codec_tag", "") or ""
            raise SourceError(
                self.spec,
                "unsupported codec: FFmpeg has no decoder for its audio" + (f" (codec tag {tag!r})" if tag else ""),
            )
        return stream

    def decode(self, packet) -> Iterator[np.ndarray]:
        """Decode one packet into zero or more mono blocks at ``sample_rate``.

        Raises
        ------
        SourceError
            If the packet does not decode (after ``tolerate_errors`` in a row
            were skipped).
        """
        import av

        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            self.bad_packets += 1
            if self.bad_packets <= self.tolerate_errors:
                log.debug("%s: skipped a packet that does not decode: %s", self.spec, exc)
                return
            reason = describe_av_error(exc)
            if self.frames == 0 and self.resampler is None:
                if reason.startswith("unsupported codec"):
                    raise SourceError(self.spec, reason) from exc
                raise SourceError(self.spec, f"not audio: FFmpeg could not decode it ({reason})") from exc
            raise SourceError(self.spec, f"decoding failed: {reason}") from exc
        self.bad_packets = 0
        for frame in frames:
            for converted in self._to_float.resample(frame):
                rate = converted.sample_rate
                if self.resampler is not None and self.resampler.in_rate != rate:
                    tail = self.resampler(np.zeros(0, dtype=np.float32), last=True)
                    if tail.size:
                        yield tail
                    self.resampler = None
                if self.resampler is None:
                    self.resampler = MonoResampler(rate, self.sample_rate)
                pcm = converted.to_ndarray()
                self.frames += 1
                self.stats.seconds_decoded += pcm.shape[-1] / rate
                self.last_audio_t = time.monotonic()
                out = self.resampler(pcm)
                if out.size:
                    yield out

    def flush(self) -> np.ndarray:
        """The rate converter's delay line (end of stream); the converter is reset."""
        if self.resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self.resampler(np.zeros(0, dtype=np.float32), last=True)
        self.resampler = None
        return tail

    def restart(self) -> None:
        """Forget the converter's state (after a gap the audio does not continue)."""
        import av

        self.resampler = None
        self._to_float = av.AudioResampler(format="fltp")
        self.frames = 0
        self.bad_packets = 0
