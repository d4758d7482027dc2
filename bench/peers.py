"""a11i against its peers, LiteLLM's proxy and Portkey's gateway, in one run (issue 9).

Run ``bash bench/peers_setup.sh`` once (installs the peers outside the project's venv), then
``python -m bench.peers [--quick]``. Starts the stand-in provider and each gateway as separate
processes on loopback, every gateway pinned to core 1 (``taskset -c 1``) and this load generator
and the stand-in to core 0, and measures, with the same requests in the same order:

1. added latency p50/p99 of non-streaming calls, one at a time, interleaved round by round
   (direct, a11i, LiteLLM, Portkey, rotated each round so drift hits all alike), paired with the
   direct call of the same round;
2. time to the first streamed token, added over direct (same interleaving);
3. sustained calls per second on one core (closed loop), latency at a fixed rate (open loop),
   RSS at rest and under load, CPU seconds of the gateway process per call (/proc/<pid>/stat);
4. accuracy: for a corpus of requests, each gateway's cost for the call against the truth
   (the usage the provider reported x the list price) and a11i's pre-call projection;
5. budget overspend: 100 concurrent calls against a limit that fits 20.

Writes ``bench/results/peers.md`` (the table) and ``bench/results/peers.png`` (the chart, drawn by
matplotlib in the peers' venv). Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.loadgen import (
    LoadResult,
    Summary,
    closed_loop,
    cpu_seconds,
    interleaved_order,
    open_loop,
    paired_differences,
    rss_kib,
)
from bench.overhead import REQUEST, free_port, wait_ready
from bench.overhead import start_standin as standin_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEERS = Path(os.environ.get("A11I_CACHE", Path.home() / ".cache" / "a11i")) / "peers"
LITELLM_PYTHON = PEERS / "litellm" / "bin" / "python"
PORTKEY_SERVER = (
    PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
#: The gateways' core and the load generator's (with the stand-in): a gateway never competes
#: with the load it is measured under.
GATEWAY_CORE = "1"
LOAD_CORE = "0"
KEY = "sk-bench"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"
#: Models of the accuracy corpus (and of the LiteLLM model list).
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o3-mini", "gpt-5-mini")


@dataclass(frozen=True, slots=True)
class Profile:
    rounds: int
    streaming_rounds: int
    warmup: int
    concurrency: int
    seconds: float
    rate: float


QUICK = Profile(rounds=300, streaming_rounds=100, warmup=30, concurrency=16, seconds=4, rate=50)
FULL = Profile(rounds=2000, streaming_rounds=500, warmup=100, concurrency=32, seconds=10, rate=50)


# -- processes --------------------------------------------------------------------------------


@dataclass
class Gateway:
    """One target of the run: how to reach it and what to add to each request."""

    name: str
    url: str
    process: asyncio.subprocess.Process | None
    headers: dict[str, str] = field(default_factory=dict)
    version: str = ""
    log: Path | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


async def spawn(
    argv: list[str], core: str, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> asyncio.subprocess.Process:
    handle = log.open("wb")
    return await asyncio.create_subprocess_exec(
        "taskset",
        "-c",
        core,
        *argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


async def start_standin() -> Gateway:
    process, url = await standin_process(("taskset", "-c", LOAD_CORE))
    return Gateway("direct (stand-in)", url, process)


async def start_a11i(
    upstream: str, folder: Path, budget_usd: str = "1000000", name: str = "a11i"
) -> Gateway:
    port = free_port()
    log = folder / f"{name}.log"
    process = await spawn(
        [sys.executable, "-m", "a11i.cli", "sidecar"],
        GATEWAY_CORE,
        {
            "A11I_PORT": str(port),
            "A11I_OPENAI_BASE": upstream,
            "A11I_BUDGET_USD": budget_usd,
            "A11I_LOG_LEVEL": "WARNING",
            # The default deployment: the embedded SQLite wallet, metrics and events on.
            "A11I_WALLET_FILE": str(folder / f"{name}-wallet.sqlite"),
        },
        log,
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url + "/a11i/readyz", process, "a11i")
    from importlib.metadata import version

    return Gateway("a11i sidecar", url, process, version=f"a11i {version('a11i')}", log=log)


async def start_litellm(upstream: str, folder: Path) -> Gateway:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream + "/v1",
                    "api_key": KEY,
                },
            }
            for model in MODELS
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"drop_params": False, "telemetry": False},
    }
    path = folder / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    log = folder / "litellm.log"
    process = await spawn(
        [
            str(LITELLM_PYTHON),
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        GATEWAY_CORE,
        {
            # Prices from the copy shipped in the package: no fetch from the internet.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_ADMIN_UI": "True",
        },
        log,
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url + "/health/liveliness", process, "LiteLLM proxy", within=180)
    version = subprocess.run(  # noqa: ASYNC221 - once, before anything is measured
        [str(LITELLM_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return Gateway(
        "LiteLLM proxy",
        url,
        process,
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        version=f"litellm[proxy] {version}",
        log=log,
    )


async def start_portkey(upstream: str, folder: Path) -> Gateway:
    port = free_port()
    log = folder / "portkey.log"
    process = await spawn(
        ["node", str(PORTKEY_SERVER), f"--port={port}", "--headless"],
        GATEWAY_CORE,
        {"NODE_ENV": "production"},
        log,
        cwd=PORTKEY_SERVER.parent,
    )
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url + "/", process, "Portkey gateway")
    package = json.loads((PORTKEY_SERVER.parent.parent / "package.json").read_text())
    return Gateway(
        "Portkey gateway",
        url,
        process,
        headers={"x-portkey-provider": "openai", "x-portkey-custom-host": upstream + "/v1"},
        version=f"@portkey-ai/gateway {package['version']} (node {platform_node()})",
        log=log,
    )


def platform_node() -> str:
    found = shutil.which("node")
    if not found:
        return "?"
    return subprocess.run(
        [found, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()


async def stop(gateway: Gateway) -> None:
    process = gateway.process
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()


# -- calls ------------------------------------------------------------------------------------


def call_headers(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **gateway.headers}


async def post_chat(
    http: aiohttp.ClientSession, gateway: Gateway, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    async with http.post(
        gateway.url + "/v1/chat/completions", json=body, headers=call_headers(gateway)
    ) as response:
        payload = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{gateway.name} answered {response.status}: {payload[:300]!r}")
        return json.loads(payload), {k.lower(): v for k, v in response.headers.items()}


async def timed_call(http: aiohttp.ClientSession, gateway: Gateway, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with http.post(
        gateway.url + "/v1/chat/completions", json=body, headers=call_headers(gateway)
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{gateway.name} answered {response.status}")
    return time.perf_counter() - started


async def time_to_first_token(
    http: aiohttp.ClientSession, gateway: Gateway, body: dict[str, Any]
) -> float:
    """Seconds until the first SSE chunk that carries answer text (not the role-only chunk)."""
    started = time.perf_counter()
    first: float | None = None
    async with http.post(
        gateway.url + "/v1/chat/completions", json=body, headers=call_headers(gateway)
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"{gateway.name} answered {response.status}")
        async for raw in response.content:
            if first is not None:
                continue  # drain the rest so the connection is reused
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{gateway.name} streamed no content")
    return first


# -- machine ----------------------------------------------------------------------------------


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


def describe_machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpu": f"{os.cpu_count()} cores, {model}",
        "memory": memory,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "uptime": subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def load_note() -> str:
    one, five, _ = load_average()
    cores = os.cpu_count() or 1
    if one > 0.5 * cores:
        return (
            f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {cores} cores: "
            "HIGH, other work is running; figures are noisy"
        )
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {cores} cores: quiet"


# -- phases -----------------------------------------------------------------------------------


async def latency_phase(
    targets: list[Gateway],
    rounds: int,
    warmup: int,
    body: dict[str, Any],
    measure: Callable[[aiohttp.ClientSession, Gateway, dict[str, Any]], Awaitable[float]],
) -> dict[str, list[float]]:
    """One call per target per round, rotated each round; one keep-alive connection each."""
    sessions = {
        t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for t in targets
    }
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for index in range(warmup + rounds):
            for target in interleaved_order(targets, index):
                value = await measure(sessions[target.name], target, body)
                if index >= warmup:
                    samples[target.name].append(value)
    finally:
        for session in sessions.values():
            await session.close()
    return samples


@dataclass
class LoadFigures:
    closed: LoadResult
    opened: LoadResult
    cpu_per_call_ms: float | None
    rss_rest_kib: int | None


async def load_phase(target: Gateway, profile: Profile) -> LoadFigures:
    connector = aiohttp.TCPConnector(limit=max(profile.concurrency, 256))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call() -> None:
            async with http.post(
                target.url + "/v1/chat/completions", json=REQUEST, headers=call_headers(target)
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(str(response.status))

        rest = rss_kib(target.pid) if target.pid is not None else None
        cpu_before = cpu_seconds(target.pid) if target.pid is not None else 0.0
        closed = await closed_loop(call, profile.concurrency, profile.seconds, pid=target.pid)
        cpu_after = cpu_seconds(target.pid) if target.pid is not None else 0.0
        await asyncio.sleep(0.5)
        opened = await open_loop(call, profile.rate, profile.seconds, pid=target.pid)
    cpu_ms = None
    if target.pid is not None and closed.completed:
        cpu_ms = (cpu_after - cpu_before) / closed.completed * 1000
    return LoadFigures(closed, opened, cpu_ms, rest)


# -- accuracy ---------------------------------------------------------------------------------


def list_prices() -> dict[str, dict[str, Decimal]]:
    """USD per token from the built-in card's list prices, read here from the YAML directly (not
    through a11i's pricing code: this is the truth a11i is checked against)."""
    card = yaml.safe_load((ROOT / "a11i" / "sidecar" / "data" / "rate_card.yaml").read_text())
    prices: dict[str, dict[str, Decimal]] = {}
    for model in MODELS:
        entry = card["models"][model]
        mtok = Decimal(1_000_000)
        prices[model] = {
            "input": Decimal(str(entry["input_per_mtok"])) / mtok,
            "cached": Decimal(str(entry.get("cached_input_per_mtok", entry["input_per_mtok"])))
            / mtok,
            "output": Decimal(str(entry["output_per_mtok"])) / mtok,
        }
    return prices


