"""Live HTTP(S) sources that run for days: radio streams, playlists, HLS, ICY titles, reconnects.

:class:`HTTPSource` plays one ``http(s)://`` URL for as long as it is asked to:

1. **Resolve.** GET the URL (redirects followed, HTTPS verified) with
   ``Icy-MetaData: 1``. A PLS or M3U playlist is read (bounded size), and its
   entries tried in order, recursively up to :data:`stream.sources.playlist.MAX_DEPTH`,
   refusing an entry that leads back to a playlist on the way (a loop). An HLS
   playlist (``#EXT-X-`` tags) goes to FFmpeg's ``hls`` demuxer. An HTML page,
   or any status but 200, is an error that names the reason.
2. **Play.** An audio response is read off the socket by :mod:`stream.sources.icy`,
   the ICY metadata blocks are cut out (titles go out as
   :class:`~stream.sources.SourceMetadata` once the decoder reaches the byte
   at which they arrived), and the audio bytes are handed to PyAV as a
   file-like object (``av.open(fileobj)``: FFmpeg probes the format and
   decodes). HLS is opened with ``av.open(url, format="hls", io_open=...)``,
   so that playlist and segment requests also go through our client (exact
   byte counts, :meth:`HTTPSource.close` that unblocks at once).
3. **Reconnect.** At the end of a live stream, on an error, or on a stall (no
   byte for ``stall_timeout_s``, or no decodable frame in
   :data:`MAX_UNDECODABLE_BYTES`), the source yields a ``reconnecting``
   status and tries again after an exponential backoff with full jitter
   (:class:`ReconnectPolicy`), for ever by default. When audio flows again
   it yields a :class:`~stream.sources.SourceGap` whose duration is the real
   time from the last audio before the drop to the first audio after it, so
   stream time keeps counting real time, then a ``playing`` status.

Initial-failure policy: a source that has never played fails at once on its
first error (a mistyped URL, a 404, an HTML page, a refused connection are
reported, and ``genrestream run`` exits 1), unless ``reconnect_at_start`` is
set, for a station that may not be up yet. Once a source has played, every
failure is retried: a 404 then usually means the station's source client has
not reconnected to the Icecast mount yet, a 5xx a server restarting.

A response with a Content-Length that was read to its end (an audio file on a
web server) and an HLS playlist that ends (``#EXT-X-ENDLIST``) end the
stream instead of reconnecting.
"""

from __future__ import annotations

import io
import logging
import random
import ssl
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np

from . import playlist as pl
from .icy import ClosedError, FetchError, HTTPResponse, IcyDemuxer, http_get, parse_stream_title
from .base import AudioSource, SourceError, SourceGap, SourceMetadata, SourceStatus, describe_av_error
from .decode import AudioDecoder, describe_damage
from .reconnect import ReconnectPolicy

log = logging.getLogger(__name__)

MAX_UNDECODABLE_BYTES = 1024 * 1024
"""Bytes read without a decodable audio frame after which a stream is "not audio" (at the start) or stalled."""

MAX_BAD_PACKETS = 50
"""Packets in a row that fail to decode (each skipped and counted in ``stats.decode_errors``) before the connection is dropped."""

HTML_TYPES = {"text/html", "application/xhtml+xml"}

FORMAT_OF_TYPE = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/x-mpeg": "mp3",
    "audio/aac": "aac", "audio/aacp": "aac", "audio/x-aac": "aac",
    "audio/ogg": "ogg", "application/ogg": "ogg", "audio/opus": "ogg", "audio/vorbis": "ogg",
}
"""FFmpeg demuxer of a live stream's Content-Type. Told the format, FFmpeg opens an Icecast MP3 mount in
0.2 s; probing for it reads about 6 s of the live stream first (measured in benchmarks/soak.py)."""

REPLAY_BYTES = 256 * 1024
"""Bytes a stream's start is kept for, so that FFmpeg can probe them again if the Content-Type's format was wrong."""



class _Closed(Exception):
    """The source was closed while working."""


