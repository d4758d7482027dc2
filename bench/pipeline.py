"""a11i's own work per metered call, the network aside: CPU of the event loop's thread and of
the whole process, per call, for one or more source trees.

Run with ``python -m bench.pipeline [--calls N --rounds R] [--root DIR ...]``. Each round starts
one process per source tree (``--root``, as in ``bench.overhead``: another checkout's a11i runs
beside this one), in turn, so drift on a shared machine hits every tree alike. A process builds
a sidecar from the environment (embedded SQLite wallet, metrics and events on, as ``a11i
sidecar`` does) and runs the same chat request as ``bench.overhead`` through
``Pipeline.metered_call`` against an in-process upstream that answers with OpenAI's wire format
at once: planning, the wallet's reserve and settle, the answer's analysis, the record handed to
the telemetry thread (whose work counts in the process's figure: the run ends once it has
observed every record). What the loop's thread spends per call is what every call waits for;
thread CPU time, unlike latency, is not inflated by other processes on the machine.
Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.overhead import REQUEST

ROOT = Path(__file__).resolve().parent.parent

#: The stand-in's answer to REQUEST, as OpenAI writes it.
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1765000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "checkout-7d9f crash-loops: its readiness probe fails since 09:00.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 577,
        "completion_tokens": 18,
        "total_tokens": 595,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_bench",
}

#: Runs in the measured tree (its working directory), so it imports that tree's a11i.
WORKER = r"""
import asyncio, json, os, sys, time
from multidict import CIMultiDict
from a11i.core.routes import route
from a11i.sidecar.app import sidecar_app
from a11i.sidecar.pipeline import Inbound

calls, warmup = int(sys.argv[1]), int(sys.argv[2])
raw, answer = sys.argv[3].encode(), sys.argv[4].encode()
headers = CIMultiDict({
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-bench",
    "User-Agent": "OpenAI/Python 2.8.1",
})


class Answer:
    status = 200
    content_type = "application/json"

    def header_items(self):
        return [("Content-Type", "application/json"), ("x-request-id", "req_bench")]

    async def read(self):
        return answer

    def chunks(self):
        raise NotImplementedError

    async def close(self):
        pass


class Upstream:
    async def post(self, url, headers, body):
        return Answer()


async def main():
    _settings, sidecar, _app = sidecar_app(os.environ)
    await sidecar.open()
    chat = route("POST", "/v1/chat/completions")
    upstream = Upstream()

    async def one():
        inbound = Inbound(
            route=chat, url="http://127.0.0.1:9/v1/chat/completions",
            base="http://127.0.0.1:9", headers=headers, body=raw,
            started=time.perf_counter(), started_ns=time.time_ns(), hung_up=lambda: False,
        )
        result = await sidecar.metered_call(inbound, upstream)
        assert result.status == 200, result.body
        # What a server does between calls: the loop runs the callbacks the call scheduled
        # for after its answer (its record), which nothing awaited here would otherwise run.
        await asyncio.sleep(0)

    for _ in range(warmup):
        await one()
    await asyncio.sleep(0.2)  # the telemetry thread catches up
    thread, process = time.thread_time(), time.process_time()
    for _ in range(calls):
        await one()
    thread = time.thread_time() - thread
    # Closing waits for the telemetry thread to observe every record handed to it: its work
    # counts in the process's figure however far behind the loop it ran.
    await sidecar.close()
    process = time.process_time() - process
    print(json.dumps({"loop": thread / calls, "process": process / calls}))


asyncio.run(main())
"""


def run(root: Path, calls: int, warmup: int) -> dict[str, float]:
    """One process of ``root``'s a11i: the loop's and the process's CPU per call."""
    env = {
        **os.environ,
        "A11I_OPENAI_BASE": "http://127.0.0.1:9",
        "A11I_BUDGET_USD": "1000000",
        "A11I_LOG_LEVEL": "WARNING",
        "A11I_WALLET_FILE": str(Path(tempfile.mkdtemp(prefix="a11i-bench-")) / "w.sqlite"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            str(calls),
            str(warmup),
            json.dumps(REQUEST),
            json.dumps(ANSWER),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{root}: {done.stderr.strip()[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def main(calls: int, warmup: int, rounds: int, roots: Sequence[Path]) -> None:
    results: list[list[dict[str, float]]] = [[] for _ in roots]
    for index in range(rounds):
        # Rotate which tree goes first so that none always follows another.
        for offset in range(len(roots)):
            which = (index + offset) % len(roots)
            results[which].append(run(roots[which], calls, warmup))
    print(f"# a11i's work per metered call, network aside ({rounds} rounds of {calls} calls)")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| tree | event loop CPU per call (median) | min | ratio | process CPU per call |")
    print("|---|---|---|---|---|")
    base = statistics.median(figures["loop"] for figures in results[0])
    for root, figures in zip(roots, results, strict=True):
        loop = [f["loop"] for f in figures]
        process = [f["process"] for f in figures]
        print(
            f"| {root} | {us(statistics.median(loop))} | {us(min(loop))} "
            f"| {statistics.median(loop) / base:.2f}x | {us(statistics.median(process))} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a source tree to measure (repeatable; default: this checkout; the first is the "
        "baseline of the ratios)",
    )
    options = parser.parse_args()
    main(options.calls, options.warmup, options.rounds, options.root or [ROOT])
