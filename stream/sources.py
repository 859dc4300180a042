"""Audio sources: files, HTTP(S) internet radio, HLS and microphones, as blocking generators.

Each source yields mono ``float32`` blocks at the model's sample rate. Decoding
is PyAV's (FFmpeg): files, Icecast/SHOUTcast streams in MP3, AAC or Ogg
(Vorbis, Opus), live HLS. The channels are averaged (as :func:`librosa.to_mono`
does) and the rate converted by ``soxr`` in streaming mode with librosa's
default quality (``soxr_hq``), so the engine sees what
``librosa.load(path, sr=22050)`` gave the training tables.

The decoding generator follows faster-whisper's ``decode_audio``: open with
PyAV, decode frame by frame, convert, yield. Sources are blocking and run in
a thread of their own (see :mod:`stream.engine`); between audio blocks a live
source yields :class:`SourceStatus`, :class:`SourceGap` and
:class:`SourceMetadata` items.

Which source for which input (:func:`open_source`):

- a path (or ``file://`` URL): :class:`AVSource`, optionally looping;
- an ``http(s)://`` URL: :class:`stream.live.HTTPSource`, which resolves
  playlists (PLS, M3U), plays HLS through FFmpeg's demuxer, reads ICY titles,
  and reconnects with backoff when the stream drops or stalls;
- ``mic`` or ``mic:NAME_OR_INDEX``: :class:`MicrophoneSource`.

Errors are raised as :class:`SourceError` with the source and a reason a
person can act on.
"""

from __future__ import annotations

import errno
import logging
import queue
import re
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

FILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aiff", ".aif"}


@dataclass(frozen=True)
class SourceStatus:
    """Yielded by a source between audio blocks: its connection state changed.

    ``state`` is one of :data:`stream.events.STATES` (``reconnecting`` and
    ``playing`` are the usual ones); ``detail`` says why.
    """

    state: str
    detail: str = ""


@dataclass(frozen=True)
class SourceGap:
    """Yielded by a source when audio was lost (a drop, a stall, a reconnect).

    The engine moves stream time on by ``duration_s`` (stream time keeps
    counting real time), restarts windows and smoothing after the gap, and
    reports the gap in a ``status`` event.
    """

    duration_s: float
    detail: str = ""


@dataclass(frozen=True)
class SourceMetadata:
    """Yielded by a source when its stream title (ICY ``StreamTitle``) changes."""

    title: str


