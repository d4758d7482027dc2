"""The floor of the sidecar's architecture: a proxy with a11i's HTTP parts and none of its work.

``python -m bench.floor_proxy --port P --upstream URL``: an aiohttp server that reads each POST
body, parses it as JSON (any metering proxy must), forwards it with the headers a11i forwards
through a11i's own upstream client, reads and parses the JSON answer and returns it with the
provider's headers. No planning, counting, pricing, wallet, optimizer or telemetry: what it adds
over calling the provider directly is what any proxy built like a11i adds before a11i does
anything. ``bench.overhead --floor`` runs it beside the sidecars, interleaved, so the ratio a11i
could reach at best is measured in the same run as a11i's.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from a11i.core.headers import KeyCustody, downstream_headers, upstream_headers
from a11i.core.model import Provider
from a11i.sidecar.upstream import UpstreamClient


def build(upstream: str) -> web.Application:
    client = UpstreamClient(connect_timeout_s=10.0, read_timeout_s=600.0)
    custody = KeyCustody()

    async def forward(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        json.loads(raw)
        headers = upstream_headers(request.headers.items(), Provider.OPENAI, custody)
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    options = parser.parse_args()
    web.run_app(
        build(options.upstream), host="127.0.0.1", port=options.port, print=None, access_log=None
    )
