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
from .decode import AudioDecoder

log = logging.getLogger(__name__)

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
                        raise SourceError(self.spec, describe_av_error(exc)) from exc
                    raise SourceError(self.spec, f"decoding failed: {describe_av_error(exc)}") from exc
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
