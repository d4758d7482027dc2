"""The metered path's upstream client in-process: aiohttp's ClientSession as the sidecar used it
until issue 19 against ``a11i.sidecar.upstream.UpstreamClient``, post + read + close of the same
chat request to the stand-in provider (an aiohttp server, in its own process), interleaved in
blocks so that drift on a shared machine hits both alike.

Run with ``python -m bench.upstream [--calls N]``. Prints this process's CPU per call (the
client's own work: the server's is in another process) and the p50/p99 of the wall time of a
call for each client. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from a11i.sidecar.upstream import UpstreamClient
from bench.overhead import REQUEST, percentile, start_standin

HEADERS = [
    ("Authorization", "Bearer sk-bench"),
    ("Content-Type", "application/json"),
    ("User-Agent", "OpenAI/Python 1.54.0"),
    ("X-Stainless-Lang", "python"),
]
BLOCK = 50

Call = Callable[[], Awaitable[int]]


def session_call(session: aiohttp.ClientSession, url: str, body: bytes) -> Call:
    """What ``_SessionUpstream`` and ``_SessionAnswer`` did for a non-streaming call."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
    target = URL(url, encoded=True)

    async def call() -> int:
        response = await session.post(target, data=body, headers=HEADERS, timeout=timeout)
        payload = await response.read()
        response.release()
        await response.wait_for_close()
        return len(payload)

    return call


def client_call(client: UpstreamClient, url: str, body: bytes) -> Call:
    async def call() -> int:
        answer = await client.post(url, HEADERS, body)
        try:
            payload = await answer.read()
        finally:
            await answer.close()
        return len(payload)

    return call


async def main(calls: int) -> None:
    process, base = await start_standin()
    url = base + "/v1/chat/completions"
    body = json.dumps(REQUEST).encode()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )
    client = UpstreamClient(connect_timeout_s=10, read_timeout_s=600)
    paths = {
        "aiohttp ClientSession": session_call(session, url, body),
        "a11i UpstreamClient": client_call(client, url, body),
    }
    walls: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
    try:
        for call in paths.values():  # warm up: connections open, code paths hot
            for _ in range(100):
                await call()
        for _ in range(max(1, calls // BLOCK)):
            for name, call in paths.items():
                cpu_started = time.process_time()
                for _ in range(BLOCK):
                    started = time.perf_counter()
                    await call()
                    walls[name].append(time.perf_counter() - started)
                cpu[name] += time.process_time() - cpu_started
    finally:
        await session.close()
        await client.close()
        process.terminate()
        await process.wait()
    print(f"{calls} calls each, blocks of {BLOCK}, interleaved; stand-in at {base}")
    print(f"{'client':<24}{'CPU/call':>11}{'wall p50':>11}{'wall p99':>11}{'mean':>11}")
    for name, values in walls.items():
        print(
            f"{name:<24}{cpu[name] / len(values) * 1e6:>9.1f}µs"
            f"{percentile(values, 50) * 1e6:>9.1f}µs{percentile(values, 99) * 1e6:>9.1f}µs"
            f"{statistics.fmean(values) * 1e6:>9.1f}µs"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(main(parser.parse_args().calls))
