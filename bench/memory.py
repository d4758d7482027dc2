"""Resident memory of the sidecar: at rest, then after sustained load in each dialect.

Run with ``python -m bench.memory [--calls N] [--root DIR ...]``. Starts the stand-in provider
and, for each source tree given (default: this one; pass an older checkout as well to compare
builds in one run), an ``a11i sidecar`` process with the embedded SQLite wallet, metrics and
the event ring on (the defaults). Measures its RSS from ``/proc/<pid>/status`` and what it is
made of from ``/proc/<pid>/smaps`` (heap and other anonymous memory vs. mapped files: the
interpreter, extension modules, shared libraries): after start (process start to ready is the
cold start), after N Anthropic calls, after N more OpenAI calls (gpt-4o-mini) with
``/a11i/metrics`` and ``/a11i/budget`` read every 100 calls. Every call carries a new message,
so the counter's cache fills as in a long agent loop. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.overhead import ROOT, rss_kib, start_sidecar, start_standin


@dataclass(frozen=True)
class Footprint:
    """One reading of a process's memory, in KiB."""

    rss: int
    anonymous: int
    files: dict[str, int]

    @property
    def mapped_files(self) -> int:
        return sum(self.files.values())


def footprint(pid: int) -> Footprint:
    """RSS and its parts from smaps: anonymous memory (heap, Rust allocations, thread stacks)
    and the resident pages of each mapped file."""
    files: dict[str, int] = defaultdict(int)
    anonymous = 0
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode path
            current = fields[5] if len(fields) > 5 else ""
            continue
        if fields[0] == "Rss:":
            size = int(fields[1])
            if current.startswith("/"):
                files[current] += size
            else:
                anonymous += size
    return Footprint(rss_kib(pid), anonymous, dict(files))


def openai_body(index: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 32,
        "messages": [
            {"role": "system", "content": "You are an SRE assistant for a Kubernetes cluster."},
            {"role": "user", "content": f"Pod checkout-{index} restarts every {index % 60} s."},
        ],
    }


def anthropic_body(index: int) -> dict[str, object]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "system": "You are an SRE assistant for a Kubernetes cluster.",
        "messages": [{"role": "user", "content": f"Node worker-{index} is NotReady. Why?"}],
    }


async def load(url: str, dialect: str, calls: int, concurrency: int = 8) -> None:
    path, build, headers = (
        (
            "/v1/messages",
            anthropic_body,
            {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"},
        )
        if dialect == "anthropic"
        else ("/v1/chat/completions", openai_body, {"Authorization": "Bearer sk-bench"})
    )
    queue = iter(range(calls))
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            for index in queue:
                async with http.post(url + path, json=build(index), headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{path} answered {answer.status}")
                if index % 100 == 0:
                    for own in ("/a11i/metrics", "/a11i/budget"):
                        async with http.get(url + own) as answer:
                            await answer.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


async def measure(root: Path, upstream: str, calls: int) -> list[tuple[str, Footprint]]:
    started = time.perf_counter()
    sidecar, url = await start_sidecar(upstream, env={"A11I_ANTHROPIC_BASE": upstream}, root=root)
    cold = time.perf_counter() - started
    readings: list[tuple[str, Footprint]] = []
    try:
        await asyncio.sleep(1)
        readings.append((f"at rest (ready in {cold:.2f} s)", footprint(sidecar.pid)))
        await load(url, "anthropic", calls)
        readings.append((f"after {calls} Anthropic calls", footprint(sidecar.pid)))
        await load(url, "openai", calls)
        readings.append((f"after {calls} more OpenAI calls", footprint(sidecar.pid)))
    finally:
        sidecar.send_signal(signal.SIGINT)
        await sidecar.wait()
    return readings


async def main(roots: list[Path], calls: int) -> None:
    standin, upstream = await start_standin()
    try:
        results = [(root, await measure(root, upstream, calls)) for root in roots]
    finally:
        standin.send_signal(signal.SIGINT)
        await standin.wait()
    print(f"# a11i sidecar memory ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    print()
    print("| build | when | RSS MiB | anonymous MiB | mapped files MiB |")
    print("|---|---|---|---|---|")
    for root, readings in results:
        for when, reading in readings:
            print(
                f"| {root} | {when} | **{mib(reading.rss)}** | {mib(reading.anonymous)} "
                f"| {mib(reading.mapped_files)} |"
            )
    for root, readings in results:
        last = readings[-1][1]
        print()
        print(f"largest mapped files, {root}, {readings[-1][0]}:")
        for path, size in sorted(last.files.items(), key=lambda item: -item[1])[:8]:
            print(f"  {mib(size):>6} MiB  {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="calls per dialect")
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a source tree to run the sidecar from (repeatable; default: this checkout)",
    )
    options = parser.parse_args()
    asyncio.run(main(options.root or [ROOT], options.calls))
