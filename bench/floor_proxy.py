"""The floor of the sidecar's architecture: a proxy with a11i's HTTP parts and none of its work.

``python -m bench.floor_proxy --port P --upstream URL [--raw]``: an aiohttp server that reads
each POST body, parses it as JSON (any metering proxy must), forwards it with the headers a11i
forwards through a11i's own upstream client, reads and parses the JSON answer and returns it with
the provider's headers. No planning, counting, pricing, wallet, optimizer or telemetry: what it
adds over calling the provider directly is what any proxy built like a11i adds before a11i does
anything. ``bench.overhead --floor`` runs it beside the sidecars, interleaved, so the ratio a11i
could reach at best is measured in the same run as a11i's.

``--raw`` serves with a bare asyncio protocol instead of aiohttp (HTTP/1.1 keep-alive,
Content-Length bodies only, no error handling: enough for the benchmark's client, nothing a
sidecar could serve agents with), to show what a hand-written server would take off the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from aiohttp import web

from a11i.core.headers import KeyCustody, downstream_headers, upstream_headers
from a11i.core.model import Provider
from a11i.sidecar.upstream import UpstreamClient

#: The floor holds no key: the agent's goes through, as with a sidecar that holds none.
_NO_KEYS = KeyCustody()


def build(upstream: str) -> web.Application:
    client = UpstreamClient(connect_timeout_s=10.0, read_timeout_s=600.0)

    async def forward(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        json.loads(raw)
        headers = upstream_headers(request.headers.items(), Provider.OPENAI, _NO_KEYS)
        answer = await client.post(upstream + request.path_qs, headers, raw)
        try:
            payload = await answer.read()
        finally:
            await answer.close()
        json.loads(payload)
        return web.Response(
            status=answer.status,
            body=payload,
            headers=downstream_headers(answer.header_items()),
        )

    async def stop(_app: web.Application) -> None:
        await client.close()

    async def ready(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    app = web.Application()
    app.on_cleanup.append(stop)
    app.router.add_get("/a11i/readyz", ready)
    app.router.add_post("/{tail:.*}", forward)
    return app


class _RawProxy(asyncio.Protocol):
    """One keep-alive connection: each request is read whole, forwarded, answered in order."""

    def __init__(self, client: UpstreamClient, upstream: str) -> None:
        self._client = client
        self._upstream = upstream
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._queue: asyncio.Queue[tuple[str, str, list[tuple[str, str]], bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in lines[1:])]
            length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._queue.put_nowait((method, target, headers, body))

    async def _serve(self) -> None:
        assert self._transport is not None
        while True:
            method, target, headers, body = await self._queue.get()
            if method == "GET":
                self._transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            json.loads(body)
            sent = upstream_headers(headers, Provider.OPENAI, _NO_KEYS)
            answer = await self._client.post(self._upstream + target, sent, body)
            try:
                payload = await answer.read()
            finally:
                await answer.close()
            json.loads(payload)
            head = [f"HTTP/1.1 {answer.status} OK"]
            head += [f"{n}: {v}" for n, v in downstream_headers(answer.header_items())]
            head.append(f"Content-Length: {len(payload)}")
            self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


async def _serve_raw(port: int, upstream: str) -> None:
    client = UpstreamClient(connect_timeout_s=10.0, read_timeout_s=600.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RawProxy(client, upstream), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--raw", action="store_true", help="a bare asyncio server, not aiohttp")
    options = parser.parse_args()
    if options.raw:
        with contextlib.suppress(KeyboardInterrupt):  # how bench.overhead stops it
            asyncio.run(_serve_raw(options.port, options.upstream))
        raise SystemExit(0)
    web.run_app(
        build(options.upstream), host="127.0.0.1", port=options.port, print=None, access_log=None
    )
