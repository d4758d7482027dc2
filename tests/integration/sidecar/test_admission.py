"""Admission that uses the money: a coding agent's output cap fitted to the wallet.

The official SDKs stream through a real sidecar to a stand-in provider that always answers as
long as the forwarded cap allows (a model that never stops on its own): whatever the cap, the
settled spend never passes the limit, and the calls go on until no useful answer fits.
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

from a11i.core.pricing import project
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.standin import StandIn

PROMPT = "Fix the failing test in the shop service and explain the change."


def claude(sidecar: RunningSidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="sk-ant-agent", max_retries=0)


async def spent(sidecar: RunningSidecar) -> Decimal:
    return (await sidecar.sidecar.wallet.snapshot()).spent_usd


async def _until_refused(
    client: anthropic.AsyncAnthropic, running: RunningSidecar
) -> tuple[list[str], anthropic.APIStatusError | None]:
    """Stream the same coding turn until the wallet refuses one: the caps forwarded, and the
    refusal."""
    capped: list[str] = []
    refusal: anthropic.APIStatusError | None = None
    for turn in range(1, 40):
        try:
            async with client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=64000,
                messages=[{"role": "user", "content": PROMPT}],
            ) as stream:
                capped.append(stream.response.headers["x-a11i-output-cap"])
                final = await stream.get_final_message()
        except anthropic.APIStatusError as refused:
            refusal = refused
            break
        # The stand-in produced exactly the forwarded cap: the cap is what kept it in budget.
        forwarded = int(capped[-1].split(";")[0])
        assert final.usage.output_tokens == forwarded
        assert final.stop_reason == "max_tokens"
        await running.settled(turn)
    return capped, refusal


async def test_a_coding_agent_with_max_tokens_64000_uses_the_budget_and_never_passes_it(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    standin.configure(words=1_000_000)  # answers as long as the cap allows
    running = await start_sidecar(A11I_BUDGET_USD="0.05")
    async with claude(running) as client:
        capped, refusal = await _until_refused(client, running)
    assert refusal is not None, "the wallet never refused a call"
    assert refusal.status_code == 402
    assert refusal.body["error"]["type"] == "budget_exceeded"  # type: ignore[index]
    # Without the fitted cap, not one of these calls would have gone through.
    assert capped
    assert all(cap.endswith("; asked=64000") for cap in capped)
    total = await spent(running)
    assert total <= Decimal("0.05")
    # Refused only when no useful answer fitted: what was left could not pay the input and
    # the 1024-token floor of one more call. (The refusal's record reaches the observers from
    # the telemetry thread, after the agent has its 402: wait for it.)
    last = (await running.settled(len(capped) + 1))[-1]
    assert last.status == 402
    floor_cost = project(last.plan.price.price, last.plan.input.tokens, 1024)
    assert Decimal("0.05") - total < floor_cost
    # Each admitted call was reserved at what its forwarded cap allows, and settled within it.
    for record in running.records[:-1]:
        assert record.output_cap is not None
        assert record.settlement is not None
        assert record.settlement.cost_usd <= record.plan.projected_usd


async def test_strict_budgets_refuse_instead_of_capping(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="0.05", A11I_BUDGET_FIT_OUTPUT_CAP="off")
    with pytest.raises(anthropic.APIStatusError) as refused:
        async with (
            claude(running) as client,
            client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=64000,
                messages=[{"role": "user", "content": PROMPT}],
            ) as stream,
        ):
            await stream.get_final_message()
    assert refused.value.status_code == 402
    assert standin.requests == []


async def test_an_uncapped_openai_call_gets_a_cap_when_its_projection_does_not_fit(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    standin.configure(words=1_000_000)
    # gpt-4o: $10/M output; the history-less projection of an uncapped call is 4,096 tokens
    # ($0.041): $0.02 affords about 2,000.
    running = await start_sidecar(A11I_BUDGET_USD="0.02")
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
        )
        answer = raw.parse()
    forwarded, asked = raw.headers["x-a11i-output-cap"].split("; ")
    assert asked == "asked=none"
    [sent] = standin.requests
    assert sent.json is not None
    assert sent.json["max_completion_tokens"] == int(forwarded)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == int(forwarded)
    assert Decimal(raw.headers["x-a11i-cost-usd"]) <= Decimal("0.02")


async def test_anthropic_estimates_on_later_turns_are_within_a_few_percent(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    """Turn 1 is a local estimate (cl100k x 1.2, off by tens of percent against the stand-in's
    own count); from turn 2 the count starts from what the provider reported."""
    running = await start_sidecar()
    system = "You are an SRE agent for the shop. Answer briefly and cite the logs. " * 30
    messages: list[anthropic.types.MessageParam] = []
    errors: list[float] = []
    async with claude(running) as client:
        for i in range(6):
            messages.append(
                {"role": "user", "content": f"Turn {i}: why did pod shop-{i} restart? " * 5}
            )
            raw = await client.messages.with_raw_response.create(
                model="claude-sonnet-4-5", max_tokens=200, system=system, messages=messages
            )
            answer = await raw.parse()
            ours = int(raw.headers["x-a11i-input-tokens"])
            assert raw.headers["x-a11i-token-count"] == "estimate"
            errors.append(abs(ours - answer.usage.input_tokens) / answer.usage.input_tokens)
            text = "".join(block.text for block in answer.content if block.type == "text")
            messages.append({"role": "assistant", "content": text})
    assert max(errors[1:]) < 0.03, errors
    budget = running.sidecar.meter.conversations.errors()
    assert budget.calls == 6
