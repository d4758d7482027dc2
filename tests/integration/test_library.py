"""Library mode with the real openai and anthropic SDKs against the stand-in, no sidecar running.

Sync clients run on a worker thread (``asyncio.to_thread``): the stand-in answers on the test's
event loop, which a blocking call on it would hold up.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import a11i
from a11i import library
from a11i.core.meter import UsageSource
from a11i.core.model import Dialect
from a11i.sidecar.call import CallRecord
from a11i.sidecar.telemetry import conventions as names
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

TOOLS = [
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
CLAUDE_TOOLS = [
    {
        "name": "get_pods",
        "description": "List the pods of a namespace",
        "input_schema": {
            "type": "object",
            "properties": {"namespace": {"type": "string"}},
            "required": ["namespace"],
        },
    }
]
HISTORY = [
    {"role": "system", "content": "You are an SRE assistant. Be terse."},
    {"role": "user", "content": "Why is the checkout service returning 503s?"},
]
CLAUDE_HISTORY = [{"role": "user", "content": "Why is the checkout service returning 503s?"}]


class Records:
    """Every call the pipeline observed (appended on its telemetry thread)."""

    def __init__(self) -> None:
        self.items: list[CallRecord] = []

    async def settled(self, count: int) -> list[CallRecord]:
        for _ in range(500):
            if len(self.items) >= count:
                break
            await asyncio.sleep(0.01)
        assert len(self.items) >= count, f"{len(self.items)} calls observed, {count} expected"
        return self.items


def settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "A11I_NAMESPACE": "notebook",
        "A11I_AGENT": "analyst",
        "A11I_WALLET_FILE": str(tmp_path / "wallets.sqlite"),
        **extra,
    }


@pytest.fixture
def instrumented(tmp_path: Path) -> Iterator[Records]:
    records = Records()
    a11i.instrument(env=settings(tmp_path), budget_usd="5")
    library.current_pipeline().observers.append(records.items.append)
    yield records
    a11i.uninstrument()


@pytest.fixture
async def standin_url(standin: StandIn) -> str:
    assert standin.url is not None
    return standin.url


def oai_sync(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)


def oai_async(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)


def claude_sync(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)


def claude_async(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-test", max_retries=0)


def spent(record: CallRecord) -> Decimal:
    assert record.settlement is not None
    return record.settlement.cost_usd


def priced(record: CallRecord, input_tokens: int, output_tokens: int) -> Decimal:
    price = record.plan.price.price
    return price.input_per_token * input_tokens + price.output_per_token * output_tokens


def exploded(_projected: object) -> None:
    """A wallet backend that fails (its reservation made at once, without awaiting)."""
    raise RuntimeError("wallet backend exploded")


async def test_sync_openai_chat_with_tools_is_metered_and_settled_from_usage(
    instrumented: Records, standin_url: str
) -> None:
    def call() -> openai.APIResponse[object]:
        with oai_sync(standin_url) as client:
            return client.chat.completions.with_raw_response.create(  # type: ignore[return-value]
                model="gpt-4o-mini", messages=HISTORY, tools=TOOLS, max_tokens=64
            )

    raw = await asyncio.to_thread(call)
    completion = raw.parse()
    assert completion.usage is not None
    assert raw.headers["x-a11i-decision"] == "allow"
    assert int(raw.headers["x-a11i-input-tokens"]) == completion.usage.prompt_tokens
    (record,) = await instrumented.settled(1)
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER
    expected = priced(record, completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert Decimal(raw.headers["x-a11i-cost-usd"]) == expected == spent(record)
    assert [call.name for call in record.tool_calls] == ["get_pods"]
    assert Decimal(str(a11i.budget()["spent_usd"])) == expected


async def test_async_openai_stream_streams_and_settles(
    instrumented: Records, standin_url: str, standin: StandIn
) -> None:
    async with oai_async(standin_url) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HISTORY, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    # The usage chunk a11i asked for on the agent's behalf is not shown to it.
    assert all(chunk.choices for chunk in chunks)
    sent = standin.requests[-1].json
    assert isinstance(sent, dict)
    assert sent["stream_options"] == {"include_usage": True}
    (record,) = await instrumented.settled(1)
    assert record.complete
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.PROVIDER


async def test_anthropic_sync_and_async_plain_streamed_and_tools(
    instrumented: Records, standin_url: str
) -> None:
    def sync_calls() -> tuple[anthropic.types.Message, str]:
        with claude_sync(standin_url) as client:
            message = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
                tools=CLAUDE_TOOLS,  # type: ignore[arg-type]
            )
            with client.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=32,
                messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
            ) as stream:
                text = "".join(stream.text_stream)
        return message, text

    message, text = await asyncio.to_thread(sync_calls)
    assert [block.type for block in message.content] == ["tool_use"]
    assert text
    async with claude_async(standin_url) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
        )
        reported = (await raw.parse()).usage
        async with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
        ) as stream:
            streamed = [text async for text in stream.text_stream]
    assert raw.headers["x-a11i-decision"] == "allow"
    assert streamed
    records = await instrumented.settled(4)
    assert [r.streamed for r in records] == [False, True, False, True]
    assert [c.name for c in records[0].tool_calls] == ["get_pods"]
    assert all(r.settlement is not None for r in records)
    assert all(r.complete for r in records)
    assert spent(records[2]) == priced(records[2], reported.input_tokens, reported.output_tokens)
    total = sum((spent(r) for r in records), Decimal(0))
    assert Decimal(str(a11i.budget()["spent_usd"])) == total


async def test_over_budget_the_sdk_raises_its_402_and_nothing_is_sent(
    tmp_path: Path, standin: StandIn, standin_url: str
) -> None:
    a11i.instrument(env=settings(tmp_path), budget_usd="0.000001")
    try:
        async with oai_async(standin_url) as client:
            with pytest.raises(openai.APIStatusError) as raised:
                await client.chat.completions.create(
                    model="gpt-4o", messages=HISTORY, max_tokens=2000
                )
        assert raised.value.status_code == 402
        assert raised.value.response.headers["x-a11i-decision"] == "block"
        body = raised.value.body
        assert isinstance(body, dict)
        assert body["code"] == "budget_exceeded"

        def claude_call() -> None:
            with claude_sync(standin_url) as claude:
                claude.messages.create(
                    model="claude-opus-4-1",
                    max_tokens=4000,
                    messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
                )

        with pytest.raises(anthropic.APIStatusError) as refused:
            await asyncio.to_thread(claude_call)
        assert refused.value.status_code == 402
        assert "budget_exceeded" in refused.value.message
        # With the SDK's own retries on: a 402 is not retried.
        async with openai.AsyncOpenAI(base_url=standin_url + "/v1", api_key="k") as retrying:
            with pytest.raises(openai.APIStatusError):
                await retrying.chat.completions.create(
                    model="gpt-4o", messages=HISTORY, max_tokens=2000
                )
        assert library.current_pipeline().counters.blocked_calls == 3
        assert standin.requests == []
    finally:
        a11i.uninstrument()


async def test_the_emergency_stop_is_403_until_resumed(
    instrumented: Records, standin: StandIn, standin_url: str
) -> None:
    a11i.wallet.stop()
    async with oai_async(standin_url) as client:
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=5)
        assert raised.value.status_code == 403
        assert standin.requests == []
        a11i.wallet.resume()
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=HISTORY, max_tokens=5
        )
    assert completion.choices
    assert a11i.budget()["state"] != "suspended"


async def test_clients_made_before_instrument_and_uninstrument(
    tmp_path: Path, standin: StandIn, standin_url: str
) -> None:
    records = Records()
    before = oai_async(standin_url)
    sync_before = claude_sync(standin_url)
    a11i.instrument(env=settings(tmp_path))
    try:
        library.current_pipeline().observers.append(records.items.append)
        raw = await before.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HISTORY, max_tokens=5
        )
        assert raw.headers["x-a11i-decision"] == "allow"

        def sync_call() -> str:
            raw = sync_before.messages.with_raw_response.create(
                model="claude-haiku-4-5",
                max_tokens=5,
                messages=CLAUDE_HISTORY,  # type: ignore[arg-type]
            )
            return raw.headers["x-a11i-decision"]

        assert await asyncio.to_thread(sync_call) == "allow"
        await records.settled(2)
    finally:
        a11i.uninstrument()
    after = oai_async(standin_url)
    for client in (before, after):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HISTORY, max_tokens=5
        )
        assert "x-a11i-decision" not in raw.headers
    await before.close()
    await after.close()
    await asyncio.to_thread(sync_before.close)
    assert len(records.items) == 2


async def test_a_metering_failure_does_not_break_the_call(
    instrumented: Records, standin: StandIn, standin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_reserve(_projected: object) -> None:
        raise RuntimeError("wallet backend exploded")

    monkeypatch.setattr(library.current_pipeline().wallet, "reserve", failing_reserve)
    # The embedded wallet's reservation made at once on the loop fails alike.
    monkeypatch.setattr(library.current_pipeline().wallet, "reserve_now", exploded, raising=False)
    async with oai_async(standin_url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HISTORY, max_tokens=5
        )
    assert raw.parse().choices
    assert "x-a11i-decision" not in raw.headers  # forwarded unmetered
    assert len(standin.requests) == 1


async def test_fail_closed_answers_500_without_sending(
    tmp_path: Path, standin: StandIn, standin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a11i.instrument(env=settings(tmp_path), fail_open=False)
    try:

        async def failing_reserve(_projected: object) -> None:
            raise RuntimeError("wallet backend exploded")

        monkeypatch.setattr(library.current_pipeline().wallet, "reserve", failing_reserve)
        # The embedded wallet's reservation made at once on the loop fails alike.
        monkeypatch.setattr(
            library.current_pipeline().wallet, "reserve_now", exploded, raising=False
        )
        async with oai_async(standin_url) as client:
            with pytest.raises(openai.InternalServerError) as raised:
                await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=5)
        assert raised.value.status_code == 500
        assert standin.requests == []
    finally:
        a11i.uninstrument()


async def drain_into(stream: openai.AsyncStream[object], received: list[object]) -> None:
    async for chunk in stream:
        received.append(chunk)


async def test_a_cut_stream_is_passed_on_after_what_arrived_and_settled(
    instrumented: Records, standin: StandIn, standin_url: str
) -> None:
    standin.configure(cut_after=3)
    received: list[object] = []
    async with oai_async(standin_url) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HISTORY, stream=True)
        with pytest.raises(openai.APIError):
            await drain_into(stream, received)
    # What arrived before the cut reached the SDK: the answer streams, it is not buffered.
    assert received
    (record,) = await instrumented.settled(1)
    assert not record.complete
    assert record.error_type == "stream_cut"
    assert record.settlement is not None
    assert record.settlement.source is UsageSource.ESTIMATE
    assert record.settlement.cost_usd > 0
    budget = a11i.budget()
    assert Decimal(str(budget["spent_usd"])) == record.settlement.cost_usd
    assert Decimal(str(budget["reserved_usd"])) == 0


async def test_a_sync_stream_closed_early_settles_what_arrived(
    instrumented: Records, standin_url: str
) -> None:
    def read_two() -> int:
        with oai_sync(standin_url) as client:
            stream = client.chat.completions.create(
                model="gpt-4o",
                messages=HISTORY,
                stream=True,
                extra_headers={"x-standin-words": "200"},
            )
            first = [next(iter(stream)), next(iter(stream))]
            stream.close()
        return len(first)

    assert await asyncio.to_thread(read_two) == 2
    (record,) = await instrumented.settled(1)
    assert not record.complete
    assert record.settlement is not None
    assert Decimal(str(a11i.budget()["reserved_usd"])) == 0


async def test_spans_go_to_the_applications_tracer_provider(
    tmp_path: Path, standin_url: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    records = Records()
    a11i.instrument(env=settings(tmp_path), tracer_provider=provider)
    try:
        library.current_pipeline().observers.append(records.items.append)
        async with oai_async(standin_url) as client:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=5)
        await records.settled(1)
    finally:
        a11i.uninstrument()
    assert "agent_turn" in [span.name for span in exporter.get_finished_spans()]
    provider.shutdown()


async def test_metrics_go_to_the_applications_meter_provider(
    tmp_path: Path, standin_url: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    records = Records()
    a11i.instrument(env=settings(tmp_path), meter_provider=provider)
    try:
        library.current_pipeline().observers.append(records.items.append)
        async with oai_async(standin_url) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HISTORY, max_tokens=5
            )
        await records.settled(1)
        data = reader.get_metrics_data()
    finally:
        a11i.uninstrument()
    assert data is not None
    found = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    (cost,) = found[names.COST_ESTIMATE].data.data_points
    assert Decimal(str(cost.value)) == Decimal(raw.headers["x-a11i-cost-usd"])  # type: ignore[union-attr]
    (duration,) = found[names.CLIENT_OPERATION_DURATION].data.data_points
    # a11i's buckets, advised to the application's provider (no views of a11i's there)
    assert tuple(duration.explicit_bounds) == names.DURATION_BUCKETS  # type: ignore[union-attr]
    assert duration.count == 1  # type: ignore[union-attr]
    provider.shutdown()


async def test_top_up_raises_the_limit(instrumented: Records) -> None:
    before = Decimal(str(a11i.budget()["limit_usd"]))
    a11i.wallet.top_up("2.5")
    assert Decimal(str(a11i.budget()["limit_usd"])) == before + Decimal("2.5")


async def test_a_sidecar_and_an_instrumented_process_share_one_wallet_file(
    tmp_path: Path, standin: StandIn, standin_url: str
) -> None:
    env = settings(tmp_path, A11I_BUDGET_USD="5")
    sidecars = Sidecars()
    try:
        url = await sidecars.start(
            **env, A11I_OPENAI_BASE=standin_url, A11I_ANTHROPIC_BASE=standin_url
        )
        a11i.instrument(env=env)
        try:
            async with oai_async(standin_url) as client:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=HISTORY, max_tokens=5
                )
            in_process = Decimal(raw.headers["x-a11i-cost-usd"])
            # Through the sidecar (plain HTTP: an SDK client here would be metered twice).
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    url + "/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": HISTORY, "max_tokens": 5},
                    headers={"Authorization": "Bearer sk-test"},
                ) as response,
            ):
                assert response.status == 200
                through_sidecar = Decimal(response.headers["x-a11i-cost-usd"])
                async with http.get(url + "/a11i/budget") as budget_response:
                    seen_by_sidecar = await budget_response.json()
            total = in_process + through_sidecar
            assert Decimal(str(a11i.budget()["spent_usd"])) == total
            assert Decimal(seen_by_sidecar["spent_usd"]) == total
        finally:
            a11i.uninstrument()
    finally:
        await sidecars.stop()


async def test_every_openai_endpoint_the_sidecar_meters_is_metered(
    instrumented: Records, standin_url: str
) -> None:
    async with oai_async(standin_url) as client:
        response = await client.responses.create(model="gpt-4o", input="Why 503s?")
        stream = await client.responses.create(model="gpt-4o", input="Why 503s?", stream=True)
        events = [event async for event in stream]
        embedding = await client.embeddings.create(
            model="text-embedding-3-small", input="checkout 503"
        )
        completion = await client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Why 503s?", max_tokens=5
        )
    assert response.output_text
    assert events
    assert embedding.data
    assert completion.choices
    records = await instrumented.settled(4)
    assert [r.plan.request.dialect for r in records] == [
        Dialect.OPENAI_RESPONSES,
        Dialect.OPENAI_RESPONSES,
        Dialect.OPENAI_EMBEDDINGS,
        Dialect.OPENAI_COMPLETIONS,
    ]
    assert all(r.complete for r in records)
    assert all(
        r.settlement is not None and r.settlement.source is UsageSource.PROVIDER for r in records
    )
    total = sum((spent(r) for r in records), Decimal(0))
    assert Decimal(str(a11i.budget()["spent_usd"])) == total


async def test_a_failure_after_the_call_was_sent_is_never_sent_again(
    instrumented: Records, standin: StandIn, standin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = library.current_pipeline()

    def failing_settle(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("settlement exploded")

    monkeypatch.setattr(pipeline.meter, "settle", failing_settle)
    # The SDK's own retries on: a 500 it would retry says not to.
    async with openai.AsyncOpenAI(base_url=standin_url + "/v1", api_key="k") as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="gpt-4o", messages=HISTORY, max_tokens=5)
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(standin.requests) == 1
    assert Decimal(str(a11i.budget()["reserved_usd"])) == 0


async def test_an_azure_openai_client_is_metered_at_its_deployments_model(
    tmp_path: Path, standin_url: str
) -> None:
    records = Records()
    a11i.instrument(env=settings(tmp_path, A11I_AZURE_DEPLOYMENTS="prod-chat=gpt-4o-mini"))
    try:
        library.current_pipeline().observers.append(records.items.append)
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=standin_url,
            api_version="2024-10-21",
            api_key="azure-key",
            max_retries=0,
        ) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="prod-chat", messages=HISTORY, max_tokens=5
            )
        assert raw.headers["x-a11i-decision"] == "allow"
        (record,) = await records.settled(1)
        assert record.plan.request.model == "gpt-4o-mini"
        assert record.settlement is not None
        assert record.settlement.source is UsageSource.PROVIDER
    finally:
        a11i.uninstrument()


async def test_a_stream_dropped_unclosed_still_settles(
    instrumented: Records, standin_url: str
) -> None:
    sdk = oai_sync(standin_url)

    def drop(read: int) -> None:
        stream = sdk.chat.completions.create(
            model="gpt-4o", messages=HISTORY, stream=True, extra_headers={"x-standin-words": "200"}
        )
        chunks = iter(stream)
        for _ in range(read):
            next(chunks)

    await asyncio.to_thread(drop, 1)
    await asyncio.to_thread(drop, 0)  # never read at all
    gc.collect()
    records = await instrumented.settled(2)
    assert not any(record.complete for record in records)
    assert Decimal(str(a11i.budget()["reserved_usd"])) == 0
    await asyncio.to_thread(sdk.close)
