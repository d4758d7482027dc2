"""The sidecar's HTTP/1.1 client for metered calls: one POST to the provider, its answer read
whole or chunk by chunk, the connection kept alive for the next call.

Adapter: implements the pipeline's ``Upstream`` / ``UpstreamAnswer`` protocols on asyncio's
transports directly, because aiohttp's ``ClientSession`` spent about 100 µs of the sidecar's CPU
on every call (request objects, a writer task, tracing hooks, timers) for what is one write and
one parse here. It does what aiohttp's client did for these calls and no more: TLS verified by
the system's trust store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured, as OpenSSL does), one
pool of keep-alive connections per origin (newest first, idle ones dropped after 15 s or when
the server closes them), answers framed by Content-Length, chunked coding or the connection's
end, gzip and deflate bodies decoded, the same header-size limits. Every failure is an
``UpstreamError``; redirects are followed as aiohttp followed them. What it may not do: retry a
call (a POST may have been billed), keep cookies, go through a proxy, or return a connection to
the pool unless its answer was read to the end. Free and allowed calls pass through aiohttp's
session in ``a11i.sidecar.proxy``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import sys
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Final, NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

from a11i import __version__
from a11i.sidecar.pipeline import UpstreamError

#: aiohttp's limits on one line of the head (status line, each header's name and value).
MAX_LINE: Final = 8190
#: aiohttp's limit on the number of header (and trailer) fields.
MAX_FIELDS: Final = 128
#: aiohttp's default keep-alive: an idle connection older than this is closed, not reused.
KEEPALIVE_S: Final = 15.0
#: Idle connections kept per origin; more are closed as they are released (a burst of calls
#: must not leave hundreds of sockets open).
MAX_IDLE: Final = 100
#: Body bytes buffered before the socket stops being read (a slow agent slows the provider).
HIGH_WATER: Final = 64 * 1024
#: A body smaller than this goes out in one write with the head.
_JOIN_BODY: Final = 256 * 1024
#: aiohttp's delay before the next address of a host is tried (RFC 8305).
_HAPPY_EYEBALLS_S: Final = 0.25

_USER_AGENT: Final = f"Python/{sys.version_info[0]}.{sys.version_info[1]} a11i/{__version__}"

#: RFC 9112 section 4: status-line; the reason phrase may be empty (and its space missing).
_STATUS_LINE: Final = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
#: RFC 9110 section 5.6.2: a header name.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The bytes a head may hold: visible ASCII, space, HTAB, CR and LF (which must come as CRLF),
#: and obs-text (RFC 9110 section 5.5); no other control character.
_HEAD_BYTES: Final = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])
#: Header names seen before, each a valid token, with its lower case if it is one of
#: ``_FRAMING`` and "" otherwise: a provider sends the same few on every answer. Bounded, so that
#: a server sending new names cannot make it grow.
_NAMES: dict[str, str] = {}
_MAX_NAMES: Final = 1024
_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")

#: Redirects followed (aiohttp's ``max_redirects``: the 10th is an error).
_MAX_REDIRECTS: Final = 10
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Characters a redirect's URL keeps as they are (RFC 3986 reserved and unreserved, and
#: ``%`` so that what is already encoded is not encoded twice).
_URL_SAFE: Final = ":/?#[]@!$&'()*+,;=%~-._"

#: Answer headers that say how the body is framed and what it is.
_FRAMING: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-encoding", "content-type"}
)
#: Request headers the client writes itself, whatever the caller passed.
_OWN_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})

# The states of a connection's parser.
_IDLE: Final = 0  # no call in flight: any byte from the server is a protocol error
_HEAD: Final = 1  # reading the status line and headers
_LENGTH: Final = 2  # a body of Content-Length bytes
_UNTIL_EOF: Final = 3  # a body delimited by the connection's end
_CHUNK_SIZE_LINE: Final = 4  # chunked coding: the size line (extensions ignored)
_CHUNK_DATA: Final = 5
_CHUNK_END: Final = 6  # the CRLF after a chunk's data
_TRAILERS: Final = 7  # trailer fields after the last chunk, up to an empty line
_DONE: Final = 8  # the answer was read to its end
_FAILED: Final = 9  # malformed, cut or timed out: the connection is closed


class _Malformed(Exception):
    """The provider's answer breaks HTTP/1.1's syntax or a size limit."""


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where connections go: the pool's key."""

    tls: bool
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class _Target:
    """A base URL as the client uses it: its origin, Host header and credentials."""

    origin: _Origin
    host_header: str
    #: ``Authorization`` from credentials in the URL (``https://user:pass@host``), as aiohttp
    #: sent them.
    authorization: str | None


