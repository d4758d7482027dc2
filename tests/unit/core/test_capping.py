"""The output cap fitted to what the wallet has left."""

from __future__ import annotations

from decimal import Decimal

import pytest

from a11i.core.capping import cap_field, fit_output_cap
from a11i.core.meter import Meter
from a11i.core.model import Dialect, JSONObject
from a11i.core.pricing import project
from a11i.sidecar.meter import load_meter


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


SONNET: JSONObject = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64000,
    "messages": [{"role": "user", "content": "Fix the failing test in the shop service."}],
}


def test_a_coding_agents_cap_is_lowered_to_what_the_money_affords(meter: Meter) -> None:
    plan = meter.plan(Dialect.ANTHROPIC_MESSAGES, SONNET)
    assert plan.projected_usd > Decimal("0.9")  # 64k output tokens at $15/M
    fit = fit_output_cap(plan, Decimal("0.05"), floor_tokens=1024)
    assert fit is not None
    assert fit.field == "max_tokens"
    assert fit.asked == 64000
    assert 1024 <= fit.forwarded < 64000
    assert fit.body["max_tokens"] == fit.forwarded
    assert fit.header == f"{fit.forwarded}; asked=64000"
    refitted = meter.plan(Dialect.ANTHROPIC_MESSAGES, fit.body)
    # The worst case of what is forwarded fits, and one more token would not.
    assert refitted.projected_usd <= Decimal("0.05")
    one_more = project(refitted.price.price, refitted.input.tokens, fit.forwarded + 1)
    assert one_more > Decimal("0.05")
    assert SONNET["max_tokens"] == 64000  # the agent's body is not changed in place


@pytest.mark.parametrize(
    ("available", "floor"),
    [("0.01", 1024), ("0.0000001", 1), ("0", 1024)],
    ids=["below-floor", "not-even-the-input", "nothing-left"],
)
def test_no_useful_answer_fits(meter: Meter, available: str, floor: int) -> None:
    plan = meter.plan(Dialect.ANTHROPIC_MESSAGES, SONNET)
    assert fit_output_cap(plan, Decimal(available), floor_tokens=floor) is None


def test_a_call_that_asks_for_less_than_the_floor_needs_all_of_it(meter: Meter) -> None:
    body = {**SONNET, "max_tokens": 300}
    plan = meter.plan(Dialect.ANTHROPIC_MESSAGES, body)
    assert fit_output_cap(plan, plan.projected_usd, floor_tokens=1024) is None  # fits: no change
    just_short = plan.projected_usd - Decimal("0.000015")  # one output token less
    assert fit_output_cap(plan, just_short, floor_tokens=1024) is None


def test_the_thinking_budget_is_lowered_below_the_cap_or_the_call_refused(meter: Meter) -> None:
    body = {**SONNET, "thinking": {"type": "enabled", "budget_tokens": 32000}}
    plan = meter.plan(Dialect.ANTHROPIC_MESSAGES, body)
    fit = fit_output_cap(plan, Decimal("0.05"), floor_tokens=1024)
    assert fit is not None
    thinking = fit.body["thinking"]
    assert isinstance(thinking, dict)
    assert thinking["budget_tokens"] == fit.forwarded - 1
    assert thinking["type"] == "enabled"
    # Too little for Anthropic's minimum thinking budget (1024) below the cap: refused.
    tight = project(plan.price.price, plan.input.tokens, 1024)
    assert fit_output_cap(plan, tight, floor_tokens=256) is None
    # A thinking budget already below the fitted cap is left alone.
    small = meter.plan(
        Dialect.ANTHROPIC_MESSAGES, {**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    )
    kept = fit_output_cap(small, Decimal("0.05"), floor_tokens=1024)
    assert kept is not None
    assert kept.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize(
    ("dialect", "body", "field"),
    [
        (
            Dialect.OPENAI_CHAT,
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
             "max_tokens": 9000},
            "max_tokens",
        ),
        (
            Dialect.OPENAI_CHAT,
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
             "max_completion_tokens": 9000},
            "max_completion_tokens",
        ),
        (
            Dialect.OPENAI_CHAT,
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            "max_completion_tokens",
        ),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-4.1", "input": "hi"}, "max_output_tokens"),
        (
            Dialect.OPENAI_COMPLETIONS,
            {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 9000, "n": 2},
            "max_tokens",
        ),
    ],
    ids=["chat-max-tokens", "chat-max-completion-tokens", "chat-uncapped", "responses-uncapped",
         "completions-two-choices"],
)  # fmt: skip
def test_each_dialect_lowers_its_own_field(
    meter: Meter, dialect: Dialect, body: JSONObject, field: str
) -> None:
    assert cap_field(dialect, body) == field
    plan = meter.plan(dialect, body)
    available = project(plan.price.price, plan.input.tokens, 0) + (
        plan.price.price.output_per_token * plan.request.choices * 2000
    )
    fit = fit_output_cap(plan, available, floor_tokens=1024)
    assert fit is not None
    assert fit.forwarded == 2000
    assert fit.body[field] == 2000
    assert fit.asked == plan.request.max_output_tokens
    assert meter.plan(dialect, fit.body).projected_usd <= available


def test_embeddings_have_no_output_to_cap(meter: Meter) -> None:
    plan = meter.plan(
        Dialect.OPENAI_EMBEDDINGS, {"model": "text-embedding-3-small", "input": "x" * 100}
    )
    assert cap_field(Dialect.OPENAI_EMBEDDINGS, plan.request.body) is None
    assert fit_output_cap(plan, Decimal("0.0000001"), floor_tokens=1) is None


def test_a_priority_call_is_fitted_at_the_priority_output_price(meter: Meter) -> None:
    """The affordable cap is what the asked tier's output price allows (gpt-5.4 priority:
    $30/M, twice the standard $15/M), so the forwarded worst case fits the wallet."""
    body: JSONObject = {
        "model": "gpt-5.4",
        "service_tier": "priority",
        "max_completion_tokens": 100_000,
        "messages": [{"role": "user", "content": "Summarise the incident."}],
    }
    plan = meter.plan(Dialect.OPENAI_CHAT, body)
    fit = fit_output_cap(plan, Decimal("0.5"), floor_tokens=1024)
    assert fit is not None
    refitted = meter.plan(Dialect.OPENAI_CHAT, fit.body)
    assert refitted.projected_usd <= Decimal("0.5")
    one_more = project(refitted.price, refitted.input.tokens, fit.forwarded + 1, tier="priority")
    assert one_more > Decimal("0.5")
