"""The proxy's fast path: metered calls served straight off the socket, everything else by aiohttp.

Adapter: an asyncio protocol in front of the aiohttp application on the proxy's port. A request
it can be sure of (``POST`` to a metered route over HTTP/1.1, a head of plain ASCII with every line
well formed, exactly one ``Content-Length``, no ``Transfer-Encoding``, ``Expect`` or upgrade, a
body within ``A11I_MAX_BODY_BYTES``) it parses itself and runs through the same pipeline as the
aiohttp handler (``Sidecar.metered_call``), writing the answer aiohttp would write. At the first
request of a connection it is not sure of, it hands the connection, with every byte not yet
served, to aiohttp's own protocol for the rest of the connection's life: aiohttp answers that
request and everything after it, errors included. The fast path saves what aiohttp's request
object, router, response and writer cost each call (about 0.15 ms, bench/README.md round 8).

What it may not do: frame a request where aiohttp might frame it differently (request
smuggling: every doubt is aiohttp's to settle), answer anything aiohttp would answer otherwise,
or serve anything but metered calls (the sidecar's own endpoints, free and unmetered calls,
refusals of a method or an upgrade all stay aiohttp's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Final

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict, CIMultiDictProxy

from a11i.core.errors import A11iError, InternalError, RequestTimeout
from a11i.core.headers import CREDENTIAL_HEADERS
from a11i.core.model import Dialect
from a11i.core.routes import Access, Route, route
from a11i.sidecar.pipeline import Answer, Inbound, Relay, StreamCut, error_answer
from a11i.sidecar.proxy import Sidecar, too_slow

log = logging.getLogger(__name__)

#: The request line of a request the fast path serves: a POST over HTTP/1.1 to a target in origin
#: form with nothing to escape (RFC 3986's pchar, '/', '?' and '%').
_REQUEST_LINE: Final = re.compile(r"POST (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1")
#: RFC 9110 section 5.6.2: a header name.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The bytes a head the fast path serves may hold: visible ASCII, space, tab, CR and LF (no
#: obs-text, no NUL or other control character).
_HEAD_BYTES: Final = bytes([9, 10, 13, *range(0x20, 0x7F)])
#: Header lines seen before, each well formed, as (name, lower-case name, value): an agent sends
#: the same lines call after call but for a few (Content-Length, request ids). At most 512 lines
#: of at most 256 characters are kept (128 KiB), so an agent sending new lines each time only
#: makes the fast path parse them each time; never a Content-Length or a credential.
_LINES: dict[str, tuple[str, str, str]] = {}
#: Header lines never kept in the memo.
_NOT_KEPT: Final = frozenset({"content-length"}) | CREDENTIAL_HEADERS
#: Request lines seen before that the fast path serves, with their route and query (as many).
_TARGETS: dict[str, tuple[Route, str]] = {}
_MAX_LINES: Final = 512
_MAX_KEPT_LINE: Final = 256
#: A head longer than this, or with more lines, is aiohttp's (its limits: 8190 bytes a line,
#: 128 headers), which answers it as it answers any oversized head.
_MAX_HEAD: Final = 16 * 1024
_MAX_LINE: Final = 8190
_MAX_HEADERS: Final = 100
#: Headers that change how a request is framed or answered: the fast path leaves any request
#: that carries one to aiohttp.
_NOT_FAST: Final = frozenset({"transfer-encoding", "expect", "upgrade"})
#: The headers the fast path looks at: those it reads, those it leaves to aiohttp, and those
#: aiohttp refuses to see twice in a request (``400 Duplicate 'Content-Type' header found``).
_LOOKED_AT: Final = frozenset({"content-length", "connection"}) | _NOT_FAST | SINGLETON_HEADERS
#: Statuses answered without a body (RFC 9110 sections 15.2, 15.3.5, 15.4.5).
_BODILESS: Final = frozenset({204, 304})
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
#: How often idle connections are looked at for their keep-alive deadline.
_SWEEP_S: Final = 1.0


class _Request:
    """One parsed request the fast path serves."""

    __slots__ = (
        "body",
        "close",
        "dialect",
        "headers",
        "length",
        "query",
        "route",
        "started",
        "started_ns",
    )

    def __init__(
        self,
        found: Route,
        query: str,
        headers: CIMultiDictProxy[str],
        length: int,
        close: bool,
        started: float,
        started_ns: int,
    ) -> None:
        assert found.dialect is not None  # a metered route has one
        self.route = found
        self.dialect: Dialect = found.dialect
        self.query = query
        self.headers = headers
        self.length = length
        self.close = close
        self.started = started
        self.started_ns = started_ns
        self.body = b""


def install(
    app: web.Application,
    sidecar: Sidecar,
    *,
    keepalive_timeout_s: float = 75.0,
    shutdown_timeout_s: float = 60.0,
) -> None:
    """Put the fast path in front of the sidecar's application when ``A11I_FAST_PATH`` is on
    (the default), before the application starts; ``site`` then serves it."""
    if sidecar.settings.fast_path:
        fast = FastPaths(
            sidecar, keepalive_timeout_s=keepalive_timeout_s, shutdown_timeout_s=shutdown_timeout_s
        )
        app.on_shutdown.append(fast.shutdown)
        app[_FAST_PATHS] = fast


def paths_of(app: web.Application) -> FastPaths | None:
    """The fast path installed on a sidecar's application, if any."""
    return app.get(_FAST_PATHS)


