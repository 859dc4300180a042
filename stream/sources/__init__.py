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
- an ``http(s)://`` URL: :class:`stream.sources.radio.HTTPSource`, which resolves
  playlists (PLS, M3U), plays HLS through FFmpeg's demuxer, reads ICY titles,
  and reconnects with backoff when the stream drops or stalls;
- ``mic`` or ``mic:NAME_OR_INDEX``: :class:`MicrophoneSource`.

Errors are raised as :class:`SourceError` with the source and a reason a
person can act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import (AudioSource, SourceError, SourceGap, SourceMetadata, SourceStats, SourceStatus,
                   describe_av_error)
from .decode import AudioDecoder, MonoResampler
from .files import FILE_SUFFIXES, AVSource
from .radio import HTTPSource
from .mic import MicrophoneSource
from .reconnect import ReconnectPolicy

__all__ = [
    "AudioSource", "SourceError", "SourceGap", "SourceMetadata", "SourceStats", "SourceStatus",
    "describe_av_error", "AudioDecoder", "MonoResampler", "FILE_SUFFIXES", "AVSource", "HTTPSource",
    "MicrophoneSource", "ReconnectPolicy", "open_source", "stream_id_for",
]


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
        policy = ReconnectPolicy(max_backoff_s=max_backoff_s, max_reconnects=max_reconnects,
                                 reconnect_at_start=reconnect_at_start)
        return HTTPSource(spec, stall_timeout_s=stall_timeout_s, policy=policy)
    if has_scheme and scheme == "file":
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
