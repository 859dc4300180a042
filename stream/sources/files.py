"""Local files (and any URL FFmpeg opens by itself), optionally looping."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .base import AudioSource, SourceError, describe_av_error
from .decode import AudioDecoder, describe_damage

log = logging.getLogger(__name__)

MAX_BAD_PACKETS = 1000
"""Packets in a row that fail to decode (each skipped) after which a file is read no further.

Each failure consumes a packet, so a file always ends; this only cuts short
the reading of a long run of garbage (1000 MP3 frames are 26 s).
"""

FILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aiff", ".aif"}


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
    A damaged file loses only its damaged parts: packets that do not decode
    are skipped, and reading goes on after a demuxer error
    (:meth:`stream.sources.AudioDecoder.packets`), both counted in
    ``stats.decode_errors``. A file that ends early (truncated, or too
    damaged to read on) ends normally with the audio decoded (the reason in
    ``stats.last_error``); only a file with no decodable audio at all is
    ``not audio``, and a 0-byte file is ``empty file (0 bytes)``.

    ``http(s)://`` URLs are better served by :class:`stream.sources.radio.HTTPSource`
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
            try:
                empty = path.stat().st_size == 0 and path.is_file()
            except OSError as exc:
                raise SourceError(self.spec, describe_av_error(exc)) from exc
            if empty:
                raise SourceError(self.spec, "empty file (0 bytes)")
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
            raise SourceError(self.spec, describe_av_error(exc)) from exc

    def blocks(self, sample_rate: int) -> Iterator[np.ndarray]:
        import av

        decoder = AudioDecoder(self.spec, self.stats, sample_rate, tolerate_errors=MAX_BAD_PACKETS)
        while True:
            container = self._open()
            try:
                stream = decoder.audio_stream(container)
                stream.thread_type = "AUTO"
                try:
                    for packet in decoder.packets(container, stream):
                        if self._closed.is_set():
                            return
                        self.stats.bytes_read += packet.size or 0
                        yield from decoder.decode(packet)
                except (av.error.FFmpegError, SourceError) as exc:
                    # The decoder gave up (too many failures in a row) or the input failed.
                    if isinstance(exc, SourceError):
                        reason = exc.reason
                    elif decoder.frames == 0:
                        reason = describe_av_error(exc)
                    else:
                        reason = f"decoding failed: {describe_damage(exc)}"
                    if decoder.frames == 0 or not self.is_file:
                        raise SourceError(self.spec, reason) from exc
                    self.stats.last_error = reason
                    log.warning("%s: read no further after %.1f s of audio: %s",
                                self.spec, self.stats.seconds_decoded, reason)
                if decoder.frames == 0:
                    raise SourceError(self.spec, decoder.not_audio_reason())
                if decoder.failed:
                    log.info("%s: skipped %d damaged packets (last: %s)", self.spec, decoder.failed, decoder.last_error)
            finally:
                container.close()
            if not self.loop or self._closed.is_set():
                break
            self.loops += 1
            log.debug("%s: looping (%d)", self.spec, self.loops)
        tail = decoder.flush()
        if tail.size:
            yield tail
