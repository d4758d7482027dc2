"""Admission under concurrency: how much of a limit calls can use before they are refused.

Runs in one go, against the stand-in, two configurations of the same sidecar build:
- **before**: refuse at once (``A11I_BUDGET_ADMISSION_WAIT=0``, ``A11I_BUDGET_FIT_OUTPUT_CAP=off``),
  the behaviour before calls waited for held money and had their output cap fitted;
- **now**: the defaults (wait up to 5 s in arrival order, fit the output cap).

For each, at concurrency 1, 10 and 100: ``calls`` gpt-4o calls of ``max_tokens`` 200 (held at
about $0.0021 while in flight, costing about $0.00044) against a fresh wallet of ``--limit``
(default $0.03, which ~68 such calls use up): calls admitted, the share of the limit spent (in
the end: the limit is never passed), and the latency of an admitted call that waited versus one
that did not. Also a coding agent's turn (claude-sonnet-4-5, ``max_tokens`` 64000) against a
$0.05 wallet: refused before, admitted with a fitted cap now.

    python -m bench.admission [--calls 200] [--limit 0.03]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp

from bench.overhead import ms, percentile, start_sidecar, start_standin

CHAT = {
    "model": "gpt-4o",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Is the checkout service healthy?"}],
}
CODING = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64000,
    "messages": [{"role": "user", "content": "Fix the failing test in the shop service."}],
}
BEFORE = {"A11I_BUDGET_ADMISSION_WAIT": "0", "A11I_BUDGET_FIT_OUTPUT_CAP": "off"}
NOW: dict[str, str] = {}


async def run(
    upstream: str, env: dict[str, str], limit: str, calls: int, concurrency: int
) -> dict[str, object]:
    wallet = str(Path(tempfile.mkdtemp(prefix="a11i-bench-admission-")) / "w.sqlite")
    process, url = await start_sidecar(upstream, wallet, {"A11I_BUDGET_USD": limit, **env})
    statuses: list[int] = []
    waited: list[float] = []
    direct: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def call() -> None:
                async with gate:
                    started = time.perf_counter()
                    async with http.post(
                        url + "/v1/chat/completions",
                        json=CHAT,
                        headers={"Authorization": "Bearer sk-bench"},
                    ) as response:
                        await response.read()
                        elapsed = time.perf_counter() - started
                        statuses.append(response.status)
                        if response.status == 200:
                            wait = response.headers.get("x-a11i-admission-wait-ms")
                            (waited if wait else direct).append(elapsed)

            await asyncio.gather(*(call() for _ in range(calls)))
            async with http.get(url + "/a11i/budget") as response:
                budget = await response.json()
    finally:
        process.terminate()
        await process.wait()
    return {
        "admitted": statuses.count(200),
        "refused": statuses.count(402),
        "spent": Decimal(budget["spent_usd"]),
        "waited": waited,
        "direct": direct,
    }


async def coding_turn(upstream: str, env: dict[str, str]) -> str:
    wallet = str(Path(tempfile.mkdtemp(prefix="a11i-bench-admission-")) / "w.sqlite")
    process, url = await start_sidecar(
        upstream,
        wallet,
        {"A11I_BUDGET_USD": "0.05", "A11I_ANTHROPIC_BASE": upstream, **env},
    )
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/v1/messages",
                json=CODING,
                headers={"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"},
            ) as response,
        ):
            await response.read()
            cap = response.headers.get("x-a11i-output-cap", "-")
            return f"{response.status} (x-a11i-output-cap: {cap})"
    finally:
        process.terminate()
        await process.wait()


def _latency(values: list[float]) -> str:
    if not values:
        return "-"
    return f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))} ({len(values)})"


async def main(calls: int, limit: str) -> None:
    standin, upstream = await start_standin()
    try:
        async with aiohttp.ClientSession() as http:
            # 40 output tokens a call: a realistic real cost far below the hold.
            await http.post(upstream + "/_standin/config", json={"words": 40})
        print(f"{calls} gpt-4o calls (max_tokens 200) per run, wallet ${limit}, SQLite wallet")
        print(
            f"{'concurrency':>11}  {'config':<6} {'admitted':>8} {'refused':>7} "
            f"{'limit used':>10}  latency waited / not waited"
        )
        for concurrency in (1, 10, 100):
            results = {}
            for name, env in (("before", BEFORE), ("now", NOW)):
                results[name] = result = await run(upstream, env, limit, calls, concurrency)
                used = Decimal(str(result["spent"])) / Decimal(limit) * 100
                print(
                    f"{concurrency:>11}  {name:<6} {result['admitted']:>8} {result['refused']:>7} "
                    f"{used:>9.1f}%  {_latency(result['waited'])} / {_latency(result['direct'])}"
                )
            ratio = Decimal(str(results["now"]["spent"])) / max(
                Decimal(str(results["before"]["spent"])), Decimal("0.000000001")
            )
            print(f"{'':>11}  now/before spent: {ratio:.2f}x")
        print("coding agent turn, claude-sonnet-4-5 max_tokens 64000, wallet $0.05:")
        print(f"  before: {await coding_turn(upstream, BEFORE)}")
        print(f"  now:    {await coding_turn(upstream, NOW)}")
    finally:
        standin.terminate()
        await standin.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--limit", default="0.03")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.limit))
