"""Bounds on a provider's reported usage: what a request can have used, and nothing more."""

from __future__ import annotations

import pytest

from a11i.core.meter import Meter, UsageSource
from a11i.core.model import Dialect, JSONObject, Usage
from a11i.core.pricing import cost
from a11i.core.usage_bounds import SERVER_TOOL_ROUNDS, UsageBounds, bound_usage, bounds_for
from a11i.sidecar.meter import load_meter

BOUNDS = UsageBounds(input_tokens=1000, output_tokens=100)


@pytest.mark.parametrize(
    ("reported", "settled", "flagged"),
    [
        pytest.param(Usage(900, 100, 800), Usage(900, 100, 800), 0, id="within"),
        pytest.param(Usage(10**30, 5), Usage(40, 5), 1, id="huge-input"),
        pytest.param(Usage(-3, 5), Usage(40, 5), 1, id="negative-input"),
        pytest.param(Usage(50, 10**12), Usage(50, 7), 1, id="huge-output"),
        pytest.param(Usage(10, 5, 100_000_000), Usage(10, 5, 10), 1, id="cached-beyond-input"),
        pytest.param(Usage(10, 5, 6, 9), Usage(10, 5, 6, 4), 1, id="writes-beyond-input"),
        pytest.param(Usage(10**30, 5, 10**30), Usage(40, 5, 40), 2, id="both-huge"),
    ],
)
def test_counts_beyond_the_bounds_become_the_sidecars_own(
    reported: Usage, settled: Usage, flagged: int
) -> None:
    bounded = bound_usage(reported, BOUNDS, own_input=40, own_output=7)
    assert bounded.usage == settled
    assert len(bounded.violations) == flagged


def test_bounds_follow_the_request_and_the_model() -> None:
    plain = bounds_for(
        counted_input=200_000,
        context_window=128_000,
        max_output_per_choice=None,
        model_output_cap=16_384,
        choices=2,
    )
    # An input the sidecar only estimates may be larger than the window says.
    assert plain == UsageBounds(input_tokens=400_000, output_tokens=32_768)
    capped = bounds_for(
        counted_input=10,
        context_window=128_000,
        max_output_per_choice=50,
        model_output_cap=16_384,
        choices=1,
        tools=[{"type": "function", "function": {"name": "get_pods"}}],
    )
    assert capped == UsageBounds(input_tokens=128_000, output_tokens=50)
    searching = bounds_for(
        counted_input=10,
        context_window=200_000,
        max_output_per_choice=50,
        model_output_cap=None,
        choices=1,
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
    )
    assert searching == UsageBounds(200_000 * SERVER_TOOL_ROUNDS, 50 * SERVER_TOOL_ROUNDS)


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


CHAT: JSONObject = {
    "model": "gpt-4o",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Which pods are failing?"}],
}


def test_settle_flags_an_absurd_usage_and_prices_the_own_count(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT)
    settled = meter.settle(plan, Usage(input_tokens=10**30, output_tokens=3), "three words here")
    assert settled.source is UsageSource.BOUNDED
    assert settled.usage == Usage(plan.input.tokens, 3)
    assert settled.cost_usd == cost(plan.price, settled.usage)
    assert len(settled.violations) == 1
    assert "input_tokens" in settled.violations[0]


def test_settle_prices_cache_reads_no_larger_than_the_prompt(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT)
    honest = meter.settle(plan, Usage(plan.input.tokens, 3))
    lying = meter.settle(plan, Usage(plan.input.tokens, 3, cached_input_tokens=100_000_000))
    assert lying.source is UsageSource.BOUNDED
    assert lying.usage.cached_input_tokens == plan.input.tokens
    # Cache reads are cheaper than input: a bounded lie never costs more than the honest call.
    assert lying.cost_usd <= honest.cost_usd


def test_settle_trusts_a_believable_usage(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT)
    settled = meter.settle(plan, Usage(plan.input.tokens + 3, 64, 2))
    assert settled.source is UsageSource.PROVIDER
    assert settled.violations == ()
