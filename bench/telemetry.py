"""What telemetry adds to the proxy's latency: the same calls through a sidecar with telemetry off
and through one exporting traces, metrics and decision logs (content capture on, so the scrubber
reads every prompt) to a real OpenTelemetry Collector.

Run with ``make bench`` (or ``python -m bench.telemetry --calls 2000``). Needs the collector
built by ``tools/otelcol/build.sh`` (``make otelcol``). Starts the stand-in provider, the
collector and two ``a11i sidecar`` processes on loopback, then sends the same agent turn
directly, through the quiet sidecar and through the observed one, interleaved, one at a time.
With ``--baseline DIR`` (a checkout of another commit, e.g. ``git worktree add /tmp/base
<commit>``) a third sidecar runs that commit's a11i with the same telemetry settings, so a
change's cost is measured before and after in one run, on the same machine load.
Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
from pathlib import Path

import aiohttp

from bench.overhead import (
    REQUEST,
    ms,
    percentile,
    rss_kib,
    start_sidecar,
    start_standin,
    timed_call,
)
from tests.support.otelcol import OtelCollector


async def exported_spans(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(url + "/a11i/budget") as response:
        body = await response.json()
    return dict(body["telemetry"]["traces"])


async def main(calls: int, warmup: int, baseline: Path | None = None) -> None:
    with OtelCollector() as collector:
        standin, upstream = await start_standin()
        observed_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            "A11I_CAPTURE_CONTENT": "true",
            "A11I_DECISION_LOGS": "true",
            "A11I_LOG_LEVEL": "WARNING",
        }
        quiet, quiet_url = await start_sidecar(upstream, ":memory:", {"A11I_LOG_LEVEL": "WARNING"})
        observed, observed_url = await start_sidecar(upstream, ":memory:", observed_env)
        before: asyncio.subprocess.Process | None = None
        paths_extra: list[tuple[str, list[float]]] = []
        before_added: list[float] = []
        if baseline is not None:
            before, before_url = await start_sidecar(
                upstream, ":memory:", observed_env, root=baseline
            )
            paths_extra.append((before_url, before_added))
        try:
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(warmup):
                    for url in (upstream, quiet_url, observed_url, *(u for u, _ in paths_extra)):
                        await timed_call(http, url, REQUEST)
                direct: list[float] = []
                off: list[float] = []
                on: list[float] = []
                paths = [(upstream, direct), (quiet_url, off), (observed_url, on), *paths_extra]
                for index in range(calls):
                    # Rotate the order so no path always follows another.
                    shift = index % len(paths)
                    for url, sink in paths[shift:] + paths[:shift]:
                        sink.append(await timed_call(http, url, REQUEST))
            await asyncio.sleep(1.5)  # one export period: the spans of the run leave
            stats = await exported_spans(observed_url)
            rss = {"off": rss_kib(quiet.pid), "on": rss_kib(observed.pid)}
            if before is not None:
                rss["before"] = rss_kib(before.pid)
        finally:
            for process in (observed, quiet, standin, *([before] if before else [])):
                process.send_signal(signal.SIGINT)
                await process.wait()
        received = len(collector.spans())

    added_off = [b - a for a, b in zip(direct, off, strict=True)]
    added_on = [b - a for a, b in zip(direct, on, strict=True)]
    print(f"# telemetry overhead ({calls} non-streaming calls per path, interleaved)")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| sidecar | added p50 | added p99 | added mean | RSS after |")
    print("|---|---|---|---|---|")
    rows = [
        ("telemetry off (baseline)", added_off, rss["off"]),
        ("traces + metrics + logs over OTLP, content captured", added_on, rss["on"]),
    ]
    if baseline is not None:
        added_before = [b - a for a, b in zip(direct, before_added, strict=True)]
        rows.append((f"the same, a11i of {baseline}", added_before, rss["before"]))
    for name, added, kib in rows:
        print(
            f"| {name} | {ms(percentile(added, 50))} | {ms(percentile(added, 99))} "
            f"| {ms(statistics.fmean(added))} | {kib / 1024:.1f} MiB |"
        )
    print()
    ratio = percentile(added_on, 50) / max(percentile(added_off, 50), 1e-9)
    print(f"added p50 ratio on/off: {ratio:.2f}x")
    print(f"spans exported: {json.dumps(stats)}; received by the collector: {received}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--baseline", type=Path, help="a source tree of another a11i commit, run beside this one"
    )
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.warmup, options.baseline))
