"""The sidecar's HTTP/1.1 client for metered calls against real loopback servers that write
raw bytes: framing, limits, timeouts, keep-alive, cancellation and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from a11i import __version__
from a11i.operator.certs import self_signed
from a11i.sidecar.pipeline import UpstreamError
from a11i.sidecar.upstream import (
    HIGH_WATER,
    MAX_LINE,
    UpstreamClient,
    UpstreamResponse,
    default_tls_context,
)
from tests.integration.conftest import SidecarFactory

pytestmark = pytest.mark.integration

Piece = bytes | float  # bytes to write, or seconds to pause


@dataclass(frozen=True)
class Reply:
    """What the server writes for one request, then whether it closes the connection."""

    pieces: Sequence[Piece]
    close: bool = False


def reply(*pieces: Piece, close: bool = False) -> Reply:
    return Reply(pieces, close)


def ok(body: bytes = b"ok", *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class RawServer:
    """A server that reads each request and writes the scripted bytes of its reply; counts
    connections, and the ones the client closed."""

    script: Callable[[int], Reply]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    #: Connections the client closed (seen at once, even while the server pauses).
    client_closed: int = 0
    port: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Peer(self), host, 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/v1/chat/completions", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def until_client_closed(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.client_closed < count:
                self.changed.clear()
                await self.changed.wait()


class _Peer(asyncio.Protocol):
    """One connection of a ``RawServer``: plays the script for each request."""

    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.received = bytearray()
        self.news = asyncio.Event()
        self.gone = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        task = asyncio.get_running_loop().create_task(self.run())
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.news.set()

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.is_set():
            self.gone.set()
            self.news.set()

    async def request(self) -> bytes | None:
        while True:
            end = self.received.find(b"\r\n\r\n")
            if end >= 0:
                length = 0
                for line in bytes(self.received[:end]).split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if len(self.received) >= end + 4 + length:
                    request = bytes(self.received[: end + 4 + length])
                    del self.received[: end + 4 + length]
                    return request
            if self.gone.is_set():
                return None
            self.news.clear()
            await self.news.wait()

    async def run(self) -> None:
        assert self.transport is not None
        try:
            while (request := await self.request()) is not None:
                self.server.requests.append(request)
                answer = self.server.script(len(self.server.requests) - 1)
                for piece in answer.pieces:
                    if isinstance(piece, float):
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(piece):
                                await self.gone.wait()
                    elif not self.gone.is_set():
                        self.transport.write(piece)
                if answer.close:
                    return
            self.server.client_closed += 1
            self.server.changed.set()
        finally:
            self.transport.close()


Serve = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[RawServer] = []

    async def start(
        script: Callable[[int], Reply] | Reply,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> RawServer:
        server = RawServer(script if callable(script) else (lambda _i: script))
        await server.start(host, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(connect_timeout_s=2, read_timeout_s=2)
    yield upstream
    await upstream.close()


async def call(
    upstream: UpstreamClient,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b'{"model": "m"}',
) -> tuple[UpstreamResponse, bytes]:
    answer = await upstream.post(url, list(headers), body)
    try:
        return answer, await answer.read()
    finally:
        await answer.close()


async def idle(upstream: UpstreamClient, count: int) -> None:
    """Until the pool holds ``count`` connections (the loop sees the server close them)."""
    async with asyncio.timeout(5):
        while upstream.idle != count:  # noqa: ASYNC110 (the pool has no event to wait on)
            await asyncio.sleep(0.005)


async def failure(awaitable: Awaitable[object]) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        await awaitable
    return caught.value


# -- the request -------------------------------------------------------------------------------
async def test_the_request_is_what_aiohttp_sent(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(reply(ok()))
    await call(
        client,
        server.url("/v1/chat/completions?api-version=2024%2F1"),
        [("Authorization", "Bearer k"), ("Content-Type", "application/json"), ("X-Two", "é")],
        b'{"a":1}',
    )
    head, body = server.requests[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?api-version=2024%2F1 HTTP/1.1"
    assert lines[1] == f"Host: 127.0.0.1:{server.port}".encode()
    assert lines[2:5] == [
        b"Authorization: Bearer k",
        b"Content-Type: application/json",
        "X-Two: é".encode(),
    ]
    assert lines[5:7] == [b"Accept: */*", b"Accept-Encoding: gzip, deflate"]
    assert lines[7].startswith(b"User-Agent: Python/3.")
    assert lines[7].endswith(b" a11i/" + __version__.encode())
    assert lines[8:] == [b"Content-Length: 7"]
    assert body == b'{"a":1}'


async def test_the_callers_headers_win_and_framing_is_the_clients(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(ok()))
    await call(
        client,
        server.url(),
        [
            ("User-Agent", "OpenAI/Python 1.0"),
            ("accept", "application/json"),
            ("Accept-Encoding", "identity"),
            ("Content-Length", "999"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "evil.example"),
            ("Connection", "close"),
        ],
        b"{}",
    )
    lines = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert lines[1:] == [
        f"Host: 127.0.0.1:{server.port}".encode(),
        b"User-Agent: OpenAI/Python 1.0",
        b"accept: application/json",
        b"Accept-Encoding: identity",
        b"Content-Length: 2",
        # aiohttp's default for bytes without a type, kept so that no provider sees a change
        b"Content-Type: application/octet-stream",
    ]


@pytest.mark.parametrize(
    ("value", "wanted"),
    [("a\r\nInjected: 1", "line break"), ("a\nb", "line break")],
    ids=["crlf", "lf"],
)
async def test_a_header_that_would_end_its_line_is_refused(
    serve: Serve, client: UpstreamClient, value: str, wanted: str
) -> None:
    server = await serve(reply(ok()))
    error = await failure(client.post(server.url(), [("X-Bad", value)], b"{}"))
    assert wanted in str(error)
    assert server.connections == 0


async def test_credentials_in_the_base_url_go_as_basic_auth(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(ok()))
    await call(client, f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/v1/x")
    assert b"Authorization: Basic dXNAZXI6cDpzcw==\r\n" in server.requests[0]  # us@er:p:ss
    error = await failure(
        client.post(
            f"http://u:p@127.0.0.1:{server.port}/v1/x", [("Authorization", "Bearer k")], b""
        )
    )
    assert "credentials" in str(error)


async def test_a_default_port_is_not_in_the_host_header() -> None:
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=1)
    target, path = upstream._target("https://API.example.com:443/v1/messages?beta=true#frag")
    assert (target.host_header, path) == ("api.example.com", "/v1/messages?beta=true")
    target, path = upstream._target("http://[::1]:8080?x=1")
    assert (target.host_header, target.origin.host, path) == ("[::1]:8080", "::1", "/?x=1")


async def test_a_url_called_again_is_split_as_the_first_time() -> None:
    """``_target`` caches by URL: each URL gives, from the cache, what it gave at first, and
    the cache stays small whatever URLs come."""
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=1)
    urls = [
        "http://h/v1/chat/completions",
        "http://h/v1/chat/completions?api-version=1",
        "http://h/v1/chat/completions#frag",
        "https://h/v1/chat/completions",
        "http://u:p@h/v1/chat/completions",
        "http://h:81",
        "http://h/" + "a" * 3000,
    ]
    first = [UpstreamClient(connect_timeout_s=1, read_timeout_s=1)._target(url) for url in urls]
    for _ in range(2):
        assert [upstream._target(url) for url in urls] == first
    paths = [path for _, path in first]
    assert paths[:3] == ["/v1/chat/completions", "/v1/chat/completions?api-version=1", paths[0]]
    assert len({target for target, _ in first}) == 4  # http://h, https://h, with u:p, port 81
    for i in range(200):
        assert upstream._target(f"http://h/{i}")[1] == f"/{i}"
    assert len(upstream._urls) <= 64


# -- redirects, as aiohttp followed them ---------------------------------------------------------
def redirect(status: int, location: str) -> bytes:
    return f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [
        (307, b"POST", b'{"a":1}'),
        (308, b"POST", b'{"a":1}'),
        (301, b"GET", b""),
        (302, b"GET", b""),
        (303, b"GET", b""),
    ],
    ids=["307", "308", "301", "302", "303"],
)
async def test_a_redirect_is_followed(
    serve: Serve, client: UpstreamClient, status: int, method: bytes, body: bytes
) -> None:
    server = await serve(
        lambda i: reply(redirect(status, "/v2/x y?q=1") if i == 0 else ok(b"there"))
    )
    headers = [("Authorization", "Bearer k"), ("Content-Type", "application/json")]
    response, answer = await call(client, server.url("/v1/x"), headers, b'{"a":1}')
    assert (response.status, answer) == (200, b"there")
    second = server.requests[1]
    assert second.startswith(method + b" /v2/x%20y?q=1 HTTP/1.1\r\n")
    assert b"Authorization: Bearer k\r\n" in second  # the same origin
    assert second.endswith(b"\r\n\r\n" + body)
    assert (b"Content-Length:" in second) == (method == b"POST")
    assert server.connections == 1


async def test_a_redirect_to_another_origin_drops_the_authorization(
    serve: Serve, client: UpstreamClient
) -> None:
    there = await serve(reply(ok(b"there")))
    here = await serve(reply(redirect(307, there.url("/v1/y", host="localhost"))))
    headers = [("Authorization", "Bearer k"), ("x-api-key", "k2")]
    _, answer = await call(client, here.url("/v1/x"), headers)
    assert answer == b"there"
    assert b"Authorization" not in there.requests[0]
    assert b"x-api-key: k2\r\n" in there.requests[0]  # as aiohttp: only Authorization goes
    assert f"Host: localhost:{there.port}\r\n".encode() in there.requests[0]


async def test_redirects_end(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(lambda i: reply(redirect(307, f"/hop/{i}")))
    error = await failure(client.post(server.url(), [], b"{}"))
    assert "more than 9 redirects" in str(error)
    assert len(server.requests) == 10


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", 302),  # no Location
        (redirect(300, "/elsewhere"), 300),  # not a redirect aiohttp followed
    ],
    ids=["no-location", "300"],
)
async def test_a_3xx_without_a_place_to_go_is_the_answer(
    serve: Serve, client: UpstreamClient, answer: bytes, status: int
) -> None:
    server = await serve(reply(answer))
    response, _ = await call(client, server.url())
    assert response.status == status
    assert len(server.requests) == 1


async def test_a_redirect_out_of_http_is_refused(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(reply(redirect(307, "ftp://example.com/x")))
    error = await failure(client.post(server.url(), [], b"{}"))
    assert "not an http(s) URL" in str(error)


# -- framing -----------------------------------------------------------------------------------
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\nX-Multi: a\r\nx-multi:  b \r\n\r\n"
    b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nTrailer-One: t\r\n\r\n"
)
LENGTH = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Multi: a\r\nx-multi:  b \r\n"
    b"Content-Length: 11\r\n\r\nhello world"
)


@pytest.mark.parametrize("answer", [CHUNKED, LENGTH], ids=["chunked", "content-length"])
async def test_an_answer_split_at_any_byte_reads_the_same_on_one_connection(
    serve: Serve, client: UpstreamClient, answer: bytes
) -> None:
    server = await serve(lambda i: reply(answer[: i + 1], 0.002, answer[i + 1 :]))
    for _ in range(len(answer) - 1):
        response, body = await call(client, server.url())
        assert body == b"hello world"
        assert response.status == 200
        assert [(n, v) for n, v in response.header_items() if n.lower() == "x-multi"] == [
            ("X-Multi", "a"),
            ("x-multi", "b"),
        ]
    assert server.connections == 1
    assert client.idle == 1


async def test_an_answer_byte_by_byte(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(reply(*(CHUNKED[i : i + 1] for i in range(len(CHUNKED)))))
    response, body = await call(client, server.url())
    assert body == b"hello world"
    assert response.content_type == "text/event-stream"


async def test_chunks_come_as_they_arrive(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"7\r\ndata: 1\r\n",
            0.05,
            b"7\r\ndata: 2\r\n0\r\n\r\n",
        )
    )
    answer = await client.post(server.url(), [], b"{}")
    seen = [chunk async for chunk in answer.chunks()]
    await answer.close()
    assert seen == [b"data: 1", b"data: 2"]
    assert client.idle == 1


async def test_a_body_until_the_connection_closes_is_read_and_never_reused(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(b"HTTP/1.1 200 OK\r\n\r\npart one, ", 0.01, b"part two", close=True))
    for _ in range(2):
        _, body = await call(client, server.url())
        assert body == b"part one, part two"
    assert server.connections == 2
    assert client.idle == 0


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    ],
    ids=["continue", "early-hints-then-continue"],
)
async def test_interim_answers_are_skipped(
    serve: Serve, client: UpstreamClient, head: bytes
) -> None:
    server = await serve(reply(head, 0.01, ok(b"final")))
    response, body = await call(client, server.url())
    assert (response.status, body) == (200, b"final")
    assert client.idle == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["204", "304", "empty"],
)
async def test_answers_without_a_body(serve: Serve, client: UpstreamClient, answer: bytes) -> None:
    server = await serve(reply(answer))
    _, body = await call(client, server.url())
    assert body == b""
    await call(client, server.url())
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (ok(b"x", "Connection: close"), False),
        (ok(b"x", "Connection: keep-alive, Close"), False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", True),
        (ok(b"x") + b"HTTP/1.1 200 OK\r\n", False),  # bytes after the answer
        (ok(b"x"), True),
    ],
    ids=["close", "close-in-a-list", "http-1.0", "http-1.0-keep-alive", "extra-bytes", "kept"],
)
async def test_keep_alive_is_counted_on_the_server(
    serve: Serve, client: UpstreamClient, answer: bytes, reused: bool
) -> None:
    server = await serve(reply(answer))
    for _ in range(3):
        _, body = await call(client, server.url())
        assert body == b"x"
    assert server.connections == (1 if reused else 3)


async def test_concurrent_calls_open_connections_then_reuse_the_newest(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(0.05, ok()))
    await asyncio.gather(*(call(client, server.url()) for _ in range(3)))
    assert (server.connections, client.idle) == (3, 3)
    for _ in range(3):
        await call(client, server.url())
    assert (server.connections, client.idle) == (3, 3)
    assert client.opened == 3


async def test_the_idle_pool_is_bounded(serve: Serve) -> None:
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=1, max_idle=2)
    try:
        server = await serve(reply(0.05, ok()))
        await asyncio.gather(*(call(upstream, server.url()) for _ in range(4)))
        assert upstream.idle == 2
        await server.until_client_closed(2)
    finally:
        await upstream.close()


# -- what the connection looks like after it left -----------------------------------------------
async def test_a_connection_the_server_closed_while_idle_is_replaced(
    serve: Serve, client: UpstreamClient
) -> None:
    # The server answers as if it kept the connection, then closes it while it idles.
    server = await serve(reply(ok(), 0.05, close=True))
    await call(client, server.url())
    await idle(client, 0)
    _, body = await call(client, server.url())
    assert body == b"ok"
    assert server.connections == 2


async def test_bytes_on_an_idle_connection_retire_it(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(reply(ok(), 0.05, b"HTTP/1.1 408 Request Timeout\r\n\r\n", 1.0))
    await call(client, server.url())
    await idle(client, 0)
    await call(client, server.url())
    assert server.connections == 2


async def test_idle_connections_expire(serve: Serve) -> None:
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=1, keepalive_s=0.1)
    try:
        server = await serve(reply(ok()))
        await call(upstream, server.url())
        assert upstream.idle == 1
        await server.until_client_closed(1)  # closed by the expiry, not by the next call
        assert upstream.idle == 0
        await call(upstream, server.url())
        assert server.connections == 2
    finally:
        await upstream.close()


async def test_an_answer_closed_before_its_end_closes_its_connection(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", 0.05, b"0\r\n\r\n"
        )
    )
    answer = await client.post(server.url(), [], b"{}")
    assert await answer.chunks().__anext__() == b"ab"
    await answer.close()
    await server.until_client_closed(1)
    assert client.idle == 0


async def test_chunks_end_with_their_answer(serve: Serve, client: UpstreamClient) -> None:
    # Read to its end, the connection goes back to the pool at close and carries the next
    # call: the first answer's iterator must not read the second's body.
    server = await serve(
        lambda i: reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            0.01,
            f"1\r\n{i}\r\n0\r\n\r\n".encode(),
        )
    )
    first = await client.post(server.url(), [], b"{}")
    chunks = first.chunks()
    assert await chunks.__anext__() == b"0"
    await first.close()
    second = await client.post(server.url(), [], b"{}")
    with pytest.raises(UpstreamError, match="closed"):
        await chunks.__anext__()
    assert await second.read() == b"1"
    await second.close()
    assert server.connections == 1


async def test_cancelled_while_reading_the_connection_is_never_pooled(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 5.0))
    answer = await client.post(server.url(), [], b"{}")
    reading = asyncio.ensure_future(answer.read())
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await answer.close()
    assert client.idle == 0
    await server.until_client_closed(1)


async def test_cancelled_while_waiting_for_the_head_nothing_leaks(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(5.0))
    posting = asyncio.ensure_future(client.post(server.url(), [], b"{}"))
    await asyncio.sleep(0.05)
    posting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await posting
    assert client.idle == 0
    assert not client._busy
    await server.until_client_closed(1)


async def test_closing_the_client_cuts_a_call_in_flight(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 5.0))
    answer = await client.post(server.url(), [], b"{}")
    reading = asyncio.ensure_future(answer.read())
    await asyncio.sleep(0.02)
    await client.close()
    error = await failure(reading)
    assert "closed" in str(error)
    await answer.close()
    await server.until_client_closed(1)
    assert client.closed
    assert "shutting down" in str(await failure(client.post(server.url(), [], b"")))


# -- cut, malformed, oversized -----------------------------------------------------------------
async def test_a_body_cut_short_is_an_error(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", 0.01, close=True)
    )
    answer = await client.post(server.url(), [], b"{}")
    error = await failure(answer.read())
    await answer.close()
    assert "cut" in str(error)
    assert not error.timeout


async def test_a_chunked_stream_cut_gives_what_came_then_the_error(
    serve: Serve, client: UpstreamClient
) -> None:
    server = await serve(
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab",
            close=True,
        )
    )
    answer = await client.post(server.url(), [], b"{}")
    seen: list[bytes] = []

    async def relay() -> None:
        async for chunk in answer.chunks():
            seen.append(chunk)

    with pytest.raises(UpstreamError, match="cut"):
        await relay()
    await answer.close()
    assert b"".join(seen) == b"helloab"


async def test_no_answer_at_all_is_an_error(serve: Serve, client: UpstreamClient) -> None:
    server = await serve(reply(close=True))
    error = await failure(client.post(server.url(), [], b"{}"))
    assert "closed before the answer" in str(error)
    assert not error.timeout


@pytest.mark.parametrize(
    ("answer", "wanted"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "both",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", "br"),
    ],
    ids=[
        "http2",
        "not-http",
        "four-digit-status",
        "no-colon",
        "space-in-name",
        "obs-fold",
        "nul",
        "upgrade",
        "length-not-digits",
        "length-list-differs",
        "lengths-differ",
        "te-and-length",
        "te-gzip",
        "brotli",
    ],
)
async def test_a_malformed_head_is_an_error_and_the_connection_closed(
    serve: Serve, client: UpstreamClient, answer: bytes, wanted: str
) -> None:
    server = await serve(reply(answer, 5.0))
    error = await failure(client.post(server.url(), [], b"{}"))
    assert wanted in str(error)
    assert client.idle == 0
    await server.until_client_closed(1)


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "hexadecimal"),
        (b"5\r\nhelloXX0\r\n\r\n", "CRLF"),
        (b"5\nhello\r\n0\r\n\r\n", "CRLF"),
        (b"1" * (MAX_LINE + 10), "longer"),
        (b"0\r\n" + b"T: x\r\n" * 200 + b"\r\n", "trailer"),
    ],
    ids=["size-not-hex", "no-crlf-after-data", "bare-lf", "endless-size-line", "many-trailers"],
)
async def test_a_malformed_chunked_body_is_an_error(
    serve: Serve, client: UpstreamClient, body: bytes, wanted: str
) -> None:
    server = await serve(
        reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0.01, body, 5.0)
    )
    answer = await client.post(server.url(), [], b"{}")
    error = await failure(answer.read())
    await answer.close()
    assert wanted in str(error)
    await server.until_client_closed(1)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 " + b"O" * MAX_LINE + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * (MAX_LINE + 1) + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 10 * MAX_LINE,  # never ends
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 129 + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 1000,  # never ends
    ],
    ids=["status-line", "header", "unfinished-header", "too-many", "unfinished-too-many"],
)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
async def test_an_oversized_head_is_refused(
    serve: Serve, client: UpstreamClient, answer: bytes, split: bool
) -> None:
    pieces: list[Piece] = [answer[:20], 0.01, answer[20:]] if split else [answer]
    server = await serve(reply(*pieces, 5.0))
    error = await failure(client.post(server.url(), [], b"{}"))
    assert "longer" in str(error) or "more than 128" in str(error)
    await server.until_client_closed(1)


async def test_a_head_at_the_limits_is_accepted(serve: Serve, client: UpstreamClient) -> None:
    big = "v" * (MAX_LINE - len("X-Big: "))
    headers = [f"X-Big: {big}"] + [f"X-{i}: y" for i in range(126)]
    server = await serve(reply(ok(b"fine", *headers)))
    response, body = await call(client, server.url())
    assert body == b"fine"
    assert len(list(response.header_items())) == 128


# -- content encoding --------------------------------------------------------------------------
TEXT = b'{"usage": {"prompt_tokens": 5}}' * 50


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("GZIP", gzip.compress(TEXT[:700]) + gzip.compress(TEXT[700:])),  # two members
        ("deflate", zlib.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)[2:-4]),  # raw deflate, as some servers send it
        ("identity", TEXT),
        ("x-unknown", TEXT),  # passed as it came, as aiohttp did
    ],
    ids=["gzip", "gzip-members", "deflate", "raw-deflate", "identity", "unknown"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_encoded_bodies_are_decoded(
    serve: Serve, client: UpstreamClient, encoding: str, encoded: bytes, chunked: bool
) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n"
    if chunked:
        pieces: list[Piece] = [f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()]
        for i in range(0, len(encoded), 17):
            part = encoded[i : i + 17]
            pieces += [f"{len(part):x}\r\n".encode() + part + b"\r\n", 0.0]
        pieces.append(b"0\r\n\r\n")
    else:
        pieces = [f"{head}Content-Length: {len(encoded)}\r\n\r\n".encode() + encoded]
    server = await serve(reply(*pieces))
    _, body = await call(client, server.url())
    assert body == TEXT
    answer = await client.post(server.url(), [], b"{}")
    streamed = b"".join([chunk async for chunk in answer.chunks()])
    await answer.close()
    assert streamed == TEXT
    assert server.connections == 1


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [("gzip", b"not gzip at all"), ("deflate", zlib.compress(TEXT)[:-10])],
    ids=["garbage", "deflate-cut"],
)
async def test_a_body_that_cannot_be_decoded_is_an_error(
    serve: Serve, client: UpstreamClient, encoding: str, encoded: bytes
) -> None:
    server = await serve(
        reply(
            f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n"
            f"Content-Length: {len(encoded)}\r\n\r\n".encode()
            + encoded
        )
    )
    answer = await client.post(server.url(), [], b"{}")
    error = await failure(answer.read())
    await answer.close()
    assert encoding in str(error)


# -- timeouts and connections ------------------------------------------------------------------
async def test_a_silent_provider_times_out(serve: Serve) -> None:
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=0.2)
    try:
        server = await serve(reply(3.0))
        error = await failure(upstream.post(server.url(), [], b"{}"))
        assert error.timeout
        server.script = lambda _i: reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 3.0)
        answer = await upstream.post(server.url(), [], b"{}")
        error = await failure(answer.read())
        await answer.close()
        assert error.timeout
        assert upstream.idle == 0
    finally:
        await upstream.close()


async def test_the_read_timeout_is_silence_not_the_whole_answer(serve: Serve) -> None:
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=0.25)
    try:
        # The head in pieces (no news for the reader until its end), then the body in bytes.
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
        trickle: list[Piece] = []
        for part in (
            head[:8],
            head[8:20],
            head[20:30],
            head[30:],
            *(bytes([b]) for b in b"abcdef"),
        ):
            trickle += [part, 0.1]
        server = await serve(reply(*trickle))
        _, body = await call(upstream, server.url())  # 1 s in all, never 0.25 s silent
        assert body == b"abcdef"
    finally:
        await upstream.close()


async def test_the_read_timer_of_a_call_before_counts_nothing_against_the_next(
    serve: Serve,
) -> None:
    """A connection's read timer stays armed from one call to the next: the next call still
    has the whole read timeout of silence from its own start, and gets its timeout error
    once that has passed; a closed connection leaves no timer behind."""
    upstream = UpstreamClient(connect_timeout_s=1, read_timeout_s=0.3)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    loop = asyncio.get_running_loop()
    try:
        server = await serve(reply(answer))
        await call(upstream, server.url())  # the timer armed here fires 0.3 s later
        (connection,) = upstream._idle[next(iter(upstream._idle))]
        assert connection._timer is not None
        await asyncio.sleep(0.2)
        server.script = lambda _i: reply(0.25, answer)
        started = loop.time()
        _, body = await call(upstream, server.url())  # ends 0.45 s after the first began
        assert body == b"ok"
        assert loop.time() - started >= 0.25
        assert upstream.opened == 1
        server.script = lambda _i: reply(0.6, answer)
        started = loop.time()
        error = await failure(call(upstream, server.url()))
        assert error.timeout
        assert 0.3 <= loop.time() - started < 0.55
        assert upstream.idle == 0
        assert connection._timer is None  # closed with its timer
        server.script = lambda _i: reply(answer)
        await call(upstream, server.url())
        (connection,) = upstream._idle[next(iter(upstream._idle))]
        assert connection._timer is not None
        await upstream.close()
        assert connection._timer is None
    finally:
        await upstream.close()


async def test_a_refused_connection_is_an_error(client: UpstreamClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    error = await failure(client.post(f"http://127.0.0.1:{dead}/v1/x", [], b"{}"))
    assert "ConnectionRefusedError" in str(error)
    assert not error.timeout


async def test_a_connection_that_never_opens_times_out() -> None:
    # A listener that never accepts, its backlog full: the next handshake gets no answer.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        upstream = UpstreamClient(connect_timeout_s=0.3, read_timeout_s=5)
        try:
            error = await failure(upstream.post(f"http://127.0.0.1:{port}/v1/x", [], b"{}"))
        finally:
            await upstream.close()
            for filler in fillers:
                filler.close()
    assert error.timeout
    assert "0.3 s" in str(error)


async def test_flow_control_stops_reading_a_body_nobody_takes(
    serve: Serve, client: UpstreamClient
) -> None:
    size = 16 * 1024 * 1024
    server = await serve(
        reply(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode(), b"x" * size)
    )
    answer = await client.post(server.url(), [], b"{}")
    await asyncio.sleep(0.3)
    connection = answer._connection
    assert connection is not None
    assert connection.buffered <= HIGH_WATER + 256 * 1024  # one read past the mark at most
    total = 0
    async for chunk in answer.chunks():
        total += len(chunk)
        assert connection.buffered <= HIGH_WATER + 256 * 1024
    await answer.close()
    assert total == size
    assert client.idle == 1


# -- TLS ---------------------------------------------------------------------------------------
@dataclass
class TLSFiles:
    ca: Path
    server: ssl.SSLContext
    names: list[str | None]


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    made = self_signed(["localhost", "127.0.0.1", "::1"])
    (tmp_path / "ca.pem").write_bytes(made.ca_pem)
    (tmp_path / "cert.pem").write_bytes(made.cert_pem)
    (tmp_path / "key.pem").write_bytes(made.key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc]
    return TLSFiles(tmp_path / "ca.pem", server, names)


def trusting(ca: Path) -> ssl.SSLContext:
    context = default_tls_context()
    context.load_verify_locations(ca)
    return context


@pytest.mark.parametrize(
    ("host", "bind", "sni"),
    [
        ("localhost", "127.0.0.1", "localhost"),
        ("127.0.0.1", "127.0.0.1", None),
        ("[::1]", "::1", None),
    ],
    ids=["name", "ipv4", "ipv6"],
)
async def test_tls_is_verified_with_sni(
    serve: Serve, tls: TLSFiles, host: str, bind: str, sni: str | None
) -> None:
    server = await serve(reply(ok(b"secure")), host=bind, tls=tls.server)
    upstream = UpstreamClient(connect_timeout_s=2, read_timeout_s=2, tls_context=trusting(tls.ca))
    try:
        url = f"https://{host}:{server.port}/v1/x"
        for _ in range(2):
            _, body = await call(upstream, url)
            assert body == b"secure"
        assert server.connections == 1
        assert tls.names == [sni]  # the name is sent, an address never is (RFC 6066)
        host_line = f"Host: {host}:{server.port}\r\n".encode()
        assert host_line in server.requests[0]
    finally:
        await upstream.close()


async def test_an_untrusted_certificate_is_refused(serve: Serve, tls: TLSFiles) -> None:
    server = await serve(reply(ok()), tls=tls.server)
    upstream = UpstreamClient(connect_timeout_s=2, read_timeout_s=2)
    try:
        error = await failure(upstream.post(f"https://localhost:{server.port}/v1/x", [], b""))
        assert "not trusted" in str(error)
        assert server.requests == []
    finally:
        await upstream.close()


async def test_a_certificate_for_another_name_is_refused(serve: Serve, tmp_path: Path) -> None:
    made = self_signed(["other.example"])
    (tmp_path / "ca.pem").write_bytes(made.ca_pem)
    (tmp_path / "cert.pem").write_bytes(made.cert_pem)
    (tmp_path / "key.pem").write_bytes(made.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = await serve(reply(ok()), tls=context)
    upstream = UpstreamClient(
        connect_timeout_s=2, read_timeout_s=2, tls_context=trusting(tmp_path / "ca.pem")
    )
    try:
        error = await failure(upstream.post(f"https://localhost:{server.port}/v1/x", [], b""))
        assert "not trusted" in str(error)
        assert "localhost" in str(error)
        assert server.requests == []
    finally:
        await upstream.close()


async def test_the_default_context_trusts_what_the_system_store_says(
    serve: Serve, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE is how an image adds a private CA: OpenSSL reads it, as for aiohttp.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    server = await serve(reply(ok(b"trusted")), tls=tls.server)
    upstream = UpstreamClient(connect_timeout_s=2, read_timeout_s=2)
    try:
        _, body = await call(upstream, f"https://localhost:{server.port}/v1/x")
        assert body == b"trusted"
    finally:
        await upstream.close()


async def test_a_tls_stream_is_read_to_its_end_and_reused(serve: Serve, tls: TLSFiles) -> None:
    server = await serve(
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0.01, b"3\r\nabc\r\n0\r\n\r\n"
        ),
        tls=tls.server,
    )
    upstream = UpstreamClient(connect_timeout_s=2, read_timeout_s=2, tls_context=trusting(tls.ca))
    try:
        for _ in range(3):
            answer = await upstream.post(f"https://localhost:{server.port}/v1/x", [], b"{}")
            assert b"".join([chunk async for chunk in answer.chunks()]) == b"abc"
            await answer.close()
        assert server.connections == 1
    finally:
        await upstream.close()


async def test_the_sidecar_meters_over_tls_with_a_private_ca(
    serve: Serve, tls: TLSFiles, start_sidecar: SidecarFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sidecar's own client, made at start off the loop, trusts what SSL_CERT_FILE names;
    # the provider answers gzip, which is decoded before usage is read and the answer relayed.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    completion = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
        }
    ).encode()
    packed = gzip.compress(completion)
    server = await serve(
        reply(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(packed)}\r\n\r\n".encode()
            + packed
        ),
        tls=tls.server,
    )
    running = await start_sidecar(A11I_OPENAI_BASE=f"https://localhost:{server.port}")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            running.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
        ) as response,
    ):
        assert response.status == 200
        assert await response.read() == completion
        assert "Content-Encoding" not in response.headers
        cost = response.headers["x-a11i-cost-usd"]
    (record,) = await running.settled(1)
    assert record.settlement is not None
    assert record.settlement.cost_usd == Decimal(cost)
    assert record.settlement.source.value == "provider"
    request = server.requests[0]
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: localhost:{server.port}\r\n".encode() in request
    assert b"Authorization: Bearer k\r\n" in request
    assert tls.names == ["localhost"]
