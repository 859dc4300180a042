"""What every source shares: the items it yields, its errors, its counters, its interface.

A source yields mono ``float32`` blocks; between them a live source yields
:class:`SourceStatus`, :class:`SourceGap` and :class:`SourceMetadata` items.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


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
    decode_errors : int
        Damage skipped: packets that failed to decode, and errors of the
        demuxer after which reading went on (see :mod:`stream.sources.decode`).
    last_error : str
        The reason of the last failure, drop or stall ("" if none yet).
    title : str
        The current stream title (ICY ``StreamTitle``), "" if none.
    """

    bytes_read: int = 0
    seconds_decoded: float = 0.0
    reconnects: int = 0
    overflows: int = 0
    decode_errors: int = 0
    last_error: str = ""
    title: str = ""

    def as_dict(self) -> dict:
        return {
            "bytes_read": self.bytes_read,
            "seconds_decoded": round(self.seconds_decoded, 3),
            "reconnects": self.reconnects,
            "overflows": self.overflows,
            "decode_errors": self.decode_errors,
            "last_error": self.last_error,
            "title": self.title,
        }


def describe_av_error(exc: BaseException) -> str:
    """A reason a person can act on, for an exception PyAV (FFmpeg) or the OS raised."""
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
    if isinstance(exc, EOFError):  # FFmpeg's AVERROR_EOF before it found a stream
        return "not audio: the data ended before FFmpeg found audio in it"
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
