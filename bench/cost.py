"""Cost accuracy by billing rule: what a11i settles against what the provider bills.

Run with ``python -m bench.cost`` (part of ``make bench``). Starts the stand-in provider and a
sidecar in this process, priced by a LiteLLM-shaped card (litellm 1.109.1's prices for the
models used), and sends each case of issue 16 through the official SDKs, plain and streamed,
with the stand-in reporting the usage shape of the case. For each call it prints:

- settled: a11i's settled cost (from the provider's usage, by every rule of the card);
- bill: the provider's bill for that usage, computed here by hand from the card's fields;
- list price: the same usage priced at the plain input / cache / output prices only (what
  a11i settled before it modelled cache lifetimes, tiers, long context and tool fees);
- LiteLLM: LiteLLM's own ``completion_cost`` over the same answer and card (plain calls), when
  ``A11I_BENCH_LITELLM_PATH`` names a path holding the ``litellm`` package and its
  dependencies (e.g. ``pip install --target DIR litellm``); it runs in its own interpreter.

Figures, never assertions; a settled figure that differs from the bill is marked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
from aiohttp import web

from a11i.core.meter import Meter
from a11i.core.model import Usage, usd
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.app import wallet_for
from a11i.sidecar.call import CallRecord
from a11i.sidecar.encodings import load_encodings
from a11i.sidecar.meter import effective_rate_card
from a11i.sidecar.proxy import Sidecar, build_app
from a11i.sidecar.settings import from_env
from tests.support.standin import StandIn

#: LiteLLM's shape and field names; litellm 1.109.1's prices for these models, plus the
#: Sonnet 4.5 long-context prices Anthropic publishes (that file lacks them).
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
        "input_cost_per_token_batches": 1.5e-06,
        "output_cost_per_token_batches": 7.5e-06,
        "cache_read_input_token_cost_batches": 1.5e-07,
        "cache_creation_input_token_cost_batches": 1.875e-06,
        "search_context_cost_per_query": {"search_context_size_medium": 0.01},
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
        "input_cost_per_token_priority": 5e-06,
        "output_cost_per_token_priority": 3e-05,
        "input_cost_per_token_above_272k_tokens": 5e-06,
        "output_cost_per_token_above_272k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_272k_tokens": 5e-07,
        "search_context_cost_per_query": {"search_context_size_medium": 0.01},
    },
}


def rate(model: str, field: str) -> Decimal:
    return Decimal(repr(CARD[model][field]))


@dataclass(frozen=True)
class Case:
    name: str
    api: str  # anthropic | chat | responses
    model: str
    knobs: dict[str, Any]
    params: dict[str, Any]
    #: The provider's bill for a usage, by hand from the card's fields.
    bill: Callable[[Usage], Decimal]


def anthropic_bill(usage: Usage, suffix: str = "") -> Decimal:
    m = "claude-sonnet-4-5"
    uncached = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    short = usage.cache_write_tokens - usage.cache_write_long_tokens
    return (
        uncached * rate(m, "input_cost_per_token" + suffix)
        + usage.cached_input_tokens * rate(m, "cache_read_input_token_cost" + suffix)
        + short * rate(m, "cache_creation_input_token_cost" + suffix)
        + usage.cache_write_long_tokens * rate(m, "cache_creation_input_token_cost_above_1hr")
        + usage.output_tokens * rate(m, "output_cost_per_token" + suffix)
        + usage.web_search_requests * Decimal("0.01")
    )


def openai_bill(usage: Usage, suffix: str = "") -> Decimal:
    m = "gpt-5.4"
    read_field = "cache_read_input_token_cost" + (suffix if "272k" in suffix else "")
    return (
        (usage.input_tokens - usage.cached_input_tokens) * rate(m, "input_cost_per_token" + suffix)
        + usage.cached_input_tokens * rate(m, read_field)
        + usage.output_tokens * rate(m, "output_cost_per_token" + suffix)
        + usage.web_search_requests * Decimal("0.01")
    )


def list_price(model: str, usage: Usage) -> Decimal:
    """Plain prices only: no cache lifetime, tier, long context or tool fee."""
    entry = CARD[model]
    read = rate(model, "cache_read_input_token_cost")
    write = (
        rate(model, "cache_creation_input_token_cost")
        if "cache_creation_input_token_cost" in entry
        else rate(model, "input_cost_per_token")
    )
    uncached = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    return (
        uncached * rate(model, "input_cost_per_token")
        + usage.cached_input_tokens * read
        + usage.cache_write_tokens * write
        + usage.output_tokens * rate(model, "output_cost_per_token")
    )


LONG_PROMPT = "The checkout service returns 503s since nine. " * 750
CLAUDE = {"max_tokens": 64, "messages": [{"role": "user", "content": LONG_PROMPT}]}
CHAT = {
    "max_completion_tokens": 64,
    "messages": [{"role": "user", "content": "Why is checkout returning 503s?"}],
}

CASES = [
    Case(
        "Anthropic: 1,000 tokens to the 5m cache, 4,000 to the 1h cache",
        "anthropic",
        "claude-sonnet-4-5",
        {"cache_write_tokens": 5_000, "cache_write_long_tokens": 4_000},
        CLAUDE,
        anthropic_bill,
    ),
    Case(
        "Anthropic: 250,000 input tokens (above 200k)",
        "anthropic",
        "claude-sonnet-4-5",
        {"extra_input_tokens": 250_000},
        CLAUDE,
        lambda usage: anthropic_bill(usage, "_above_200k_tokens"),
    ),
    Case(
        "Anthropic: 3 server-side web searches",
        "anthropic",
        "claude-sonnet-4-5",
        {"web_search_requests": 3},
        CLAUDE,
        anthropic_bill,
    ),
    Case(
        "Anthropic: batch tier reported",
        "anthropic",
        "claude-sonnet-4-5",
        {"service_tier": "batch", "cached_tokens": 2_000},
        CLAUDE,
        lambda usage: anthropic_bill(usage, "_batches"),
    ),
    Case(
        'OpenAI: service_tier "flex"',
        "chat",
        "gpt-5.4",
        {},
        {**CHAT, "service_tier": "flex"},
        lambda usage: openai_bill(usage, "_flex"),
    ),
    Case(
        'OpenAI: service_tier "priority"',
        "chat",
        "gpt-5.4",
        {},
        {**CHAT, "service_tier": "priority"},
        lambda usage: openai_bill(usage, "_priority"),
    ),
    Case(
        "OpenAI: gpt-5.4 with 300,000 input tokens (above 272k)",
        "chat",
        "gpt-5.4",
        {"extra_input_tokens": 300_000, "cached_tokens": 50_000},
        CHAT,
        lambda usage: openai_bill(usage, "_above_272k_tokens"),
    ),
    Case(
        "OpenAI: 600 reasoning tokens inside the output",
        "chat",
        "gpt-5.4",
        {"reasoning_tokens": 600},
        CHAT,
        openai_bill,
    ),
    Case(
        "OpenAI Responses: 2 web searches",
        "responses",
        "gpt-5.4",
        {"web_search_requests": 2},
        {"input": "What changed in checkout today?", "tools": [{"type": "web_search"}]},
        openai_bill,
    ),
]


async def call(case: Case, url: str, stream: bool) -> dict[str, Any] | None:
    """Make the call; the answer body as the SDK parsed it (None for a stream)."""
    params = {"model": case.model, **case.params}
    if case.api == "anthropic":
        async with anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant", max_retries=0) as c:
            if stream:
                async with c.messages.stream(**params) as events:
                    await events.get_final_message()
                return None
            return dict((await c.messages.create(**params)).model_dump(mode="json"))
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk", max_retries=0) as client:
        if case.api == "chat":
            if stream:
                async for _ in await client.chat.completions.create(
                    **params, stream=True, stream_options={"include_usage": True}
                ):
                    pass
                return None
            return dict((await client.chat.completions.create(**params)).model_dump(mode="json"))
        if stream:
            async for _ in await client.responses.create(**params, stream=True):
                pass
            return None
        return dict((await client.responses.create(**params)).model_dump(mode="json"))


def litellm_costs(calls: list[dict[str, Any]]) -> list[Decimal | None] | None:
    """LiteLLM's figures for the plain calls, or None without A11I_BENCH_LITELLM_PATH."""
    path = os.environ.get("A11I_BENCH_LITELLM_PATH")
    if not path:
        return None
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("litellm_cost.py"))],
        input=json.dumps({"card": CARD, "calls": calls}),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        print(f"LiteLLM's calculator failed: {done.stderr.strip()[-500:]}")
        return None
    return [None if cost is None else Decimal(cost) for cost in json.loads(done.stdout)]


