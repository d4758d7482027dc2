"""The optimizer in the proxy: a Red wallet makes real agent conversations smaller, safely."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest

from a11i.core.meter import UsageSource
from a11i.core.model import Dialect
from a11i.core.optimizer import validate_conversation
from a11i.core.optimizer.cache import prefix_prints
from tests.integration.conftest import SidecarFactory
from tests.support.paths import TRANSCRIPTS
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

SRE_OPENAI = json.loads((TRANSCRIPTS / "sre_openai.json").read_text())
SRE_ANTHROPIC = json.loads((TRANSCRIPTS / "sre_anthropic.json").read_text())
# Every call counts as Red: the optimizer runs all its strategies.
RED = {"A11I_BUDGET_USD": "100", "A11I_BUDGET_WARN_AT": "0", "A11I_BUDGET_OPTIMIZE_AT": "0"}


def _optimized(header: str) -> tuple[list[str], int, Decimal]:
    """``x-a11i-optimized: <strategies>; saved=<tokens>; saved_usd=<net USD>``."""
    strategies, *fields = header.split("; ")
    values = dict(field.split("=", 1) for field in fields)
    return strategies.split(","), int(values["saved"]), Decimal(values["saved_usd"])


async def test_a_red_wallet_compacts_an_openai_agent_loop(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(**RED)
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=SRE_OPENAI["model"], messages=SRE_OPENAI["messages"], tools=SRE_OPENAI["tools"]
        )
        completion = raw.parse()
    assert raw.headers["x-a11i-decision"] == "optimize"
    strategies, saved, saved_usd = _optimized(raw.headers["x-a11i-optimized"])
    assert "compact_history" in strategies
    assert saved_usd > 0
    original = running.sidecar.meter.plan(Dialect.OPENAI_CHAT, SRE_OPENAI).input.tokens
    assert int(raw.headers["x-a11i-input-tokens"]) == original - int(saved)
    assert int(saved) > original * 0.3
    forwarded = standin.requests[-1].json
    assert isinstance(forwarded, dict)
    assert len(forwarded["messages"]) < len(SRE_OPENAI["messages"])
    assert forwarded["messages"][0] == SRE_OPENAI["messages"][0]  # the system prompt
    assert validate_conversation(Dialect.OPENAI_CHAT, forwarded) == []
    # The provider was billed for what was sent, and said so.
    assert completion.usage is not None
    record = (await running.settled(1))[-1]
    assert record.optimization is not None
    assert record.settlement is not None
    assert record.settlement.usage.input_tokens == completion.usage.prompt_tokens
    assert completion.usage.prompt_tokens < original


async def test_a_red_wallet_keeps_anthropics_rules(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(**RED)
    async with anthropic.AsyncAnthropic(
        base_url=running.url, api_key="sk-ant", max_retries=0
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-haiku-4-5",
            max_tokens=SRE_ANTHROPIC["max_tokens"],
            system=SRE_ANTHROPIC["system"],
            messages=SRE_ANTHROPIC["messages"],
            tools=SRE_ANTHROPIC["tools"],
        )
        message = await raw.parse()
    assert message.content
    assert "x-a11i-optimized" in raw.headers
    forwarded = standin.requests[-1].json
    assert isinstance(forwarded, dict)
    assert forwarded["system"] == SRE_ANTHROPIC["system"]
    assert forwarded["messages"][0] == SRE_ANTHROPIC["messages"][0]  # the goal
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, forwarded) == []


async def test_a_call_too_big_for_the_wallet_gets_through_once_smaller(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    body = {**SRE_OPENAI, "max_tokens": 10}
    probe = await start_sidecar(A11I_OPTIMIZER="off")
    full = probe.sidecar.meter.plan(Dialect.OPENAI_CHAT, body).projected_usd
    # Room for the compacted call, not for the original.
    limit = (full * Decimal("0.6")).quantize(Decimal("0.000001"))
    for optimizer, expected in (("off", 402), ("on", 200)):
        running = await start_sidecar(A11I_BUDGET_USD=str(limit), A11I_OPTIMIZER=optimizer)
        async with openai.AsyncOpenAI(
            base_url=running.openai_url, api_key="sk-agent", max_retries=0
        ) as client:
            try:
                raw = await client.chat.completions.with_raw_response.create(**body)
                status = raw.http_response.status_code
                assert "compact_history" in raw.headers["x-a11i-optimized"]
            except openai.APIStatusError as error:
                status = error.status_code
        assert status == expected, optimizer
    spent = (await running.sidecar.wallet.snapshot()).spent_usd
    assert 0 < spent <= limit


async def test_a_green_wallet_sends_the_agents_bytes_untouched(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="100")
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=SRE_OPENAI["model"], messages=SRE_OPENAI["messages"], tools=SRE_OPENAI["tools"]
        )
    assert raw.headers["x-a11i-decision"] == "allow"
    assert "x-a11i-optimized" not in raw.headers
    assert standin.requests[-1].json == {
        "model": SRE_OPENAI["model"],
        "messages": SRE_OPENAI["messages"],
        "tools": SRE_OPENAI["tools"],
    }


async def test_a11i_yaml_turns_the_optimizer_on_without_a_restart(
    start_sidecar: SidecarFactory, standin: StandIn, tmp_path: Path
) -> None:
    config = tmp_path / "a11i.yaml"
    config.write_text("optimizer:\n  enabled: false\n")
    running = await start_sidecar(**RED, A11I_CONFIG=str(config), A11I_RELOAD_INTERVAL="0.05")
    body = {"model": SRE_OPENAI["model"], "messages": SRE_OPENAI["messages"]}
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        off = await client.chat.completions.with_raw_response.create(**body)
        assert off.headers["x-a11i-decision"] == "optimize"
        assert "x-a11i-optimized" not in off.headers
        config.write_text("optimizer:\n  enabled: true\n  keep_last_turns: 2\n")
        for _ in range(200):
            if running.sidecar.counters.config.done:
                break
            await asyncio.sleep(0.02)
        on = await client.chat.completions.with_raw_response.create(**body)
        assert "compact_history" in on.headers["x-a11i-optimized"]
        config.write_text("optimizer:\n  keep_last_turns: -1\n")
        for _ in range(200):
            if running.sidecar.counters.config.errors:
                break
            await asyncio.sleep(0.02)
        still = await client.chat.completions.with_raw_response.create(**body)
        assert "compact_history" in still.headers["x-a11i-optimized"]


async def test_an_optimized_stream_still_hides_the_usage_chunk_a11i_asked_for(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(**RED)
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model=SRE_OPENAI["model"], messages=SRE_OPENAI["messages"], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    forwarded = standin.requests[-1].json
    assert isinstance(forwarded, dict)
    assert forwarded["stream_options"] == {"include_usage": True}
    assert len(forwarded["messages"]) < len(SRE_OPENAI["messages"])
    (record,) = await running.settled(1)
    assert record.optimization is not None
    assert record.settlement is not None
    # Settled from the usage the provider reported for the smaller request.
    assert record.settlement.source is UsageSource.PROVIDER
    original = running.sidecar.meter.plan(Dialect.OPENAI_CHAT, SRE_OPENAI).input.tokens
    assert record.settlement.usage.input_tokens < original / 2


async def test_a_lone_surrogate_in_the_history_survives_a_rewrite(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    # A JS agent cut an emoji in half: "\ud83d" is on the wire as an escape. Green forwarded
    # the bytes; a rewrite used to fail to encode it (500 a11i_internal_error).
    running = await start_sidecar(**RED)
    messages = [
        {"role": "user", "content": "Deploy the release.   \n\n\n\nThen report."},
        {"role": "assistant", "content": "Deployed."},
        {"role": "user", "content": "Deploy \ud83d status?"},
    ]
    raw = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
    assert b"\\ud83d" in raw
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            running.openai_url + "/chat/completions",
            data=raw,
            headers={"content-type": "application/json", "authorization": "Bearer sk-agent"},
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()
        assert "whitespace" in answer.headers["x-a11i-optimized"]
    forwarded = standin.requests[-1].json
    assert isinstance(forwarded, dict)
    assert forwarded["messages"][-1]["content"] == "Deploy \ud83d status?"
    assert forwarded["messages"][0]["content"] == "Deploy the release.\n\nThen report."


def _thinking_loop(rounds: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Fix the failing test."}]
    for turn in range(rounds):
        content: list[dict[str, object]] = []
        if turn == 0:
            content.append(
                {"type": "thinking", "thinking": "Plan: read files.", "signature": "c2ln"}
            )
        content += [
            {"type": "text", "text": f"Reading file {turn}."},
            {
                "type": "tool_use",
                "id": f"toolu_{turn:02d}",
                "name": "Read",
                "input": {"file_path": f"src/m{turn}.py"},
            },
        ]
        messages.append({"role": "assistant", "content": content})
        result = f"     1\tdef f{turn}():\n     2\t        return  {turn}\n" * 30
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{turn:02d}", "content": result}
                ],
            }
        )
    return messages


async def test_a_thinking_tool_loop_stays_valid_when_compacted(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(**RED, A11I_OPTIMIZER_KEEP_LAST_TURNS="4")
    messages = _thinking_loop(24)
    async with anthropic.AsyncAnthropic(
        base_url=running.url, api_key="sk-ant", max_retries=0
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-sonnet-4-5",
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 8000},
            messages=messages,  # type: ignore[arg-type]
            tools=[{"name": "Read", "input_schema": {"type": "object"}}],
        )
        await raw.parse()
    assert "compact_history" in raw.headers["x-a11i-optimized"]
    forwarded = standin.requests[-1].json
    assert isinstance(forwarded, dict)
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, forwarded) == []
    assert forwarded["messages"][1] == messages[1]  # the signed thinking opens the loop
    assert forwarded["messages"][-4:] == messages[-4:]
    # Tool output indentation (Read's numbered lines) reaches the model as the tool wrote it.
    assert (
        forwarded["messages"][-1]["content"][0]["content"] == messages[-1]["content"][0]["content"]
    )  # type: ignore[index]


def _turn(body: dict[str, object], n: int) -> dict[str, object]:
    """``body`` with ``n`` more exchanges of the agent loop appended (history only grows)."""
    messages = list(body["messages"])  # type: ignore[call-overload]
    for i in range(n):
        messages += [
            {"role": "assistant", "content": f"Step {i}: checking again."},
            {"role": "user", "content": f"Go on ({i})."},
        ]
    return {**body, "messages": messages}


async def test_a_stable_summary_is_cached_once_then_read(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    # At Red the first call is compacted; the provider caches what it got. The next turn
    # (history one exchange longer) gets the same summary, byte for byte, so the provider reads
    # it from its cache, and forwarding the agent's request unchanged would lose that cache.
    running = await start_sidecar(**RED)
    standin.configure(cached_tokens=10**6)
    base = {"model": SRE_OPENAI["model"], "messages": SRE_OPENAI["messages"]}
    sent: list[dict[str, object]] = []
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        for extra in (0, 1):
            raw = await client.chat.completions.with_raw_response.create(**_turn(base, extra))  # type: ignore[call-overload]
            strategies, _, saved_usd = _optimized(raw.headers["x-a11i-optimized"])
            assert "compact_history" in strategies
            assert saved_usd > 0
            await running.settled(extra + 1)
            forwarded = standin.requests[-1].json
            assert isinstance(forwarded, dict)
            sent.append(forwarded)
    first, second = sent[0]["messages"], sent[1]["messages"]
    assert isinstance(first, list)
    assert isinstance(second, list)
    summary = next(i for i, m in enumerate(first) if "[a11i]" in str(m.get("content")))
    assert second[: summary + 1] == first[: summary + 1]
    assert len(running.sidecar.caches) == 1


async def test_a_cached_history_is_not_rewritten_when_that_costs_more(
    start_sidecar: SidecarFactory, standin: StandIn, tmp_path: Path
) -> None:
    # The first call goes unchanged (no strategy at Red) and the provider caches all of it.
    # Then the lossless strategies are turned on: they would save tokens, but every token after
    # the first rewritten message would be read at the full price instead of the cached one,
    # so the request goes on unchanged.
    config = tmp_path / "a11i.yaml"
    config.write_text("optimizer:\n  at_red: []\n")
    running = await start_sidecar(**RED, A11I_CONFIG=str(config), A11I_RELOAD_INTERVAL="0.05")
    standin.configure(cached_tokens=10**6)
    base = {"model": SRE_OPENAI["model"], "messages": SRE_OPENAI["messages"]}
    lossless = "optimizer:\n  at_red: [json_minify, whitespace, dedupe]\n"
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        first = await client.chat.completions.with_raw_response.create(**base)  # type: ignore[call-overload]
        assert "x-a11i-optimized" not in first.headers
        await running.settled(1)
        config.write_text(lossless)
        for _ in range(200):
            if running.sidecar.optimizer.core.at_red:
                break
            await asyncio.sleep(0.02)
        later = await client.chat.completions.with_raw_response.create(**_turn(base, 1))  # type: ignore[call-overload]
    assert later.headers["x-a11i-decision"] == "optimize"
    assert "x-a11i-optimized" not in later.headers
    assert standin.requests[-1].json == _turn(base, 1)
    # The same request in a sidecar that knows of no cache is rewritten: the lossless steps
    # do save tokens, the cache is what makes them dearer.
    config2 = tmp_path / "fresh.yaml"
    config2.write_text(lossless)
    fresh = await start_sidecar(**RED, A11I_CONFIG=str(config2))
    async with openai.AsyncOpenAI(
        base_url=fresh.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        cold = await client.chat.completions.with_raw_response.create(**_turn(base, 1))  # type: ignore[call-overload]
    assert "x-a11i-optimized" in cold.headers


async def test_an_admitted_call_teaches_the_cache_memory_after_its_answer(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    # A small request admitted as asked has no use for its prefix fingerprints before it is
    # forwarded: they are taken after the answer, and the provider's cache is remembered all
    # the same, for the turns the optimizer may rewrite later.
    running = await start_sidecar(A11I_BUDGET_USD="100")
    body = {"model": SRE_OPENAI["model"], "messages": SRE_OPENAI["messages"][:3]}
    assert len(json.dumps(body)) < 8 * 1024
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        answer = await client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
    assert answer.headers["x-a11i-decision"] == "allow"
    await running.settled(1)
    prints = prefix_prints(Dialect.OPENAI_CHAT, standin.requests[-1].json)
    for _ in range(100):
        if running.sidecar.caches.state(prints) is not None:
            break
        await asyncio.sleep(0.01)
    state = running.sidecar.caches.state(prints)
    assert state is not None
    assert state.prints == prints
