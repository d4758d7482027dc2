"""Library mode: plan and settle calls in-process with the real counter and rate card."""

from __future__ import annotations

from decimal import Decimal

import pytest

from a11i.core.errors import BadRequest
from a11i.core.meter import Meter, OutputHistory, UsageSource
from a11i.core.model import Dialect, JSONObject, Usage
from a11i.core.policy import BudgetPolicy, Decision, decide
from a11i.core.pricing import RateCard, cost, parse_rate_card, per_million, project
from a11i.sidecar.meter import load_meter


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


CHAT: JSONObject = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Which pods are failing in the shop namespace?"},
    ],
}


def test_plan_counts_prices_and_projects(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, {**CHAT, "max_tokens": 200})
    price = meter.rate_card.lookup("gpt-4o")
    assert plan.input.exact
    assert plan.input.tokens == meter.counter.count_chat("gpt-4o", CHAT["messages"]).tokens  # type: ignore[arg-type]
    assert plan.output_bound == 200
    assert plan.projected_usd == project(price, plan.input.tokens, 200)
    assert plan.projected_usd == (
        price.price.input_per_token * plan.input.tokens + price.price.output_per_token * 200
    )
    assert not plan.price.is_fallback
    assert Decimal(0) <= plan.saturation_percent < Decimal(1)


@pytest.mark.parametrize(
    ("dialect", "body", "bound"),
    [
        (Dialect.OPENAI_CHAT, {**CHAT, "max_completion_tokens": 50, "n": 3}, 150),
        (Dialect.OPENAI_CHAT, CHAT, 16_384),  # no cap, no history: the model cap
        (Dialect.OPENAI_EMBEDDINGS, {"model": "text-embedding-3-small", "input": "x"}, 0),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 321,
                "messages": [{"role": "user", "content": "hi"}],
            },
            321,
        ),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-4.1", "input": "x", "max_output_tokens": 9}, 9),
        # Legacy completions: OpenAI's default max_tokens of 16 when unset...
        (Dialect.OPENAI_COMPLETIONS, {"model": "gpt-3.5-turbo-instruct", "prompt": "x"}, 16),
        # ...times max(n, best_of): best_of answers are generated and billed...
        (
            Dialect.OPENAI_COMPLETIONS,
            {"model": "davinci-002", "prompt": "x", "max_tokens": 100, "n": 2, "best_of": 3},
            300,
        ),
        # ...for every prompt of a batch.
        (
            Dialect.OPENAI_COMPLETIONS,
            {"model": "babbage-002", "prompt": ["a", "b"], "max_tokens": 10, "n": 3},
            60,
        ),
    ],
    ids=[
        "n-choices",
        "model-cap",
        "embeddings",
        "anthropic",
        "responses",
        "completion-default",
        "completion-best-of",
        "completion-batch",
    ],
)
def test_output_bound(meter: Meter, dialect: Dialect, body: JSONObject, bound: int) -> None:
    assert meter.plan(dialect, body).output_bound == bound


def test_output_bound_never_exceeds_the_room_left_in_the_window(meter: Meter) -> None:
    big = {"model": "gpt-4", "messages": [{"role": "user", "content": "word " * 8000}]}
    plan = meter.plan(Dialect.OPENAI_CHAT, big)  # type: ignore[arg-type]
    assert plan.input.tokens + plan.output_bound == 8192


@pytest.mark.parametrize(
    ("model", "input_per_mtok", "output_per_mtok"),
    [
        ("gpt-3.5-turbo-instruct", "1.50", "2.00"),
        ("gpt-3.5-turbo-instruct-0914", "1.50", "2.00"),
        ("davinci-002", "2.00", "2.00"),
        ("babbage-002", "0.40", "0.40"),
    ],
    ids=["instruct", "instruct-dated", "davinci", "babbage"],
)
def test_completion_is_planned_and_settled_at_openais_list_price(
    meter: Meter, model: str, input_per_mtok: str, output_per_mtok: str
) -> None:
    plan = meter.plan(Dialect.OPENAI_COMPLETIONS, {"model": model, "prompt": "Say this is a test"})
    mtok = Decimal(1_000_000)
    assert not plan.price.is_fallback
    assert plan.price.price.input_per_token == Decimal(input_per_mtok) / mtok
    assert plan.price.price.output_per_token == Decimal(output_per_mtok) / mtok
    assert plan.input.exact
    assert plan.input.tokens == 5
    assert plan.output_bound == 16
    assert (
        plan.projected_usd == (Decimal(input_per_mtok) * 5 + Decimal(output_per_mtok) * 16) / mtok
    )
    settled = meter.settle(plan, Usage(5, 7))
    assert settled.source is UsageSource.PROVIDER
    assert settled.cost_usd == (Decimal(input_per_mtok) * 5 + Decimal(output_per_mtok) * 7) / mtok
    # Without usage the answer text is counted.
    text = "\n\nThis is indeed a test"
    estimated = meter.settle(plan, None, text)
    assert estimated.source is UsageSource.ESTIMATE
    assert estimated.usage == Usage(5, meter.counter.count_text(model, text).tokens)
    assert estimated.usage.output_tokens > 0


