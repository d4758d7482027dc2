"""Redis CPU per metered call: what the shared wallet costs the one part the whole fleet shares.

Run with ``python -m bench.redis_cost [--calls N] [--sidecars M] [--concurrency 1,20,50x50]
[--baseline REV] [--no-cluster]``. Starts a ``redis-server`` on loopback, then drives M wallets
of one namespace (each with its own client, as M sidecars have) and an event stream per wallet
through N metered calls: reserve, settle, one event each, C calls at a time (each level of
``--concurrency``: ``C``, or ``MxC`` for M wallets of its own). A wallet that carries events
(``RedisWallet(events=True)``, what a sidecar builds) gets the call's event with the settle, as
the sidecar's pipeline hands it; an older one leaves it to the event stream. Redis's own CPU
(``INFO cpu``: used_cpu_sys + used_cpu_user) is read before and after; the figure is that
difference divided by N, and the calls per second one Redis core carries at that cost. The
wallets' watchers run too (their share is in the figure). The same run measures the wallet and
event stream of git revision ``REV`` (default: the tree before issue 21), loaded from ``git
show``, on a fresh Redis; then both on a 3-primary Redis Cluster (CPU summed over its nodes; a
baseline without cluster support is skipped there); and what one PING round trip alone costs
Redis on this machine (the floor of every round trip). Figures only: never a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from redis.asyncio import Redis

from a11i.core.policy import BudgetPolicy, Period
from a11i.sidecar.redis_clients import RedisMode, RedisTarget
from a11i.sidecar.telemetry import events
from a11i.sidecar.wallets import redis as wallets
from tests.support.redis_server import RedisClusterServers, RedisServer

#: The tree before issue 21: scripts that read every lease of the namespace on each call.
BASELINE = "c697613"

POLICY = BudgetPolicy(limit_usd=Decimal("1000000"))
EVENT = {
    "kind": "call",
    "namespace": "bench",
    "agent": "agent-0",
    "decision": "allow",
    "model": "gpt-4o",
    "input_tokens": "1200",
    "output_tokens": "180",
    "cost_usd": "0.004800000",
    "status": "200",
}


async def cpu_seconds(urls: Sequence[str]) -> float:
    """Redis CPU seconds so far, summed over the servers at ``urls``."""
    total = 0.0
    for url in urls:
        client = Redis.from_url(url)
        try:
            info = await client.info("cpu")
        finally:
            await client.aclose()
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


async def round_trip_cost(url: str, count: int = 2000) -> float:
    """Redis CPU seconds of one PING sent alone (the floor of any round trip)."""
    client = Redis.from_url(url)
    try:
        await client.ping()
        before = await cpu_seconds([url])
        for _ in range(count):
            await client.ping()
        return (await cpu_seconds([url]) - before) / count
    finally:
        await client.aclose()


def load_at(revision: str, path: str, folder: Path) -> ModuleType:
    """The module at ``path`` as it was in git revision ``revision``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    name = f"baseline_{Path(path).stem}"
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def drive(
    wallet_module: Any,
    events_module: Any,
    target: RedisTarget,
    nodes: Sequence[str],
    calls: int,
    sidecars: int,
    concurrency: int,
) -> float:
    """Redis CPU seconds per call, summed over ``nodes``."""
    wallets: list[Any] = []
    streams: list[Any] = []
    carries = "events" in inspect.signature(wallet_module.RedisWallet).parameters
    for index in range(sidecars):
        client = target.connect()
        options = {"events": True} if carries else {}
        wallet = wallet_module.RedisWallet(
            client,
            namespace="bench",
            agent=f"agent-{index}",
            policy=POLICY,
            period=Period.MONTHLY,
            timeout_s=2.0,
            owns_client=True,
            **options,
        )
        await wallet.start()
        stream = events_module.RedisEventStream(target.connect(), owns_client=True)
        await stream.start()
        wallets.append(wallet)
        streams.append(stream)

    async def call(index: int) -> None:
        wallet = wallets[index % sidecars]
        _, held = await wallet.reserve(Decimal("0.0123"))
        assert held is not None
        if carries:  # the event goes with the settle (the sidecar's pipeline)
            await wallet.settle(held, Decimal("0.0048"), dict(EVENT))
        else:
            await wallet.settle(held, Decimal("0.0048"))
            streams[index % sidecars].append(dict(EVENT))

    async def batch(indexes: range) -> None:
        await asyncio.gather(*(call(i) for i in indexes))

    for start in range(0, 200, concurrency):  # warm up: scripts loaded, pools filled
        await batch(range(start, min(start + concurrency, 200)))
    before = await cpu_seconds(nodes)
    started = time.perf_counter()
    for start in range(0, calls, concurrency):
        await batch(range(start, min(start + concurrency, calls)))
    for stream in streams:  # every event written before the CPU is read again
        if hasattr(stream, "drained"):
            await stream.drained()
        else:  # the baseline's stream: one XADD per event
            while not stream._queue.empty():  # noqa: ASYNC110 (the baseline has no event)
                await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    after = await cpu_seconds(nodes)
    for wallet in wallets:
        await wallet.close()
    for stream in streams:
        await stream.close()
    print(f"<!-- {calls} calls in {elapsed:.2f} s, {calls / elapsed:,.0f} calls/s -->")
    return (after - before) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--sidecars", type=int, default=2)
    parser.add_argument(
        "--concurrency",
        default="1,20",
        help="comma-separated levels: C calls at once from --sidecars wallets, or MxC from M",
    )
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-primary cluster")
    args = parser.parse_args()
    levels = [
        (int(level.partition("x")[0]), int(level.partition("x")[2]))
        if "x" in level
        else (args.sidecars, int(level))
        for level in args.concurrency.split(",")
    ]
    print(
        f"# Redis CPU per metered call: reserve + settle + 1 event, {args.calls} calls from "
        "M wallets of one namespace"
    )
    print()
    print(
        "| Redis | tree | wallets (M) | calls at once | Redis CPU per call "
        "| calls/s per Redis core |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="a11i-bench-") as folder:
        baseline = (
            f"before ({args.baseline})",
            load_at(args.baseline, "a11i/sidecar/wallets/redis.py", Path(folder)),
            load_at(args.baseline, "a11i/sidecar/telemetry/events.py", Path(folder)),
        )
        floor = 0.0
        trees = (baseline, ("now", wallets, events))
        for sidecars, level in levels:
            for name, wallet_module, events_module in trees:
                server = RedisServer()
                server.start()
                try:
                    floor = await round_trip_cost(server.url)
                    cost = await drive(
                        wallet_module,
                        events_module,
                        RedisTarget(server.url),
                        [server.url],
                        args.calls,
                        sidecars,
                        level,
                    )
                finally:
                    server.close()
                print(
                    f"| single | {name} | {sidecars} | {level} | {cost * 1e6:.1f} µs "
                    f"| {1 / cost:,.0f} |"
                )
            if args.no_cluster:
                continue
            for name, wallet_module, events_module in trees:
                if not hasattr(wallet_module, "WalletKeys"):  # before cluster support
                    continue
                cluster = RedisClusterServers(primaries=3)
                cluster.start()
                try:
                    cost = await drive(
                        wallet_module,
                        events_module,
                        RedisTarget(cluster.url, RedisMode.CLUSTER),
                        [node.url for node in cluster.nodes],
                        args.calls,
                        sidecars,
                        level,
                    )
                finally:
                    cluster.close()
                print(
                    f"| cluster (3 primaries, summed) | {name} | {sidecars} | {level} "
                    f"| {cost * 1e6:.1f} µs | {1 / cost:,.0f} |"
                )
    print()
    print(f"One PING round trip, alone: {floor * 1e6:.1f} µs of Redis CPU on this machine.")


if __name__ == "__main__":
    asyncio.run(main())
