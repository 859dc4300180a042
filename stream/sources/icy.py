"""A small HTTP(S) client for internet radio, and the ICY metadata it carries.

Internet radio is HTTP with quirks that general-purpose clients do not
handle: SHOUTcast v1 answers ``ICY 200 OK`` instead of ``HTTP/1.0 200 OK``
(:mod:`http.client` rejects it), and asking for ``Icy-MetaData: 1`` makes the
server interleave a metadata block every ``icy-metaint`` bytes of audio, which
must be cut out before the audio reaches the decoder. Reading the socket
ourselves also gives exact byte counts, stall detection (no bytes for a set
time), and a :meth:`HTTPResponse.close` that any thread may call to unblock a
reader at once.

The ICY protocol is not formally specified; this follows the de-facto format
described by SHOUTcast and Icecast (and implemented by FFmpeg's ``http``
protocol, ``icy`` option): the metadata block is one length byte ``n``
followed by ``16 * n`` bytes of text such as ``StreamTitle='Artist - Song';``
padded with NULs. The text is UTF-8 when it decodes as such, otherwise
Latin-1 (SHOUTcast v1 and Icecast's default for MP3 mounts).
"""

from __future__ import annotations

import base64
import errno
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit

USER_AGENT = "genrestream/0.1"
MAX_HEADER_BYTES = 64 * 1024
MAX_REDIRECTS = 5
POLL_S = 0.25
"""Longest a blocked read waits before it looks at the clock and the close flag again."""


class FetchError(Exception):
    """An HTTP request failed.

    Attributes
    ----------
    url : str
        The URL that failed (after redirects, if any were followed).
    reason : str
        What went wrong, for people ("connection refused", "HTTP 404 Not Found").
    status : int or None
        The HTTP status, when the server answered with one.
    """

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class StallError(FetchError):
    """No bytes arrived for ``stall_timeout_s`` seconds."""


class ClosedError(FetchError):
    """The response (or its owner) was closed while a read was waiting."""


def _sock_shutdown(sock: socket.socket) -> None:
    """Wake up a thread blocked on ``sock`` (shut down, do not close: the fd stays the reader's)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, not SSLSocket's
    except OSError:
        pass


def _connect(host: str, port: int, timeout_s: float, cancel: threading.Event | None) -> socket.socket:
    """Open a TCP connection, giving up after ``timeout_s`` or as soon as ``cancel`` is set."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    last: OSError = OSError(f"no address for {host!r}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, errno.errorcode.get(err, str(err)))
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            deadline = time.monotonic() + timeout_s
            while err == errno.EINPROGRESS:
                if cancel is not None and cancel.is_set():
                    raise ClosedError(f"{host}:{port}", "closed while connecting")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"connect timed out after {timeout_s:g} s")
                if poller.poll(int(min(POLL_S, remaining) * 1000) + 1):
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, errno.errorcode.get(err, str(err)))
            sock.setblocking(True)
            return sock
        except ClosedError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    raise last


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a network error: "connection refused", "timed out", ..."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, ConnectionResetError) or code == errno.ECONNRESET:
        return "connection reset by the server"
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return str(exc) if str(exc) else "timed out"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ssl.CertificateError):
        return f"TLS certificate error: {exc}"
    return str(exc) or type(exc).__name__