class SourceError(Exception):
    """A source could not be opened or read.

    Attributes
    ----------
    source : str
        The source as the user gave it.
    reason : str
        What went wrong, in words a person can act on.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class SourceStats:
    """Counters of one source, reported in ``status`` events.

    Attributes
    ----------
    bytes_read : int
        Bytes received from the network (HTTP head, body and ICY metadata
        included), or read from the file (compressed packet bytes).
    seconds_decoded : float
        Seconds of audio decoded, at the source's own rate.
    reconnects : int
        Reconnection attempts made (a drop followed by two failed attempts
        and a good one counts 3).
    overflows : int
        Input blocks lost by a microphone (PortAudio overflow, or the hand-over
        queue full because the engine fell behind).
    last_error : str
        The reason of the last failure, drop or stall ("" if none yet).
    title : str
        The current stream title (ICY ``StreamTitle``), "" if none.
    """

    bytes_read: int = 0
    seconds_decoded: float = 0.0
    reconnects: int = 0
    overflows: int = 0
    last_error: str = ""
    title: str = ""

    def as_dict(self) -> dict:
        return {
            "bytes_read": self.bytes_read,
            "seconds_decoded": round(self.seconds_decoded, 3),
            "reconnects": self.reconnects,
            "overflows": self.overflows,
            "last_error": self.last_error,
            "title": self.title,
        }


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



def _describe_av_error(exc: BaseException) -> str:
    import av

    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    http_errors = {
        "HTTPNotFoundError": "HTTP 404 Not Found",
        "HTTPForbiddenError": "HTTP 403 Forbidden",
        "HTTPUnauthorizedError": "HTTP 401 Unauthorized",
        "HTTPBadRequestError": "HTTP 400 Bad Request",
        "HTTPServerError": "HTTP 5xx server error",
        "HTTPOtherClientError": "HTTP 4xx client error",
    }
    for name, reason in http_errors.items():
        cls = getattr(av.error, name, None)
        if cls is not None and isinstance(exc, cls):
            return reason
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported codec: FFmpeg has no decoder for it"
    if isinstance(exc, av.error.InvalidDataError):
        return "not audio: FFmpeg found no decodable audio in it (invalid data)"
    if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
        return "timed out"
    return f"{type(exc).__name__}: {text}"


@dataclass
class AudioSource:
    """Base class: something that yields mono float32 blocks at a sample rate.

    Attributes
    ----------
    spec : str
        The source as the user wrote it (path, URL, ``mic:NAME``).
    stats : SourceStats
        Counters, updated while reading.
    """

    spec: str
    stats: SourceStats = field(default_factory=SourceStats)

    is_file = False

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray | SourceStatus | SourceGap | SourceMetadata]:
        """Yield mono float32 blocks at ``sample_rate`` Hz until the source ends.

        Between blocks a live source may yield :class:`SourceStatus`,
        :class:`SourceGap` and :class:`SourceMetadata` items.

        Raises
        ------
        SourceError
            If the source cannot be opened or read.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Ask a blocked :meth:`blocks` to stop soon (thread-safe)."""


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
            reason = _describe_av_error(exc)
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


@dataclass
class AVSource(AudioSource):
    """A local file (or any URL FFmpeg opens by itself) decoded by PyAV.

    Parameters
    ----------
    spec : str
        Path or URL.
    open_timeout_s, read_timeout_s : float
        Network time-outs in seconds (URLs only).
    loop : bool
        Start again at the end, for ever (a file standing in for a station);
        the audio continues without a gap.

    Notes
    -----
    ``http(s)://`` URLs are better served by :class:`stream.live.HTTPSource`
    (playlists, ICY titles, reconnects); :func:`open_source` chooses it.
    """

    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    loop: bool = False

    def __post_init__(self) -> None:
        self.is_file = not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.spec)
        self._closed = threading.Event()
        self.loops = 0

    def close(self) -> None:
        self._closed.set()

    def _open(self):
        import av

        if self.is_file:
            path = Path(self.spec)
            if not path.exists():
                raise SourceError(self.spec, "no such file")
            if path.is_dir():
                raise SourceError(self.spec, "is a directory, expected an audio file")
        options = {} if self.is_file else {"icy": "1", "user_agent": "genrestream/0.1"}
        try:
            return av.open(
                self.spec,
                mode="r",
                options=options,
                timeout=None if self.is_file else (self.open_timeout_s, self.read_timeout_s),
                metadata_errors="ignore",
            )
        except Exception as exc:  # PyAV raises OSError subclasses and its own FFmpegError
            raise SourceError(self.spec, _describe_av_error(exc)) from exc

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        import av

        decoder = AudioDecoder(self.spec, self.stats, sample_rate)
        while True:
            container = self._open()
            try:
                stream = decoder.audio_stream(container)
                stream.thread_type = "AUTO"
                decoder.frames = 0
                try:
                    for packet in container.demux(stream):
                        if self._closed.is_set():
                            return
                        self.stats.bytes_read += packet.size or 0
                        yield from decoder.decode(packet)
                except av.error.FFmpegError as exc:
                    if decoder.frames == 0:
                        raise SourceError(self.spec, _describe_av_error(exc)) from exc
                    raise SourceError(self.spec, f"decoding failed: {_describe_av_error(exc)}") from exc
                if decoder.frames == 0:
                    raise SourceError(self.spec, "not audio: no audio frames decoded")
            finally:
                container.close()
            if not self.loop or self._closed.is_set():
                break
            self.loops += 1
            log.debug("%s: looping (%d)", self.spec, self.loops)
        tail = decoder.flush()
        if tail.size:
            yield tail


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
        from .live import ReconnectPolicy

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


def open_source(
    spec: str,
    *,
    loop: bool = False,
    stall_timeout_s: float = 15.0,
    max_backoff_s: float = 30.0,
    max_reconnects: int | None = None,
    reconnect_at_start: bool = False,
) -> AudioSource:
    """Make the source for a command-line SOURCE.

    Parameters
    ----------
    spec : str
        A path to a local audio file (or a ``file://`` URL), an ``http(s)://``
        URL of a stream, a playlist (.pls, .m3u) or an HLS playlist (.m3u8),
        ``mic`` (default input) or ``mic:NAME_OR_INDEX``.
    loop : bool
        Files only: start again at the end, for ever.
    stall_timeout_s : float
        Live sources: seconds without data (or without a decodable frame)
        after which the stream counts as stalled and is reconnected.
    max_backoff_s : float
        Live sources: longest wait between reconnection attempts.
    max_reconnects : int or None
        Live sources: failed reconnection attempts in a row before the
        stream fails; None (the default) retries for ever.
    reconnect_at_start : bool
        HTTP sources: also retry when the very first connection fails (by
        default a source that never played fails at once, so that a mistyped
        URL is reported rather than retried for ever).

    Raises
    ------
    SourceError
        If ``spec`` is empty or names an unsupported URL scheme.
    """
    if not spec:
        raise SourceError(spec, "empty source")
    if spec == "mic" or spec.startswith("mic:"):
        device: str | int | None = spec[4:] or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        return MicrophoneSource(spec, device=device, stall_timeout_s=stall_timeout_s, max_backoff_s=max_backoff_s,
                                max_reconnects=max_reconnects)
    scheme = urlparse(spec).scheme.lower()
    has_scheme = bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec))
    if has_scheme and scheme in ("http", "https"):
        from .live import HTTPSource, ReconnectPolicy

        policy = ReconnectPolicy(max_backoff_s=max_backoff_s, max_reconnects=max_reconnects,
                                 reconnect_at_start=reconnect_at_start)
        return HTTPSource(spec, stall_timeout_s=stall_timeout_s, policy=policy)
    if has_scheme and scheme == "file":
        from urllib.parse import unquote

        return AVSource(unquote(urlparse(spec).path), loop=loop)
    if has_scheme:
        raise SourceError(spec, f"unsupported URL scheme {scheme!r}: expected http, https or a file path")
    return AVSource(spec, loop=loop)


def stream_id_for(spec: str) -> str:
    """Derive a stream id from a source: file stem, URL host and path, or ``mic``.

    >>> stream_id_for("/music/Blue Train.mp3")
    'Blue-Train'
    >>> stream_id_for("http://radio.example:8000/live.mp3")
    'radio.example-live'
    """
    if spec == "mic" or spec.startswith("mic:"):
        raw = spec.replace(":", "-")
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        url = urlparse(spec)
        path = Path(url.path).with_suffix("").as_posix().strip("/")
        raw = "-".join(p for p in (url.hostname or "", path.replace("/", "-")) if p)
    else:
        raw = Path(spec).stem
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-")
    return slug or "stream"
