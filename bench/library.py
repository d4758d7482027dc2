"""Per-call overhead of library mode: the official openai SDK uninstrumented, instrumented
in-process (``a11i.instrument()``), and through an ``a11i sidecar`` process, in one run.

Run with ``python -m bench.library --calls 1000``. Starts the stand-in provider and a sidecar as
separate processes on loopback, instruments this process (the embedded SQLite wallet in a
temporary file, as the sidecar's), then sends the same chat request with three sync
``openai.OpenAI`` clients in turn (interleaved, so drift on a shared machine hits all alike), one
at a time over keep-alive connections: the plain one and the sidecar's one are left unmetered
(``a11i.uninstrument_client``), the third is metered in-process. Prints p50/p99 of each path, the
paired added latency over the plain SDK and the ratios, the time to the first streamed chunk,
and this process's CPU per call with and without library mode. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import openai

import a11i
from bench.overhead import REQUEST, ms, percentile, start_sidecar, start_standin


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-bench", max_retries=0)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def chat(sdk: openai.OpenAI) -> Callable[[], object]:
    def call() -> object:
        return sdk.chat.completions.create(**REQUEST)  # type: ignore[call-overload]

    return call


def first_chunk(sdk: openai.OpenAI) -> float:
    started = time.perf_counter()
    stream = sdk.chat.completions.create(**{**REQUEST, "stream": True})  # type: ignore[call-overload]
    next(iter(stream))
    first = time.perf_counter() - started
    for _ in stream:
        pass
    return first


def run(calls: int, warmup: int, standin: str, sidecar: str) -> None:
    plain, through_sidecar = client(standin), client(sidecar)
    wallet = Path(tempfile.mkdtemp(prefix="a11i-bench-")) / "library.sqlite"
    a11i.instrument(
        env={**os.environ, "A11I_WALLET_FILE": str(wallet), "A11I_LOG_LEVEL": "WARNING"},
        budget_usd="1000000",
    )
    try:
        a11i.uninstrument_client(plain)
        a11i.uninstrument_client(through_sidecar)
        in_process = client(standin)
        paths = {
            "plain SDK (uninstrumented)": chat(plain),
            "a11i.instrument() in-process": chat(in_process),
            "through an a11i sidecar": chat(through_sidecar),
        }
        for _ in range(warmup):
            for call in paths.values():
                call()
        times: dict[str, list[float]] = {name: [] for name in paths}
        cpus: dict[str, float] = dict.fromkeys(paths, 0.0)
        for _ in range(calls):
            for name, call in paths.items():
                before = cpu()
                times[name].append(timed(call))
                cpus[name] += cpu() - before
        ttfb = {
            name: statistics.median(first_chunk(sdk) for _ in range(max(calls // 10, 20)))
            for name, sdk in (
                ("plain SDK (uninstrumented)", plain),
                ("a11i.instrument() in-process", in_process),
                ("through an a11i sidecar", through_sidecar),
            )
        }
        spent = a11i.budget()["spent_usd"]
    finally:
        a11i.uninstrument()
    report(calls, times, cpus, ttfb, spent)


def report(
    calls: int,
    times: dict[str, list[float]],
    cpus: dict[str, float],
    ttfb: dict[str, float],
    spent: object,
) -> None:
    baseline_name = next(iter(times))
    baseline = times[baseline_name]
    base_p50 = percentile(baseline, 50)
    print(f"# a11i library mode overhead ({calls} non-streaming calls per path, interleaved)")
    print(f"machine: {os.cpu_count()} cores")
    print()
    print(
        "| path | p50 | p99 | mean | added p50 (paired) | added p99 | p50 ratio "
        "| client CPU per call | first chunk p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, values in times.items():
        added = [value - base for value, base in zip(values, baseline, strict=True)]
        print(
            f"| {name} | {ms(percentile(values, 50))} | {ms(percentile(values, 99))} "
            f"| {ms(statistics.fmean(values))} | {ms(percentile(added, 50))} "
            f"| {ms(percentile(added, 99))} | {percentile(values, 50) / base_p50:.2f}x "
            f"| {ms(cpus[name] / len(values))} | {ms(ttfb[name])} |"
        )
    print()
    print(
        "client CPU: this process's user+system time per call (library mode's pipeline runs "
        "here; the sidecar's own CPU is not in it)."
    )
    print(f"in-process wallet spent: {spent} USD")


async def main(calls: int, warmup: int) -> None:
    standin_process, standin = await start_standin()
    sidecar_process, sidecar = await start_sidecar(standin)
    try:
        await asyncio.to_thread(run, calls, warmup, standin, sidecar)
    finally:
        for process in (sidecar_process, standin_process):
            process.terminate()
            await process.wait()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    asyncio.run(main(options.calls, options.warmup))
