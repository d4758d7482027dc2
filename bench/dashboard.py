"""How fast a call reaches the dashboard's pages, and how many pages and events it keeps up with.

Run with ``make bench`` (or ``python -m bench.dashboard``). Starts a ``redis-server`` and an
``a11i dashboard`` process on it, connects ``--pages`` WebSocket pages, then appends call events
to ``a11i:events`` at each ``--rates`` (events per second, open loop) as the sidecars do. For every
event: the time from just before its XADD to its arrival on each page, beside the same time for a
plain ``XREAD BLOCK`` follower in this process (the floor: what Redis alone costs). Also events
lost (must be 0), and the dashboard's CPU and RSS. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from a11i.sidecar.telemetry.events import STREAM
from bench.overhead import rss_kib

TOKEN = "bench-admin-token-0123456789"


@dataclass
class Arrivals:
    """When each event id arrived at one follower."""

    at: dict[str, float] = field(default_factory=dict)


def event(index: int) -> dict[str, str]:
    return {
        "kind": "call",
        "ts": f"{time.time():.3f}",
        "namespace": f"team-{index % 5}",
        "agent": f"agent-{index % 40}",
        "model": "gpt-4o-mini",
        "decision": "allow",
        "state": "Green",
        "status": "200",
        "input_tokens": "1200",
        "output_tokens": "150",
        "projected_usd": "0.0003",
        "cost_usd": "0.00027",
    }


async def follow_redis(client: Redis, arrivals: Arrivals, stop: asyncio.Event) -> None:
    last = "$"
    while not stop.is_set():
        reply = await client.xread({STREAM: last}, block=200, count=1000)
        now = time.perf_counter()
        for _stream, entries in reply or []:
            for event_id, _fields in entries:
                arrivals.at[str(event_id)] = now
                last = str(event_id)


async def follow_page(url: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws,
    ):
        await ws.send_json({"type": "resume", "since": None})
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            body = json.loads(message.data)
            if body.get("type") == "hello":
                ready.set()
            if body.get("type") == "events" and not body.get("replay"):
                for item in body["events"]:
                    arrivals.at[item["id"]] = now


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def run_rate(
    writer: Redis, reader: Redis, ws_url: str, pages: int, rate: int, seconds: float, pid: int
) -> dict[str, float]:
    floor = Arrivals()
    page_arrivals = [Arrivals() for _ in range(pages)]
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(pages)]
    tasks = [asyncio.create_task(follow_redis(reader, floor, stop))]
    tasks += [
        asyncio.create_task(follow_page(ws_url, arrivals, ready))
        for arrivals, ready in zip(page_arrivals, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    await asyncio.sleep(0.5)
    sent: dict[str, float] = {}
    count = int(rate * seconds)
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    started = time.perf_counter()
    for index in range(count):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        before = time.perf_counter()
        event_id = await writer.xadd(STREAM, event(index), maxlen=100_000, approximate=True)  # type: ignore[arg-type]
        sent[str(event_id)] = before
    deadline = time.perf_counter() + 10
    # Polled: the followers only fill dicts, and the bench must not add work to their path.
    while time.perf_counter() < deadline and not all(  # noqa: ASYNC110
        len(arrivals.at.keys() & sent.keys()) == count for arrivals in page_arrivals
    ):
        await asyncio.sleep(0.05)
    cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    floor_samples = [floor.at[i] - t for i, t in sent.items() if i in floor.at]
    page_samples = [
        arrivals.at[i] - t
        for arrivals in page_arrivals
        for i, t in sent.items()
        if i in arrivals.at
    ]
    lost = count * pages - len(page_samples)
    floor_p50, floor_p99 = percentiles(floor_samples)
    page_p50, page_p99 = percentiles(page_samples) if page_samples else (float("nan"),) * 2
    return {
        "events": count,
        "floor_p50": floor_p50,
        "floor_p99": floor_p99,
        "page_p50": page_p50,
        "page_p99": page_p99,
        "lost": lost,
        "cpu": cpu,
        "rss_mib": rss_kib(pid) / 1024,
    }


async def main(pages_list: list[int], rates: list[int], seconds: float) -> None:
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)")
        return
    from tests.support.redis_server import RedisServer, free_port

    server = RedisServer()
    server.start()
    port = free_port()
    env = {**os.environ, "A11I_DASHBOARD_ADMIN_TOKEN": TOKEN}
    dashboard = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "a11i.cli",
        "dashboard",
        "--redis",
        server.url,
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    writer = Redis.from_url(server.url, decode_responses=True)
    reader = Redis.from_url(server.url, decode_responses=True)
    rows = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        for pages in pages_list:
            for rate in rates:
                figures = await run_rate(
                    writer,
                    reader,
                    f"ws://127.0.0.1:{port}/ws",
                    pages,
                    rate,
                    seconds,
                    dashboard.pid,
                )
                rows.append((pages, rate, figures))
    finally:
        await writer.aclose()
        await reader.aclose()
        dashboard.send_signal(signal.SIGINT)
        await dashboard.wait()
        server.close()
    print(
        "\nEvent to page (a call's event appended to a11i:events until a WebSocket page has it)\n"
    )
    print(
        "| pages | events/s | XREAD floor p50 | XREAD floor p99 | page p50 | page p99 "
        "| p50 vs floor | lost | dashboard CPU | dashboard RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pages, rate, f in rows:
        print(
            f"| {pages} | {rate} | {f['floor_p50'] * 1000:.2f} ms | {f['floor_p99'] * 1000:.2f} ms "
            f"| {f['page_p50'] * 1000:.2f} ms | {f['page_p99'] * 1000:.2f} ms "
            f"| {f['page_p50'] / f['floor_p50']:.1f}x | {int(f['lost'])} "
            f"| {f['cpu'] * 100:.0f}% | {f['rss_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", default="1,20", help="comma-separated page counts")
    parser.add_argument("--rates", default="50,500", help="comma-separated events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(
        main(
            [int(p) for p in args.pages.split(",")],
            [int(r) for r in args.rates.split(",")],
            args.seconds,
        )
    )