@dataclass(eq=False)
class HTTPResponse:
    """The head of an HTTP (or ICY) response, with its body readable off the socket.

    Create with :func:`http_get`. The body is decoded from chunked transfer
    encoding and bounded by Content-Length when the server sends them.

    Attributes
    ----------
    url : str
        The URL that answered (after redirects).
    status : int
        HTTP status code.
    reason : str
        Status text.
    protocol : str
        ``"HTTP/1.1"``, ``"HTTP/1.0"`` or ``"ICY"`` (SHOUTcast v1).
    headers : dict of str to str
        Response headers, names in lower case (the last of repeated headers wins).
    bytes_read : int
        Bytes received on the socket so far, head included.
    stall_timeout_s : float
        A read that waits this long for a byte raises :class:`StallError`.
    """

    url: str
    status: int
    reason: str
    protocol: str
    headers: dict[str, str]
    sock: socket.socket = field(repr=False)
    stall_timeout_s: float = 15.0
    bytes_read: int = 0
    counted: int = 0  # bytes_read already added to a caller's statistics
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel: threading.Event | None = field(default=None, repr=False)
    _remaining: int | None = field(default=None, repr=False)  # Content-Length left
    _chunked: bool = field(default=False, repr=False)
    _chunk_left: int = field(default=0, repr=False)
    _eof: bool = field(default=False, repr=False)
    _pushback: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        length = self.headers.get("content-length", "")
        self._remaining = int(length) if length.strip().isdigit() else None
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.content_length = self._remaining if not self._chunked else None

    # -- head -----------------------------------------------------------------
    @property
    def content_type(self) -> str:
        """The media type in lower case without parameters, e.g. ``"audio/mpeg"`` ("" if none)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def icy_metaint(self) -> int:
        """Audio bytes between ICY metadata blocks (0: the server sends none)."""
        value = self.headers.get("icy-metaint", "").strip()
        return int(value) if value.isdigit() else 0

    @property
    def complete(self) -> bool:
        """The whole body of a response of known length (or chunked) was read."""
        return self._eof and not self._pushback and (self._chunked or self._remaining == 0)

    # -- raw socket -----------------------------------------------------------
    def _recv(self) -> bytes:
        """Receive some bytes: wait for them, up to ``stall_timeout_s``; b"" at end of stream."""
        waited_from = time.monotonic()
        while True:
            if self._closed.is_set() or (self._cancel is not None and self._cancel.is_set()):
                raise ClosedError(self.url, "closed")
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                if time.monotonic() - waited_from >= self.stall_timeout_s:
                    raise StallError(self.url, f"stalled: no data for {self.stall_timeout_s:g} s") from None
                continue
            except OSError as exc:
                if self._closed.is_set():
                    raise ClosedError(self.url, "closed") from None
                raise FetchError(self.url, describe_os_error(exc)) from exc
            if not data and self._closed.is_set():
                raise ClosedError(self.url, "closed")
            self.bytes_read += len(data)
            return data

    def _fill(self) -> bool:
        data = self._recv()
        if not data:
            return False
        self._buffer += data
        return True

    def _take(self, n: int) -> bytes:
        if not self._buffer and not self._fill():
            return b""
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _readline(self, limit: int = 4096) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise FetchError(self.url, "malformed chunked encoding (line too long)")
            if not self._fill():
                raise FetchError(self.url, "connection closed inside a chunk header")
        i = self._buffer.index(b"\n") + 1
        line = bytes(self._buffer[:i])
        del self._buffer[:i]
        return line

    # -- body -----------------------------------------------------------------
    def read(self, n: int = 65536) -> bytes:
        """Read up to ``n`` body bytes, blocking until at least one arrives.

        Returns
        -------
        bytes
            b"" at the end of the body.

        Raises
        ------
        StallError
            If no byte arrived for ``stall_timeout_s`` seconds.
        ClosedError
            If :meth:`close` was called (from any thread).
        FetchError
            On a network error or malformed chunked encoding.
        """
        if self._pushback:
            out, self._pushback = self._pushback[:n], self._pushback[n:]
            return out
        if self._eof or n <= 0:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                line = self._readline()
                if not line.strip():  # CRLF that ends the previous chunk
                    line = self._readline()
                try:
                    self._chunk_left = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise FetchError(self.url, "malformed chunked encoding") from None
                if self._chunk_left == 0:
                    self._eof = True
                    return b""
            data = self._take(min(n, self._chunk_left))
            if not data:
                self._eof = True
                return b""
            self._chunk_left -= len(data)
            return data
        if self._remaining is not None:
            n = min(n, self._remaining)
            if n == 0:
                self._eof = True
                return b""
        data = self._take(n)
        if not data:
            self._eof = True
            return b""
        if self._remaining is not None:
            self._remaining -= len(data)
            if self._remaining == 0:
                self._eof = True
        return data

    def read_all(self, limit_bytes: int) -> bytes:
        """Read the whole body, or raise :class:`FetchError` if it exceeds ``limit_bytes``."""
        parts = bytearray()
        while True:
            data = self.read(65536)
            if not data:
                return bytes(parts)
            parts += data
            if len(parts) > limit_bytes:
                raise FetchError(self.url, f"response larger than {limit_bytes // 1024} KiB")

    def peek(self, n: int) -> bytes:
        """Up to ``n`` leading body bytes, left to be read again (fewer only at the end of the body)."""
        data = bytearray(self._pushback)
        self._pushback = b""
        while len(data) < n:
            more = self.read(n - len(data))
            if not more:
                break
            data += more
        self._pushback = bytes(data)
        return bytes(data[:n])

    def close(self) -> None:
        """Close the response; a read blocked in another thread returns at once (thread-safe)."""
        if not self._closed.is_set():
            self._closed.set()
            _sock_shutdown(self.sock)

    def release(self) -> None:
        """Close and free the socket; only from the thread that reads."""
        self.close()
        try:
            self.sock.close()
        except OSError:
            pass


_STATUS_LINE = re.compile(r"^(HTTP/\d(?:\.\d)?|ICY)\s+(\d{3})(?:\s+(.*))?$")


def _read_head(
    sock: socket.socket, url: str, timeout_s: float, cancel: threading.Event | None
) -> tuple[bytes, bytes, int]:
    """Read the status line and headers; return (head, leftover body bytes, bytes received)."""
    buf = bytearray()
    received = 0
    deadline = time.monotonic() + timeout_s
    while True:
        end = buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end = buf.find(b"\n\n")
            sep = 2
        if end >= 0:
            return bytes(buf[:end]), bytes(buf[end + sep :]), received
        if len(buf) > MAX_HEADER_BYTES:
            raise FetchError(url, f"not an HTTP response: no end of headers in {MAX_HEADER_BYTES // 1024} KiB")
        if cancel is not None and cancel.is_set():
            raise ClosedError(url, "closed")
        if time.monotonic() > deadline:
            raise FetchError(url, f"no response within {timeout_s:g} s")
        try:
            data = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError as exc:
            raise FetchError(url, describe_os_error(exc)) from exc
        if not data:
            if not buf:
                raise FetchError(url, "the server closed the connection without answering")
            raise FetchError(url, "not an HTTP response: connection closed inside the headers")
        received += len(data)
        buf += data
        if len(buf) >= 12 and not _STATUS_LINE.match(buf.split(b"\n", 1)[0].decode("latin-1").strip()) and (
            b"\n" in buf or len(buf) > 256
        ):
            raise FetchError(url, "not an HTTP response (the server sent something else)")


def _open_once(
    url: str,
    headers: dict[str, str],
    open_timeout_s: float,
    stall_timeout_s: float,
    cancel: threading.Event | None,
    ssl_context: ssl.SSLContext | None,
) -> HTTPResponse:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(url, f"unsupported URL scheme {scheme!r}")
    host = parts.hostname
    if not host:
        raise FetchError(url, "no host in URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchError(url, "bad port in URL") from None
    try:
        sock = _connect(host, port, open_timeout_s, cancel)
    except ClosedError:
        raise
    except OSError as exc:
        raise FetchError(url, describe_os_error(exc)) from exc
    try:
        sock.settimeout(open_timeout_s)
        if scheme == "https":
            context = ssl_context or ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                raise FetchError(url, describe_os_error(exc)) from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default_port = 443 if scheme == "https" else 80
        host_header = host if ":" not in host else f"[{host}]"
        if parts.port and parts.port != default_port:
            host_header += f":{parts.port}"
        lines = [f"GET {path} HTTP/1.1", f"Host: {host_header}", f"User-Agent: {USER_AGENT}",
                 "Accept: */*", "Connection: close"]
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            lines.append("Authorization: Basic " + base64.b64encode(token).decode("ascii"))
        lines += [f"{k}: {v}" for k, v in headers.items()]
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        except OSError as exc:
            raise FetchError(url, describe_os_error(exc)) from exc
        sock.settimeout(POLL_S)
        head, rest, received = _read_head(sock, url, open_timeout_s, cancel)
        text = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        match = _STATUS_LINE.match(text[0].strip())
        if not match:
            raise FetchError(url, "not an HTTP response (the server sent something else)")
        fields: dict[str, str] = {}
        for line in text[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        response = HTTPResponse(
            url=url, status=int(match.group(2)), reason=(match.group(3) or "").strip(),
            protocol=match.group(1), headers=fields, sock=sock, stall_timeout_s=stall_timeout_s,
            bytes_read=received, _cancel=cancel,
        )
        response._buffer += rest
        return response
    except BaseException:
        sock.close()
        raise


def http_get(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    open_timeout_s: float = 10.0,
    stall_timeout_s: float = 15.0,
    max_redirects: int = MAX_REDIRECTS,
    cancel: threading.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> HTTPResponse:
    """GET ``url``, following redirects, and return the response with its body unread.

    Any status is returned (the caller judges 4xx and 5xx); redirects (301,
    302, 303, 307, 308) are followed to http and https URLs only.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` URL; user and password in it are sent as
        basic authentication.
    headers : dict or None
        Extra request headers, e.g. ``{"Icy-MetaData": "1"}``.
    open_timeout_s : float
        Seconds allowed to connect and to receive the response head.
    stall_timeout_s : float
        Seconds a body read may wait for a byte (see :meth:`HTTPResponse.read`).
    max_redirects : int
        Redirects followed before giving up.
    cancel : threading.Event or None
        When set (from any thread), a waiting connect or read gives up with
        :class:`ClosedError`.
    ssl_context : ssl.SSLContext or None
        For https; default :func:`ssl.create_default_context` (which honours
        ``SSL_CERT_FILE``).

    Returns
    -------
    HTTPResponse
        Release it with :meth:`HTTPResponse.release` when done.

    Raises
    ------
    FetchError
        Connection refused or reset, DNS or TLS failure, time-out, a reply
        that is not HTTP, a redirect loop or too many redirects.
    """
    seen = [url]
    current = url
    for _ in range(max_redirects + 1):
        response = _open_once(current, dict(headers or {}), open_timeout_s, stall_timeout_s, cancel, ssl_context)
        location = response.headers.get("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        response.release()
        target = urljoin(current, location)
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise FetchError(current, f"redirect to an unsupported URL {target!r}")
        if target in seen:
            raise FetchError(current, f"redirect loop ({' -> '.join(seen + [target])})")
        seen.append(target)
        current = target
    raise FetchError(url, f"too many redirects (more than {max_redirects})")


# -- ICY metadata ---------------------------------------------------------------

_TITLE = re.compile(r"StreamTitle='(.*?)';(?=\s*(?:[A-Za-z_]\w*=|$))", re.S)


def decode_metadata_text(raw: bytes) -> str:
    """Text of an ICY metadata block: NUL padding removed, UTF-8 if valid, else Latin-1."""
    raw = raw.rstrip(b"\0")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_stream_title(raw: bytes) -> str | None:
    """The ``StreamTitle`` of an ICY metadata block.

    Parameters
    ----------
    raw : bytes
        The block without its length byte.

    Returns
    -------
    str or None
        The title, stripped of surrounding white space (may be ""), or None
        if the block has no StreamTitle.

    Examples
    --------
    >>> parse_stream_title(b"StreamTitle='Ella Fitzgerald - Summertime';StreamUrl='';\\0\\0")
    'Ella Fitzgerald - Summertime'
    >>> parse_stream_title("StreamTitle='Café';".encode("latin-1"))
    'Café'
    >>> parse_stream_title(b"StreamTitle='Rock';n'Roll';")
    "Rock';n'Roll"
    """
    match = _TITLE.search(decode_metadata_text(raw))
    return match.group(1).strip() if match else None


class IcyDemuxer:
    """Cut ICY metadata blocks out of a byte stream.

    Parameters
    ----------
    metaint : int
        Audio bytes between metadata blocks (the ``icy-metaint`` header);
        0 for a stream without metadata (everything is audio).

    Examples
    --------
    >>> d = IcyDemuxer(4)
    >>> d.feed(b"abcd\\x01StreamTitle='x';efgh\\x00ij")
    (b'abcdefghij', [b"StreamTitle='x';"])
    """

    def __init__(self, metaint: int) -> None:
        self.metaint = int(metaint)
        self._audio_left = self.metaint  # audio bytes before the next length byte
        self._meta_left = -1  # -1: not inside a block; else bytes of the block still due
        self._meta = bytearray()
        self.audio_bytes = 0
        self.metadata_bytes = 0

    def feed(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """Split ``data`` into audio and complete metadata blocks (empty blocks omitted)."""
        audio, blocks = self.feed_at(data)
        return audio, [block for _, block in blocks]

    def feed_at(self, data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        """Like :meth:`feed`, with each block's position: the number of audio bytes of this call before it."""
        if self.metaint <= 0:
            self.audio_bytes += len(data)
            return data, []
        audio = bytearray()
        blocks: list[tuple[int, bytes]] = []
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            if self._meta_left < 0 and self._audio_left > 0:
                take = min(self._audio_left, n - i)
                audio += view[i : i + take]
                self._audio_left -= take
                i += take
            elif self._meta_left < 0:  # the length byte
                self._meta_left = view[i] * 16
                self.metadata_bytes += 1
                i += 1
                if self._meta_left == 0:
                    self._meta_left, self._audio_left = -1, self.metaint
            else:
                take = min(self._meta_left, n - i)
                self._meta += view[i : i + take]
                self._meta_left -= take
                self.metadata_bytes += take
                i += take
                if self._meta_left == 0:
                    blocks.append((len(audio), bytes(self._meta)))
                    self._meta.clear()
                    self._meta_left, self._audio_left = -1, self.metaint
        self.audio_bytes += len(audio)
        return bytes(audio), blocks