class _Head(NamedTuple):
    """The status line and headers of an answer, and what they say about its framing.

    A named tuple rather than a frozen dataclass: one is made per answer, and a frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` a field) cost three times as much."""

    status: int
    fields: list[tuple[str, str]]
    #: The Content-Encoding the client decodes (gzip, deflate), or None.
    encoding: str | None
    content_type: str
    length: int | None
    #: Transfer codings, lowercased (only ``["chunked"]`` is read).
    codings: list[str]
    #: HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with ``keep-alive``.
    keep_alive: bool


def default_tls_context() -> ssl.SSLContext:
    """The context aiohttp verified with: the system's trust store, hostname checks, HTTP/1.1
    announced over ALPN. Loading the trust store reads files: call it off the event loop."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class UpstreamClient:
    """The pipeline's ``Upstream`` over pooled HTTP/1.1 connections, with the sidecar's
    connect and read timeouts; ``close`` ends every connection, idle or in use."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        tls_context: ssl.SSLContext | None = None,
        keepalive_s: float = KEEPALIVE_S,
        max_idle: int = MAX_IDLE,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._tls_context = tls_context
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._targets: dict[str, _Target] = {}
        self._urls: dict[str, tuple[_Target, str]] = {}
        #: Idle connections per origin, the most recently used last.
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False
        #: Connections opened so far (each one a TCP and maybe a TLS handshake).
        self.opened = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return sum(len(stack) for stack in self._idle.values())

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamResponse:
        """Send the call and wait for the answer's head, following redirects as aiohttp did
        (307 and 308 send the call again, 301, 302 and 303 turn it into a GET; at most 9;
        ``Authorization`` dropped when the origin changes). Never retried: the provider may
        have received it."""
        method = "POST"
        content: bytes | None = body
        for _ in range(_MAX_REDIRECTS):
            answer = await self._send(method, url, headers, content)
            if answer.status not in _REDIRECTS:
                return answer
            location = answer.location
            if location is None:
                return answer  # nowhere to go: the agent gets the 3xx
            await answer.close()
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, content = "GET", None
            target = _redirected(url, location)
            if self._target(target)[0].origin != self._target(url)[0].origin:
                headers = [(n, v) for n, v in headers if n.lower() != "authorization"]
            url = target
        raise UpstreamError(f"more than {_MAX_REDIRECTS - 1} redirects")

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> UpstreamResponse:
        """One request on an idle connection of the URL's origin, or a new one."""
        if self._closed:
            raise UpstreamError("the sidecar is shutting down")
        target, path = self._target(url)
        head = _request_head(method, target, path, headers, body)
        loop = asyncio.get_running_loop()
        connection = self._pooled(target.origin, loop.time())
        if connection is None:
            connection = await self._open(target.origin, loop)
        self._busy.add(connection)
        try:
            connection.send(head, body or b"")
            answer_head = await connection.head()
        except BaseException:
            # A timeout, a malformed answer, or the caller cancelled: the connection is in
            # an unknown state and never goes back to the pool.
            self._busy.discard(connection)
            connection.close()
            raise
        return UpstreamResponse(self, connection, answer_head)

    async def close(self) -> None:
        """Close every connection (a call still reading its answer sees it cut)."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()

    # -- the pool ----------------------------------------------------------------------------
    def _pooled(self, origin: _Origin, now: float) -> _Connection | None:
        """The most recently used idle connection of ``origin`` that is still fresh."""
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            if connection.alive and now - connection.idle_since < self._keepalive_s:
                return connection
            # Too old (and so is every one under it), or closed by the server meanwhile.
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        """An answer is done with its connection: pooled if it was read to its end and the
        server keeps it open, closed otherwise."""
        self._busy.discard(connection)
        if self._closed or not (connection.complete and connection.reusable and connection.alive):
            connection.close()
            return
        loop = asyncio.get_running_loop()
        connection.park(loop.time())
        stack = self._idle.setdefault(connection.origin, [])
        stack.append(connection)
        if len(stack) > self._max_idle:
            stack.pop(0).close()
        if self._expiry is None:
            self._expiry = loop.call_at(connection.idle_since + self._keepalive_s, self._expire)

    def forget(self, connection: _Connection) -> None:
        """An idle connection the server closed (or wrote to unasked) leaves the pool."""
        stack = self._idle.get(connection.origin)
        if stack is not None and connection in stack:
            stack.remove(connection)

    def _expire(self) -> None:
        """Close the connections idle for longer than the keep-alive; come back when the next
        one will be."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        oldest_kept: float | None = None
        for stack in self._idle.values():
            while stack and loop.time() - stack[0].idle_since >= self._keepalive_s:
                stack.pop(0).close()
            if stack and (oldest_kept is None or stack[0].idle_since < oldest_kept):
                oldest_kept = stack[0].idle_since
        if oldest_kept is not None:
            self._expiry = loop.call_at(oldest_kept + self._keepalive_s, self._expire)

    async def _open(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        context: ssl.SSLContext | None = None
        if origin.tls:
            if self._tls_context is None:
                # Blocks the loop once (the trust store is read); the sidecar passes one made
                # off the loop at start.
                self._tls_context = default_tls_context()
            context = self._tls_context
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    partial(_Connection, self, origin, loop),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_S,
                )
        except TimeoutError as exc:
            raise UpstreamError(
                f"no connection within {self._connect_timeout_s:g} s", timeout=True
            ) from exc
        except OSError as exc:
            raise UpstreamError(_connect_failure(exc)) from exc
        self.opened += 1
        return connection

    def _target(self, url: str) -> tuple[_Target, str]:
        """The base of ``url`` and its request target, the path and query exactly as given.
        Cached by URL (a sidecar calls the same few: splitting one again cost a microsecond a
        call), at most 64 of at most 2 KiB each so that varied queries cannot make it grow."""
        found = self._urls.get(url)
        if found is not None:
            return found
        found = self._split(url)
        if len(url) <= 2048:
            if len(self._urls) >= 64:
                self._urls.clear()
            self._urls[url] = found
        return found

    def _split(self, url: str) -> tuple[_Target, str]:
        """``_target`` worked out; the base's part cached by itself (a sidecar talks to one or
        two)."""
        start = url.find("://") + 3
        end = len(url)
        for delimiter in "/?#":
            found = url.find(delimiter, start)
            if 0 <= found < end:
                end = found
        base, path = url[:end], url[end:]
        if "#" in path:
            path = path[: path.index("#")]
        if not path.startswith("/"):
            path = "/" + path
        target = self._targets.get(base)
        if target is None:
            target = _parse_base(base)
            if len(self._targets) >= 64:
                self._targets.clear()
            self._targets[base] = target
        return target, path


