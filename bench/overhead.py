"""Added latency of the sidecar: the same calls, direct to the stand-in and through a11i.

Run with ``make bench`` (or ``python -m bench.overhead --calls 2000``). Starts the stand-in
provider and an ``a11i sidecar`` as separate processes on loopback, then sends the same chat
request alternately direct and through the sidecar (interleaved, so drift on a shared machine
hits both alike), one at a time. Prints p50/p99 of each path and of the added latency, the
time to first byte of a streamed answer both ways, and the sidecar's RSS at rest and after load.
Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

REQUEST = {
    "model": "gpt-4o-mini",
    "max_tokens": 64,
    "messages": [
        {"role": "system", "content": "You are an SRE assistant for a Kubernetes cluster."},
        {"role": "user", "content": "The checkout service returns 503 since 09:00. Why?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_pods", "arguments": '{"namespace": "shop"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "checkout-7d9f  0/1  CrashLoopBackOff  12  41m\n" * 20,
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_pods",
                "description": "List the pods of a namespace",
                "parameters": {
                    "type": "object",
                    "properties": {"namespace": {"type": "string"}},
                    "required": ["namespace"],
                },
            },
        }
    ],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_standin(prefix: Sequence[str] = ()) -> tuple[asyncio.subprocess.Process, str]:
    """The stand-in provider as a process (``prefix``: e.g. ``taskset -c 0``); its URL."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "tests.support.standin",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    match = re.search(r"listening on (\S+)", line)
    if match is None:
        raise RuntimeError(f"the stand-in did not start: {line!r}")
    return process, match.group(1)


async def start_sidecar(
    upstream: str,
    wallet_file: str | None = None,
    env: dict[str, str] | None = None,
    *,
    root: Path = ROOT,
) -> tuple[asyncio.subprocess.Process, str]:
    """A sidecar process on loopback; ``root`` is the source tree it runs (``python -m`` puts
    its working directory first on the path), so another commit's a11i can run beside this
    one."""
    port = free_port()
    variables = {
        **os.environ,
        "A11I_PORT": str(port),
        "A11I_OPENAI_BASE": upstream,
        "A11I_BUDGET_USD": "1000000",
        "A11I_LOG_LEVEL": "WARNING",
        # The embedded default: every call is a reserve and a settle in a SQLite file.
        "A11I_WALLET_FILE": wallet_file
        or str(Path(tempfile.mkdtemp(prefix="a11i-bench-")) / "w.sqlite"),
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "a11i.cli",
        "sidecar",
        cwd=root,
        env=variables,
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url + "/a11i/readyz", process, "the sidecar")
    return process, url


async def wait_ready(
    url: str, process: asyncio.subprocess.Process, what: str, within: float = 120
) -> None:
    """Once ``url`` answers below 500 (a readiness probe's 503 is not ready); an error when
    ``process`` exits first or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {within:.0f} s")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: work per call, which the scheduling noise
    of a shared machine does not inflate the way it inflates latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_call(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> float:
    started = time.perf_counter()
    async with http.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-bench"}
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return time.perf_counter() - started


async def time_to_first_byte(
    http: aiohttp.ClientSession, url: str, body: dict[str, object]
) -> float:
    started = time.perf_counter()
    async with http.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-bench"}
    ) as response:
        await response.content.readany()
        first = time.perf_counter() - started
        await response.read()
    return first


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float) -> str:
    return f"{value * 1000:.3f} ms"


async def start_floor(upstream: str, raw: bool = False) -> tuple[asyncio.subprocess.Process, str]:
    """``bench.floor_proxy`` on loopback: a11i's HTTP parts without a11i's work (``raw``: its
    bare asyncio server instead of aiohttp)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.floor_proxy",
        "--port",
        str(port),
        "--upstream",
        upstream,
        *(["--raw"] if raw else []),
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url + "/a11i/readyz", process, "the floor proxy")
    return process, url


