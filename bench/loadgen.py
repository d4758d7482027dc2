"""Load generation and the statistics of a benchmark: open loop, closed loop, percentiles.

Two ways of loading a target, both over one aiohttp session per target:

- **closed loop** (fixed concurrency): N workers, each starts a call when its previous one ends.
  Measures what a target sustains; latency under it is inflated by queueing by construction.
- **open loop** (fixed rate): calls start on a schedule fixed before the run, whether or not
  earlier calls have finished, and each latency is taken from the call's *scheduled* start, so a
  target that falls behind is charged for the wait (no coordinated omission).

The pure parts (percentiles, the pacing schedule, the interleaving order, parsing
``/proc/<pid>/stat``) take and return plain values and are unit-tested
(``tests/unit/bench/test_loadgen.py``); the rest drives the network. Nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: One call against a target: returns when the answer is complete, raises on failure.
Call = Callable[[], Awaitable[object]]


# -- statistics (pure) ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default), so p50 of an even count is the mean of the middle two."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """Latencies of one path, in seconds."""

    count: int
    p50: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p99=percentile(values, 99),
            mean=math.fsum(values) / len(values),
        )


def paired_differences(baseline: Sequence[float], other: Sequence[float]) -> list[float]:
    """What ``other`` added over ``baseline``, call by call (both measured in the same round)."""
    if len(baseline) != len(other):
        raise ValueError(f"{len(baseline)} baseline samples but {len(other)} others")
    return [b - a for a, b in zip(baseline, other, strict=True)]


# -- pacing and order (pure) ------------------------------------------------------------------


def open_loop_schedule(rate: float, seconds: float) -> list[float]:
    """Start offsets (seconds from the run's start) of ``rate`` calls per second, evenly spaced,
    for ``seconds``: call i starts at i / rate. Fixed before the run, so a slow answer never
    delays the next start."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    count = math.floor(rate * seconds + 1e-9)
    return [index / rate for index in range(count)]


def interleaved_order(targets: Sequence[T], round_index: int) -> list[T]:
    """The targets of one round, rotated by the round's index: over len(targets) rounds every
    target is first, second, ... equally often, so neither drift of a shared machine nor the
    warm cache left by the previous call favours one of them."""
    if not targets:
        return []
    shift = round_index % len(targets)
    return [*targets[shift:], *targets[:shift]]


# -- processes (read from /proc) --------------------------------------------------------------


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/<pid>/stat``. The command name (field
    2) is in parentheses and may hold spaces and parentheses, so fields are counted from the
    last ``)``: utime and stime are fields 14 and 15 of proc(5)."""
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return int(rest[14 - 3]) + int(rest[15 - 3])


def parse_status_rss_kib(status: str) -> int:
    """VmRSS in KiB from the text of ``/proc/<pid>/status`` (0 when absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a gateway may run workers or a wrapper)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                found.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by the process and its live descendants."""
    ticks = 0
    for member in process_tree(pid):
        try:
            ticks += parse_stat_cpu_ticks(Path(f"/proc/{member}/stat").read_text())
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of the process and its live descendants, KiB."""
    total = 0
    for member in process_tree(pid):
        try:
            total += parse_status_rss_kib(Path(f"/proc/{member}/status").read_text())
        except OSError:
            continue
    return total


# -- load -------------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadResult:
    """What one load run produced."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    #: Open loop only: how late calls started against their schedule, seconds.
    start_lag: list[float] = field(default_factory=list)
    #: Resident memory of the target, sampled during the run, KiB (when a pid was given).
    rss_peak_kib: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


async def _sample_rss(pid: int | None, result: LoadResult, stop: asyncio.Event) -> None:
    while pid is not None and not stop.is_set():
        result.rss_peak_kib = max(result.rss_peak_kib, rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def closed_loop(
    call: Call, concurrency: int, seconds: float, *, pid: int | None = None
) -> LoadResult:
    """``concurrency`` workers calling back to back for ``seconds``."""
    result = LoadResult(seconds=0.0)
    deadline = time.perf_counter() + seconds
    stop = asyncio.Event()

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except Exception:  # a failed call is a figure, not a crash
                result.errors += 1
                continue
            result.latencies.append(time.perf_counter() - started)

    sampler = asyncio.create_task(_sample_rss(pid, result, stop))
    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        result.seconds = time.perf_counter() - began
        stop.set()
        await sampler
    return result


async def open_loop(
    call: Call, rate: float, seconds: float, *, pid: int | None = None
) -> LoadResult:
    """Calls started at ``rate`` per second for ``seconds`` on a fixed schedule; each latency
    counts from the scheduled start. Waits for the calls in flight at the end."""
    result = LoadResult(seconds=0.0)
    schedule = open_loop_schedule(rate, seconds)
    stop = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        result.start_lag.append(time.perf_counter() - scheduled)
        try:
            await call()
        except Exception:  # a failed call is a figure, not a crash
            result.errors += 1
            return
        result.latencies.append(time.perf_counter() - scheduled)

    sampler = asyncio.create_task(_sample_rss(pid, result, stop))
    began = time.perf_counter()
    try:
        for offset in schedule:
            scheduled = began + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        result.seconds = time.perf_counter() - began
        stop.set()
        await sampler
    return result