async def main() -> None:
    standin = StandIn()
    await standin.start()
    records: list[CallRecord] = []
    with tempfile.TemporaryDirectory() as folder:
        card = Path(folder) / "model_prices_and_context_window.json"
        card.write_text(json.dumps(CARD), encoding="utf-8")
        assert standin.url is not None
        settings = from_env(
            {
                "A11I_OPENAI_BASE": standin.url,
                "A11I_ANTHROPIC_BASE": standin.url,
                "A11I_WALLET_FILE": ":memory:",
                "A11I_RATE_CARD": str(card),
            }
        )
        meter = Meter(TokenCounter(load_encodings()), effective_rate_card(settings.rate_card_path))
        sidecar = Sidecar(settings, meter, wallet_for(settings))
        settled_one = asyncio.Event()

        def observe(record: CallRecord) -> None:
            records.append(record)
            settled_one.set()

        sidecar.observers.append(observe)
        runner = web.AppRunner(build_app(sidecar), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        print(f"{'case':<62} {'':>8} {'settled':>12} {'bill':>12} {'list price':>12} {'off by':>8}")
        exact = total = 0
        answers: list[dict[str, Any]] = []
        bills: list[Decimal] = []
        try:
            for case in CASES:
                for stream in (False, True):
                    standin.configure(**case.knobs)
                    settled_one.clear()
                    body = await call(case, url, stream)
                    # A streamed call is settled just after the client has read its end.
                    await settled_one.wait()
                    settled = records[-1].settlement
                    assert settled is not None
                    bill = case.bill(settled.usage)
                    listed = list_price(case.model, settled.usage)
                    total += 1
                    if body is not None:
                        answers.append({"api": case.api, "model": case.model, "body": body})
                        bills.append(bill)
                    exact += settled.cost_usd == bill
                    mark = "" if settled.cost_usd == bill else "  <- differs"
                    off = f"{(listed - bill) / bill:+.0%}" if bill else "-"
                    print(
                        f"{case.name:<62} {'streamed' if stream else 'plain':>8} "
                        f"{usd(settled.cost_usd):>12} {usd(bill):>12} {usd(listed):>12} "
                        f"{off:>8}{mark}"
                    )
        finally:
            await runner.cleanup()
            await standin.stop()
    print(f"\n{exact} of {total} calls settled exactly at the bill (to the last decimal).")
    print("'off by': the list-price figure's error against the bill.")
    peer = litellm_costs(answers)
    if peer is None:
        print("LiteLLM: not run (set A11I_BENCH_LITELLM_PATH to a path holding litellm).")
        return
    print("\nLiteLLM's completion_cost over the same plain answers and card:")
    matched = 0
    for answer, bill, figure in zip(answers, bills, peer, strict=True):
        # LiteLLM computes in binary floats: equal to the nano-dollar counts as equal here.
        same = figure is not None and abs(figure - bill) < Decimal("1e-9")
        matched += same
        shown = "n/a" if figure is None else format(figure, "f")
        print(
            f"  {answer['model']:<20} {answer['api']:<10} bill {usd(bill):>12}  LiteLLM {shown:>14}"
            + ("" if same else "  <- differs")
        )
    print(f"LiteLLM: {matched} of {len(bills)} within a nano-dollar of the bill.")


if __name__ == "__main__":
    asyncio.run(main())