class UpstreamResponse:
    """The provider's answer as the pipeline reads it: read whole (``read``) or as it arrives
    (``chunks``), then ``close``d, which pools or closes its connection."""

    __slots__ = ("_client", "_connection", "_head")

    def __init__(self, client: UpstreamClient, connection: _Connection, head: _Head) -> None:
        self._client = client
        self._connection: _Connection | None = connection
        self._head = head

    @property
    def status(self) -> int:
        return self._head.status

    @property
    def content_type(self) -> str:
        """The media type, lowercased, without parameters (aiohttp's ``content_type``)."""
        return self._head.content_type

    def header_items(self) -> list[tuple[str, str]]:
        """Every header as sent, in order, repeated names included."""
        return self._head.fields

    @property
    def location(self) -> str | None:
        """Where a redirect points (``Location``, or the obsolete ``URI`` as aiohttp read it)."""
        for wanted in ("location", "uri"):
            for name, value in self._head.fields:
                if name.lower() == wanted:
                    return value
        return None

    async def read(self) -> bytes:
        """The whole body, decoded; ``UpstreamError`` when it is cut, malformed or late."""
        connection = self._opened()
        connection.unlimited()
        while not connection.complete:
            await connection.wait()
        body = connection.take()
        if self._head.encoding is not None and body:
            decoder = _Decoder(self._head.encoding)
            body = decoder.feed(body)
            decoder.end()
        return body

    def chunks(self) -> _Chunks:
        """The body as it arrives, decoded; ``UpstreamError`` when it is cut."""
        return _Chunks(self, self._opened())

    async def close(self) -> None:
        """Release the connection (an unread or partly read body closes it)."""
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._client.release(connection)

    def _opened(self) -> _Connection:
        if self._connection is None:
            raise UpstreamError("the answer was already closed")
        return self._connection