def litellm_prices() -> dict[str, dict[str, Decimal]]:
    """The per-token prices LiteLLM's shipped cost map states for the same models."""
    found = list(
        (PEERS / "litellm" / "lib").glob(
            "python3*/site-packages/litellm/model_prices_and_context_window_backup.json"
        )
    )
    if not found:
        return {}
    data = json.loads(found[0].read_text())
    prices: dict[str, dict[str, Decimal]] = {}
    for model in MODELS:
        entry = data.get(model)
        if entry:
            prices[model] = {
                "input": Decimal(str(entry["input_cost_per_token"])),
                "cached": Decimal(
                    str(entry.get("cache_read_input_token_cost", entry["input_cost_per_token"]))
                ),
                "output": Decimal(str(entry["output_cost_per_token"])),
            }
    return prices


def true_cost(usage: dict[str, Any], price: dict[str, Decimal]) -> Decimal:
    prompt = int(usage["prompt_tokens"])
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    completion = int(usage["completion_tokens"])
    return (
        (prompt - cached) * price["input"] + cached * price["cached"] + completion * price["output"]
    )


def corpus() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, request, stand-in knobs): models x answer lengths x caching x tools x caps."""
    history: list[Any] = list(REQUEST["messages"])  # type: ignore[call-overload]
    long_user = {"role": "user", "content": "Summarise the incident timeline. " * 300}
    items: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for model in MODELS:
        items.append(
            (f"{model} short", {"model": model, "max_tokens": 64, "messages": history[:2]}, {})
        )
        items.append((f"{model} tools+history", {**REQUEST, "model": model}, {"words": 40}))
        items.append(
            (
                f"{model} long, cached",
                {"model": model, "max_tokens": 512, "messages": [history[0], long_user]},
                {"words": 300, "cached_tokens": 1024},
            )
        )
        items.append((f"{model} no cap", {"model": model, "messages": history[:2]}, {"words": 120}))
    items.append(
        (
            "o3-mini reasoning",
            {"model": "o3-mini", "max_completion_tokens": 2048, "messages": history[:2]},
            {"words": 50, "reasoning_tokens": 700},
        )
    )
    return items


async def accuracy_phase(standin: Gateway, gateways: list[Gateway]) -> dict[str, Any]:
    prices = list_prices()
    peer_prices = litellm_prices()
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for label, body, knobs in corpus():
            for gateway in gateways:
                async with http.post(
                    standin.url + "/_standin/config", json={**knobs, "times": 1}
                ) as response:
                    response.raise_for_status()
                answer, headers = await post_chat(http, gateway, body)
                model = body["model"]
                truth = true_cost(answer["usage"], prices[model])
                reported: Decimal | None = None
                projection: Decimal | None = None
                if gateway.name.startswith("a11i") and "x-a11i-cost-usd" in headers:
                    reported = Decimal(headers["x-a11i-cost-usd"])
                    projection = Decimal(headers["x-a11i-projected-cost-usd"])
                elif gateway.name.startswith("LiteLLM") and "x-litellm-response-cost" in headers:
                    reported = Decimal(headers["x-litellm-response-cost"])
                cost_headers = sorted(k for k in headers if "cost" in k or "price" in k)
                rows.append(
                    {
                        "label": label,
                        "gateway": gateway.name,
                        "truth": truth,
                        "reported": reported,
                        "projection": projection,
                        "usage": answer["usage"],
                        "cost_headers": cost_headers,
                        "truth_at_peer_prices": true_cost(answer["usage"], peer_prices[model])
                        if model in peer_prices
                        else None,
                    }
                )
        async with http.delete(standin.url + "/_standin/config"):
            pass
    return {"rows": rows, "peer_prices": peer_prices, "prices": prices}


# -- budget -----------------------------------------------------------------------------------


async def budget_phase(
    upstream: Gateway, folder: Path, calls: int = 100, fits: int = 20
) -> dict[str, Any]:
    """a11i with a limit that fits ``fits`` calls, ``calls`` sent at once."""
    body = {**REQUEST, "max_tokens": 5}  # the stand-in answers 5 words: projection == cost
    direct_answer: dict[str, Any]
    async with aiohttp.ClientSession() as http:
        direct_answer, _ = await post_chat(http, upstream, body)
    per_call = true_cost(direct_answer["usage"], list_prices()["gpt-4o-mini"])
    results: dict[str, Any] = {
        "per_call": per_call,
        "limit": per_call * fits,
        "calls": calls,
        "fits": fits,
        "variants": [],
    }
    for label, cap in (
        ("max_tokens = the answer (projection = cost)", 5),
        ("max_tokens 64 (projection > cost)", 64),
    ):
        limit = per_call * fits
        sidecar = await start_a11i(
            upstream.url, folder, budget_usd=str(limit), name=f"a11i-budget-{cap}"
        )
        try:
            connector = aiohttp.TCPConnector(limit=calls)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def one(target: Gateway = sidecar, cap: int = cap) -> int:
                    async with http.post(
                        target.url + "/v1/chat/completions",
                        json={**REQUEST, "max_tokens": cap},
                        headers=call_headers(target),
                    ) as response:
                        await response.read()
                        return response.status

                statuses = await asyncio.gather(*(one() for _ in range(calls)))
                async with http.get(sidecar.url + "/a11i/budget") as response:
                    budget = await response.json()
        finally:
            await stop(sidecar)
        spent = Decimal(str(_find(budget, "spent_usd") or _find(budget, "spent") or "0"))
        results["variants"].append(
            {
                "label": label,
                "admitted": statuses.count(200),
                "refused": sum(1 for s in statuses if s == 402),
                "other": sum(1 for s in statuses if s not in (200, 402)),
                "spent": spent,
                "limit": limit,
                "budget": budget,
            }
        )
    return results


def _find(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find(value, key)
            if found is not None:
                return found
    if isinstance(data, list):
        for value in data:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def litellm_budget_feasibility() -> str:
    """Why LiteLLM's key budgets cannot be measured here (checked, not assumed)."""
    probe = subprocess.run(
        [str(LITELLM_PYTHON), "-c", "import prisma"], capture_output=True, text=True, check=False
    )
    has_prisma = probe.returncode == 0
    has_postgres = shutil.which("postgres") is not None or shutil.which("pg_ctl") is not None
    return (
        f"prisma client installed in the peers' venv: {'yes' if has_prisma else 'no'}; "
        f"a PostgreSQL server on this machine: {'yes' if has_postgres else 'no'}"
    )


