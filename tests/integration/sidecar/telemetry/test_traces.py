"""Traces, metrics and decision logs from a running sidecar to a real OpenTelemetry Collector.

The collector is built from the Go module proxy with the collector builder (tools/otelcol); it
receives OTLP over gRPC and HTTP and writes what it received to JSON files, which these tests
read. The agents are the official SDKs; the provider is the local stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.otelcol import OtelCollector, Span
from tests.support.redis_server import free_port
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

TOOLS: list[Any] = [
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
    },
    {
        "type": "function",
        "function": {
            "name": "check_logs",
            "description": "Tail a pod's logs",
            "parameters": {
                "type": "object",
                "properties": {"pod": {"type": "string"}},
                "required": ["pod"],
            },
        },
    },
]
SYSTEM = {"role": "system", "content": "You are the on-call SRE agent."}
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
HELD_KEY = "sk-proj-HELDKEYheldkey0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtelCollector]:
    with OtelCollector() as running:
        yield running


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "a11i.yaml"
    path.write_text("skills: [get_pods, restart_server]\n")
    return path


def otlp_env(collector: OtelCollector, protocol: str = "http/protobuf") -> dict[str, str]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
    }


def agent_of(spans: list[Span], agent: str) -> list[Span]:
    return [span for span in spans if span.resource.get("a11i.agent") == agent]


async def run_loop(running: RunningSidecar, task: str, *, session: str | None = None) -> None:
    """An agent loop: ask, run the tool the model calls, send its result back, read the
    answer, ask again: four turns, two of which carry a tool result."""
    headers = {"x-a11i-session": session} if session else {}
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0, default_headers=headers
    ) as client:
        messages: list[Any] = [SYSTEM, {"role": "user", "content": task}]
        for outcome in ("3 pods running", "Error: logs request timed out after 30s"):
            answer = await client.chat.completions.create(
                model="gpt-4o", messages=messages, tools=TOOLS
            )
            message = answer.choices[0].message
            assert message.tool_calls
            call = message.tool_calls[0]
            messages.append(message.model_dump(exclude_none=True))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome})
            reply = await client.chat.completions.create(
                model="gpt-4o", messages=messages, tools=TOOLS
            )
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
            messages.append({"role": "user", "content": "And now?"})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"], ids=["http", "grpc"])
async def test_an_agent_loop_is_one_trace(
    start_sidecar: SidecarFactory, collector: OtelCollector, config: Path, protocol: str
) -> None:
    agent = f"loop-{protocol.split('/')[0]}"
    running = await start_sidecar(
        A11I_AGENT=agent, A11I_CONFIG=str(config), **otlp_env(collector, protocol)
    )
    await run_loop(running, "Why is checkout down?")
    await run_loop(running, "Why is search down?")
    await running.settled(8)

    spans = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == agent, count=12
    )
    turns = [s for s in spans if s.name == "agent_turn"]
    ingests = [s for s in spans if s.name == "tool_result_ingest"]
    assert (len(turns), len(ingests)) == (8, 4)
    # Two loops, two traces: each loop's turns are children of its first turn.
    traces: dict[str, list[Span]] = {}
    for turn in sorted(turns, key=lambda s: s.start_time_unix_nano):
        traces.setdefault(turn.trace_id, []).append(turn)
    assert sorted(len(loop) for loop in traces.values()) == [4, 4]
    for loop in traces.values():
        root, *rest = loop
        assert root.parent_span_id == ""
        assert all(turn.parent_span_id == root.span_id for turn in rest)
        assert [t.attributes["a11i.loop.turn"] for t in loop] == [1, 2, 3, 4]
    # The GenAI conventions' attributes, and ours.
    first = traces[turns[0].trace_id][0]
    attributes = first.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["a11i.decision"] == "allow"
    assert attributes["a11i.cost.settled_usd"] > 0
    assert attributes["a11i.cost.projected_usd"] >= attributes["a11i.cost.settled_usd"]
    assert 0 < attributes["a11i.context.saturation_percent"] < 100
    assert attributes["a11i.tools.offered"] == ["get_pods", "check_logs"]
    assert attributes["a11i.tools.called"] == ["get_pods"]
    assert attributes["skill.name"] == "get_pods"
    assert first.kind == 3  # CLIENT
    assert first.resource["k8s.namespace.name"] == "team-a"
    assert first.resource["k8s.pod.name"] == agent
    assert first.resource["a11i.project"] == "team-a"
    assert first.scope == "a11i.sidecar"
    # Tool results: one span each, a child of the turn that carried them, with the outcome.
    by_id = {s.span_id: s for s in turns}
    outcomes = sorted(
        (s.attributes["gen_ai.tool.name"], s.attributes["a11i.tool.outcome"]) for s in ingests
    )
    assert outcomes == [("get_pods", "success")] * 2 + [("get_pods", "timeout")] * 2
    for ingest in ingests:
        parent = by_id[ingest.parent_span_id]
        assert ingest.trace_id == parent.trace_id
        # The tool ran between the previous answer and this call.
        assert ingest.end_time_unix_nano == parent.start_time_unix_nano
        assert ingest.start_time_unix_nano <= ingest.end_time_unix_nano
        assert ingest.attributes.get("skill.name") == "get_pods"
    failed = [s for s in ingests if s.attributes["a11i.tool.outcome"] == "timeout"]
    assert all(s.status_code == 2 for s in failed)  # ERROR


async def test_the_session_header_and_the_agents_own_trace(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="named-loops", **otlp_env(collector))
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        for task in ("first", "second", "third"):
            # Different conversations, one session: one trace.
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": task}],
                extra_headers={"x-a11i-session": "nightly-report"},
            )
        # An instrumented agent sends its own trace context: the turn joins the agent's trace.
        parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "traced"}],
            extra_headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"},
        )
    await running.settled(4)
    spans = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == "named-loops", count=4
    )
    session = [s for s in spans if s.attributes.get("gen_ai.conversation.id") == "nightly-report"]
    assert len(session) == 3
    assert len({s.trace_id for s in session}) == 1
    (traced,) = [s for s in spans if s.trace_id == parent_trace]
    assert traced.parent_span_id == parent_span


async def test_metrics_over_otlp(
    start_sidecar: SidecarFactory, collector: OtelCollector, config: Path
) -> None:
    running = await start_sidecar(
        A11I_AGENT="metrics-grpc",
        A11I_PROJECT="checkout",
        A11I_CONFIG=str(config),
        **otlp_env(collector, "grpc"),
    )
    await run_loop(running, "Why is checkout down?")
    records = await running.settled(4)
    prompt = sum(r.settlement.usage.input_tokens for r in records if r.settlement)

    def mine(point: Any) -> bool:
        return bool(point.resource.get("a11i.agent") == "metrics-grpc")

    def latest(name: str, **attributes: str) -> float:
        points = [
            p
            for p in collector.metrics()
            if mine(p)
            and p.name == name
            and all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
        newest = max((p.time_unix_nano for p in points), default=0)
        return sum(
            (p.value if p.value is not None else p.count or 0)
            for p in points
            if p.time_unix_nano == newest
        )

    async def settled_metric(name: str, want: float, **attributes: str) -> None:
        for _ in range(100):
            if latest(name, **attributes) == pytest.approx(want):
                return
            await asyncio.sleep(0.1)
        assert latest(name, **attributes) == pytest.approx(want)

    await settled_metric("ai.token_usage_counter", prompt, **{"token.type": "prompt"})
    await settled_metric("gen_ai.client.operation.duration", 4)
    await settled_metric("ai.tool_result_counter", 1, **{"a11i.tool.outcome": "timeout"})
    cost = float(sum(r.settlement.cost_usd for r in records if r.settlement))
    await settled_metric("ai.cost_estimate_counter", cost, **{"a11i.project": "checkout"})
    points = [p for p in collector.metrics() if mine(p)]
    units = {p.name: p.unit for p in points}
    assert units["gen_ai.client.token.usage"] == "{token}"
    assert units["gen_ai.client.operation.duration"] == "s"
    assert units["ai.context_saturation_gauge"] == "%"
    duration = next(p for p in points if p.name == "gen_ai.client.operation.duration")
    assert duration.explicit_bounds[:3] == [0.01, 0.02, 0.04]
    assert {p.name for p in points} >= {
        "ai.loop_velocity_gauge",
        "ai.tool_error_rate",
        "gen_ai.client.token.usage",
    }


async def test_pii_and_keys_never_reach_the_collector(
    start_sidecar: SidecarFactory, collector: OtelCollector, tmp_path: Path
) -> None:
    config = tmp_path / "a11i.yaml"
    config.write_text(
        "capture_content: true\n"
        "pii_rules:\n"
        "  - name: employee_id\n"
        "    regex: 'EMP-[0-9]{6}'\n"
        "    replacement: '[EMPLOYEE]'\n"
    )
    running = await start_sidecar(
        A11I_AGENT="pii-agent",
        A11I_CONFIG=str(config),
        A11I_OPENAI_API_KEY=HELD_KEY,
        A11I_DECISION_LOGS="on",
        **otlp_env(collector),
    )
    prompt = (
        f"Customer {EMAIL} paid with {CARD}; employee EMP-123456 on +1 415-555-2671 "
        f"from 10.20.30.40 pasted the key {HELD_KEY} and sk-ant-api03-{'x' * 40}."
    )
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": prompt}],
            tools=TOOLS,
        )
    await running.settled(1)
    (span,) = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == "pii-agent"
    )
    await collector.wait_for_async(
        collector.logs, lambda r: r.resource.get("a11i.agent") == "pii-agent", count=2
    )
    captured = json.loads(str(span.attributes["gen_ai.input.messages"]))
    text = captured[0]["parts"][0]["content"]
    assert "[EMPLOYEE]" in text
    assert "[REDACTED:email]" in text
    for secret in (EMAIL, CARD, "EMP-123456", "415-555-2671", "10.20.30.40", HELD_KEY, "x" * 40):
        assert secret not in text
    # Nothing anywhere in what the collector received: spans, metrics, logs.
    for signal_name in ("traces", "metrics", "logs"):
        raw = collector.signal_path(signal_name).read_text()
        for secret in (EMAIL, "4111111111111111", CARD, "EMP-123456", HELD_KEY, "x" * 40):
            assert secret not in raw, f"{secret!r} in exported {signal_name}"
    output = json.loads(str(span.attributes["gen_ai.output.messages"]))
    assert output[0]["parts"][0]["type"] == "tool_call"


async def test_content_is_not_captured_by_default(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="quiet-agent", **otlp_env(collector))
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "the secret plan is ready"}]
        )
    (span,) = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == "quiet-agent"
    )
    assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(span.attributes)
    assert "the secret plan" not in collector.signal_path("traces").read_text()


async def test_decision_logs(
    start_sidecar: SidecarFactory, collector: OtelCollector, config: Path
) -> None:
    running = await start_sidecar(
        A11I_AGENT="logging-agent",
        A11I_CONFIG=str(config),
        A11I_DECISION_LOGS="true",
        A11I_BUDGET_USD="0.000001",
        **otlp_env(collector, "grpc"),
    )
    async with anthropic.AsyncAnthropic(
        base_url=running.url, api_key="sk-agent", max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=100,
                messages=[{"role": "user", "content": "restart checkout"}],
            )
    assert refused.value.status_code == 402
    (record,) = await collector.wait_for_async(
        collector.logs, lambda r: r.resource.get("a11i.agent") == "logging-agent"
    )
    assert record.event_name == "a11i.decision"
    assert record.attributes["a11i.decision"] == "block"
    assert record.severity_text == "WARN"
    assert "budget" in str(record.body)
    (span,) = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == "logging-agent"
    )
    # The record is correlated with the turn's span.
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert span.status_code == 2
    assert span.attributes["error.type"] == "budget_exceeded"
    assert span.attributes["http.response.status_code"] == 402


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: a collector that hangs."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("collector_state", ["absent", "hanging"])
async def test_a_broken_collector_never_hurts_calls(
    start_sidecar: SidecarFactory, silent_port: int, collector_state: str
) -> None:
    port = free_port() if collector_state == "absent" else silent_port
    running = await start_sidecar(
        A11I_AGENT="unobserved",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_METRIC_EXPORT_INTERVAL="100",
        OTEL_EXPORTER_OTLP_TIMEOUT="300",
        A11I_DECISION_LOGS="on",
    )
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        for _ in range(5):
            answer = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.http_response.status_code == 200
    await running.settled(5)
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(running.url + "/a11i/budget") as response:
                telemetry = (await response.json())["telemetry"]
            if telemetry["traces"]["failed_exports"] and telemetry["metrics"]["failed_exports"]:
                break
            await asyncio.sleep(0.1)
        async with http.get(running.url + "/a11i/metrics") as response:
            exposition = await response.text()
    assert telemetry["traces"]["failed_exports"] >= 1
    assert telemetry["traces"]["exported"] == 0
    assert telemetry["metrics"]["failed_exports"] >= 1
    assert 'a11i_telemetry_export_failures_total{a11i_signal="traces"' in exposition


async def test_a_paused_collector_delays_nothing_and_catches_up(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="paused", **otlp_env(collector))
    collector.pause()
    try:
        async with openai.AsyncOpenAI(
            base_url=running.openai_url, api_key="sk-agent", max_retries=0, timeout=10
        ) as client:
            for _ in range(3):
                await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
        await running.settled(3)
    finally:
        collector.resume()
    spans = await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == "paused", count=3
    )
    assert len(spans) >= 3


async def test_pii_rules_reload_and_a_bad_rule_keeps_the_last_good_ones(
    start_sidecar: SidecarFactory, collector: OtelCollector, tmp_path: Path
) -> None:
    config = tmp_path / "a11i.yaml"
    config.write_text("capture_content: true\n")
    running = await start_sidecar(
        A11I_AGENT="reloading",
        A11I_CONFIG=str(config),
        A11I_RELOAD_INTERVAL="0.05",
        **otlp_env(collector),
    )

    async def ask(text: str) -> str:
        before = len(running.records)
        async with openai.AsyncOpenAI(
            base_url=running.openai_url, api_key="sk-agent", max_retries=0
        ) as client:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": text}]
            )
        await running.settled(before + 1)
        spans = await collector.wait_for_async(
            collector.spans,
            lambda s: s.resource.get("a11i.agent") == "reloading",
            count=before + 1,
        )
        newest = max(spans, key=lambda s: s.start_time_unix_nano)
        return str(newest.attributes["gen_ai.input.messages"])

    async def reloaded(done: int, errors: int) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(running.url + "/a11i/budget") as response:
                    seen = (await response.json())["config"]
                if seen == {"reloads": done, "reload_errors": errors}:
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"config reloads: {seen}")

    assert "ticket T-99" in await ask("ticket T-99")
    config.write_text(
        "capture_content: true\npii_rules:\n  - name: ticket\n    regex: 'T-[0-9]+'\n"
    )
    await reloaded(1, 0)
    assert "[REDACTED:ticket]" in await ask("ticket T-99")
    # A rule that does not compile: reported, and the ticket rule stays in force.
    config.write_text("capture_content: true\npii_rules:\n  - name: broken\n    regex: '('\n")
    await reloaded(1, 1)
    assert "[REDACTED:ticket]" in await ask("ticket T-100")


async def test_cli_log_lines_are_scrubbed(standin: StandIn, tmp_path: Path) -> None:
    """``a11i sidecar`` as a process: every line it logs passes the scrubber, and the key it
    holds appears in none; a dead collector is reported once, not once per retry."""
    assert standin.url is not None
    port = free_port()
    log_file = tmp_path / "sidecar.log"
    with log_file.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a11i.cli",
            "sidecar",
            env={
                **os.environ,
                "A11I_PORT": str(port),
                "A11I_OPENAI_BASE": standin.url,
                "A11I_WALLET_FILE": ":memory:",
                "A11I_OPENAI_API_KEY": HELD_KEY,
                "A11I_DECISION_LOGS": "on",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
            },
            stdout=sink,
            stderr=sink,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(url + "/a11i/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
                # A model name the rate card does not know is logged with a warning.
                async with http.post(
                    url + "/v1/chat/completions",
                    json={
                        "model": f"ft:gpt-4o:{EMAIL}",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                    headers={"Authorization": "Bearer sk-agent"},
                ) as response:
                    assert response.status == 200
                for _ in range(100):
                    if "a11i.decisions" in log_file.read_text():
                        break
                    await asyncio.sleep(0.05)
                # More calls, each its own batch: several failed exports, one log line.
                failed = 0
                for _ in range(40):
                    async with http.post(
                        url + "/v1/chat/completions",
                        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": "Bearer sk-agent"},
                    ) as response:
                        assert response.status == 200
                    await asyncio.sleep(0.25)
                    async with http.get(url + "/a11i/budget") as response:
                        failed = (await response.json())["telemetry"]["traces"]["failed_exports"]
                    if failed >= 2:
                        break
        finally:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 20)
    logged = log_file.read_text()
    assert "not on the rate card" in logged
    assert "[REDACTED:email]" in logged
    assert EMAIL not in logged
    assert HELD_KEY not in logged
    assert failed >= 2
    assert logged.count("OTLP export of traces") == 1
    assert "Transient error" not in logged
    assert "Failed to export" not in logged


async def test_the_event_stream_is_scrubbed_too(start_sidecar: SidecarFactory) -> None:
    running = await start_sidecar(A11I_AGENT="events-agent")
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model=f"ft:gpt-4o:{EMAIL}", messages=[{"role": "user", "content": "hi"}]
        )
    await running.settled(1)
    async with aiohttp.ClientSession() as http, http.get(running.url + "/a11i/events") as response:
        (event,) = await response.json()
    assert event["model"] == "ft:gpt-4o:[REDACTED:email]"
    assert event["agent"] == "events-agent"
    assert float(event["cost_usd"]) > 0
