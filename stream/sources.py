"""Audio sources: files, HTTP(S) internet radio and microphones, as blocking generators.

Each source yields mono ``float32`` blocks at the model's sample rate. Decoding
is PyAV's (FFmpeg): files, HTTP(S) Icecast/Shoutcast streams in MP3, AAC or
Ogg. The channels are averaged (as :func:`librosa.to_mono` does) and the rate
converted by ``soxr`` in streaming mode with librosa's default quality
(``soxr_hq``), so the engine sees what ``librosa.load(path, sr=22050)`` gave
the training tables.

The decoding generator follows faster-whisper's ``decode_audio``: open with
PyAV, decode frame by frame, convert, yield. Sources are blocking and run in
a thread of their own (see :mod:`stream.engine`).

Errors are raised as :class:`SourceError` with the source and a reason a
person can act on.
"""

from __future__ import annotations

import errno
import logging
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

FILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aiff", ".aif"}


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
    """Counters of one source, reported in ``status`` events."""

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

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        """Yield mono float32 blocks at ``sample_rate`` Hz until the source ends.

        Raises
        ------
        SourceError
            If the source cannot be opened or read.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Ask a blocked :meth:`blocks` to stop soon (thread-safe)."""


@dataclass
class AVSource(AudioSource):
    """A file or HTTP(S) stream decoded by PyAV.

    Parameters
    ----------
    spec : str
        Path or URL.
    open_timeout_s, read_timeout_s : float
        Network time-outs in seconds (HTTP only).
    """

    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.is_file = not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.spec)
        self._closed = threading.Event()

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

        container = self._open()
        try:
            if not container.streams.audio:
                raise SourceError(self.spec, "not audio: no audio stream in it")
            stream = container.streams.audio[0]
            stream.thread_type = "AUTO"
            to_float = av.AudioResampler(format="fltp")
            resampler: MonoResampler | None = None
            try:
                for packet in container.demux(stream):
                    if self._closed.is_set():
                        return
                    self.stats.bytes_read += packet.size or 0
                    for frame in packet.decode():
                        for converted in to_float.resample(frame):
                            if resampler is None:
                                resampler = MonoResampler(converted.sample_rate, sample_rate)
                            pcm = converted.to_ndarray()
                            self.stats.seconds_decoded += pcm.shape[-1] / converted.sample_rate
                            out = resampler(pcm)
                            if out.size:
                                yield out
            except av.error.FFmpegError as exc:
                if resampler is None:
                    raise SourceError(self.spec, _describe_av_error(exc)) from exc
                raise SourceError(self.spec, f"decoding failed: {_describe_av_error(exc)}") from exc
            if resampler is None:
                raise SourceError(self.spec, "not audio: no audio frames decoded")
            tail = resampler(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield tail
        finally:
            container.close()


@dataclass
class MicrophoneSource(AudioSource):
    """Live input from a sound card through sounddevice (PortAudio).

    The device's own sample rate and channel count are used; the audio
    callback hands blocks to the reading thread through a bounded queue
    without blocking, and counts an overflow whenever PortAudio or the queue
    drops input.

    Parameters
    ----------
    device : str or int or None
        Device name (substring) or index; None for the default input.
    """

    device: str | int | None = None
    block_s: float = 0.1

    def __post_init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=600)
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio library missing
            raise SourceError(self.spec, f"sounddevice unusable: {exc}") from exc
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise SourceError(self.spec, f"unknown input device {self.device!r}: {exc}") from exc
        native_rate = int(info["default_samplerate"])
        channels = max(1, min(2, int(info["max_input_channels"])))
        resampler = MonoResampler(native_rate, sample_rate)

        def callback(indata, frames, time_info, status):  # PortAudio thread: never block
            if status.input_overflow:
                self.stats.overflows += 1
            try:
                self._queue.put_nowait(indata.T.copy())
            except queue.Full:
                self.stats.overflows += 1

        try:
            stream = sd.InputStream(
                device=self.device,
                samplerate=native_rate,
                channels=channels,
                dtype="float32",
                blocksize=int(native_rate * self.block_s),
                callback=callback,
            )
        except sd.PortAudioError as exc:
            raise SourceError(self.spec, f"cannot open input device: {exc}") from exc
        with stream:
            while not self._closed.is_set():
                try:
                    block = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.stats.seconds_decoded += block.shape[-1] / native_rate
                out = resampler(block)
                if out.size:
                    yield out


def open_source(spec: str) -> AudioSource:
    """Make the source for a command-line SOURCE.

    Parameters
    ----------
    spec : str
        A path to a local audio file, an ``http(s)://`` URL of a stream,
        ``mic`` (default input) or ``mic:NAME_OR_INDEX``.

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
        return MicrophoneSource(spec, device=device)
    scheme = urlparse(spec).scheme.lower()
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec) and scheme not in ("http", "https", "file"):
        raise SourceError(spec, f"unsupported URL scheme {scheme!r}: expected http, https or a file path")
    return AVSource(spec)


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