# -- profile ----------------------------------------------------------------------------------


async def profile_a11i(sidecar: Gateway, profile: Profile, folder: Path) -> dict[str, Any]:
    """Sample the sidecar with py-spy under closed-loop load: where its CPU goes, by package (the
    frame on top of the stack) and by a11i function (inclusive)."""
    py_spy = PEERS / "litellm" / "bin" / "py-spy"
    if not py_spy.exists() or sidecar.pid is None:
        return {}
    out = folder / "a11i.pyspy.txt"
    seconds = max(3, int(profile.seconds))
    spy = await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--pid",
        str(sidecar.pid),
        "--duration",
        str(seconds),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    connector = aiohttp.TCPConnector(limit=profile.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call() -> None:
            async with http.post(
                sidecar.url + "/v1/chat/completions", json=REQUEST, headers=call_headers(sidecar)
            ) as response:
                await response.read()

        load = await closed_loop(call, profile.concurrency, seconds + 1)
    await spy.wait()
    if not out.exists():
        return {}
    return {**summarise_profile(out.read_text()), "calls": load.completed, "seconds": seconds}


def summarise_profile(raw: str) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> shares of samples by package and by a11i function."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.strip().rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            self_time["(native / no Python frame)"] = (
                self_time.get("(native / no Python frame)", 0) + count
            )
            continue
        leaf = _frame_parts(frames[-1])
        package = leaf[0] if leaf else "?"
        self_time[package] = self_time.get(package, 0) + count
        seen: set[str] = set()
        for frame in frames:
            parts = _frame_parts(frame)
            if parts and parts[0].startswith("sidecar.") and parts[0] != "a11i.cli":
                name = f"{parts[0]}.{parts[1]}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] = inclusive.get(name, 0) + count
    if total == 0:
        return {}
    by_package = sorted(((k, v / total) for k, v in self_time.items()), key=lambda kv: -kv[1])
    by_function = sorted(((k, v / total) for k, v in inclusive.items()), key=lambda kv: -kv[1])
    return {"samples": total, "by_package": by_package[:12], "by_function": by_function[:16]}


