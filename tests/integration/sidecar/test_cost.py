"""Settled cost as exact as the provider's bill: the official SDKs through a running sidecar,
against a stand-in that reports each usage shape, priced by a LiteLLM-shaped rate card.

Each case is issue 16's table (and the other rules the providers report) twice, streamed and
not; the expected figure is computed here by hand from the usage the SDK received and the
card's per-token rates, never by a11i's own pricing code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from a11i.core.meter import UsageSource
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

# LiteLLM's model_prices_and_context_window.json shape and field names (prices per token, as
# JSON numbers); the values are those of litellm 1.109.1 for these models.
CARD: dict[str, dict[str, Any]] = {
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "max_input_tokens": 1000000,
        "max_output_tokens": 64000,
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
        "search_context_cost_per_query": {
            "search_context_size_low": 0.01,
            "search_context_size_medium": 0.01,
            "search_context_size_high": 0.01,
        },
        "provider_specific_entry": {"us": 1.1},
    },
    "gpt-5.4": {
        "litellm_provider": "openai",
        "mode": "chat",
        "max_input_tokens": 1050000,
        "max_output_tokens": 128000,
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 2.5e-07,
        "input_cost_per_token_flex": 1.25e-06,
        "output_cost_per_token_flex": 7.5e-06,
        "cache_read_input_token_cost_flex": 1.3e-07,
        "input_cost_per_token_priority": 5e-06,
        "output_cost_per_token_priority": 3e-05,
        "cache_read_input_token_cost_priority": 5e-07,
        "input_cost_per_token_above_272k_tokens": 5e-06,
        "output_cost_per_token_above_272k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_272k_tokens": 5e-07,
        "search_context_cost_per_query": {"search_context_size_medium": 0.01},
    },
    "gpt-6-sol": {
        "litellm_provider": "openai",
        "mode": "chat",
        "max_input_tokens": 922000,
        "max_output_tokens": 128000,
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 2e-07,
        "cache_creation_input_token_cost": 2.5e-06,
        "cache_creation_input_token_cost_above_12hr": 5e-06,
    },
}


#: search_context_cost_per_query, the same for every size in this card.
SEARCH_FEE = Decimal("0.01")


def rate(model: str, field: str) -> Decimal:
    return Decimal(repr(CARD[model][field]))


@pytest.fixture
async def priced(start_sidecar: SidecarFactory, tmp_path: Path) -> RunningSidecar:
    card = tmp_path / "model_prices_and_context_window.json"
    card.write_text(json.dumps(CARD), encoding="utf-8")
    return await start_sidecar(A11I_RATE_CARD=str(card))


def oai(sidecar: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.openai_url, api_key="sk-agent", max_retries=0)


def claude(sidecar: RunningSidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="sk-ant-agent", max_retries=0)


async def settled_cost(sidecar: RunningSidecar, header: str | None) -> Decimal:
    (record,) = await sidecar.settled(1)
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    if header is not None:
        # Non-streaming answers say it in a header too.
        assert Decimal(header) == record.settlement.cost_usd
    return record.settlement.cost_usd


# ------------------------------------------------------------------------------- Anthropic

#: A prompt long enough (~6,000 tokens) to write 5,000 tokens to the cache.
LONG_PROMPT = "The checkout service returns 503s since nine. " * 750


async def anthropic_call(
    sidecar: RunningSidecar, stream: bool, **extra: Any
) -> tuple[anthropic.types.Usage, Decimal]:
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        **extra,
    }
    async with claude(sidecar) as client:
        if stream:
            async with client.messages.stream(**params) as events:
                message = await events.get_final_message()
            return message.usage, await settled_cost(sidecar, None)
        raw = await client.messages.with_raw_response.create(**params)
        message = await raw.parse()
        return message.usage, await settled_cost(sidecar, raw.headers["x-a11i-cost-usd"])


def sonnet(usage: anthropic.types.Usage, *, above: bool = False, factor: str = "1") -> Decimal:
    """Anthropic's bill by hand: uncached input, reads, 5-minute and 1-hour writes, output,
    every token at the long-context rate when the whole prompt is above 200k."""
    m = "claude-sonnet-4-5"
    suffix = "_above_200k_tokens" if above else ""
    split = usage.cache_creation
    one_hour = split.ephemeral_1h_input_tokens if split is not None else 0
    five_minutes = (usage.cache_creation_input_tokens or 0) - one_hour
    tokens = (
        usage.input_tokens * rate(m, "input_cost_per_token" + suffix)
        + (usage.cache_read_input_tokens or 0) * rate(m, "cache_read_input_token_cost" + suffix)
        + five_minutes * rate(m, "cache_creation_input_token_cost" + suffix)
        # This card states no 1-hour rate above 200k: the plain 1-hour one applies (LiteLLM's
        # reading of its card, and a11i's).
        + one_hour * rate(m, "cache_creation_input_token_cost_above_1hr")
        + usage.output_tokens * rate(m, "output_cost_per_token" + suffix)
    )
    searches = usage.server_tool_use.web_search_requests if usage.server_tool_use else 0
    fee = searches * SEARCH_FEE
    return tokens * Decimal(factor) + fee


ANTHROPIC_CASES: list[tuple[str, dict[str, Any], Callable[[anthropic.types.Usage], Decimal]]] = [
    (
        "cache-writes-5m-and-1h",
        {"cache_write_tokens": 5_000, "cache_write_long_tokens": 4_000},
        sonnet,
    ),
    (
        "cache-writes-without-the-split-are-5m",
        {"cache_write_tokens": 5_000, "no_cache_split": True},
        sonnet,
    ),
    ("cache-reads", {"cached_tokens": 4_000}, sonnet),
    (
        "above-200k-every-token-at-the-premium",
        {"extra_input_tokens": 250_000, "cached_tokens": 1_000},
        lambda usage: sonnet(usage, above=True),
    ),
    ("three-web-searches", {"web_search_requests": 3, "web_fetch_requests": 1}, sonnet),
    ("us-inference", {"inference_geo": "us"}, lambda usage: sonnet(usage, factor="1.1")),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("knobs", "expected"),
    [case[1:] for case in ANTHROPIC_CASES],
    ids=[case[0] for case in ANTHROPIC_CASES],
)
async def test_anthropic_settles_as_billed(
    priced: RunningSidecar,
    standin: StandIn,
    stream: bool,
    knobs: dict[str, Any],
    expected: Callable[[anthropic.types.Usage], Decimal],
) -> None:
    standin.configure(**knobs)
    usage, settled = await anthropic_call(priced, stream)
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert settled == expected(usage)


# ---------------------------------------------------------------------------------- OpenAI


def gpt54(prompt: int, cached: int, output: int, *, tier: str = "", above: bool = False) -> Decimal:
    """OpenAI's bill by hand: uncached and cached input, output (reasoning inside it), at the
    rates of the reported tier, or of the long-context tier above 272k."""
    m = "gpt-5.4"
    suffix = "_above_272k_tokens" if above else (f"_{tier}" if tier else "")
    return (
        (prompt - cached) * rate(m, "input_cost_per_token" + suffix)
        + cached * rate(m, "cache_read_input_token_cost" + suffix)
        + output * rate(m, "output_cost_per_token" + suffix)
    )


OPENAI_CASES: list[tuple[str, str | None, dict[str, Any], str, str, bool]] = [
    # id, asked service_tier, knobs, expected tier suffix, reported tier, above 272k
    ("flex", "flex", {"cached_tokens": 8}, "flex", "flex", False),
    ("priority", "priority", {"cached_tokens": 8}, "priority", "priority", False),
    ("auto-is-default", "auto", {}, "", "default", False),
    ("reasoning-counted-once", None, {"reasoning_tokens": 500}, "", "default", False),
    (
        "above-272k",
        None,
        {"extra_input_tokens": 300_000, "cached_tokens": 1_000},
        "",
        "default",
        True,
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("asked", "knobs", "tier", "reported", "above"),
    [case[1:] for case in OPENAI_CASES],
    ids=[case[0] for case in OPENAI_CASES],
)
async def test_openai_chat_settles_as_billed(
    priced: RunningSidecar,
    standin: StandIn,
    stream: bool,
    asked: str | None,
    knobs: dict[str, Any],
    tier: str,
    reported: str,
    above: bool,
) -> None:
    standin.configure(**knobs)
    params: dict[str, Any] = {
        "model": "gpt-5.4",
        "messages": [{"role": "user", "content": "Why is checkout returning 503s?"}],
        # Room for the reasoning tokens too: they are part of the completion and its cap (a
        # provider reporting more than the cap is bounded, tests/unit/core/test_usage_bounds.py).
        "max_completion_tokens": 1024,
    }
    if asked is not None:
        params["service_tier"] = asked
    async with oai(priced) as client:
        if stream:
            chunks = [
                chunk
                async for chunk in await client.chat.completions.create(
                    **params, stream=True, stream_options={"include_usage": True}
                )
            ]
            usage, served = chunks[-1].usage, chunks[-1].service_tier
            header = None
        else:
            raw = await client.chat.completions.with_raw_response.create(**params)
            completion = raw.parse()
            usage, served = completion.usage, completion.service_tier
            header = raw.headers["x-a11i-cost-usd"]
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert served == reported
    cached = usage.prompt_tokens_details.cached_tokens or 0
    details = usage.completion_tokens_details
    assert details is not None
    assert details.reasoning_tokens == knobs.get("reasoning_tokens", 0)
    # completion_tokens holds the reasoning tokens already: billed once, as output.
    expected = gpt54(usage.prompt_tokens, cached, usage.completion_tokens, tier=tier, above=above)
    assert await settled_cost(priced, header) == expected


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_openai_responses_web_search_and_cache_writes_settle_as_billed(
    priced: RunningSidecar, standin: StandIn, stream: bool
) -> None:
    """gpt-6-sol bills cache writes by retention: 30 minutes at the write rate, 12 hours at
    ``cache_creation_input_token_cost_above_12hr``."""
    standin.configure(
        extra_input_tokens=10_000,
        cached_tokens=1_000,
        cache_write_tokens=5_000,
        cache_write_long_tokens=2_000,
    )
    params: dict[str, Any] = {"model": "gpt-6-sol", "input": "Summarise the incident."}
    async with oai(priced) as client:
        if stream:
            events = [event async for event in await client.responses.create(**params, stream=True)]
            assert events[-1].type == "response.completed"
            response = events[-1].response
            header = None
        else:
            raw = await client.responses.with_raw_response.create(**params)
            response = raw.parse()
            header = raw.headers["x-a11i-cost-usd"]
    usage = response.usage
    assert usage is not None
    details = usage.input_tokens_details
    assert details.cache_write_tokens_details is not None
    twelve_hours = details.cache_write_tokens_details.ttl_12h_tokens
    thirty_minutes = details.cache_write_tokens_details.ttl_30m_tokens
    assert (thirty_minutes, twelve_hours) == (3_000, 2_000)
    m = "gpt-6-sol"
    uncached = usage.input_tokens - details.cached_tokens - details.cache_write_tokens
    expected = (
        uncached * rate(m, "input_cost_per_token")
        + details.cached_tokens * rate(m, "cache_read_input_token_cost")
        + thirty_minutes * rate(m, "cache_creation_input_token_cost")
        + twelve_hours * rate(m, "cache_creation_input_token_cost_above_12hr")
        + usage.output_tokens * rate(m, "output_cost_per_token")
    )
    assert await settled_cost(priced, header) == expected


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_openai_responses_web_searches_are_billed_per_call(
    priced: RunningSidecar, standin: StandIn, stream: bool
) -> None:
    standin.configure(web_search_requests=2)
    params: dict[str, Any] = {
        "model": "gpt-5.4",
        "input": "What changed in the checkout service today?",
        "tools": [{"type": "web_search"}],
    }
    async with oai(priced) as client:
        if stream:
            events = [event async for event in await client.responses.create(**params, stream=True)]
            response = events[-1].response
            header = None
        else:
            raw = await client.responses.with_raw_response.create(**params)
            response = raw.parse()
            header = raw.headers["x-a11i-cost-usd"]
    searches = [item for item in response.output if item.type == "web_search_call"]
    assert len(searches) == 2
    usage = response.usage
    assert usage is not None
    cached = usage.input_tokens_details.cached_tokens
    expected = gpt54(usage.input_tokens, cached, usage.output_tokens) + 2 * Decimal("0.01")
    assert await settled_cost(priced, header) == expected


async def test_a_long_prompt_is_projected_at_the_long_context_rate(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    """Projection (before the call) uses the same rules: a prompt above the threshold is
    projected at the long-context rates, every token. A card with a low threshold stands in
    for 200k (a body of 200k tokens is 2 MB: aiohttp warns about sending it as bytes)."""
    card = tmp_path / "prices.json"
    entry = {
        **CARD["claude-sonnet-4-5"],
        "input_cost_per_token_above_2k_tokens": 6e-06,
        "output_cost_per_token_above_2k_tokens": 2.25e-05,
    }
    for key in list(entry):
        if "_above_200k_" in key:
            del entry[key]
    card.write_text(json.dumps({"claude-sonnet-4-5": entry}), encoding="utf-8")
    sidecar = await start_sidecar(A11I_RATE_CARD=str(card))
    projected: list[tuple[int, Decimal]] = []
    async with claude(sidecar) as client:
        for words in (500, 3_000):
            raw = await client.messages.with_raw_response.create(
                model="claude-sonnet-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "incident " * words}],
            )
            counted = int(raw.headers["x-a11i-input-tokens"])
            projected.append((counted, Decimal(raw.headers["x-a11i-projected-cost-usd"])))
    (short, short_usd), (long, long_usd) = projected
    assert short <= 2_000 < long
    assert short_usd == short * Decimal("3e-06") + 100 * Decimal("1.5e-05")
    assert long_usd == long * Decimal("6e-06") + 100 * Decimal("2.25e-05")


async def test_a_cut_stream_keeps_the_reported_cache_split_and_tier(
    priced: RunningSidecar, standin: StandIn
) -> None:
    """Cut after message_start: the cache writes it reported are still billed by lifetime
    (the output is the sidecar's own count of what arrived), and the charge says how."""
    standin.configure(
        cache_write_tokens=5_000,
        cache_write_long_tokens=4_000,
        service_tier="priority",
        cut_after=3,
    )
    async with claude(priced) as client:
        with pytest.raises(anthropic.APIError):
            async with client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": LONG_PROMPT}],
            ) as events:
                await events.get_final_message()
    (record,) = await priced.settled(1)
    settled = record.settlement
    assert settled is not None
    assert settled.source is UsageSource.ESTIMATE
    assert (settled.usage.cache_write_tokens, settled.usage.cache_write_long_tokens) == (
        5_000,
        4_000,
    )
    assert settled.usage.service_tier == "priority"
    assert settled.charge is not None
    # No priority prices in this card: standard rates, and the charge says it was reported.
    assert settled.charge.describe().startswith("standard (reported priority);")
    m = "claude-sonnet-4-5"
    uncached = settled.usage.input_tokens - 5_000
    assert settled.cost_usd == (
        uncached * rate(m, "input_cost_per_token")
        + 1_000 * rate(m, "cache_creation_input_token_cost")
        + 4_000 * rate(m, "cache_creation_input_token_cost_above_1hr")
        + settled.usage.output_tokens * rate(m, "output_cost_per_token")
    )