async def main(
    calls: int,
    warmup: int,
    wallet_file: str | None,
    roots: Sequence[Path] = (ROOT,),
    floor: bool = False,
    raw_floor: bool = False,
) -> None:
    """One sidecar per source tree in ``roots`` (an older checkout beside this one compares two
    builds in the same run), each call sent in turn direct and through every sidecar (and
    through the floor proxy with ``floor``)."""
    standin, upstream = await start_standin()
    sidecars = [await start_sidecar(upstream, wallet_file, root=root) for root in roots]
    if floor:
        sidecars.append(await start_floor(upstream))
    if raw_floor:
        sidecars.append(await start_floor(upstream, raw=True))
    try:
        rest = [rss_kib(process.pid) for process, _ in sidecars]
        connector = aiohttp.TCPConnector(limit=1 + len(sidecars))
        async with aiohttp.ClientSession(connector=connector) as http:
            targets = [upstream] + [url for _, url in sidecars]
            for _ in range(warmup):
                for url in targets:
                    await timed_call(http, url, REQUEST)
            times: list[list[float]] = [[] for _ in targets]
            cpu_before = [cpu_seconds(process.pid) for process, _ in sidecars]
            for index in range(calls):
                # Rotate which goes first so no path always follows another.
                for offset in range(len(targets)):
                    which = (index + offset) % len(targets)
                    times[which].append(await timed_call(http, targets[which], REQUEST))
            cpu = [
                (cpu_seconds(process.pid) - before) / calls
                for (process, _), before in zip(sidecars, cpu_before, strict=True)
            ]
            streaming = {**REQUEST, "stream": True}
            # The floor proxy does not stream: first bytes are timed direct and through a11i.
            streamed = targets[: 1 + len(roots)]
            ttfb: list[list[float]] = [[] for _ in streamed]
            for index in range(max(calls // 4, 50)):
                for offset in range(len(streamed)):
                    which = (index + offset) % len(streamed)
                    ttfb[which].append(await time_to_first_byte(http, streamed[which], streaming))
        loaded = [rss_kib(process.pid) for process, _ in sidecars]
    finally:
        for process in [process for process, _ in sidecars] + [standin]:
            process.send_signal(signal.SIGINT)
            await process.wait()

    direct = times[0]
    print(f"# a11i sidecar overhead ({calls} non-streaming calls each way, interleaved)")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| path | p50 | p99 | mean | added p50 (paired) | added p99 | p50 ratio |")
    print("|---|---|---|---|---|---|---|")
    names = ["direct to stand-in"] + [f"through a11i ({root})" for root in roots]
    if floor:
        names.append("floor: a11i's HTTP parts, no a11i work (bench.floor_proxy)")
    if raw_floor:
        names.append("floor with a bare asyncio server (bench.floor_proxy --raw)")
    for name, values in zip(names, times, strict=True):
        added = [b - a for a, b in zip(direct, values, strict=True)]
        print(
            f"| {name} | {ms(percentile(values, 50))} | {ms(percentile(values, 99))} "
            f"| {ms(statistics.fmean(values))} | {ms(percentile(added, 50))} "
            f"| {ms(percentile(added, 99))} "
            f"| {percentile(values, 50) / percentile(direct, 50):.2f}x |"
        )
    print()
    print("targets: added p50 <= 0.5 ms, p99 <= 1.5 ms; p50 ratio <= 2.5x")
    floors = [name for name in names[1 + len(roots) :]]
    for name, work in zip(floors, cpu[len(roots) :], strict=True):
        print(f"{name}: CPU {ms(work)} per call")
    for name, values, at_rest, after, work in zip(
        names[1 : 1 + len(roots)], ttfb[1:], rest, loaded, cpu, strict=False
    ):
        print(
            f"{name}: sidecar CPU {ms(work)} per call; "
            f"streaming first byte p50 {ms(percentile(values, 50))} "
            f"(direct {ms(percentile(ttfb[0], 50))}); "
            f"RSS {at_rest / 1024:.1f} MiB at rest, {after / 1024:.1f} MiB after the run"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--wallet-file",
        help="the sidecar's A11I_WALLET_FILE (default: a new SQLite file; "
        ":memory: for the in-process wallet)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a source tree to run a sidecar from (repeatable; default: this checkout)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time bench.floor_proxy (a11i's HTTP parts without its work) in the same run",
    )
    parser.add_argument(
        "--raw-floor",
        action="store_true",
        help="also time bench.floor_proxy --raw (the same with a bare asyncio server)",
    )
    options = parser.parse_args()
    asyncio.run(
        main(
            options.calls,
            options.warmup,
            options.wallet_file,
            options.root or [ROOT],
            options.floor,
            options.raw_floor,
        )
    )