def site(runner: web.AppRunner, host: str, port: int) -> web.BaseSite:
    """The listening site of a sidecar's application: the fast path in front of aiohttp when
    it is installed, aiohttp's ``TCPSite`` alone when not."""
    fast = paths_of(runner.app)
    if fast is None:
        return web.TCPSite(runner, host, port)
    return FastPathSite(runner, host, port, fast)


class FastPaths:
    """The fast path of one sidecar's port: its connections, their keep-alive, its shutdown."""

    def __init__(
        self,
        sidecar: Sidecar,
        *,
        keepalive_timeout_s: float = 75.0,
        shutdown_timeout_s: float = 60.0,
    ) -> None:
        self.sidecar = sidecar
        #: As aiohttp's (``web.run_app``'s defaults): an idle connection is closed after this
        #: long, and the calls in flight at shutdown are given this long to end.
        self.keepalive_timeout_s = keepalive_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        #: aiohttp's protocol factory, for the connections handed over.
        self.handover: Callable[[], asyncio.Protocol] | None = None
        self.connections: set[FastPath] = set()
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def served(self) -> int:
        """Metered calls served (``calls.fast_path`` in ``/a11i/budget``)."""
        return self.sidecar.counters.fast_path_calls

    @property
    def handed_over(self) -> int:
        """Connections handed to aiohttp (``calls.fast_path_handovers``)."""
        return self.sidecar.counters.fast_path_handovers

    def protocol(self) -> asyncio.Protocol:
        """A new connection's protocol (``loop.create_server``'s factory)."""
        if self._sweeper is None and not self.stopping:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)
        return FastPath(self)

    def _sweep(self) -> None:
        """Close the connections idle past the keep-alive timeout (as aiohttp does its own)."""
        now = time.monotonic()
        for connection in list(self.connections):
            connection.expire(now)
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)

    async def shutdown(self, _app: web.Application) -> None:
        """The port has stopped listening: close the idle connections, let the calls in flight
        end (closing their connections after the answer), up to the sidecar's grace."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks = [task for connection in list(self.connections) if (task := connection.stop())]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


_FAST_PATHS: Final = web.AppKey("a11i_fast_paths", FastPaths)


class FastPathSite(web.BaseSite):
    """aiohttp's ``TCPSite`` with the fast path in front: a TCP port whose connections start on
    ``FastPath`` and are handed to the runner's aiohttp server when a request is not the fast
    path's."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        fast: FastPaths,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._fast = fast

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner is set up
        self._fast.handover = server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._fast.protocol, self._host, self._port)


