"""Calls per second one sidecar sustains, with each wallet backend, at fixed concurrency.

Run with ``make bench`` (or ``python -m bench.throughput``). Starts the stand-in provider, a
``redis-server`` (when installed) and one ``a11i sidecar`` per backend, then keeps ``--concurrency``
chat calls in flight for ``--seconds`` against each — and against the stand-in directly, the
ceiling of this machine. Closed loop: a new call starts when one ends. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.overhead import REQUEST, rss_kib, start_sidecar, start_standin


async def load(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    done = 0
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                async with http.post(
                    url + "/v1/chat/completions",
                    json=REQUEST,
                    headers={"Authorization": "Bearer sk-bench"},
                ) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, errors


async def main(concurrency: int, seconds: float) -> None:
    standin, upstream = await start_standin()
    folder = Path(tempfile.mkdtemp(prefix="a11i-bench-tp-"))
    rows: list[tuple[str, float, int, str]] = []
    try:
        rate, errors = await load(upstream, concurrency, seconds)
        rows.append(("stand-in directly (ceiling)", rate, errors, "-"))
        backends: list[tuple[str, dict[str, str]]] = [
            ("a11i, memory wallet", {"A11I_WALLET_FILE": ":memory:"}),
            ("a11i, embedded SQLite wallet", {"A11I_WALLET_FILE": str(folder / "w.sqlite")}),
        ]
        server = None
        if shutil.which("redis-server"):
            from tests.support.redis_server import RedisServer

            server = RedisServer()
            server.start()
            backends.append(("a11i, Redis wallet + event stream", {"A11I_REDIS_URL": server.url}))
        for name, env in backends:
            sidecar, url = await start_sidecar(upstream, env=env)
            try:
                rate, errors = await load(url, concurrency, seconds)
                rows.append((name, rate, errors, f"{rss_kib(sidecar.pid) / 1024:.0f} MiB"))
            finally:
                sidecar.send_signal(signal.SIGINT)
                await sidecar.wait()
        if server is not None:
            server.close()
    finally:
        standin.send_signal(signal.SIGINT)
        await standin.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"# sustained calls per second ({concurrency} in flight, {seconds:g} s each)")
    print()
    print("| target | calls/s | errors | sidecar RSS after |")
    print("|---|---|---|---|")
    for name, rate, errors, rss in rows:
        print(f"| {name} | {rate:,.0f} | {errors} | {rss} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    asyncio.run(main(options.concurrency, options.seconds))
