"""The waterfall: one agent loop, from the sidecar through the collector into a real trace store.

The sidecar exports OTLP to the suite's collector (tools/otelcol), whose ``zipkin`` exporter
feeds a real Zipkin server (its jar from Maven Central, tools/zipkin). What Zipkin's API returns
for the loop is the trace an SRE would open: one trace, the turns in order under the first one,
the tool's result under the turn that carried it and tied to the turn that asked for it. Debian's
Chromium then opens Zipkin's UI on that trace; A11I_UPDATE_SCREENSHOTS=1 copies the screenshot
to docs/waterfall.png (the README's picture), so a plain test run leaves the tree clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.conftest import SidecarFactory
from tests.support.paths import ROOT
from tests.support.zipkin import CollectorToZipkin, ZipkinServer, ZipkinSpan

pytestmark = pytest.mark.integration

AGENT = "sre-waterfall"
SERVICE = "a11i-sidecar"
DOCS = ROOT / "docs"
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
    }
]


@pytest.fixture(scope="module")
def zipkin() -> Iterator[ZipkinServer]:
    with ZipkinServer() as running:
        yield running


@pytest.fixture(scope="module")
def collector(zipkin: ZipkinServer) -> Iterator[CollectorToZipkin]:
    with CollectorToZipkin(zipkin) as running:
        yield running


async def agent_loop(url: str) -> str:
    """Three turns of one conversation: the model asks for a tool, gets its result and
    answers, then answers a follow-up. Returns the id of the tool call."""
    async with openai.AsyncOpenAI(base_url=url, api_key="sk-agent", max_retries=0) as client:
        messages: list[Any] = [
            {"role": "system", "content": "You are the on-call SRE agent."},
            {"role": "user", "content": "Why is checkout down?"},
        ]
        asked = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
        message = asked.choices[0].message
        assert message.tool_calls, "the stand-in calls a tool when tools are offered"
        call = message.tool_calls[0]
        # The agent runs the tool: long enough to show in the picture, asserted on nowhere.
        await asyncio.sleep(0.2)
        messages.append(message.model_dump(exclude_none=True))
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "content": "checkout-7d9f: CrashLoopBackOff"}
        )
        answered = await client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=TOOLS
        )
        messages.append({"role": "assistant", "content": answered.choices[0].message.content})
        messages.append({"role": "user", "content": "What should I do about it?"})
        await client.chat.completions.create(model="gpt-4o", messages=messages)
        return call.id


def tool_calls(turn: ZipkinSpan) -> list[str]:
    """The ids of the tool calls a turn's answer asked for: its a11i.tool_call annotations."""
    calls = [a.split("|")[1] for a in turn.annotations if a.startswith("a11i.tool_call|")]
    return [str(json.loads(call)["gen_ai.tool.call.id"]) for call in calls]


def ends_before(earlier: ZipkinSpan, later: ZipkinSpan) -> bool:
    """Zipkin keeps microseconds, truncating a span's start and its duration each: an end
    computed from them can come out one microsecond late."""
    return earlier.end <= later.timestamp + 1


async def stored_trace(zipkin: ZipkinServer, spans: int) -> list[list[ZipkinSpan]]:
    """The agent's traces once Zipkin holds ``spans`` spans of them (the collector batches)."""
    query = {"annotationQuery": f"a11i.agent={AGENT}"}
    traces: list[list[ZipkinSpan]] = []
    for _ in range(300):
        traces = await asyncio.to_thread(zipkin.traces, SERVICE, **query)
        if sum(len(trace) for trace in traces) >= spans:
            return traces
        await asyncio.sleep(0.1)
    raise AssertionError(f"Zipkin holds {traces} for {AGENT}, not {spans} spans")


async def test_one_agent_loop_is_one_waterfall_in_zipkin(
    start_sidecar: SidecarFactory,
    collector: CollectorToZipkin,
    zipkin: ZipkinServer,
    chromium: Path,
    tmp_path: Path,
) -> None:
    # A first call warms what every sidecar of the process shares, so that the loop's first
    # turn is not drawn ten times longer than the others; this one exports nothing.
    warm = await start_sidecar(A11I_AGENT="warm-up")
    async with openai.AsyncOpenAI(base_url=warm.openai_url, api_key="sk-agent") as client:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}], tools=TOOLS
        )
    running = await start_sidecar(
        A11I_AGENT=AGENT,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    call_id = await agent_loop(running.openai_url)
    await running.settled(3)

    # One trace: three agent_turn spans and one tool_result_ingest.
    traces = await stored_trace(zipkin, 4)
    assert len(traces) == 1, [[span.name for span in trace] for trace in traces]
    (trace,) = traces
    assert {span.service for span in trace} == {SERVICE}
    turns = sorted((s for s in trace if s.name == "agent_turn"), key=lambda s: s.timestamp)
    ingests = [s for s in trace if s.name == "tool_result_ingest"]
    assert (len(turns), len(ingests)) == (3, 1)

    # The turns in order: the first is the root, the others its children, numbered 1, 2, 3,
    # each starting after the one before it ended.
    first, second, third = turns
    assert first.parent_id == ""
    assert second.parent_id == first.id
    assert third.parent_id == first.id
    assert [t.tags["a11i.loop.turn"] for t in turns] == ["1", "2", "3"]
    assert ends_before(first, second)
    assert ends_before(second, third)
    assert all(t.kind == "CLIENT" and t.tags["gen_ai.operation.name"] == "chat" for t in turns)

    # The tool: asked for by the first turn (its a11i.tool_call event, an annotation in
    # Zipkin), its result a child of the second turn, which carried it, spanning the time the
    # agent ran the tool, between the two turns.
    (ingest,) = ingests
    assert ingest.parent_id == second.id
    assert ingest.tags["gen_ai.tool.call.id"] == call_id
    assert ingest.tags["gen_ai.tool.name"] == "get_pods"
    assert ingest.tags["a11i.tool.outcome"] == "success"
    assert ends_before(first, ingest)
    assert ends_before(ingest, second)
    # The exporter writes an event with attributes as "name|{attributes as JSON}|dropped".
    assert [tool_calls(t) for t in turns] == [[call_id], [], []], first.annotations

    # The waterfall in Zipkin's UI, as an SRE opens it.
    shot = tmp_path / "waterfall.png"
    await screenshot(chromium, zipkin.trace_page(first.trace_id), shot)
    assert shot.stat().st_size > 10_000
    # The README's picture is refreshed on request only, so a test run leaves the tree clean.
    if os.environ.get("A11I_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / "waterfall.png")


async def screenshot(chromium: Path, url: str, path: Path) -> None:
    """Open Zipkin's trace page in headless Chromium, wait for its spans, and take a picture;
    the test fails if the page's script throws."""
    from playwright.async_api import Error, async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 600})
            page.set_default_timeout(15_000)
            errors: list[Error] = []
            page.on("pageerror", lambda error: errors.append(error))
            await page.goto(url)
            await expect(page.get_by_text("tool_result_ingest").first).to_be_visible()
            await expect(page.get_by_text("agent_turn").first).to_be_visible()
            # The tool's span selected: the panel beside the waterfall shows its tags.
            await page.get_by_text("tool_result_ingest").first.click()
            await expect(page.get_by_text("gen_ai.tool.call.id").first).to_be_visible()
            await page.screenshot(path=str(path))
            assert not errors, json.dumps([str(e) for e in errors])
        finally:
            await browser.close()