def _frame_parts(frame: str) -> tuple[str, str] | None:
    """``function (path/to/module.py:line)`` -> (package or ``sidecar.module``, function)."""
    match = re.match(r"(.+?) \((.+?):\d+\)$", frame.strip())
    if match is None:
        return None
    function, path = match.groups()
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if "sidecar" in parts:
        index = parts.index("sidecar")
        return "sidecar." + ".".join(parts[index + 1 :]).removesuffix(".py"), function
    head = parts[0].removesuffix(".py")
    # py-spy names a frame by the shortest path under sys.path; the OpenTelemetry SDK is a
    # namespace package, so its frames come out as "metrics/..." and "attributes/...".
    return _SHORT_NAMES.get(head, head), function


_SHORT_NAMES = {
    "metrics": "opentelemetry-sdk (metrics)",
    "attributes": "opentelemetry (attributes)",
}


# -- report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def render(data: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    machine = data["machine"]
    add(f"# a11i against LiteLLM proxy and Portkey gateway ({data['mode']} run, {data['date']})")
    add("")
    add(
        "Generated by `python -m bench.peers"
        + (" --quick" if data["mode"] == "quick" else "")
        + "`; do not edit by hand."
    )
    add("")
    add(
        f"- machine: {machine['cpu']}, {machine['memory']} RAM, Linux {machine['kernel']}, Python "
        f"{machine['python']}"
    )
    add(f"- before the run: `{machine['uptime']}` — {data['load_before']}")
    add(f"- after the run: {data['load_after']}")
    add(
        "- each gateway pinned to core 1 (`taskset -c 1`); the load generator and the stand-in "
        "provider "
        "on core 0"
    )
    add("- versions: " + "; ".join(g for g in data["versions"]))
    add(
        "- a11i runs as deployed by default: embedded SQLite wallet, metrics and events "
        "on. LiteLLM: no database, master key, `LITELLM_LOCAL_MODEL_COST_MAP=True`, 1 "
        "worker. Portkey: `--headless`, `NODE_ENV=production`, provider `openai` with "
        "`x-portkey-custom-host` pointing at the stand-in."
    )
    add(
        f"- latency: {data['rounds']} non-streaming and {data['streaming_rounds']} streaming "
        "rounds, one call per target per round, order rotated each round, one keep-alive "
        "connection per target; added = paired difference with the direct call of the same round"
    )
    p = data["profile"]
    add(
        f"- load: closed loop {p['concurrency']} in flight for {p['seconds']:g} s; open "
        f"loop {p['rate']:g} calls/s for {p['seconds']:g} s (latency from each call's "
        "scheduled start)"
    )
    add("")
    add("## Figures")
    add("")
    names = [g for g in data["gateways"]]
    add("| figure | " + " | ".join(names) + " | best |")
    add("|---|" + "---|" * len(names) + "---|")

    def row(
        label: str,
        values: dict[str, float | None],
        fmt: Callable[[float], str],
        lower_better: bool = True,
    ) -> None:
        present = {k: v for k, v in values.items() if v is not None}
        best = (
            min(present, key=lambda k: present[k])
            if lower_better
            else max(present, key=lambda k: present[k])
        )
        cells = []
        for name in names:
            value = values.get(name)
            text = "n/a" if value is None else fmt(value)
            cells.append(f"**{text}**" if name == best and len(present) > 1 else text)
        verdict = best if best == names[0] else f"{best}: **a11i behind**"
        add(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")

    figures = data["figures"]
    row("added latency p50 (non-streaming)", {n: figures[n]["added_p50"] for n in names}, ms)
    row("added latency p99 (non-streaming)", {n: figures[n]["added_p99"] for n in names}, ms)
    row(
        "added time to first token p50 (streaming)",
        {n: figures[n]["ttft_added_p50"] for n in names},
        ms,
    )
    row(
        "added time to first token p99 (streaming)",
        {n: figures[n]["ttft_added_p99"] for n in names},
        ms,
    )
    row(
        "sustained calls/s on one core (closed loop)",
        {n: figures[n]["calls_per_s"] for n in names},
        lambda v: f"{v:,.0f}",
        lower_better=False,
    )
    row(
        f"latency p50 at {p['rate']:g} calls/s (open loop)",
        {n: figures[n]["open_p50"] for n in names},
        ms,
    )
    row(
        f"latency p99 at {p['rate']:g} calls/s (open loop)",
        {n: figures[n]["open_p99"] for n in names},
        ms,
    )
    row(
        "CPU per call (gateway process)",
        {n: figures[n]["cpu_ms"] for n in names},
        lambda v: f"{v:.3f} ms",
    )
    row(
        "RSS at rest (after warm-up)",
        {n: figures[n]["rss_rest_mib"] for n in names},
        lambda v: f"{v:.0f} MiB",
    )
    row(
        "RSS under load (peak)",
        {n: figures[n]["rss_load_mib"] for n in names},
        lambda v: f"{v:.0f} MiB",
    )
    add("")
    add(
        f"Direct to the stand-in (the baseline): p50 {ms(data['direct']['p50'])}, p99 "
        f"{ms(data['direct']['p99'])} non-streaming; first token p50 "
        f"{ms(data['direct']['ttft_p50'])}; "
        f"{data['direct']['calls_per_s']:,.0f} calls/s closed loop (the ceiling of core "
        "0, which also runs the load generator: a gateway at or near it is bound by the "
        "load generator, not by itself)."
    )
    saturated = [n for n in names if figures[n]["calls_per_s"] < p["rate"]]
    if saturated:
        add(
            f"At {p['rate']:g} calls/s (open loop) {', '.join(saturated)} is past what it sustains "
            "on one core (closed-loop figure): calls queue, and its open-loop latency is that "
            "queue."
        )
    errors = {n: figures[n]["errors"] for n in names if figures[n]["errors"]}
    if errors:
        add(f"Errors under load: {errors}.")
    add("")
    behind = data["behind"]
    if behind:
        add("**Where a11i is behind a peer:** " + "; ".join(behind) + ".")
    else:
        add("a11i is ahead of or level with both peers on every figure above.")
    add("")
    add("## Cost accuracy")
    add("")
    add(
        "Truth = the usage the provider reported x the list price (the built-in card's YAML, read "
        "directly). "
        "a11i's cost is `x-a11i-cost-usd`, its projection `x-a11i-projected-cost-usd` (made before "
        "the call); "
        "LiteLLM's is `x-litellm-response-cost`. Portkey's open-source gateway reports no cost "
        "(headers seen: "
        + (", ".join(data["portkey_cost_headers"]) or "none with 'cost' or 'price'")
        + ")."
    )
    add("")
    add(
        "| gateway | calls | exact | max abs. error vs truth | mean error | projection ≥ truth "
        "| projection "
        "/ truth (median, max) |"
    )
    add("|---|---|---|---|---|---|---|")
    for summary in data["accuracy"]:
        add(
            f"| {summary['gateway']} | {summary['calls']} | {summary['exact']} "
            f"| {summary['max_error']} "
            f"| {summary['mean_error']} | {summary['projection_covers']} "
            f"| {summary['projection_ratio']} "
            "|"
        )
    add("")
    if data["accuracy_notes"]:
        for note in data["accuracy_notes"]:
            add(f"- {note}")
        add("")
    add("<details><summary>per call</summary>")
    add("")
    add(
        "| request | gateway | usage (prompt / cached / completion) | truth | reported "
        "| projection |"
    )
    add("|---|---|---|---|---|---|")
    for entry in data["accuracy_rows"]:
        add(
            f"| {entry['label']} | {entry['gateway']} | {entry['usage']} | {entry['truth']} "
            f"| {entry['reported']} | {entry['projection']} |"
        )
    add("")
    add("</details>")
    add("")
    add("## Budget overspend under concurrency")
    add("")
    budget = data["budget"]
    add(
        f"{budget['calls']} calls sent at once against a limit that fits {budget['fits']} "
        f"(${budget['limit']} = {budget['fits']} x ${budget['per_call']}, the cost of one call)."
    )
    add("")
    add("| gateway | admitted | refused | settled spend | over the limit |")
    add("|---|---|---|---|---|")
    for variant in budget["variants"]:
        over = variant["spent"] - variant["limit"]
        overshoot = f"${over} ({over / variant['limit'] * 100:.1f}%)" if over > 0 else "none"
        add(
            f"| a11i, {variant['label']} | {variant['admitted']} | {variant['refused']} "
            f"| ${variant['spent']} | {overshoot} |"
        )
    add(
        "| LiteLLM, key with `max_budget` | not measured | not measured | see below | "
        f"by its algorithm: up to {budget['calls']} admitted, "
        f"spend {budget['calls'] / budget['fits']:.1f}x "
        "the limit |"
    )
    add("")
    add(
        "LiteLLM enforces `max_budget` on keys only with a database: keys are created through "
        "`/key/generate`, "
        "which "
        "needs `DATABASE_URL` (PostgreSQL through Prisma). Checked here: "
        + budget["litellm_feasibility"]
        + ". "
        "A PostgreSQL server is not the obstacle; Prisma's query engine is: `pip install "
        "prisma && prisma version` fails while downloading the query engine from Prisma's "
        "own server (`getaddrinfo ENOTFOUND`; checked 2026-11-23: this machine reaches "
        "package registries only), and the proxy needs that engine whenever a database "
        "is set. So LiteLLM's overspend was **not measured**; the figure above follows "
        "from its code, not from a run: `_virtual_key_max_budget_check` "
        "(`litellm/proxy/auth/auth_checks.py`) "
        "reads the key's current spend and refuses only when `spend >= max_budget`, before "
        "the call; the spend grows only after a call succeeds (`_update_key_cache` in "
        "`litellm/proxy/proxy_server.py`, from the cost callback; the database write "
        "is batched). Nothing is reserved, so every call that arrives before the first "
        "one completes sees the same spend and is admitted: with all 100 in flight at "
        "once, all 100 pass and the key ends at 5x its limit (80 calls over). a11i reserves "
        "each call's projection atomically before forwarding, so the calls past the limit "
        "are refused before they reach the provider."
    )
    add("")
    spied = data["profile_a11i"]
    if spied:
        add("## Where a11i's time goes (py-spy)")
        add("")
        add(
            f"The sidecar sampled at 250 Hz for {spied['seconds']} s under closed-loop load "
            f"({spied['calls']:,} calls, {spied['samples']:,} samples of a busy thread). "
            "By package, the frame on top of the stack (where the CPU is):"
        )
        add("")
        add("| package | share of samples |")
        add("|---|---|")
        for name, share in spied["by_package"]:
            add(f"| `{name}` | {share * 100:.1f}% |")
        add("")
        add("By a11i function, inclusive (the function or anything it called is on the stack):")
        add("")
        add("| function | share of samples |")
        add("|---|---|")
        for name, share in spied["by_function"]:
            add(f"| `{name}` | {share * 100:.1f}% |")
        add("")
    add("## Not measured / caveats")
    add("")
    for caveat in data["caveats"]:
        add(f"- {caveat}")
    add("")
    return "\n".join(lines)


PLOT = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = json.load(open(sys.argv[1]))
names = data["gateways"]
f = data["figures"]
colors = {"a11i sidecar": "#2b8a3e", "LiteLLM proxy": "#1c7ed6", "Portkey gateway": "#e8590c"}
fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
def bars(ax, title, keys, labels, unit, scale=1.0):
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(zip(keys, labels)):
        values = [(f[n][key] or 0) * scale for n in names]
        pos = [i + k * width for i in range(len(names))]
        b = ax.bar(pos, values, width, label=label,
                   color=[colors.get(n, "grey") for n in names], alpha=1.0 - 0.45 * k)
        ax.bar_label(b, fmt="%.3g", fontsize=7)
    ticks = [i + width * (len(keys) - 1) / 2 for i in range(len(names))]
    ax.set_xticks(ticks, [n.split()[0] for n in names])
    ax.set_title(title, fontsize=10); ax.set_ylabel(unit)
    if len(keys) > 1: ax.legend(fontsize=7)
pair = ["p50", "p99"]
bars(axes[0][0], "added latency, non-streaming", ["added_p50", "added_p99"], pair, "ms", 1000)
bars(axes[0][1], "added time to first token, streaming",
     ["ttft_added_p50", "ttft_added_p99"], pair, "ms", 1000)
bars(axes[0][2], "sustained calls/s, one core (higher is better)",
     ["calls_per_s"], ["calls/s"], "calls/s")
bars(axes[1][0], "latency at %g calls/s (open loop)" % data["profile"]["rate"],
     ["open_p50", "open_p99"], pair, "ms", 1000)
bars(axes[1][1], "CPU per call (gateway process)", ["cpu_ms"], ["ms"], "ms CPU")
bars(axes[1][2], "RSS", ["rss_rest_mib", "rss_load_mib"], ["at rest", "under load"], "MiB")
title = "a11i vs LiteLLM proxy vs Portkey gateway, against a local stand-in provider"
fig.suptitle("%s (%s run, %s)\n%s" % (title, data["mode"], data["date"], data["machine"]["cpu"]),
             fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value))


