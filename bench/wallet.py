"""Cost of the budget guard per call: decide + reserve + settle, for each wallet backend.

Run with ``make bench`` (or ``python -m bench.wallet``). For each backend — memory (the
baseline: the pure rules alone), the embedded SQLite file, and Redis (a ``redis-server`` started
on a free loopback port, when Debian's package is installed) — measures one reserve + settle
cycle at a time (latency) and many at once from one process (cycles per second). Figures only.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from a11i.core.policy import BudgetPolicy, Period
from a11i.sidecar.wallets.base import Wallet
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.sqlite import SQLiteWallet

POLICY = BudgetPolicy(limit_usd=Decimal("1000000"))
CYCLES = 2000
CONCURRENCY = 50


async def cycle(wallet: Wallet) -> None:
    _, held = await wallet.reserve(Decimal("0.0123"))
    assert held is not None
    await wallet.settle(held, Decimal("0.0042"))


async def measure(name: str, wallet: Wallet) -> tuple[str, float, float, float]:
    await wallet.start()
    for _ in range(100):
        await cycle(wallet)
    samples = []
    for _ in range(CYCLES):
        started = time.perf_counter()
        await cycle(wallet)
        samples.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(CYCLES // CONCURRENCY):
        await asyncio.gather(*(cycle(wallet) for _ in range(CONCURRENCY)))
    rate = (CYCLES // CONCURRENCY) * CONCURRENCY / (time.perf_counter() - started)
    await wallet.close()
    ordered = sorted(samples)
    return name, statistics.median(samples), ordered[int(0.99 * len(ordered))], rate


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="a11i-bench-wallet-"))
    runs: list[Callable[[], Awaitable[tuple[str, float, float, float]]]] = [
        lambda: measure("memory (rules only)", MemoryWallet(POLICY, namespace="b", agent="b")),
        lambda: measure(
            "embedded SQLite file",
            SQLiteWallet(folder / "w.sqlite", POLICY, namespace="b", agent="b"),
        ),
    ]
    redis_run = await _redis_run()
    if redis_run is not None:
        runs.append(redis_run)
    results = [await run() for run in runs]
    baseline = results[0][1]
    print(f"# wallet cost per call: reserve + settle ({CYCLES} cycles, then {CONCURRENCY} at once)")
    print()
    print("| backend | p50 | p99 | vs memory | cycles/s at 50 concurrent |")
    print("|---|---|---|---|---|")
    for name, p50, p99, rate in results:
        print(
            f"| {name} | {p50 * 1e6:.0f} µs | {p99 * 1e6:.0f} µs | {p50 / baseline:.1f}x "
            f"| {rate:,.0f} |"
        )
    shutil.rmtree(folder, ignore_errors=True)


async def _redis_run() -> Callable[[], Awaitable[tuple[str, float, float, float]]] | None:
    if shutil.which("redis-server") is None:
        print("redis-server not installed: Redis backend not measured")
        return None
    from redis.asyncio import Redis

    from a11i.sidecar.wallets.redis import RedisWallet
    from tests.support.redis_server import RedisServer

    async def run() -> tuple[str, float, float, float]:
        server = RedisServer()
        server.start()
        client = Redis.from_url(server.url)
        try:
            wallet = RedisWallet(
                client, namespace="bench", agent="b", policy=POLICY, period=Period.TOTAL
            )
            return await measure("Redis (loopback, Lua scripts)", wallet)
        finally:
            await client.aclose()
            server.close()

    return run


if __name__ == "__main__":
    asyncio.run(main())
