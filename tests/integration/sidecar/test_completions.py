"""Legacy ``POST /v1/completions`` through a running sidecar, with the official openai SDK
(``client.completions.create``, plain and streaming), against the stand-in provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

from a11i.core.meter import UsageSource
from a11i.core.model import Dialect, Usage
from a11i.core.policy import Decision
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.standin import ANSWER, StandIn, count_completion_prompt_tokens

pytestmark = pytest.mark.integration


def oai(sidecar: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.openai_url, api_key="sk-agent", max_retries=0)


@pytest.mark.parametrize(
    ("request_args", "generations", "choices"),
    [
        ({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"}, 1, 1),
        (
            {
                "model": "davinci-002",
                "prompt": ["def restart(pod):", "kubectl get pods -n shop"],
                "max_tokens": 3,
                "n": 2,
            },
            4,
            4,
        ),
        (
            {"model": "babbage-002", "prompt": [15339, 1917, 0], "n": 2, "best_of": 3},
            3,
            2,
        ),
        (
            {
                "model": "gpt-3.5-turbo-instruct",
                "prompt": [[15339, 1917], [9906, 11, 1917, 0]],
                "echo": True,
            },
            2,
            2,
        ),
        (
            {"model": "gpt-3.5-turbo-instruct", "prompt": "def main():", "suffix": "\treturn 0"},
            1,
            1,
        ),
    ],
    ids=["string", "strings-n", "token-ids-best-of", "token-id-lists-echo", "suffix"],
)
async def test_completion_is_metered_and_settled_from_usage(
    sidecar: RunningSidecar,
    standin: StandIn,
    request_args: dict[str, Any],
    generations: int,
    choices: int,
) -> None:
    async with oai(sidecar) as client:
        raw = await client.completions.with_raw_response.create(**request_args)
        completion = raw.parse()
    assert completion.object == "text_completion"
    assert len(completion.choices) == choices
    assert completion.usage is not None
    # The sidecar's own count of the prompt equals the provider's prompt_tokens.
    assert int(raw.headers["x-a11i-input-tokens"]) == completion.usage.prompt_tokens
    exact = "suffix" not in request_args
    assert raw.headers["x-a11i-token-count"] == ("exact" if exact else "estimate")
    assert raw.headers["x-a11i-decision"] == "allow"
    (record,) = await sidecar.settled(1)
    assert record.plan.request.dialect is Dialect.OPENAI_COMPLETIONS
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert record.settlement.usage == Usage(
        completion.usage.prompt_tokens, completion.usage.completion_tokens
    )
    price = record.plan.price
    assert not price.is_fallback
    settled = (
        price.price.input_per_token * completion.usage.prompt_tokens
        + price.price.output_per_token * completion.usage.completion_tokens
    )
    assert Decimal(raw.headers["x-a11i-cost-usd"]) == settled
    # Projected: every generated answer (best_of per prompt) at max_tokens, 16 when unset.
    bound = request_args.get("max_tokens", 16) * generations
    assert record.plan.output_bound == bound
    assert Decimal(raw.headers["x-a11i-projected-cost-usd"]) == (
        price.price.input_per_token * completion.usage.prompt_tokens
        + price.price.output_per_token * bound
    )
    assert record.output_text == "".join(choice.text for choice in completion.choices)
    # Forwarded byte for byte: a11i added nothing to a non-streaming request.
    assert standin.requests[-1].json == request_args


async def test_stream_without_usage_asked_hides_the_usage_chunk(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    prompt = "Summarise the last deploy of the checkout service:"
    async with oai(sidecar) as client:
        raw = await client.completions.with_raw_response.create(
            model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=50, stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
    assert chunks
    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert all(chunk.choices for chunk in chunks), "the client saw a usage-only chunk"
    assert all("usage" not in chunk.model_dump(exclude_unset=True) for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The sidecar asked the provider for usage on the agent's behalf, and settled from it.
    sent = standin.requests[-1].json
    assert isinstance(sent, dict)
    assert sent["stream_options"] == {"include_usage": True}
    prompt_tokens = count_completion_prompt_tokens("gpt-3.5-turbo-instruct", prompt)
    assert int(raw.headers["x-a11i-input-tokens"]) == prompt_tokens
    assert raw.headers["x-a11i-token-count"] == "exact"
    (record,) = await sidecar.settled(1)
    assert record.complete
    assert record.output_text == ANSWER
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert record.settlement.usage == Usage(prompt_tokens, len(ANSWER.split()))


async def test_stream_with_usage_asked_keeps_it(sidecar: RunningSidecar, standin: StandIn) -> None:
    async with oai(sidecar) as client:
        raw = await client.completions.with_raw_response.create(
            model="davinci-002",
            prompt=["first prompt", "second prompt"],
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in raw.parse()]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert {chunk.choices[0].index for chunk in chunks[:-1]} == {0, 1, 2, 3}
    assert int(raw.headers["x-a11i-input-tokens"]) == last.usage.prompt_tokens
    (record,) = await sidecar.settled(1)
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    assert record.settlement.usage == Usage(last.usage.prompt_tokens, last.usage.completion_tokens)
    price = record.plan.price.price
    assert record.settlement.cost_usd == (
        price.input_per_token * last.usage.prompt_tokens
        + price.output_per_token * last.usage.completion_tokens
    )
    assert standin.requests[-1].json["stream_options"] == {"include_usage": True}  # type: ignore[index]


async def test_over_budget_is_a_402_in_openais_shape(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    guarded = await start_sidecar(A11I_BUDGET_USD="0.0001")
    async with oai(guarded) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            # davinci-002 at $2/M output: 4 answers of 2,000 tokens project $0.016.
            await client.completions.create(
                model="davinci-002", prompt="Write the runbook:", max_tokens=2000, best_of=4
            )
    assert caught.value.status_code == 402
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "budget_exceeded"
    assert body["type"] == "budget_exceeded"
    assert "budget" in body["message"]
    assert caught.value.response.headers["x-a11i-decision"] == "block"
    # Nothing reached the provider, and nothing was spent.
    assert standin.requests == []
    (record,) = await guarded.settled(1)
    assert record.verdict.decision is Decision.BLOCK
    assert record.plan.output_bound == 8000
    assert (await guarded.sidecar.wallet.snapshot()).spent_usd == 0


@pytest.mark.parametrize(
    ("prompt", "param"),
    [([], "prompt"), ([["a"]], "prompt"), ({"text": "hi"}, "prompt")],
    ids=["empty", "nested-strings", "object"],
)
async def test_a_malformed_prompt_is_a_400_in_openais_shape(
    sidecar: RunningSidecar, standin: StandIn, prompt: object, param: str
) -> None:
    async with oai(sidecar) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"
    assert "'prompt' must be" in body["message"]
    assert standin.requests == []