# -- main -------------------------------------------------------------------------------------


async def main(profile: Profile, mode: str, skip_profile: bool) -> None:
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    machine = describe_machine()
    print(f"machine: {machine['cpu']}, {machine['memory']}")
    print(f"uptime: {machine['uptime']}")
    load_before = load_note()
    print(load_before)
    caveats: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="a11i-peers-"))
    standin = await start_standin()
    gateways: list[Gateway] = []
    try:
        gateways.append(await start_a11i(standin.url, folder))
        for starter, what in ((start_litellm, "LiteLLM"), (start_portkey, "Portkey")):
            try:
                gateways.append(await starter(standin.url, folder))
            except (RuntimeError, FileNotFoundError) as error:
                caveats.append(
                    f"{what} did not run ({error}); "
                    "install the peers with `bash bench/peers_setup.sh`"
                )
                print(f"!! {what}: {error}", file=sys.stderr)
        for gateway in gateways:
            print(f"started {gateway.name}: {gateway.version} at {gateway.url} (pid {gateway.pid})")
        targets = [standin, *gateways]

        print(f"latency: {profile.rounds} rounds non-streaming ...", flush=True)
        plain = await latency_phase(targets, profile.rounds, profile.warmup, REQUEST, timed_call)
        print(f"latency: {profile.streaming_rounds} rounds streaming ...", flush=True)
        streamed = await latency_phase(
            targets,
            profile.streaming_rounds,
            profile.warmup // 2,
            {**REQUEST, "stream": True},
            time_to_first_token,
        )

        loads: dict[str, LoadFigures] = {}
        for target in targets:
            print(f"load: {target.name} ...", flush=True)
            loads[target.name] = await load_phase(target, profile)

        print("accuracy ...", flush=True)
        accuracy = await accuracy_phase(standin, gateways)
        print("budget ...", flush=True)
        budget = await budget_phase(standin, folder)
        budget["litellm_feasibility"] = litellm_budget_feasibility()

        profile_rows: dict[str, Any] = {}
        if not skip_profile:
            print("profile of a11i (py-spy) ...", flush=True)
            profile_rows = await profile_a11i(gateways[0], profile, folder)
            if not profile_rows:
                caveats.append(
                    "py-spy produced no profile (not installed in the peers' venv, or not allowed "
                    "to attach)"
                )
    finally:
        for gateway in gateways:
            await stop(gateway)
        await stop(standin)

    direct_plain = Summary.of(plain[standin.name])
    direct_stream = Summary.of(streamed[standin.name])
    figures: dict[str, dict[str, Any]] = {}
    for gateway in gateways:
        added = Summary.of(paired_differences(plain[standin.name], plain[gateway.name]))
        ttft_added = Summary.of(paired_differences(streamed[standin.name], streamed[gateway.name]))
        figures_load = loads[gateway.name]
        figures[gateway.name] = {
            "added_p50": added.p50,
            "added_p99": added.p99,
            "added_mean": added.mean,
            "through_p50": Summary.of(plain[gateway.name]).p50,
            "ttft_added_p50": ttft_added.p50,
            "ttft_added_p99": ttft_added.p99,
            "calls_per_s": figures_load.closed.rate,
            "open_p50": Summary.of(figures_load.opened.latencies).p50
            if figures_load.opened.latencies
            else None,
            "open_p99": Summary.of(figures_load.opened.latencies).p99
            if figures_load.opened.latencies
            else None,
            "cpu_ms": figures_load.cpu_per_call_ms,
            "rss_rest_mib": (figures_load.rss_rest_kib or 0) / 1024,
            "rss_load_mib": max(figures_load.closed.rss_peak_kib, figures_load.opened.rss_peak_kib)
            / 1024,
            "errors": figures_load.closed.errors + figures_load.opened.errors,
        }
    names = [g.name for g in gateways]
    behind: list[str] = []
    lower_better = {
        "added_p50": "added p50",
        "added_p99": "added p99",
        "ttft_added_p50": "added first-token p50",
        "ttft_added_p99": "added first-token p99",
        "open_p50": f"p50 at {profile.rate:g}/s",
        "open_p99": f"p99 at {profile.rate:g}/s",
        "cpu_ms": "CPU per call",
        "rss_rest_mib": "RSS at rest",
        "rss_load_mib": "RSS under load",
    }
    a11i = figures[names[0]]
    for key, label in lower_better.items():
        for peer in names[1:]:
            if (
                a11i[key] is not None
                and figures[peer][key] is not None
                and figures[peer][key] < a11i[key]
            ):
                behind.append(
                    f"{label}: {peer} {_fmt(key, figures[peer][key])} "
                    f"vs a11i {_fmt(key, a11i[key])}"
                )
    for peer in names[1:]:
        if figures[peer]["calls_per_s"] > a11i["calls_per_s"]:
            behind.append(
                f"calls/s on one core: {peer} {figures[peer]['calls_per_s']:,.0f} vs a11i "
                f"{a11i['calls_per_s']:,.0f}"
            )

    accuracy_summary, accuracy_notes, accuracy_rows = summarise_accuracy(accuracy, names)
    portkey_headers = sorted(
        {
            h
            for r in accuracy["rows"]
            if r["gateway"].startswith("Portkey")
            for h in r["cost_headers"]
        }
    )
    caveats += [
        "One machine of 2 cores runs everything: the stand-in and the load generator "
        "share core 0, so the closed-loop figure of the fastest gateway may be bound "
        "by core 0 (compare it with the direct ceiling).",
        "The stand-in answers at once; real providers take 100 ms-seconds, against which every "
        "gateway's "
        "added time is small.",
        "a11i's figures include its default wallet (SQLite) and metrics; LiteLLM runs without "
        "a database, "
        "so it does no spend "
        "tracking or budget enforcement in these latency figures; Portkey's open-source gateway "
        "does "
        "neither.",
    ]
    data = {
        "mode": mode,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "load_before": load_before,
        "load_after": load_note(),
        "versions": [g.version for g in gateways],
        "rounds": profile.rounds,
        "streaming_rounds": profile.streaming_rounds,
        "profile": {
            "concurrency": profile.concurrency,
            "seconds": profile.seconds,
            "rate": profile.rate,
        },
        "gateways": names,
        "figures": figures,
        "behind": behind,
        "direct": {
            "p50": direct_plain.p50,
            "p99": direct_plain.p99,
            "ttft_p50": direct_stream.p50,
            "calls_per_s": loads[standin.name].closed.rate,
        },
        "accuracy": accuracy_summary,
        "accuracy_notes": accuracy_notes,
        "accuracy_rows": accuracy_rows,
        "portkey_cost_headers": portkey_headers,
        "budget": budget,
        "profile_a11i": profile_rows,
        "caveats": caveats,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = render(data)
    (RESULTS / "peers.md").write_text(report)
    print()
    print(report)
    dump = folder / "peers.json"
    dump.write_text(json.dumps(data, default=_json_default, indent=1))
    if LITELLM_PYTHON.exists():
        drawn = subprocess.run(  # noqa: ASYNC221 - after every measurement
            [str(LITELLM_PYTHON), "-c", PLOT, str(dump), str(RESULTS / "peers.png")],
            capture_output=True,
            text=True,
            check=False,
        )
        if drawn.returncode != 0:
            print(f"!! the chart was not drawn: {drawn.stderr[-800:]}", file=sys.stderr)
        else:
            print(f"wrote {RESULTS / 'peers.md'} and {RESULTS / 'peers.png'}")
    else:
        print(
            "!! no chart: matplotlib lives in the peers' venv (bash bench/peers_setup.sh)",
            file=sys.stderr,
        )
    print(f"raw figures and gateway logs kept in {folder}")


def _fmt(key: str, value: float) -> str:
    if key.startswith("rss"):
        return f"{value:.0f} MiB"
    if key == "cpu_ms":
        return f"{value:.3f} ms"
    return ms(value)


def summarise_accuracy(
    accuracy: dict[str, Any], names: list[str]
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    rows = accuracy["rows"]
    summaries: list[dict[str, Any]] = []
    notes: list[str] = []
    for name in names:
        mine = [r for r in rows if r["gateway"] == name]
        reported = [r for r in mine if r["reported"] is not None]
        if not reported:
            summaries.append(
                {
                    "gateway": name,
                    "calls": len(mine),
                    "exact": "no cost reported",
                    "max_error": "-",
                    "mean_error": "-",
                    "projection_covers": "-",
                    "projection_ratio": "-",
                }
            )
            continue
        errors = [r["reported"] - r["truth"] for r in reported]
        exact = sum(1 for r in reported if abs(r["reported"] - r["truth"]) <= Decimal("1e-9"))
        projected = [r for r in reported if r["projection"] is not None and r["truth"] > 0]
        ratios = sorted(float(r["projection"] / r["truth"]) for r in projected)
        covered = sum(1 for r in projected if r["projection"] >= r["truth"])
        relative = max(
            abs(e) / r["truth"] for e, r in zip(errors, reported, strict=True) if r["truth"] > 0
        )
        summaries.append(
            {
                "gateway": name,
                "calls": len(mine),
                "exact": f"{exact}/{len(reported)}",
                "max_error": f"${max(abs(e) for e in errors):.9f} ({float(relative) * 100:.2f}%)",
                "mean_error": f"${sum(errors) / len(errors):+.9f}",
                "projection_covers": f"{covered}/{len(projected)}" if projected else "-",
                "projection_ratio": f"{ratios[len(ratios) // 2]:.2f}, {ratios[-1]:.2f}"
                if ratios
                else "-",
            }
        )
        under = [r["label"] for r in projected if r["projection"] < r["truth"]]
        if under:
            notes.append(
                f"a11i's projection was below the truth for: {', '.join(under)}. These "
                "calls set no output cap, so a11i projects the output from the model's "
                "recent answers (p95 + 25%, docs/budget.md); the run had just sent many "
                "5-token answers of that model, and this one answered more. With a cap "
                "the projection is an upper bound."
            )
        if name.startswith("LiteLLM"):
            at_own = [r for r in reported if r["truth_at_peer_prices"] is not None]
            own_exact = sum(
                1
                for r in at_own
                if abs(r["reported"] - r["truth_at_peer_prices"])
                <= Decimal("1e-9") * max(1, r["truth_at_peer_prices"] * 1000)
            )
            differing = sorted(
                {
                    r["label"].split()[0]
                    for r in reported
                    if accuracy["peer_prices"].get(r["label"].split()[0])
                    and accuracy["peer_prices"][r["label"].split()[0]]
                    != accuracy["prices"][r["label"].split()[0]]
                }
            )
            notes.append(
                f"LiteLLM against usage x its own shipped prices: {own_exact}/{len(at_own)} within "
                "float rounding"
                + (
                    f"; its price list differs from the list price for {', '.join(differing)}"
                    if differing
                    else "; its prices equal the list prices for every model here"
                )
            )
    table_rows = []
    for r in rows:
        usage = r["usage"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        table_rows.append(
            {
                "label": r["label"],
                "gateway": r["gateway"],
                "usage": f"{usage['prompt_tokens']} / {cached} / {usage['completion_tokens']}",
                "truth": f"${r['truth']:.9f}",
                "reported": "-" if r["reported"] is None else f"${r['reported']:.9f}",
                "projection": "-" if r["projection"] is None else f"${r['projection']:.9f}",
            }
        )
    return summaries, notes, table_rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and shorter loads (a few minutes)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of a11i")
    options = parser.parse_args()
    asyncio.run(
        main(
            QUICK if options.quick else FULL,
            "quick" if options.quick else "full",
            options.no_profile,
        )
    )
