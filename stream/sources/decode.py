"""Decoding with PyAV, downmixing and rate conversion with soxr.

The decoding generator follows faster-whisper's ``decode_audio``: open with
PyAV, decode frame by frame, convert, yield. The channels are averaged (as
:func:`librosa.to_mono` does) and the rate converted by ``soxr`` in streaming
mode with librosa's default quality (``soxr_hq``), so the engine sees what
``librosa.load(path, sr=sample_rate)`` gives training.

Damaged input loses only what is damaged: a packet that does not decode is
skipped (as the ``ffmpeg`` command line does), and an error from the demuxer
is followed by another read (FFmpeg's demuxers resynchronise on the next
page, frame sync or sample; the command line would stop there), both counted
in ``SourceStats.decode_errors``. Limits on failures in a row
(:data:`MAX_DEMUX_ERRORS`, ``tolerate_errors``) make a source that never
recovers end instead of spinning.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

import numpy as np

from .base import SourceError, SourceStats, describe_av_error

log = logging.getLogger(__name__)

DECODE_LOCK = threading.Lock()
"""Held while a packet is decoded, converted and resampled (all CPU, no I/O): one source thread decodes at a time.

Every stream has a source thread, and decoding a packet is a handful of calls into FFmpeg, numpy and soxr, each
releasing the GIL and taking it back. With tens of threads doing that at once the GIL changes hands at every call:
30 threads decoded 33 audio seconds a second in all at 40.6 CPU-ms each, against 75 at 14.8 with this lock and
121 at 8.1 for one thread (``benchmarks/decode_threads.py``), and the event loop waited behind them: a `run` of
40 streams fell behind (benchmarks/README.md). Reading the network stays outside the lock."""

MAX_DEMUX_ERRORS = 32
"""Demuxer errors in a row (no packet read between them) after which reading stops: the demuxer is stuck."""


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


def _data_error(exc: BaseException) -> bool:
    """Whether a PyAV error is about the data (damage), after which reading may go on.

    Errors of the input itself (I/O, network, HTTP, a time-out or an
    interrupt, an exception in a Python read callback) are not: another read
    would fail the same way, or must not be tried.
    """
    import av

    io_errors = (OSError, av.error.ExitError, av.error.HTTPError, av.error.HTTPClientError, av.error.PyAVCallbackError)
    return isinstance(exc, av.error.FFmpegError) and not isinstance(exc, io_errors)


def describe_damage(exc: BaseException) -> str:
    """Short words for an error met while decoding or demuxing, for ``decoding failed: ...`` reasons.

    Unlike :func:`stream.sources.describe_av_error` (which speaks of a whole
    input that could not be opened), invalid data is "invalid data", not "not audio".
    """
    import av

    if isinstance(exc, av.error.InvalidDataError):
        return "invalid data"
    return describe_av_error(exc)


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()  # FLAC frame header CRC-8, polynomial x^8 + x^2 + x + 1


def flac_frame_starts(data: bytes) -> list[int]:
    """Offsets in ``data`` at which a valid FLAC frame header starts.

    A header counts when its sync code, its reserved bits and its CRC-8 are
    right (RFC 9639, section 9.1), so a sync code that merely occurs in the
    compressed audio (about once in 32 KiB) is not taken for one.

    Parameters
    ----------
    data : bytes
        FLAC frames, as in a packet of FFmpeg's ``flac`` demuxer.

    Returns
    -------
    list of int
        Increasing byte offsets.
    """
    starts = []
    n = len(data)
    i = data.find(0xFF)
    while 0 <= i < n - 5:
        b1, b2, b3 = data[i + 1], data[i + 2], data[i + 3]
        # sync 0xFFF8 | blocking strategy; block size code 0 and rate code 15 and
        # channel codes 11-15 and bit depth code 3 are reserved, so is bit 0 of byte 3
        if (b1 & 0xFE) == 0xF8 and b2 >> 4 and b2 & 0x0F != 0x0F and b3 >> 4 <= 10 and (b3 >> 1) & 7 != 3 \
                and not b3 & 1:
            j = i + 4
            # The frame or sample number, coded as in UTF-8: k leading 1 bits, then k - 1 more bytes.
            lead = data[j]
            ones = next((k for k in range(8) if not lead & (0x80 >> k)), 8)
            if ones != 1 and ones != 8:
                j += max(1, ones)
                j += {6: 1, 7: 2}.get(b2 >> 4, 0) + {12: 1, 13: 2, 14: 2}.get(b2 & 0x0F, 0)
                if j < n:
                    crc = 0
                    for byte in data[i:j]:
                        crc = _CRC8[crc ^ byte]
                    if crc == data[j]:
                        starts.append(i)
        i = data.find(0xFF, i + 1)
    return starts


def split_flac_packet(packet) -> list:
    """A FLAC packet cut into one packet per frame, or ``[packet]`` if it holds one.

    FFmpeg's FLAC parser (the one PyAV's wheels bring) delimits frames by
    their headers and checks each frame's CRC-16; around a damaged frame it
    joins several frames into one packet, and the decoder drops the rest of a
    packet at its first bad frame. Cut at every valid header
    (:func:`flac_frame_starts`), only the damaged frame is lost, as with the
    ``ffmpeg`` command line of FFmpeg 5.1.

    Parameters
    ----------
    packet : av.Packet
        A packet of a FLAC stream.

    Returns
    -------
    list of av.Packet
    """
    import av

    data = bytes(packet)
    starts = flac_frame_starts(data)
    if not starts or starts == [0]:
        return [packet]
    if starts[0] != 0:
        starts.insert(0, 0)  # a fragment before the first header: it fails on its own
    return [av.Packet(data[a:b]) for a, b in zip(starts, starts[1:] + [len(data)])]


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
        ``seconds_decoded`` and ``decode_errors`` are counted here.
    sample_rate : int
        Output rate in Hz.
    tolerate_errors : int
        Packets in a row that may fail to decode before the decoder gives up
        (:meth:`decode` raises). Each one is skipped and counted in
        ``stats.decode_errors``; a packet that decodes ends the run.

    Notes
    -----
    FFmpeg drops a packet that does not decode and goes on with the next one,
    as the ``ffmpeg`` command line does; the audio it held is lost, nothing
    else. A frame whose format, channel layout or rate differs from the one
    before (damage can change them) gets a converter of its own.
    """

    def __init__(self, spec: str, stats: SourceStats, sample_rate: int, tolerate_errors: int = 0) -> None:
        self.spec = spec
        self.stats = stats
        self.sample_rate = int(sample_rate)
        self.tolerate_errors = int(tolerate_errors)
        self.resampler: MonoResampler | None = None
        self._to_float = None  # av.AudioResampler to flt, for frames like _to_float_key
        self._to_float_key: tuple | None = None
        self.frames = 0  # frames decoded from the current container
        self.bad_packets = 0  # packets in a row that failed to decode
        self.failed = 0  # packets and demuxer errors skipped in the current container
        self.last_error = ""  # why the last skipped packet failed
        self.last_audio_t = time.monotonic()
        self._codec = None  # the current stream's codec context
        self._codec_name = ""

    def audio_stream(self, container):
        """The container's first audio stream, with a decoder; resets the per-container counters.

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
        self.frames = 0
        self.bad_packets = 0
        self.failed = 0
        self._codec = stream.codec_context
        self._codec_name = stream.codec_context.name
        return stream

    def packets(self, container, stream) -> Iterator:
        """The packets of ``stream``, reading on after a demuxer error.

        PyAV's ``container.demux()`` ends with the first error FFmpeg's
        ``av_read_frame`` returns; a new ``demux()`` goes on from where the
        demuxer stopped, and FFmpeg's demuxers resynchronise (next Ogg page,
        next MP3 frame sync, next MP4 sample). So an error about the data is
        counted (``stats.decode_errors``, ``failed``) and reading goes on.

        Raises
        ------
        av.error.FFmpegError
            An error of the input itself (I/O, network, time-out: see
            :func:`_data_error`), or the :data:`MAX_DEMUX_ERRORS` + 1-th data
            error in a row with no packet between them.
        """
        in_a_row = 0
        while True:
            try:
                for packet in container.demux(stream):
                    in_a_row = 0
                    yield packet
                return
            except Exception as exc:
                if not _data_error(exc):
                    raise
                in_a_row += 1
                self.failed += 1
                self.stats.decode_errors += 1
                self.last_error = describe_damage(exc)
                if in_a_row > MAX_DEMUX_ERRORS:
                    raise
                log.debug("%s: demuxer error, reading on: %s", self.spec, exc)

    def decode(self, packet) -> list[np.ndarray]:
        """Decode one packet into zero or more mono blocks at ``sample_rate`` (float32, shape (n,)),
        holding :data:`DECODE_LOCK`.

        A packet that does not decode gives no block; it is counted in
        ``stats.decode_errors``. A FLAC packet that holds several frames
        (FFmpeg's parser joins a damaged frame to the next ones) is decoded
        frame by frame, so that the damaged frame is all that is lost
        (:func:`split_flac_packet`).

        Raises
        ------
        SourceError
            ``unsupported codec`` if the first packet fails for want of a
            decoder; else once more than ``tolerate_errors`` packets in a row
            failed: ``not audio`` if nothing was decoded from this source yet,
            ``decoding failed`` otherwise.
        """
        with DECODE_LOCK:
            return list(self._decode_packet(packet))

    def _decode_packet(self, packet) -> Iterator[np.ndarray]:
        if self._codec_name == "flac" and packet.size:
            parts = split_flac_packet(packet)
            if len(parts) > 1:
                for part in parts:
                    yield from self._decode_one(part, lambda part=part: self._codec.decode(part))
                return
        yield from self._decode_one(packet, packet.decode)

    def _decode_one(self, packet, decode) -> Iterator[np.ndarray]:
        import av

        try:
            frames = decode()
        except av.error.FFmpegError as exc:
            reason = describe_av_error(exc)
            if self.frames == 0 and self.resampler is None and reason.startswith("unsupported codec"):
                raise SourceError(self.spec, reason) from exc
            self._skipped(describe_damage(exc))
            if self.bad_packets <= self.tolerate_errors:
                log.debug("%s: skipped a packet that does not decode: %s", self.spec, exc)
                return
            if self.frames == 0 and self.resampler is None:
                raise SourceError(self.spec, f"not audio: FFmpeg could not decode it ({self.last_error})") from exc
            raise SourceError(
                self.spec, f"decoding failed: {self.bad_packets} packets in a row did not decode ({self.last_error})"
            ) from exc
        self.bad_packets = 0
        for frame in frames:
            try:
                converted_frames = self._convert(frame)
            except (av.error.FFmpegError, ValueError) as exc:  # a frame FFmpeg cannot convert: skip it too
                self._to_float = self._to_float_key = None
                self._skipped(describe_damage(exc))
                log.debug("%s: skipped a frame that does not convert: %s", self.spec, exc)
                continue
            for converted in converted_frames:
                rate = converted.sample_rate
                if self.resampler is not None and self.resampler.in_rate != rate:
                    tail = self.resampler(np.zeros(0, dtype=np.float32), last=True)
                    if tail.size:
                        yield tail
                    self.resampler = None
                if self.resampler is None:
                    self.resampler = MonoResampler(rate, self.sample_rate)
                # Interleaved (1, n * channels) -> (channels, n)
                pcm = converted.to_ndarray().reshape(-1, converted.layout.nb_channels).T
                self.frames += 1
                self.stats.seconds_decoded += pcm.shape[-1] / rate
                self.last_audio_t = time.monotonic()
                out = self.resampler(pcm)
                if out.size:
                    yield out

    def _skipped(self, reason: str) -> None:
        self.bad_packets += 1
        self.failed += 1
        self.stats.decode_errors += 1
        self.last_error = reason

    def _convert(self, frame) -> list:
        """``frame`` as interleaved float32 (``flt``) frames at its own rate and layout.

        Interleaved, not planar: PyAV finds a planar frame's planes by walking
        FFmpeg's pointer array up to a NULL, which reads past its end for 8
        channels or more (a 7.1 file, or a damaged AAC frame announcing 42
        channels) and crashes the process; an interleaved frame has one plane.
        The values are the same, only their order differs.
        """
        import av

        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._to_float_key:  # PyAV's converter refuses frames unlike its first
            self._to_float = av.AudioResampler(format="flt")
            self._to_float_key = key
        return self._to_float.resample(frame)

    def not_audio_reason(self) -> str:
        """Why a container from which no frame was decoded is not audio."""
        if self.failed:
            return f"not audio: FFmpeg decoded no audio from it ({self.failed} packets failed: {self.last_error})"
        return "not audio: no audio frames decoded"

    def flush(self) -> np.ndarray:
        """The rate converter's delay line (end of stream); the converter is reset."""
        if self.resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self.resampler(np.zeros(0, dtype=np.float32), last=True)
        self.resampler = None
        return tail

    def restart(self) -> None:
        """Forget the converter's state (after a gap the audio does not continue)."""
        self.resampler = None
        self._to_float = self._to_float_key = None
        self.frames = 0
        self.bad_packets = 0
        self.failed = 0