class FastPath(asyncio.Protocol):
    """One connection: metered calls served in order, until a request is aiohttp's."""

    def __init__(self, paths: FastPaths) -> None:
        self._paths = paths
        self._transport: asyncio.Transport | None = None
        #: Bytes received and not yet served; a request's head is found in ``_chunks[0]``.
        self._chunks: list[bytes] = []
        self._size = 0
        #: The request whose body is arriving, or being served.
        self._request: _Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._idle_since = time.monotonic()
        self._reading = True
        self._writable = True
        self._drained: asyncio.Future[None] | None = None
        self._gone = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._paths.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        if self._task is None:
            self._paths.connections.discard(self)
        # else: kept until its call ends, so that shutdown waits for it before the wallet
        # closes (as aiohttp keeps a handler whose agent hung up).
        self._cancel_body_timer()
        self._chunks.clear()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the agent hung up"))
        # A call in flight runs on (settling what it spent), as under aiohttp: its answer is
        # not written.

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._task is None:
            self._advance()
        elif self._size > self._paths.sidecar.settings.max_body_bytes + _MAX_HEAD:
            # Pipelined requests pile up behind a call in flight: read on once it has ended.
            self._pause_reading()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- the connection's life -----------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Close the connection when it has been idle past the keep-alive timeout."""
        idle = self._task is None and self._request is None
        if idle and now - self._idle_since > self._paths.keepalive_timeout_s:
            self._close()

    def stop(self) -> asyncio.Task[None] | None:
        """The sidecar stops: an idle connection closes now, one serving a call after its
        answer (the call's task is returned to wait for)."""
        if self._task is None:
            self._close()
        return self._task

    def _close(self) -> None:
        self._cancel_body_timer()
        if self._transport is not None:
            self._transport.close()

    def _advance(self) -> None:
        """Serve the next request in what has arrived, or wait for the rest of it, or hand the
        connection over."""
        transport = self._transport
        if self._gone or self._paths.stopping or transport is None or transport.is_closing():
            return
        if self._request is None:
            if not self._chunks:
                return
            buffer = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            end = buffer.find(b"\r\n\r\n", 0, _MAX_HEAD + 4)
            if end < 0:
                self._chunks = [buffer]
                if len(buffer) > _MAX_HEAD:
                    self._hand_over()
                return
            request = self._parse(buffer, end + 4)
            if request is None:
                self._chunks = [buffer]
                self._hand_over()
                return
            rest = buffer[end + 4 :]
            self._chunks = [rest] if rest else []
            self._size = len(rest)
            self._request = request
        request = self._request
        if self._size < request.length:
            if self._body_timer is None:
                timeout = self._paths.sidecar.settings.body_read_timeout_s
                loop = asyncio.get_running_loop()
                self._body_timer = loop.call_later(timeout, self._too_slow, timeout)
            return
        self._cancel_body_timer()
        buffer = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        request.body = buffer[: request.length]
        rest = buffer[request.length :]
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _parse(self, buffer: bytes, size: int) -> _Request | None:
        """The request whose head is ``buffer[:size]``, or None when it is aiohttp's to serve."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        head = buffer[:size]
        if head.translate(None, _HEAD_BYTES):
            return None  # a byte no well-formed head of ours holds
        text = head.decode("ascii")
        lines = text.split("\r\n")
        if not text.count("\r") == text.count("\n") == len(lines) - 1:
            return None  # a bare CR or LF: aiohttp's to judge
        if len(lines) > _MAX_HEADERS + 3:
            return None
        if len(text) > _MAX_LINE and max(map(len, lines)) > _MAX_LINE:
            return None
        target = _TARGETS.get(lines[0])
        if target is None:
            target = _target(lines[0])
            if target is None:
                return None
            if len(lines[0]) <= _MAX_KEPT_LINE and len(_TARGETS) < _MAX_LINES:
                _TARGETS[lines[0]] = target
        found, query = target
        pairs: list[tuple[str, str]] = []
        length: int | None = None
        singletons: set[str] = set()
        close = False
        for line in lines[1:-2]:  # the head ends with an empty line: "", "" after the split
            known = _LINES.get(line)
            if known is None:
                name, colon, value = line.partition(":")
                if not colon or _TOKEN.fullmatch(name) is None:
                    return None  # no colon, obs-fold, a space before the colon, an empty name
                known = (name, name.lower(), value.strip(" \t"))
                # Not a Content-Length (it changes with every body and would fill the memo),
                # nor a credential (no key is kept beyond the request that carried it).
                kept = len(line) <= _MAX_KEPT_LINE and known[1] not in _NOT_KEPT
                if kept and len(_LINES) < _MAX_LINES:
                    _LINES[line] = known
            name, lower, value = known
            if lower in _LOOKED_AT:
                if lower in SINGLETON_HEADERS:
                    if lower in singletons:
                        return None
                    singletons.add(lower)
                if lower == "content-length":
                    if not value.isdigit() or len(value) > 15:
                        return None
                    length = int(value)
                elif lower == "connection":
                    connection = value.lower()
                    if "upgrade" in connection:
                        return None
                    close = close or "close" in (t.strip() for t in connection.split(","))
                elif lower in _NOT_FAST:
                    return None
            pairs.append((name, value))
        # aiohttp refuses an HTTP/1.1 request without a Host (RFC 9112 section 3.2): so must we.
        limit = self._paths.sidecar.settings.max_body_bytes
        if "host" not in singletons or length is None or length > limit:
            return None
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        return _Request(found, query, headers, length, close, started, started_ns)

    def _hand_over(self) -> None:
        """Give the connection, with what it has sent and not been served, to aiohttp."""
        factory = self._paths.handover
        transport = self._transport
        assert factory is not None
        assert transport is not None
        self._paths.connections.discard(self)
        self._paths.sidecar.counters.fast_path_handovers += 1
        log.debug("a connection goes to aiohttp at a request the fast path leaves to it")
        data = b"".join(self._chunks)
        self._chunks = []
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if not self._writable:
            protocol.pause_writing()
        if data:
            protocol.data_received(data)

    def _too_slow(self, timeout: float) -> None:
        """The body did not arrive in time: 408 in the call's dialect, then close (as the
        aiohttp handler answers a slow upload)."""
        self._body_timer = None
        request = self._request
        if request is None or self._task is not None or self._transport is None:
            return
        answer = error_answer(request.dialect, RequestTimeout(too_slow(timeout)))
        request.close = True
        with contextlib.suppress(ConnectionError):
            self._write(_head(answer.status, answer.headers, len(answer.body), close=True))
            self._write(answer.body)
        self._close()

    # -- serving a call ------------------------------------------------------------------------
    async def _serve(self, request: _Request) -> None:
        try:
            answer = await self._answer(request)
            if self._gone:
                if answer.stream is not None:
                    await answer.stream.aclose()
                return
            try:
                head = _head(answer.status, answer.headers, _length(answer), close=request.close)
            except ValueError:
                # aiohttp refuses to write such a header too (response splitting): a bug of
                # a11i's, answered as one.
                log.exception("internal error while answering POST %s", request.route.path)
                if answer.stream is not None:
                    await answer.stream.aclose()
                answer = _internal_error(request.dialect)
                head = _head(answer.status, answer.headers, len(answer.body), close=request.close)
            if answer.stream is None:
                self._write(head if answer.status in _BODILESS else head + answer.body)
            else:
                await self._relay(head, answer.stream)
        except ConnectionResetError:
            # The agent hung up as its answer was ready: the call is settled all the same.
            log.info(
                "the agent closed its connection before its answer of POST %s", request.route.path
            )
            self._close()
        except Exception:
            log.exception("the fast path failed to answer a metered call")
            self._close()
        finally:
            self._paths.sidecar.counters.fast_path_calls += 1
            self._request = None
            self._task = None
            self._idle_since = time.monotonic()
            if self._gone:
                self._paths.connections.discard(self)
            elif request.close or self._paths.stopping:
                self._close()
            else:
                if not self._reading:
                    self._reading = True
                    assert self._transport is not None
                    self._transport.resume_reading()
                self._advance()

    async def _answer(self, request: _Request) -> Answer:
        """The call's answer, or the answer to its refusal or failure in its dialect (as the
        aiohttp handler's ``answering_errors`` shapes them)."""
        sidecar = self._paths.sidecar
        try:
            provider = request.dialect.provider
            inbound = Inbound(
                route=request.route,
                url=sidecar.url_for(provider, request.route, request.query),
                base=sidecar.base_for(provider),
                headers=request.headers,
                body=request.body,
                started=request.started,
                started_ns=request.started_ns,
                hung_up=self._hung_up,
            )
            return await sidecar.metered_call(inbound, sidecar.upstream)
        except A11iError as error:
            return error_answer(request.dialect, error)
        except Exception:
            log.exception("internal error while handling POST %s", request.route.path)
            return _internal_error(request.dialect)

    def _hung_up(self) -> bool:
        return self._gone

    async def _relay(self, head: bytes, relay: Relay) -> None:
        """A streamed answer in chunked encoding as it comes; the relay settles the call however
        the stream ends. A cut provider is passed on by closing the connection, so the agent's
        SDK raises instead of reading a clean but truncated answer (as the aiohttp handler)."""
        try:
            self._write(head)
            async for data in relay:
                if data:
                    self._write(b"%x\r\n%b\r\n" % (len(data), data))
                    if not self._writable:
                        await self._drain()
        except (ConnectionResetError, StreamCut):
            await relay.aclose()
            self._close()
            return
        finally:
            await relay.aclose()
        with contextlib.suppress(ConnectionResetError):
            self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the agent hung up")
        transport.write(data)

    async def _drain(self) -> None:
        if self._gone:
            raise ConnectionResetError("the agent hung up")
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await self._drained
        finally:
            self._drained = None

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def _internal_error(dialect: Dialect) -> Answer:
    """A bug of a11i's, answered in the call's dialect as the aiohttp handler answers one."""
    return error_answer(dialect, InternalError("a11i failed to handle the request."))


