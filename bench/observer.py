"""What the telemetry thread spends on one call: the CPU of ``Pipeline._observe_call`` (the
call's event, metrics, spans, decision logs, its log line) per record, in-process, no network.

Run with ``python -m bench.observer --records 20000`` (add ``--root /other/checkout`` once per
tree to compare commits: each tree's a11i runs in a process of its own, interleaved, on the same
records, and the figures are that tree's). Each run builds a sidecar the way ``a11i sidecar``
does from its environment and feeds it the same realistic record (the agent turn of
``bench.overhead``, a tool result, a settled usage) through the observer path, on this thread,
scraping ``/a11i/metrics`` every ``--scrape-every`` records; the figure is this thread's CPU
(``time.thread_time``), so exporter threads do not count. ``--otlp`` points the OTLP exporters
at a closed port on loopback (a second metric reader, spans and decision logs are made; their
export fails in the background without reaching anything). Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_child(count: int, scrape_every: int, otlp: bool) -> dict[str, float]:
    """One tree's figures (runs in the tree's own process: ``a11i`` is that tree's)."""
    import logging

    from a11i.core.model import Dialect, Usage
    from a11i.core.policy import Decision, Verdict, WalletState
    from a11i.sidecar.app import events_for, wallet_for
    from a11i.sidecar.call import CallOrigin, CallRecord
    from a11i.sidecar.meter import load_meter
    from a11i.sidecar.proxy import Sidecar
    from a11i.sidecar.settings import from_env
    from bench.overhead import REQUEST

    env = {"A11I_WALLET_FILE": ":memory:", "A11I_LOG_LEVEL": "WARNING"}
    if otlp:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "A11I_CAPTURE_CONTENT": "true",
            "A11I_DECISION_LOGS": "true",
        }
    settings = from_env(env)
    logging.basicConfig(level=settings.log_level)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    meter = load_meter()
    sidecar = Sidecar(settings, meter, wallet_for(settings), events_for(settings))
    loop = asyncio.new_event_loop()
    sidecar._loop = loop  # the event ring stores from this thread; nobody waits on the loop
    plan = meter.plan(Dialect.OPENAI_CHAT, json.loads(json.dumps(REQUEST)))
    # Answers of different lengths: each call's cost (and its basis) is its own, as in real
    # traffic, where they are scrubbed afresh; more of them than the scrubbed-name cache holds.
    records = [
        CallRecord(
            plan=plan,
            verdict=Verdict(Decision.ALLOW, WalletState.GREEN, "within budget"),
            settlement=meter.settle(
                plan,
                Usage(
                    input_tokens=plan.input.tokens - index // 64 % 80,
                    output_tokens=1 + index % 64,
                ),
            ),
            status=200,
            streamed=False,
            complete=True,
            duration_s=0.004 + index % 97 / 1000,
            origin=CallOrigin(started_ns=time.time_ns()),
            output_text="The checkout pods crash-loop.",
        )
        for index in range(5000)
    ]
    assert not any(record.settlement and record.settlement.violations for record in records)
    for record in records[:200]:  # instruments' series made
        sidecar._observe_call(record)
    sidecar.metrics.exposition()
    per_record: list[float] = []
    batch = 500
    done = 0
    while done < count:
        start = time.thread_time()
        for index in range(done, done + batch):
            sidecar._observe_call(records[index % len(records)])
            if scrape_every and index % scrape_every == scrape_every - 1:
                sidecar.metrics.exposition()
        per_record.append((time.thread_time() - start) / batch)
        done += batch
    sidecar.metrics.shutdown()
    sidecar.telemetry.shutdown()
    loop.close()
    return {
        "median_us": statistics.median(per_record) * 1e6,
        "mean_us": statistics.fmean(per_record) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, interleaved")
    parser.add_argument("--scrape-every", type=int, default=0, help="0: never scraped")
    parser.add_argument("--otlp", action="store_true")
    parser.add_argument("--root", type=Path, action="append", help="a tree to run (repeatable)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        figures = run_child(options.records, options.scrape_every, options.otlp)
        print(json.dumps(figures))
        return
    roots: list[Path] = options.root or [ROOT]
    results: dict[Path, list[dict[str, float]]] = {root: [] for root in roots}
    for _ in range(options.rounds):
        for root in roots:
            args = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                f"--records={options.records}",
                f"--scrape-every={options.scrape_every}",
                *(["--otlp"] if options.otlp else []),
            ]
            env = {**os.environ, "PYTHONPATH": str(root.resolve())}
            out = subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
            results[root].append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
    mode = "OTLP on (closed port), content and decision logs" if options.otlp else "no OTLP"
    scrapes = f"a scrape every {options.scrape_every}" if options.scrape_every else "no scrape"
    print(f"# telemetry thread CPU per record ({options.records} records, {mode}, {scrapes})")
    print("| tree | median of runs (us/record) | runs |")
    print("|---|---|---|")
    for root, runs in results.items():
        medians = [run["median_us"] for run in runs]
        shown = ", ".join(f"{value:.1f}" for value in medians)
        print(f"| {root} | {statistics.median(medians):.1f} | {shown} |")


if __name__ == "__main__":
    main()
