"""The official openai and anthropic SDKs, through a running sidecar, against the stand-in."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from decimal import Decimal

import aiohttp
import anthropic
import openai
import pytest

from a11i.core.meter import UsageSource
from a11i.core.model import Usage
from a11i.core.policy import Decision
from a11i.sidecar.wallets.memory import MemoryWallet
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

SRE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_pods",
            "description": "List the pods of a namespace",
            "parameters": {
                "type": "object",
                "properties": {
                    "namespace": {"type": "string", "description": "the namespace"},
                    "phase": {
                        "type": "string",
                        "description": "only pods in this phase",
                        "enum": ["Running", "Pending", "Failed"],
                    },
                },
                "required": ["namespace"],
            },
        },
    }
]
HISTORY = [
    {"role": "system", "content": "You are an SRE assistant. Be terse."},
    {"role": "user", "content": "Why is the checkout service returning 503s since 09:00?"},
]


def oai(sidecar: RunningSidecar, key: str = "sk-agent") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.openai_url, api_key=key, max_retries=0)


async def drain(stream: openai.AsyncStream[object]) -> list[object]:
    return [chunk async for chunk in stream]


def claude(sidecar: RunningSidecar, key: str = "sk-ant-agent") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=key, max_retries=0)


async def test_chat_is_metered_and_settled_from_usage(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    async with oai(sidecar) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HISTORY, tools=SRE_TOOLS, max_tokens=64
        )
        completion = raw.parse()
    assert completion.usage is not None
    # The sidecar's own count equals the provider's prompt_tokens, tools included.
    assert int(raw.headers["x-a11i-input-tokens"]) == completion.usage.prompt_tokens
    assert raw.headers["x-a11i-token-count"] == "exact"
    assert raw.headers["x-a11i-decision"] == "allow"
    (record,) = await sidecar.settled(1)
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert record.settlement.usage == Usage(
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        service_tier=completion.service_tier,
    )
    price = record.plan.price.price
    expected = (
        price.input_per_token * completion.usage.prompt_tokens
        + price.output_per_token * completion.usage.completion_tokens
    )
    assert Decimal(raw.headers["x-a11i-cost-usd"]) == expected
    assert Decimal(raw.headers["x-a11i-projected-cost-usd"]) >= expected
    # The model called a tool: the analyzer saw it.
    assert [call.name for call in record.tool_calls] == ["get_pods"]


async def test_an_answer_whose_tool_calls_cannot_be_read_is_still_answered_and_recorded(
    sidecar: RunningSidecar, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Tool calls and response facts are read for telemetry once the answer has gone: a
    # failure there costs the record its tool calls, never the agent its answer.
    def broken(*_args: object) -> object:
        raise RuntimeError("analysis failed")

    monkeypatch.setattr("a11i.sidecar.pipeline.tool_calls", broken)
    async with oai(sidecar) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HISTORY, tools=SRE_TOOLS, max_tokens=64
        )
    assert completion.choices[0].message.tool_calls
    (record,) = await sidecar.settled(1)
    assert record.complete
    assert record.tool_calls == ()
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert "reading the tool calls of a openai.chat answer failed" in caplog.text


async def test_stream_without_usage_asked_hides_the_usage_chunk(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    async with oai(sidecar) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HISTORY, stream=True)
        chunks = [chunk async for chunk in stream]
    assert chunks
    assert all(chunk.choices for chunk in chunks), "the client saw a usage-only chunk"
    assert all(chunk.usage is None for chunk in chunks)
    assert all("usage" not in chunk.model_dump(exclude_unset=True) for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text
    # The sidecar asked the provider for usage on the agent's behalf, and settled from it.
    sent = standin.requests[-1].json
    assert isinstance(sent, dict)
    assert sent["stream_options"] == {"include_usage": True}
    (record,) = await sidecar.settled(1)
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert record.complete


async def test_stream_with_usage_asked_keeps_it(sidecar: RunningSidecar) -> None:
    async with oai(sidecar) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=HISTORY,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    record = (await sidecar.settled(1))[-1]
    assert record.settlement is not None
    assert record.settlement.usage.input_tokens == chunks[-1].usage.prompt_tokens
    assert record.plan.input.tokens == chunks[-1].usage.prompt_tokens


async def test_tool_results_are_seen_in_the_next_turn(sidecar: RunningSidecar) -> None:
    messages = [
        *HISTORY,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_pods", "arguments": '{"namespace":"shop"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: forbidden"},
    ]
    async with oai(sidecar) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, tools=SRE_TOOLS
        )
        completion = raw.parse()
    assert completion.usage is not None
    # OpenAI published no accounting for tool calls in the history: the count says it is an
    # estimate, and it lands near the provider's figure; the settlement uses the provider's.
    assert raw.headers["x-a11i-token-count"] == "estimate"
    estimate = int(raw.headers["x-a11i-input-tokens"])
    assert abs(estimate - completion.usage.prompt_tokens) <= 0.2 * completion.usage.prompt_tokens
    record = (await sidecar.settled(1))[-1]
    assert record.settlement is not None
    assert record.settlement.usage.input_tokens == completion.usage.prompt_tokens
    assert [(r.tool_call_id, r.is_error) for r in record.plan.tool_results] == [("call_1", True)]


async def test_responses_api(sidecar: RunningSidecar) -> None:
    async with oai(sidecar) as client:
        raw = await client.responses.with_raw_response.create(
            model="gpt-4.1", input="Summarise the incident.", max_output_tokens=50
        )
        response = raw.parse()
        assert response.usage is not None
        assert raw.headers["x-a11i-decision"] == "allow"
        stream = await client.responses.create(model="gpt-4.1", input="And now?", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    first, second = await sidecar.settled(2)
    assert first.settlement is not None
    assert first.settlement.usage.input_tokens == response.usage.input_tokens
    assert second.settlement is not None
    assert second.settlement.source is UsageSource.PROVIDER


async def test_embeddings(sidecar: RunningSidecar) -> None:
    async with oai(sidecar) as client:
        raw = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["pod crashloop", "oom killed"]
        )
        result = raw.parse()
    assert len(result.data) == 2
    assert raw.headers["x-a11i-token-count"] == "exact"
    record = (await sidecar.settled(1))[-1]
    assert record.settlement is not None
    assert record.settlement.usage.output_tokens == 0
    assert record.plan.output_bound == 0


async def test_anthropic_messages_plain_stream_and_tools(sidecar: RunningSidecar) -> None:
    tools = [
        {
            "name": "check_logs",
            "description": "Tail a pod's logs",
            "input_schema": {
                "type": "object",
                "properties": {"pod": {"type": "string"}},
                "required": ["pod"],
            },
        }
    ]
    async with claude(sidecar) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            system="You are an SRE assistant.",
            messages=[{"role": "user", "content": "Check the checkout pod."}],
            tools=tools,
        )
        message = await raw.parse()
        assert raw.headers["x-a11i-token-count"] == "estimate"
        assert message.stop_reason == "tool_use"
        async with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello"}],
        ) as stream:
            final = await stream.get_final_message()
    first, second = await sidecar.settled(2)
    assert [c.name for c in first.tool_calls] == ["check_logs"]
    assert first.settlement is not None
    assert first.settlement.usage.input_tokens == message.usage.input_tokens
    assert Decimal(raw.headers["x-a11i-cost-usd"]) == first.settlement.cost_usd
    assert second.settlement is not None
    assert second.settlement.source is UsageSource.PROVIDER
    assert second.settlement.usage.output_tokens == final.usage.output_tokens
    assert second.settlement.usage.input_tokens == final.usage.input_tokens


async def test_over_budget_is_a_402_each_sdk_understands(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    guarded = await start_sidecar(A11I_BUDGET_USD="0.0001")
    async with oai(guarded) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=4000)
    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "budget_exceeded"
    assert body["type"] == "budget_exceeded"
    assert "budget" in body["message"]
    assert caught.value.response.headers["x-a11i-decision"] == "block"
    async with claude(guarded) as client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(
                model="claude-opus-4-1",
                max_tokens=4000,
                messages=[{"role": "user", "content": "hi"}],
            )
    assert refused.value.status_code == 402
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["type"] == "budget_exceeded"
    # Nothing reached the provider, and nothing was spent.
    assert standin.requests == []
    decided = [r.verdict.decision for r in await guarded.settled(2)]
    assert decided == [Decision.BLOCK, Decision.BLOCK]
    assert (await guarded.sidecar.wallet.snapshot()).spent_usd == 0


async def test_warn_then_block_as_the_budget_runs_out(start_sidecar: SidecarFactory) -> None:
    guarded = await start_sidecar(A11I_BUDGET_USD="0.01")
    decisions = []
    async with oai(guarded) as client:
        for _ in range(200):
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=HISTORY, max_tokens=100
                )
                decisions.append(raw.headers["x-a11i-decision"])
            except openai.APIStatusError as error:
                decisions.append(f"block:{error.status_code}")
                break
    assert decisions[0] == "allow"
    assert "warn" in decisions
    assert decisions[-1] == "block:402"
    snapshot = await guarded.sidecar.wallet.snapshot()
    assert snapshot.spent_usd <= Decimal("0.01")
    assert snapshot.reserved_usd == 0


async def test_key_custody_replaces_the_agents_key(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    held = await start_sidecar(
        A11I_OPENAI_API_KEY="sk-held-by-sidecar", A11I_ANTHROPIC_API_KEY="sk-ant-held"
    )
    async with oai(held, key="sk-agent-own") as client:
        await client.chat.completions.create(model="gpt-4o", messages=HISTORY)
        await client.models.list()
    async with claude(held, key="sk-ant-agent-own") as client:
        await client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    chat, models, messages = standin.requests
    assert chat.headers["authorization"] == "Bearer sk-held-by-sidecar"
    assert models.headers["authorization"] == "Bearer sk-held-by-sidecar"
    assert messages.headers["x-api-key"] == "sk-ant-held"
    assert all("sk-agent-own" not in json.dumps(r.headers) for r in standin.requests)


async def test_unmetered_paths_pass_through(sidecar: RunningSidecar, standin: StandIn) -> None:
    async with oai(sidecar) as client:
        models = await client.models.list()
    assert [m.id async for m in models]
    assert standin.requests[-1].path == "/v1/models"
    await asyncio.sleep(0.05)  # records are handed to observers after the answer
    assert sidecar.records == []
    assert sidecar.sidecar.counters.passthrough_calls == 1


async def test_provider_errors_are_relayed_and_cost_nothing(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    standin.configure(status=429)
    async with oai(sidecar) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY)
    async with claude(sidecar) as client:
        standin.configure(status=529)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert caught.value.status_code == 529
    snapshot = await sidecar.sidecar.wallet.snapshot()
    assert (snapshot.spent_usd, snapshot.reserved_usd) == (0, 0)
    assert [r.status for r in await sidecar.settled(2)] == [429, 529]


async def test_a_cut_stream_is_passed_on_and_settled_from_what_arrived(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    standin.configure(cut_after=3)
    async with oai(sidecar) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HISTORY, stream=True)
        with pytest.raises(openai.APIError):
            await drain(stream)
    record = (await sidecar.settled(1))[-1]
    assert not record.complete
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.ESTIMATE
    assert record.settlement.usage.input_tokens == record.plan.input.tokens
    assert record.settlement.cost_usd > 0
    snapshot = await sidecar.sidecar.wallet.snapshot()
    assert snapshot.spent_usd == record.settlement.cost_usd
    assert snapshot.reserved_usd == 0


async def test_emergency_stop_is_a_403_and_lifting_it_restores_service(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="10")
    wallet = running.sidecar.wallet
    assert isinstance(wallet, MemoryWallet)
    wallet.policy = replace(wallet.policy, suspended=True)
    async with oai(running) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "emergency_stop"
    async with claude(running) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["type"] == "emergency_stop"
    assert standin.requests == []
    wallet.policy = replace(wallet.policy, suspended=False)
    async with oai(running) as client:
        await client.chat.completions.create(model="gpt-4o", messages=HISTORY)
    assert len(standin.requests) == 1


async def test_an_agent_budget_inside_the_namespace_budget(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="10", A11I_AGENT_BUDGET_USD="0.001")
    async with oai(running) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HISTORY, max_tokens=20
        )
        # What is left is the tighter of the two wallets: the agent's.
        assert Decimal(raw.headers["x-a11i-budget-remaining-usd"]) < Decimal("0.001")
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=500)
    assert caught.value.status_code == 402
    assert len(standin.requests) == 1
    async with aiohttp.ClientSession() as http, http.get(running.url + "/a11i/budget") as response:
        budget = await response.json()
    assert budget["limit_usd"] == "10"
    assert budget["agent_wallet"]["namespace"] == "team-a/sre-bot"
    assert budget["agent_wallet"]["limit_usd"] == "0.001"
    # Both wallets were charged the same settled cost, and neither holds a reservation.
    assert budget["spent_usd"] == budget["agent_wallet"]["spent_usd"] != "0"
    assert budget["reserved_usd"] == budget["agent_wallet"]["reserved_usd"] == "0"