class _Chunks:
    """Body bytes as they arrive: what is buffered at each step, joined. Ends when its answer
    is closed: the connection may carry another call by then."""

    __slots__ = ("_answer", "_connection", "_decoder")

    def __init__(self, answer: UpstreamResponse, connection: _Connection) -> None:
        self._answer = answer
        self._connection = connection
        encoding = answer._head.encoding
        self._decoder = _Decoder(encoding) if encoding is not None else None

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        while True:
            if self._answer._connection is not connection:
                raise UpstreamError("the answer was closed before its end")
            if connection.buffered:
                data = connection.take()
                if self._decoder is not None:
                    data = self._decoder.feed(data)
                if data:
                    return data
            elif connection.complete:
                if self._decoder is not None:
                    self._decoder.end()
                raise StopAsyncIteration
            else:
                await connection.wait()


class _Decoder:
    """Content-Encoding gzip or deflate, decoded as aiohttp did: concatenated gzip members,
    deflate with or without its zlib wrapper (servers send both), a deflate body that stops
    short is an error."""

    __slots__ = ("_gzip", "_inflate")

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._inflate: zlib._Decompress | None = None

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        try:
            inflate = self._inflate
            if inflate is None or (self._gzip and inflate.eof):
                inflate = self._inflate = zlib.decompressobj(self._wbits(data))
            out = inflate.decompress(data)
            while self._gzip and inflate.eof and inflate.unused_data:
                rest = inflate.unused_data
                inflate = self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += inflate.decompress(rest)
        except zlib.error as exc:
            raise UpstreamError(f"the {self._name} body cannot be decoded") from exc
        return out

    def end(self) -> None:
        if not self._gzip and self._inflate is not None and not self._inflate.eof:
            raise UpstreamError("the deflate body ends before its end")

    def _wbits(self, data: bytes) -> int:
        if self._gzip:
            return 16 + zlib.MAX_WBITS
        # RFC 1950's header says compression method 8; without it the stream is raw deflate.
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS

    @property
    def _name(self) -> str:
        return "gzip" if self._gzip else "deflate"


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the answer as bytes arrive, buffers
    its body for the reader with flow control."""

    __slots__ = (
        "_body",
        "_buffer",
        "_client",
        "_error",
        "_fields_seen",
        "_head",
        "_high_water",
        "_last_read",
        "_loop",
        "_paused",
        "_remaining",
        "_state",
        "_timer",
        "_waiter",
        "alive",
        "buffered",
        "complete",
        "idle_since",
        "origin",
        "reusable",
        "transport",
    )

    def __init__(
        self, client: UpstreamClient, origin: _Origin, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._client = client
        self._loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        #: Open: neither side closed it.
        self.alive = True
        self.idle_since = 0.0
        self._state = _IDLE
        #: The read timer: armed by a wait, left armed after it (see ``wait``).
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._buffer = b""  # an unfinished head, chunk-size line or trailer, or a chunk's CRLF
        self._fields_seen = 0
        self._head: _Head | None = None
        self._remaining = 0
        self._body: list[bytes] = []
        self.buffered = 0
        self._high_water = HIGH_WATER
        self._paused = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = 0.0
        #: The answer's body was read off the wire to its end.
        self.complete = False
        #: HTTP/1.1 (or keep-alive) without ``Connection: close``, nothing unexpected read.
        self.reusable = True

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        try:
            self._feed(data)
        except _Malformed as exc:
            self._fail(str(exc))

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    # -- the caller's side -------------------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self._state = _HEAD
        if len(body) < _JOIN_BODY:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)

    async def head(self) -> _Head:
        while self._head is None:
            await self.wait()
        return self._head

    async def wait(self) -> None:
        """Until the parser has news (the head, body bytes, the end, a failure), at most the
        read timeout of silence from the server. A failure is raised by the next call, once
        the caller has taken what arrived before it."""
        if self._error is not None:
            raise _again(self._error)
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._last_read = loop.time()
        if self._timer is None:
            # One timer a connection, not one a wait: it stays armed after this wait (and
            # this call) and, when it fires, moves on to the deadline of the wait then in
            # progress, if any. Arming and cancelling a timer on every wait cost the loop
            # about two microseconds a call.
            self._timer = loop.call_at(self._last_read + self._client.read_timeout_s, self._late)
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """Every body byte buffered so far; reading resumes if it was paused."""
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        self.buffered = 0
        if self._paused:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return data

    def unlimited(self) -> None:
        """The reader wants the whole body: no pause however much is buffered."""
        self._high_water = sys.maxsize
        if self._paused:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def park(self, now: float) -> None:
        """Ready for the next call; reading on, so that the server closing it is seen."""
        if self._paused and self.transport is not None:
            self.transport.resume_reading()
        self._reset()
        self._state = _IDLE
        self.idle_since = now

    def close(self) -> None:
        """Close it; a reader still waiting for the answer sees it cut."""
        self.alive = False
        self.reusable = False
        self._disarm()
        if self._state not in (_IDLE, _DONE, _FAILED):
            self._fail("the connection was closed before the end of the answer")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _disarm(self) -> None:
        """No read timer for a closed connection (the loop would hold it until it fired)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the parser --------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        state = self._state
        if state == _HEAD:
            data = self._feed_head(data)
            if not data:
                return
            state = self._state
        if state == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._deliver(data)
                return
            if len(data) > remaining:
                self.reusable = False  # bytes after the answer: never reuse this connection
                data = data[:remaining]
            self._remaining = 0
            self._deliver(data)
            self._finish()
        elif state == _UNTIL_EOF:
            self._deliver(data)
        elif _CHUNK_SIZE_LINE <= state <= _TRAILERS:
            self._feed_chunked(data)
        elif state == _IDLE:
            # Unasked bytes on an idle connection (a 408 before a close): never reuse it.
            self._client.forget(self)
            self.close()
        elif state == _DONE:
            self.reusable = False

    def _feed_head(self, data: bytes) -> bytes:
        """Parse heads (skipping 1xx ones) until the answer's; the bytes after it."""
        searched = 0
        if self._buffer:
            searched = max(0, len(self._buffer) - 3)
            data = self._buffer + data
            self._buffer = b""
        while True:
            end = data.find(b"\r\n\r\n", searched)
            if end < 0:
                _check_partial_head(data)
                self._buffer = data
                return b""
            head = _parse_head(data, end + 2)
            data = data[end + 4 :]
            searched = 0
            if head is not None:
                break
            if not data:
                return b""
        self._frame(head)
        self._wake()
        return data

    def _frame(self, head: _Head) -> None:
        """How the body is delimited (RFC 9112 section 6.3); the head goes to the caller."""
        if head.codings and head.codings != ["chunked"]:
            raise _Malformed(f"unsupported Transfer-Encoding {', '.join(head.codings)!r}")
        if head.codings and head.length is not None:
            raise _Malformed("both Transfer-Encoding and Content-Length")
        if not head.keep_alive:
            self.reusable = False
        self._head = head
        if head.status in (204, 304):
            self._finish()
        elif head.codings:
            self._state = _CHUNK_SIZE_LINE
        elif head.length is None:
            self.reusable = False
            self._state = _UNTIL_EOF
        elif head.length == 0:
            self._finish()
        else:
            self._remaining = head.length
            self._state = _LENGTH

    def _feed_chunked(self, data: bytes) -> None:
        """RFC 9112 section 7.1: size lines (extensions ignored), data, CRLF, trailers."""
        position = 0
        size = len(data)
        while position < size:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._remaining, size - position)
                self._deliver(data if take == size else data[position : position + take])
                position += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                need = 2 - len(self._buffer)
                got = self._buffer + data[position : position + need]
                position += len(got) - len(self._buffer)
                if got != b"\r\n"[: len(got)]:
                    raise _Malformed("chunk data is not followed by CRLF")
                if len(got) < 2:
                    self._buffer = got
                    return
                self._buffer = b""
                self._state = _CHUNK_SIZE_LINE
            elif state in (_CHUNK_SIZE_LINE, _TRAILERS):
                newline = data.find(b"\n", position)
                if newline < 0:
                    self._buffer += data[position:]
                    if len(self._buffer) > MAX_LINE:
                        raise _Malformed(f"a chunk line is longer than {MAX_LINE} bytes")
                    return
                line = self._buffer + data[position:newline]
                self._buffer = b""
                position = newline + 1
                if len(line) > MAX_LINE + 1:
                    raise _Malformed(f"a chunk line is longer than {MAX_LINE} bytes")
                if not line.endswith(b"\r"):
                    raise _Malformed("a chunk line does not end with CRLF")
                line = line[:-1]
                if state == _TRAILERS:
                    if not line:
                        self._finish()
                        if position < size:
                            self.reusable = False
                        return
                    self._fields_seen += 1
                    if self._fields_seen > MAX_FIELDS or b":" not in line:
                        raise _Malformed("malformed or too many trailer fields")
                    continue
                digits = line.split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(digits):
                    raise _Malformed("a chunk size is not a hexadecimal number")
                self._remaining = int(digits, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            else:
                self.reusable = False  # bytes after the answer
                return

    def _deliver(self, data: bytes) -> None:
        self._body.append(data)
        self.buffered += len(data)
        if self.buffered > self._high_water and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._state = _DONE
        self.complete = True
        self._wake()

    def _ended(self, exc: Exception | None = None) -> None:
        """The server closed its side (or the connection broke)."""
        if not self.alive:
            return
        self.alive = False
        self.reusable = False
        self._disarm()
        state = self._state
        if state == _IDLE:
            self._client.forget(self)
        elif state == _UNTIL_EOF and exc is None:
            self._finish()
        elif state == _HEAD:
            if self._buffer:
                self._fail("the connection closed in the middle of the answer's head")
            else:
                self._fail("the connection closed before the answer")
        elif state not in (_DONE, _FAILED):
            self._fail("the answer was cut: the connection closed before its end")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, message: str, *, timeout: bool = False) -> None:
        if self._state == _FAILED:
            return
        self._state = _FAILED
        self._error = UpstreamError(message, timeout=timeout)
        self.close()
        self._wake()

    def _late(self) -> None:
        """The read timer: fires the timeout once the server has been silent long enough."""
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return  # no wait in progress, or news came in the same turn of the loop
        deadline = self._last_read + self._client.read_timeout_s
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._late)
            return
        self._fail(f"nothing read for {self._client.read_timeout_s:g} s", timeout=True)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _again(error: UpstreamError) -> UpstreamError:
    """A failure raised to the next reader too, without piling up tracebacks."""
    return UpstreamError(str(error), timeout=error.timeout)


