"""Radio playlists: PLS and M3U files that point at streams, and how to tell them from HLS.

Stations publish ``.pls`` (``[playlist]`` / ``File1=...``) and ``.m3u``
(one URL per line, ``#`` comments) files whose entries are the actual stream
URLs, often several mirrors. An ``.m3u8`` with ``#EXT-X-`` tags is not such a
list but an HTTP Live Streaming media or master playlist, which FFmpeg's
``hls`` demuxer plays itself.

This module only parses (no I/O); :mod:`stream.sources.radio` fetches, bounds the size
(:data:`MAX_PLAYLIST_BYTES`) and depth (:data:`MAX_DEPTH`), and refuses loops.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

MAX_PLAYLIST_BYTES = 256 * 1024
"""Largest playlist body read; radio playlists are a few hundred bytes."""

MAX_DEPTH = 4
"""Playlists within playlists followed before giving up."""

MAX_ENTRIES = 32
"""Entries of one playlist tried at most."""

PLS_TYPES = {"audio/x-scpls", "audio/scpls", "application/pls+xml"}
M3U_TYPES = {"audio/x-mpegurl", "audio/mpegurl", "application/x-mpegurl", "application/vnd.apple.mpegurl",
             "application/mpegurl", "audio/m3u", "audio/x-m3u"}
PLAYLIST_SUFFIXES = (".pls", ".m3u", ".m3u8")


def looks_like_playlist(url: str, content_type: str, head: bytes) -> bool:
    """Whether a response is a playlist rather than audio.

    Parameters
    ----------
    url : str
        The URL that answered.
    content_type : str
        Its media type in lower case without parameters ("" if none).
    head : bytes
        The first bytes of the body (a few hundred are enough).

    Notes
    -----
    A playlist media type decides; an ``audio/*`` type other than those says
    audio; otherwise (``application/octet-stream``, ``text/plain``, none) the
    body decides: ``[playlist]`` or ``#EXTM3U``, or a playlist suffix on the
    URL and text that starts with a URL or a comment.
    """
    if content_type in PLS_TYPES or content_type in M3U_TYPES:
        return True
    if content_type.startswith("audio/") or content_type in ("application/ogg", "video/mp2t"):
        return False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"[playlist]") or text.startswith(b"#extm3u"):
        return True
    path = urlsplit(url).path.lower()
    return path.endswith(PLAYLIST_SUFFIXES) and (text.startswith((b"http://", b"https://", b"#")) or not text)


def is_hls(text: str) -> bool:
    """An M3U8 with HLS tags (``#EXT-X-...``): a media or master playlist for FFmpeg's hls demuxer."""
    return "#EXT-X-" in text.upper()


def decode_playlist(body: bytes) -> str:
    """Playlist text: UTF-8 (with or without BOM), else Latin-1."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def parse_pls(text: str, base_url: str = "") -> list[str]:
    """Entries of a PLS playlist, in ``FileN`` order, resolved against ``base_url``.

    Examples
    --------
    >>> parse_pls("[playlist]\\nFile2=http://b/\\nFile1=http://a/\\nNumberOfEntries=2\\n")
    ['http://a/', 'http://b/']
    """
    entries: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"\s*File(\d+)\s*=\s*(.+?)\s*$", line, re.I)
        if match:
            entries.append((int(match.group(1)), urljoin(base_url, match.group(2))))
    return [url for _, url in sorted(entries, key=lambda e: e[0])][:MAX_ENTRIES]


def parse_m3u(text: str, base_url: str = "") -> list[str]:
    """Entries of a plain M3U playlist (not HLS), resolved against ``base_url``.

    Examples
    --------
    >>> text = "#EXTM3U\\n#EXTINF:-1,Radio\\nhttp://radio.example/live\\n\\nbackup.mp3\\n"
    >>> parse_m3u(text, "http://radio.example/x.m3u")
    ['http://radio.example/live', 'http://radio.example/backup.mp3']
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(urljoin(base_url, line))
    return out[:MAX_ENTRIES]


def parse_playlist(body: bytes, url: str) -> tuple[str, list[str]]:
    """Parse a playlist body.

    Parameters
    ----------
    body : bytes
        The playlist as fetched.
    url : str
        Where it was fetched from (relative entries are resolved against it).

    Returns
    -------
    kind : str
        ``"hls"`` (entries empty: hand ``url`` to FFmpeg), ``"pls"`` or ``"m3u"``.
    entries : list of str
        Entry URLs (or paths), in playlist order.
    """
    text = decode_playlist(body)
    if is_hls(text):
        return "hls", []
    if text.lstrip().lower().startswith("[playlist]") or re.search(r"^\s*File\d+\s*=", text, re.I | re.M):
        return "pls", parse_pls(text, url)
    return "m3u", parse_m3u(text, url)
