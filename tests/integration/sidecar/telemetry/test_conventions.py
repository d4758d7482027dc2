"""Tools, GenAI names and the agents' own ids, as a real OpenTelemetry Collector receives them.

The agents are the official SDKs, the provider the local stand-in; spans and metrics go over
OTLP to the collector built from Go modules (tests/support/otelcol.py) and are read back from
its files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.conftest import SidecarFactory
from tests.integration.sidecar.telemetry.test_traces import SYSTEM, otlp_env, run_loop
from tests.support.otelcol import MetricPoint, OtelCollector, Span

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collector() -> Iterator[OtelCollector]:
    with OtelCollector() as running:
        yield running


async def spans_of(collector: OtelCollector, agent: str, count: int) -> list[Span]:
    return await collector.wait_for_async(
        collector.spans, lambda s: s.resource.get("a11i.agent") == agent, count=count
    )


async def test_every_tool_is_a_skill_without_a_list_and_results_link_to_their_turn(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="tools-default", **otlp_env(collector))
    await run_loop(running, "Why is checkout down?")
    await running.settled(4)
    spans = await spans_of(collector, "tools-default", 6)
    turns = {s.span_id: s for s in spans if s.name == "agent_turn"}
    ingests = [s for s in spans if s.name == "tool_result_ingest"]
    assert (len(turns), len(ingests)) == (4, 2)
    # The model asked for get_pods twice: two turns describe the call on span events.
    asking = {
        event.attributes["gen_ai.tool.call.id"]: turn
        for turn in turns.values()
        for event in turn.events
        if event.name == "a11i.tool_call"
    }
    assert len(asking) == 2
    for turn in asking.values():
        (event,) = [e for e in turn.events if e.name == "a11i.tool_call"]
        assert event.attributes["gen_ai.tool.name"] == "get_pods"
        assert event.attributes["gen_ai.tool.type"] == "function"
        assert event.attributes["skill.name"] == "get_pods"  # no skills list: every tool
        assert turn.attributes["skill.name"] == "get_pods"
        assert turn.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
        assert str(turn.attributes["gen_ai.response.id"]).startswith("chatcmpl")
    for ingest in ingests:
        call_id = ingest.attributes["gen_ai.tool.call.id"]
        assert ingest.attributes["gen_ai.operation.name"] == "execute_tool"
        assert ingest.attributes["gen_ai.tool.type"] == "function"
        assert ingest.attributes["skill.name"] == "get_pods"
        # Linked to the turn whose answer asked for the tool, under the turn that sent it.
        (link,) = ingest.links
        requester = asking[call_id]
        assert (link.trace_id, link.span_id) == (requester.trace_id, requester.span_id)
        assert link.attributes == {"a11i.tool.requested_by": "agent_turn"}
        assert ingest.parent_span_id != requester.span_id
        assert turns[ingest.parent_span_id].start_time_unix_nano >= requester.end_time_unix_nano
    outcomes = sorted(str(s.attributes["a11i.tool.outcome"]) for s in ingests)
    assert outcomes == ["success", "timeout"]


async def test_a_skills_list_restricts_tagging(
    start_sidecar: SidecarFactory, collector: OtelCollector, tmp_path: Path
) -> None:
    config = tmp_path / "a11i.yaml"
    config.write_text("skills: [restart_server]\n")
    running = await start_sidecar(
        A11I_AGENT="tools-listed", A11I_CONFIG=str(config), **otlp_env(collector)
    )
    await run_loop(running, "Why is checkout down?")
    await running.settled(4)
    spans = await spans_of(collector, "tools-listed", 6)
    assert not [s for s in spans if "skill.name" in s.attributes]
    events = [e for s in spans for e in s.events if e.name == "a11i.tool_call"]
    assert len(events) == 2
    assert all("skill.name" not in e.attributes for e in events)
    # Described all the same.
    assert all(e.attributes["gen_ai.tool.name"] == "get_pods" for e in events)


OPT_INS = [
    pytest.param(None, {"gen_ai.provider.name", "gen_ai.system"}, id="unset-both"),
    pytest.param("gen_ai_latest_experimental", {"gen_ai.provider.name"}, id="latest-new"),
    pytest.param(
        "gen_ai_latest_experimental/dup", {"gen_ai.provider.name", "gen_ai.system"}, id="dup-both"
    ),
    pytest.param("gen_ai_v1.36", {"gen_ai.system"}, id="old"),
]
NEW_METRICS = {
    "gen_ai.client.inference.usage.input_tokens",
    "gen_ai.client.inference.usage.output_tokens",
    "gen_ai.client.inference.usage.cache_read.input_tokens",
    "gen_ai.client.inference.usage.cache_write.input_tokens",
    "gen_ai.client.inference.operation.input_tokens",
    "gen_ai.client.inference.operation.output_tokens",
}


@pytest.mark.parametrize(("opt_in", "provider_keys"), OPT_INS)
async def test_names_under_each_opt_in(
    start_sidecar: SidecarFactory,
    collector: OtelCollector,
    opt_in: str | None,
    provider_keys: set[str],
) -> None:
    agent = f"semconv-{opt_in or 'unset'}".replace("/", "-")
    env = {**otlp_env(collector), "A11I_AGENT": agent}
    if opt_in is not None:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = opt_in
    running = await start_sidecar(**env)
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="gpt-4o", messages=[SYSTEM, {"role": "user", "content": "status?"}]
        )
    (record,) = await running.settled(1)
    assert record.settlement is not None
    (turn,) = await spans_of(collector, agent, 1)
    assert {k for k in ("gen_ai.provider.name", "gen_ai.system") if k in turn.attributes} == (
        provider_keys
    )
    assert all(turn.attributes[k] == "openai" for k in provider_keys)
    # Names that did not change are there whatever the choice.
    assert turn.attributes["gen_ai.usage.input_tokens"] == record.settlement.usage.input_tokens

    def mine() -> list[MetricPoint]:
        return [p for p in collector.metrics() if p.resource.get("a11i.agent") == agent]

    new = "gen_ai.provider.name" in provider_keys
    old = "gen_ai.system" in provider_keys
    wanted = {"gen_ai.client.operation.duration"}
    wanted |= NEW_METRICS if new else set()
    wanted |= {"gen_ai.client.token.usage"} if old else set()
    for _ in range(100):
        if wanted <= {p.name for p in mine()}:
            break
        await asyncio.sleep(0.1)
    points = mine()
    names = {p.name for p in points}
    assert wanted <= names
    if not new:
        assert not NEW_METRICS & names
    if not old:
        assert "gen_ai.client.token.usage" not in names
    duration = next(p for p in points if p.name == "gen_ai.client.operation.duration")
    assert {k for k in provider_keys} <= set(duration.attributes)
    if new:
        inputs = [p for p in points if p.name == "gen_ai.client.inference.usage.input_tokens"]
        assert max(p.value or 0 for p in inputs) == record.settlement.usage.input_tokens
        assert all(p.attributes["gen_ai.token.modality"] == "unknown" for p in inputs)
        assert all(p.unit == "{token}" for p in inputs)


async def test_claude_codes_session_is_one_trace(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="claude-code", **otlp_env(collector))
    session = "b4e5aaaa-9a3e-47c4-84ad-3a70f38c676e"
    async with anthropic.AsyncAnthropic(
        base_url=running.url,
        api_key="sk-ant-agent",
        max_retries=0,
        default_headers={"X-Claude-Code-Session-Id": session, "x-client-request-id": "req-1"},
    ) as client:
        for task in ("Fix the flaky test.", "Now the lint."):  # two tasks, one session
            await client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=256,
                messages=[{"role": "user", "content": task}],
            )
    await running.settled(2)
    spans = await spans_of(collector, "claude-code", 2)
    assert len({s.trace_id for s in spans}) == 1
    for span in spans:
        assert span.attributes["gen_ai.conversation.id"] == session
        assert span.attributes["a11i.conversation.source"] == "claude-code"
        assert span.attributes["http.request.header.x-request-id"] == ["req-1"]
        assert str(span.attributes["gen_ai.response.id"]).startswith("msg_")


async def test_a_responses_chain_is_one_trace(
    start_sidecar: SidecarFactory, collector: OtelCollector
) -> None:
    running = await start_sidecar(A11I_AGENT="responses-chain", **otlp_env(collector))
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        previous: str | None = None
        for task in ("Plan the migration.", "Step one?", "Step two?"):
            extra: dict[str, Any] = {"previous_response_id": previous} if previous else {}
            response = await client.responses.create(model="gpt-4o", input=task, **extra)
            previous = response.id
    await running.settled(3)
    spans = sorted(
        await spans_of(collector, "responses-chain", 3), key=lambda s: s.start_time_unix_nano
    )
    # Each turn sends only its new input; previous_response_id chains them into one loop.
    assert len({s.trace_id for s in spans}) == 1
    first, *rest = spans
    assert all(s.parent_span_id == first.span_id for s in rest)
    assert [s.attributes["a11i.loop.turn"] for s in spans] == [1, 2, 3]
    conversation = first.attributes["gen_ai.response.id"]
    assert all(s.attributes["gen_ai.conversation.id"] == conversation for s in rest)