def _parse_head(data: bytes, end: int) -> _Head | None:
    """The head in ``data[:end]`` (its last CRLF included); None for an interim 1xx answer.

    The same header names come on every answer of a provider: each is checked against RFC
    9110's token and lowercased once (``_NAMES``), and the bytes of the whole head are checked
    in one pass, instead of a regular expression over every field line. The refusals are the
    same, in the same order (tests/unit/sidecar/test_upstream_head.py holds the two to it)."""
    head = data[:end]
    text = head.decode("utf-8", "surrogateescape")
    status_line = _STATUS_LINE.match(text)
    if status_line is None:
        first = text.split("\r\n", 1)[0][:40]
        raise _Malformed(f"the answer does not start with an HTTP/1.x status line: {first!r}")
    start = status_line.end()
    if start - 2 > MAX_LINE:
        raise _Malformed(f"the status line is longer than {MAX_LINE} bytes")
    lines = text[start:-2].split("\r\n") if len(text) > start else []
    # One CRLF ends the status line and each field line: any other CR or LF is a bare one.
    breaks = len(lines) + 1
    if (
        head.translate(None, _HEAD_BYTES)
        or head.count(b"\n") != breaks
        or head.count(b"\r") != breaks
    ):
        raise _Malformed("a header line is malformed")
    names = _NAMES
    fields: list[tuple[str, str]] = []
    #: The framing fields: where each is, its name lowercased, its value.
    framing: list[tuple[int, str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        framed = names.get(name)
        if framed is None or not colon:
            if not colon or _TOKEN.fullmatch(name) is None:
                raise _Malformed("a header line is malformed")  # obs-fold among others
            lower = name.lower()
            framed = lower if lower in _FRAMING else ""
            if len(names) < _MAX_NAMES:
                names[name] = framed
        value = value.strip(" \t")
        if framed:
            framing.append((len(fields), framed, value))
        fields.append((name, value))
    status = int(text[9:12])
    if status < 200:
        if status == 101 or status < 100:
            raise _Malformed(f"an unexpected {status} answer")
        return None  # 100 Continue, 103 Early Hints: the answer follows
    if len(lines) > MAX_FIELDS:
        raise _Malformed(f"more than {MAX_FIELDS} headers")
    # The first header over the line limit is refused once the ones before it were read.
    too_long = len(fields)
    if end - start > MAX_LINE:
        for index, (name, value) in enumerate(fields):
            if len(name) > MAX_LINE or len(value) > MAX_LINE:
                too_long = index
                break
    encoding: str | None = None
    content_type: str | None = None
    length: int | None = None
    codings: list[str] = []
    close = False
    keep_alive = text[7] != "0"  # HTTP/1.0 closes unless it says keep-alive
    for index, lower, value in framing:
        if index >= too_long:
            break
        if lower == "content-length":
            if value.isdigit() and value.isascii() and len(value) <= 18:  # the usual one
                if length is not None and length != int(value):
                    raise _Malformed("conflicting Content-Length fields")
                length = int(value)
            else:
                length = _content_length(value, length)
        elif lower == "transfer-encoding":
            codings.extend(c.strip(" \t").lower() for c in value.split(","))
        elif lower == "connection":
            if "," in value:
                tokens = {t.strip(" \t").lower() for t in value.split(",")}
            else:
                tokens = {value.lower()}  # already stripped
            close = close or "close" in tokens
            keep_alive = keep_alive or "keep-alive" in tokens
        elif lower == "content-encoding":
            encoding = value.lower() if encoding is None else encoding
        elif content_type is None:
            content_type = value.split(";", 1)[0].strip(" \t").lower()
    if too_long < len(fields):
        raise _Malformed(f"a header is longer than {MAX_LINE} bytes")
    if encoding in ("br", "zstd"):
        # Never asked for (Accept-Encoding says gzip, deflate), and not installed: aiohttp
        # failed such an answer too.
        raise _Malformed(f"cannot decode Content-Encoding {encoding}")
    return _Head(
        status,
        fields,
        encoding if encoding in ("gzip", "deflate") else None,
        content_type or "application/octet-stream",
        length,
        codings,
        keep_alive and not close,
    )


def _check_partial_head(data: bytes) -> None:
    """An unfinished head within the limits, so that a server cannot make the buffer grow."""
    if len(data) - data.rfind(b"\n") - 1 > MAX_LINE + 1:
        raise _Malformed(f"a line of the head is longer than {MAX_LINE} bytes")
    if data.count(b"\n") > MAX_FIELDS + 1:
        raise _Malformed(f"more than {MAX_FIELDS} headers")


def _content_length(value: str, known: int | None) -> int:
    """RFC 9110 section 8.6: digits; repeated (in a list or in several fields) only with the
    same value."""
    lengths = {part.strip(" \t") for part in value.split(",")}
    if len(lengths) != 1:
        raise _Malformed(f"conflicting Content-Length {value!r}")
    (digits,) = lengths
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise _Malformed(f"Content-Length {value!r} is not a length")
    length = int(digits)
    if known is not None and known != length:
        raise _Malformed("conflicting Content-Length fields")
    return length


def _parse_base(base: str) -> _Target:
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise UpstreamError(f"{base!r} is not a URL a connection can be opened to") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"{base!r} is not an http:// or https:// URL")
    tls = scheme == "https"
    default = 443 if tls else 80
    host = parts.hostname
    literal = f"[{host}]" if ":" in host else host
    host_header = literal if port in (None, default) else f"{literal}:{port}"
    authorization = None
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        token = base64.b64encode(credentials.encode("latin1")).decode("ascii")
        authorization = f"Basic {token}"
    return _Target(_Origin(tls, host, port or default), host_header, authorization)


def _request_head(
    method: str,
    target: _Target,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request line and headers: the caller's as given, then what aiohttp added when the
    caller had not (Accept, Accept-Encoding, User-Agent, a body's Content-Type), and the
    framing (a GET after a redirect has no body and says no length)."""
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    present: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower in _OWN_HEADERS:
            continue
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            # A header that would end the line: the request would say something else.
            raise UpstreamError(f"the header {name!r} holds a line break")
        present.add(lower)
        lines.append(f"{name}: {value}\r\n")
    if target.authorization is not None:
        if "authorization" in present:
            raise UpstreamError(
                "the upstream URL carries credentials and the call an Authorization header"
            )
        lines.append(f"Authorization: {target.authorization}\r\n")
    if "accept" not in present:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in present:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    if "user-agent" not in present:
        lines.append(f"User-Agent: {_USER_AGENT}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
        if "content-type" not in present:
            lines.append("Content-Type: application/octet-stream\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def _redirected(url: str, location: str) -> str:
    """Where a redirect points, resolved against the URL that was asked (RFC 3986 section 5),
    with what is not allowed in a request line percent-encoded as aiohttp did."""
    try:
        target = urljoin(url, location.strip())
        scheme = urlsplit(target).scheme.lower()
    except ValueError as exc:  # an IPv6 literal without its bracket, and the like
        raise UpstreamError(f"redirected to {location[:100]!r}, which is not a URL") from exc
    if scheme not in ("http", "https"):
        raise UpstreamError(f"redirected to {location[:100]!r}, which is not an http(s) URL")
    return quote(target, safe=_URL_SAFE)


def _connect_failure(exc: OSError) -> str:
    """Why a connection could not be opened, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__