def test_unknown_model_is_priced_at_the_fallback(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, {**CHAT, "model": "acme-9000", "max_tokens": 10})
    assert plan.price.is_fallback
    assert plan.projected_usd > 0


def test_settle_prefers_the_providers_usage(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT)
    usage = Usage(input_tokens=1000, output_tokens=10, cached_input_tokens=512)
    settled = meter.settle(plan, usage, "ignored")
    assert settled.source is UsageSource.PROVIDER
    assert settled.cost_usd == cost(plan.price, usage)


def test_settle_without_usage_counts_itself(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT)
    settled = meter.settle(plan, None, "Three pods are failing.")
    assert settled.source is UsageSource.ESTIMATE
    assert settled.usage.input_tokens == plan.input.tokens
    assert (
        settled.usage.output_tokens
        == meter.counter.count_text("gpt-4o", "Three pods are failing.").tokens
    )


def test_library_decides_with_the_policy(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, {**CHAT, "max_tokens": 1000})
    policy = BudgetPolicy(limit_usd=Decimal("0.02"))
    assert decide(policy, Decimal(0), plan.projected_usd).decision is Decision.ALLOW
    assert decide(policy, Decimal("0.0195"), plan.projected_usd).decision is Decision.BLOCK


def test_plan_rejects_bad_bodies(meter: Meter) -> None:
    with pytest.raises(BadRequest, match="'messages' is required"):
        meter.plan(Dialect.OPENAI_CHAT, {"model": "gpt-4o"})


def test_output_history_projects_uncapped_calls_realistically() -> None:
    history = OutputHistory(window=50, min_samples=10, default_tokens=4096, margin=1.25)
    assert history.estimate("gpt-4o") == 4096  # nothing seen yet
    for tokens in [100] * 45 + [800] * 5:
        history.observe("gpt-4o", tokens)
    # The 95th percentile of the last 50 outputs, with a 25% margin.
    assert history.estimate("gpt-4o") == 1000
    assert history.estimate("gpt-4.1") == 4096


def test_an_uncapped_call_is_projected_at_the_expected_output(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, CHAT, expected_output=300)
    assert plan.output_bound == 300
    capped = meter.plan(Dialect.OPENAI_CHAT, {**CHAT, "max_tokens": 50}, expected_output=300)
    assert capped.output_bound == 50  # the request's own cap always wins


def test_output_history_is_bounded_in_models() -> None:
    history = OutputHistory()
    for index in range(history.max_models + 50):
        history.observe(f"model-{index}", 10)
    assert len(history._outputs) == history.max_models
    assert history.estimate("model-0") == 4096  # evicted: back to the default


def test_a_meter_on_a_reloaded_card_prices_by_the_new_card(meter: Meter) -> None:
    # The sidecar reloads a card by building a new Meter on the same counter: nothing
    # remembered for the old card's prices (applied rates, per model) may price a call now.
    def card(input_mtok: str, output_mtok: str) -> RateCard:
        return parse_rate_card(
            {
                "models": {
                    "gpt-4o": {
                        "input_per_mtok": input_mtok,
                        "output_per_mtok": output_mtok,
                        "context_window": 128_000,
                        "service_tiers": {"flex": {"input_per_mtok": "0.5"}},
                    }
                }
            },
            source="reload",
        )

    body: JSONObject = {**CHAT, "max_tokens": 100, "service_tier": "flex"}
    usage = Usage(input_tokens=1_000, output_tokens=100, service_tier="flex")
    for input_mtok, output_mtok in [("1", "2"), ("3", "4"), ("1", "2")]:
        reloaded = Meter(meter.counter, card(input_mtok, output_mtok))
        plan = reloaded.plan(Dialect.OPENAI_CHAT, body)
        tokens = plan.input.tokens
        assert plan.projected_usd == max(
            per_million(input_mtok) * tokens + per_million(output_mtok) * 100,
            per_million("0.5") * tokens + per_million(output_mtok) * 100,
        )
        settled = reloaded.settle(plan, usage)
        assert settled.cost_usd == per_million("0.5") * 1_000 + per_million(output_mtok) * 100