def _target(request_line: str) -> tuple[Route, str] | None:
    """The metered route and the query of a request line the fast path serves; None when the
    request is aiohttp's (another method or version, a target to escape, a fragment, a route
    that is not metered or takes no POST)."""
    matched = _REQUEST_LINE.fullmatch(request_line)
    if matched is None or "#" in matched[1]:
        return None
    found = route("POST", matched[1])
    if found.access is not Access.METERED or found.method_not_allowed:
        return None
    return found, matched[1].partition("?")[2]


def _length(answer: Answer) -> int | None:
    """The Content-Length of an answer: None for a stream (chunked), 0 for a bodiless status."""
    if answer.stream is not None:
        return None
    return 0 if answer.status in _BODILESS else len(answer.body)


def _head(status: int, headers: list[tuple[str, str]], length: int | None, *, close: bool) -> bytes:
    """The status line and headers aiohttp's ``Response`` writes for ``headers``: Content-Length
    (chunked encoding for a stream), a Content-Type when the answer has a body and names none,
    Date and Server unless the provider's are relayed, ``Connection: close`` when the connection
    ends with the answer."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    named: set[str] = set()
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"a newline in the answer's header {name!r}")
        named.add(name.lower())
        lines.append(f"{name}: {value}")
    if status not in _BODILESS and status >= 200:
        if length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {length}")
        if length != 0 and "content-type" not in named:
            lines.append("Content-Type: application/octet-stream")
    if "date" not in named:
        lines.append(f"Date: {rfc822_formatted_time()}")
    if "server" not in named:
        lines.append(f"Server: {SERVER_SOFTWARE}")
    if close and "connection" not in named:
        lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8")