class _Pipe:
    """The audio bytes of one HTTP response, as the file-like object PyAV reads.

    ICY metadata is cut out (titles are queued with the audio byte offset at
    which they arrived). A read raises if the source is closed, if no byte
    comes for ``stall_timeout_s`` (:class:`stream.sources.icy.StallError` from the response), or
    if :data:`MAX_UNDECODABLE_BYTES` went by without a decoded frame.
    """

    def __init__(self, source: "HTTPSource", response: HTTPResponse, decoder: AudioDecoder) -> None:
        self.source = source
        self.response = response
        self.decoder = decoder
        self.demuxer = IcyDemuxer(response.icy_metaint)
        self.titles: list[tuple[int, str]] = []
        self.audio_offset = 0  # audio bytes handed to FFmpeg
        self.offset_at_frame = 0  # audio_offset when the decoder last produced a frame
        self._frames_seen = 0
        self._head: bytearray | None = bytearray()  # the first audio bytes, while a rewind is possible
        self._replay = b""

    def readable(self) -> bool:
        return True

    def rewind(self) -> bool:
        """Hand the audio read so far to the next reader again (once, within :data:`REPLAY_BYTES`); False if too late."""
        if self._head is None:
            return False
        self._replay, self._head = bytes(self._head), None
        self.audio_offset = 0
        return True

    def read(self, n: int) -> bytes:
        if self._replay:
            data, self._replay = self._replay[: max(1, n)], self._replay[max(1, n):]
            self.audio_offset += len(data)
            return data
        data = self._read(n)
        if self._head is not None:
            self._head += data
            if len(self._head) > REPLAY_BYTES:
                self._head = None
        return data

    def _read(self, n: int) -> bytes:
        while True:
            if self.decoder.frames != self._frames_seen:
                self._frames_seen = self.decoder.frames
                self.offset_at_frame = self.audio_offset
            undecodable = self.audio_offset - self.offset_at_frame
            if undecodable > MAX_UNDECODABLE_BYTES:
                kib = MAX_UNDECODABLE_BYTES // 1024
                if self.decoder.frames == 0 and not self.source._played_here:
                    raise SourceError(self.source.spec, f"not audio: no decodable audio in the first {kib} KiB")
                raise SourceError(self.source.spec, f"stalled: no decodable audio in the last {kib} KiB")
            try:
                data = self.response.read(max(1, n))
            except ClosedError:
                raise _Closed() from None
            except FetchError as exc:
                raise SourceError(self.source.spec, exc.reason) from exc
            self.source._count(self.response)
            if not data:
                return b""
            audio, blocks = self.demuxer.feed_at(data)
            for position, block in blocks:
                title = parse_stream_title(block)
                if title is not None:
                    self.titles.append((self.audio_offset + position, title))
            if audio:
                self.audio_offset += len(audio)
                return audio


class _Segment:
    """An HLS segment being read for FFmpeg (``io_open``), counted and closable."""

    def __init__(self, source: "HTTPSource", response: HTTPResponse) -> None:
        self.source = source
        self.response = response

    def readable(self) -> bool:
        return True

    def read(self, n: int) -> bytes:
        try:
            data = self.response.read(max(1, n))
        except ClosedError:
            data = b""
        except FetchError as exc:  # recorded, not raised: see HTTPSource._hls_open
            self.source._hls_error = f"{self.response.url}: {exc.reason}"
            data = b""
        self.source._count(self.response)
        return data

    def close(self) -> None:
        self.source._release(self.response)


@dataclass
class HTTPSource(AudioSource):
    """An ``http(s)://`` radio stream, playlist or live HLS, reconnecting for ever.

    See the module docstring for the whole behaviour.

    Parameters
    ----------
    spec : str
        The URL as the user gave it.
    open_timeout_s : float
        Seconds allowed to connect and receive the response head.
    stall_timeout_s : float
        Seconds without a byte (or, for HLS, without a packet) after which the
        connection counts as stalled and is dropped and retried.
    policy : ReconnectPolicy
        Backoff and limits.
    stats_interval_s : float
        While playing, a ``playing`` status with fresh statistics is yielded
        this often (seconds), so dashboards see them move.
    ssl_context : ssl.SSLContext or None
        For https; default :func:`ssl.create_default_context`.

    Yields
    ------
    np.ndarray [shape=(n,), dtype=float32]
        Mono audio at the requested sample rate.
    SourceStatus, SourceGap, SourceMetadata
        Between blocks.

    Raises
    ------
    SourceError
        On the first connection's failure (unless ``policy.reconnect_at_start``),
        or after ``policy.max_reconnects`` failed attempts in a row.
    """

    open_timeout_s: float = 10.0
    stall_timeout_s: float = 15.0
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    stats_interval_s: float = 30.0
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._responses: set[HTTPResponse] = set()
        self._played = False  # some audio was ever yielded
        self._played_here = False  # some audio was yielded by the current connection
        self._finished = False  # the current connection ended for good (file read whole, HLS ENDLIST)
        self._title = ""
        self._last_audio_t = 0.0
        self._hls_endlist = False
        self._hls_error = ""
        self.playing_url = ""
        self.last_connect_s: float | None = None  # seconds from the last successful reconnect attempt to audio

    # -- closing ------------------------------------------------------------------
    def close(self) -> None:
        """Stop: a blocked connect, read or backoff wait returns at once (thread-safe)."""
        self._closed.set()
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            response.close()

    def _track(self, response: HTTPResponse) -> None:
        with self._lock:
            self._responses.add(response)
        if self._closed.is_set():
            response.close()

    def _untrack(self, response: HTTPResponse) -> None:
        with self._lock:
            self._responses.discard(response)

    def _release(self, response: HTTPResponse) -> None:
        self._untrack(response)
        response.release()
        self._count(response)

    def _count(self, response: HTTPResponse) -> None:
        """Add the bytes ``response`` received since the last count to ``stats.bytes_read``."""
        self.stats.bytes_read += response.bytes_read - response.counted
        response.counted = response.bytes_read

    # -- resolving ----------------------------------------------------------------
    def _get(self, url: str, where: str) -> HTTPResponse:
        try:
            response = http_get(
                url, headers={"Icy-MetaData": "1"}, open_timeout_s=self.open_timeout_s,
                stall_timeout_s=self.stall_timeout_s, cancel=self._closed, ssl_context=self.ssl_context,
            )
        except ClosedError:
            raise _Closed() from None
        except FetchError as exc:
            raise SourceError(self.spec, where + exc.reason) from exc
        self._track(response)
        return response

    def _resolve(self, url: str, chain: tuple[str, ...] = ()) -> tuple[str, HTTPResponse | str]:
        """Follow playlists from ``url`` to something playable.

        Returns
        -------
        ("stream", HTTPResponse) or ("hls", url)

        Raises
        ------
        SourceError
            Naming the reason (and the URL, when it is not the source's own).
        """
        where = "" if url == self.spec else f"{url}: "
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise SourceError(self.spec, f"{where}only http and https entries are played")
        response = self._get(url, where)
        try:
            if response.url != url and response.url != self.spec:
                where = f"{url} (redirected to {response.url}): "
            if response.status != 200:
                phrase = response.reason
                if not phrase:
                    try:
                        phrase = HTTPStatus(response.status).phrase
                    except ValueError:
                        phrase = ""
                raise SourceError(self.spec, f"{where}HTTP {response.status} {phrase}".rstrip())
            ctype = response.content_type
            if ctype in HTML_TYPES:
                raise SourceError(self.spec, f"{where}not audio: the server sent an HTML page (Content-Type {ctype})")
            try:
                head = response.peek(512)
            except ClosedError:
                raise _Closed() from None
            except FetchError as exc:
                raise SourceError(self.spec, where + exc.reason) from exc
            text = head.lstrip().lower()
            if not ctype.startswith("audio/") and text.startswith((b"<!doctype html", b"<html")):
                raise SourceError(self.spec, f"{where}not audio: the server sent an HTML page")
            if not pl.looks_like_playlist(response.url, ctype, head):
                return "stream", response
            try:
                body = response.read_all(pl.MAX_PLAYLIST_BYTES)
            except ClosedError:
                raise _Closed() from None
            except FetchError as exc:
                raise SourceError(self.spec, f"{where}playlist: {exc.reason}") from exc
        except BaseException:
            self._release(response)
            raise
        self._release(response)
        kind, entries = pl.parse_playlist(body, response.url)
        if kind == "hls":
            return "hls", response.url
        if len(chain) >= pl.MAX_DEPTH:
            raise SourceError(self.spec, f"{where}playlists nested deeper than {pl.MAX_DEPTH}")
        if not entries:
            raise SourceError(self.spec, f"playlist {response.url} has no entries")
        visited = chain + (url, response.url)
        reasons = []
        for entry in entries:
            if entry in visited:
                reasons.append(f"{entry}: refers back to itself (a playlist loop)")
                continue
            try:
                return self._resolve(entry, visited)
            except SourceError as exc:
                reasons.append(exc.reason)
        raise SourceError(self.spec, f"playlist {response.url}: no playable entry ({'; '.join(reasons)})")

    # -- one connection -----------------------------------------------------------
    def _session(self, sample_rate: int, decoder: AudioDecoder) -> Iterator[np.ndarray | SourceStatus | SourceMetadata]:
        self._finished = False
        self._played_here = False
        kind, target = self._resolve(self.spec)
        if kind == "hls":
            assert isinstance(target, str)
            yield from self._play_hls(target, decoder)
        else:
            assert isinstance(target, HTTPResponse)
            yield from self._play_stream(target, decoder)

    def _describe(self, response: HTTPResponse, stream) -> str:
        parts = [f"{stream.codec_context.name} {stream.sample_rate} Hz {stream.channels} ch"]
        if response.content_type:
            parts.append(response.content_type)
        name = response.headers.get("icy-name")
        if name:
            parts.append(f"station {name!r}")
        if response.url != self.spec:
            parts.append(f"from {response.url}")
        return ", ".join(parts)

    def _title_items(self, title: str) -> Iterator[SourceMetadata]:
        if title and title != self._title:
            self._title = self.stats.title = title
            log.info("%s: title %r", self.spec, title)
            yield SourceMetadata(title)

    def _play_stream(self, response: HTTPResponse, decoder: AudioDecoder) -> Iterator:
        import av

        try:
            pipe = _Pipe(self, response, decoder)
            decoder.frames = 0
            container = None
            hinted = FORMAT_OF_TYPE.get(response.content_type)
            if hinted is not None:
                try:
                    container = av.open(pipe, mode="r", format=hinted, metadata_errors="ignore", buffer_size=16384)
                except (SourceError, _Closed):
                    raise
                except av.error.FFmpegError as exc:
                    log.debug("%s: not %s after all (%s); probing", self.spec, hinted, exc)
                    if not pipe.rewind():
                        raise SourceError(self.spec, f"not audio: not {hinted} as its Content-Type says") from exc
            try:
                if container is None:
                    container = av.open(pipe, mode="r", metadata_errors="ignore", buffer_size=16384)
            except (SourceError, _Closed):
                raise
            except av.error.FFmpegError as exc:
                ctype = f"; Content-Type {response.content_type}" if response.content_type else ""
                raise SourceError(
                    self.spec, f"not audio: FFmpeg does not recognise the stream ({describe_av_error(exc)}{ctype})"
                ) from exc
            with closing(container):
                stream = decoder.audio_stream(container)
                self.playing_url = response.url
                announced = False
                last_stats = time.monotonic()
                try:
                    for packet in decoder.packets(container, stream):
                        if self._closed.is_set():
                            raise _Closed()
                        if pipe.titles:
                            pos = packet.pos if packet.pos is not None and packet.pos >= 0 else None
                            while pipe.titles and (pos is None or pipe.titles[0][0] <= pos):
                                yield from self._title_items(pipe.titles.pop(0)[1])
                        for block in decoder.decode(packet):
                            if not announced:
                                announced = True
                                log.info("%s: playing %s", self.spec, self._describe(response, stream))
                                yield SourceStatus("playing", self._describe(response, stream))
                            self._played = self._played_here = True
                            self._last_audio_t = time.monotonic()
                            yield block
                        if time.monotonic() - last_stats >= self.stats_interval_s:
                            last_stats = time.monotonic()
                            yield SourceStatus("playing", self._describe(response, stream))
                except av.error.FFmpegError as exc:
                    if decoder.frames == 0 and not self._played_here:
                        raise SourceError(
                            self.spec, f"not audio: FFmpeg could not read audio from it ({describe_damage(exc)})"
                        ) from exc
                    raise SourceError(self.spec, f"decoding failed: {describe_damage(exc)}") from exc
                if decoder.frames == 0 and not self._played_here:
                    raise SourceError(self.spec, decoder.not_audio_reason())
                for _, title in pipe.titles:
                    yield from self._title_items(title)
                if response.content_length is not None and response.complete:
                    self._finished = True  # a file on a web server, read to its end
                    tail = decoder.flush()
                    if tail.size:
                        yield tail
        finally:
            self._release(response)

    # -- HLS ----------------------------------------------------------------------
    def _hls_open(self, url: str, flags: int, options: dict) -> object:
        """``io_open`` for FFmpeg's hls demuxer: playlists are read whole, segments streamed.

        It never raises (PyAV would hold the exception until some later call,
        or drop it): a failure is recorded in ``_hls_error`` and FFmpeg gets
        an empty file, which it reports or skips.
        """
        where = "" if url == self.spec else f"{url}: "
        try:
            response = self._get(url, where)
        except _Closed:
            return io.BytesIO(b"")
        except SourceError as exc:
            self._hls_error = exc.reason
            return io.BytesIO(b"")
        if response.status != 200:
            self._release(response)
            self._hls_error = f"{where}HTTP {response.status} {response.reason}".rstrip()
            return io.BytesIO(b"")
        path = urlsplit(response.url).path.lower()
        if path.endswith((".m3u8", ".m3u")) or response.content_type in pl.M3U_TYPES:
            try:
                body = response.read_all(pl.MAX_PLAYLIST_BYTES)
            except ClosedError:
                return io.BytesIO(b"")
            except FetchError as exc:
                self._hls_error = f"{where}{exc.reason}"
                return io.BytesIO(b"")
            finally:
                self._release(response)
            self._hls_endlist = b"#EXT-X-ENDLIST" in body.upper()
            return io.BytesIO(body)
        return _Segment(self, response)

    def _play_hls(self, url: str, decoder: AudioDecoder) -> Iterator:
        import av

        self._hls_endlist = False
        self._hls_error = ""
        decoder.frames = 0
        try:
            container = av.open(
                url, mode="r", format="hls", io_open=self._hls_open, container_options={"http_persistent": "0"},
                timeout=(self.open_timeout_s, self.stall_timeout_s), metadata_errors="ignore",
            )
        except av.error.FFmpegError as exc:
            if self._closed.is_set():
                raise _Closed() from None
            if self._hls_error:
                raise SourceError(self.spec, self._hls_error) from exc
            if isinstance(exc, av.error.ExitError):
                raise SourceError(self.spec, f"HLS: nothing to play within {self.open_timeout_s:g} s") from exc
            raise SourceError(self.spec, f"HLS: {describe_av_error(exc)}") from exc
        with closing(container):
            stream = decoder.audio_stream(container)
            self.playing_url = url
            announced = False
            last_stats = time.monotonic()
            detail = f"HLS {stream.codec_context.name} {stream.sample_rate} Hz {stream.channels} ch"
            try:
                for packet in decoder.packets(container, stream):
                    if self._closed.is_set():
                        raise _Closed()
                    for block in decoder.decode(packet):
                        if not announced:
                            announced = True
                            log.info("%s: playing %s", self.spec, detail)
                            yield SourceStatus("playing", detail)
                        self._played = self._played_here = True
                        self._last_audio_t = time.monotonic()
                        yield block
                    if time.monotonic() - last_stats >= self.stats_interval_s:
                        last_stats = time.monotonic()
                        yield SourceStatus("playing", detail)
            except av.error.FFmpegError as exc:
                if self._closed.is_set():
                    raise _Closed() from None
                if isinstance(exc, av.error.ExitError):
                    detail = f"; last error: {self._hls_error}" if self._hls_error else ""
                    raise SourceError(self.spec, f"stalled: no audio for {self.stall_timeout_s:g} s{detail}") from exc
                raise SourceError(self.spec, self._hls_error or f"HLS: {describe_av_error(exc)}") from exc
            if self._closed.is_set():
                raise _Closed()
            if self._hls_error and not self._hls_endlist:
                raise SourceError(self.spec, self._hls_error)
            if decoder.frames == 0 and not self._played_here:
                raise SourceError(self.spec, "not audio: no audio frames decoded from the HLS segments")
            if self._hls_endlist:
                self._finished = True
                tail = decoder.flush()
                if tail.size:
                    yield tail

    # -- the reconnect loop ---------------------------------------------------------
    def blocks(self, sample_rate: int) -> Iterator[np.ndarray | SourceStatus | SourceGap | SourceMetadata]:
        rng = random.Random()
        decoder = AudioDecoder(self.spec, self.stats, sample_rate, tolerate_errors=MAX_BAD_PACKETS)
        attempt = 0
        drop_t: float | None = None  # when audio stopped (None: it has not)
        drop_reason = ""
        while not self._closed.is_set():
            audio_before = self.stats.seconds_decoded
            attempt_t = time.monotonic()
            try:
                with closing(self._session(sample_rate, decoder)) as session:
                    for item in session:
                        if drop_t is not None and isinstance(item, (np.ndarray, SourceStatus)):
                            now = time.monotonic()
                            gap_s = max(0.0, now - drop_t)
                            self.last_connect_s = now - attempt_t
                            log.info("%s: playing again after a gap of %.1f s (%.2f s from connecting to audio)",
                                     self.spec, gap_s, self.last_connect_s)
                            yield SourceGap(gap_s, drop_reason)
                            drop_t = None
                            if isinstance(item, SourceStatus):
                                item = SourceStatus(item.state, f"reconnected after a gap of {gap_s:.1f} s "
                                                    f"({self.last_connect_s:.2f} s from connecting to audio, "
                                                    f"attempt {attempt}): {item.detail}")
                        yield item
                if self._finished:
                    return
                reason = "end of stream: the server closed the connection"
            except _Closed:
                return
            except SourceError as exc:
                reason = exc.reason
            if self._closed.is_set():
                return
            self.stats.last_error = reason
            if not self._played and not self.policy.reconnect_at_start:
                raise SourceError(self.spec, reason)
            if self.stats.seconds_decoded - audio_before >= self.policy.healthy_after_s:
                attempt = 0
            attempt += 1
            if self.policy.max_reconnects is not None and attempt > self.policy.max_reconnects:
                raise SourceError(self.spec, f"gave up after {self.policy.max_reconnects} reconnect attempts: {reason}")
            if self._played_here:  # audio stopped: the gap runs from its last block
                drop_t, drop_reason = self._last_audio_t, reason
            decoder.restart()
            delay = self.policy.backoff_s(attempt, rng)
            self.stats.reconnects += 1
            log.warning("%s: %s; reconnecting in %.1f s (attempt %d)", self.spec, reason, delay, attempt)
            yield SourceStatus("reconnecting", f"{reason}; reconnect attempt {attempt} in {delay:.1f} s")
            if self._closed.wait(delay):
                return
