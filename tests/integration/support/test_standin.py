"""The stand-in provider speaks the real wire formats: the official SDKs, pointed straight
at it (no proxy), parse every answer, stream and error it produces."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from tests.support.paths import ROOT
from tests.support.standin import (
    ANSWER,
    MAX_RECORDED,
    StandIn,
    count_anthropic_input_tokens,
    count_chat_prompt_tokens,
    count_completion_prompt_tokens,
    encodings_available,
)

pytestmark = pytest.mark.integration

USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer"},
                },
                "required": ["city", "unit", "days"],
            },
        },
    }
]
WEATHER_ARGS = {"city": "placeholder", "unit": "celsius", "days": 1}
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Get the weather for a city.",
        "input_schema": CHAT_TOOLS[0]["function"]["parameters"],
    }
]


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def url(standin: StandIn) -> str:
    assert standin.url is not None
    return standin.url


@pytest.fixture
async def oai(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
async def ant(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


OPENAI_HEADERS = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


# ---- OpenAI Chat Completions ----------------------------------------------------------


async def test_chat_plain(oai: openai.AsyncOpenAI, standin: StandIn) -> None:
    r = await oai.chat.completions.create(model="gpt-4o", messages=USER)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o"
    assert r.system_fingerprint
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_chat_prompt_tokens("gpt-4o", USER)
    assert r.usage.completion_tokens == len(ANSWER.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    rec = standin.requests[-1]
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.json == {"model": "gpt-4o", "messages": USER}


async def test_chat_truncates_to_max_tokens(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_completion_tokens=2,
    )
    assert r.choices[0].message.content == "The stand-in"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 2
    r = await oai.chat.completions.create(model="gpt-4", messages=USER, max_tokens=3)
    assert r.choices[0].message.content == "The stand-in model"
    assert r.usage is not None
    assert r.usage.completion_tokens == 3


async def test_chat_tool_call_then_text_after_tool_result(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=CHAT_TOOLS,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_chat_prompt_tokens("gpt-4o", USER, CHAT_TOOLS)

    follow_up: list[Any] = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    r2 = await oai.chat.completions.create(model="gpt-4o", messages=follow_up, tools=CHAT_TOOLS)
    assert r2.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content == ANSWER
    assert r2.choices[0].message.tool_calls is None


async def test_chat_tool_choice_none_answers_text(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=CHAT_TOOLS,
        tool_choice="none",
    )
    assert r.choices[0].message.content == ANSWER


async def test_chat_stream_without_usage(oai: openai.AsyncOpenAI, standin: StandIn) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert contents == ["The", " stand-in", " model", " answers", " deterministically."]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    body = standin.requests[-1].json
    assert body is not None
    assert body["stream"] is True
    assert "stream_options" not in body


async def test_chat_stream_include_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == count_chat_prompt_tokens("gpt-4o", USER)
    assert last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == ANSWER


async def test_chat_stream_raw_frames(url: str, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "gpt-4o",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(url + "/v1/chat/completions", json=body, headers=OPENAI_HEADERS) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    frames = raw.split("\n\n")
    assert frames[-1] == ""
    assert frames[-2] == "data: [DONE]"
    payloads = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert all(f.startswith("data: ") for f in frames[:-1])
    assert all(p["usage"] is None for p in payloads[:-1])
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["total_tokens"] > 0


async def test_chat_stream_tool_call(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    first = deltas[0].tool_calls
    assert first is not None
    assert first[0].id is not None
    assert first[0].id.startswith("call_")
    assert first[0].function is not None
    assert first[0].function.name == "get_weather"
    args = "".join(
        (tc.function.arguments or "") if tc.function else ""
        for d in deltas
        for tc in d.tool_calls or []
    )
    assert len([d for d in deltas if d.tool_calls]) > 2
    assert json.loads(args) == WEATHER_ARGS
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


# ---- OpenAI Responses -----------------------------------------------------------------


async def test_responses_plain(oai: openai.AsyncOpenAI) -> None:
    r = await oai.responses.create(
        model="gpt-4.1", input="Say something.", instructions="Be brief."
    )
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == "gpt-4.1"
    assert r.output_text == ANSWER
    message = r.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    expected = count_chat_prompt_tokens(
        "gpt-4.1",
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Say something."},
        ],
    )
    assert r.usage is not None
    assert r.usage.input_tokens == expected
    assert r.usage.output_tokens == 5
    assert r.usage.total_tokens == expected + 5
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_max_output_tokens_is_incomplete(oai: openai.AsyncOpenAI) -> None:
    r = await oai.responses.create(model="gpt-4o", input="hi", max_output_tokens=2)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "The stand-in"
    assert r.usage is not None
    assert r.usage.output_tokens == 2


async def test_responses_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.responses.create(model="gpt-4o", input="hi", stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == ANSWER
    assert done.response.usage is not None
    assert done.response.usage.input_tokens == count_chat_prompt_tokens(
        "gpt-4o", [{"role": "user", "content": "hi"}]
    )
    assert done.response.usage.output_tokens == 5
    created = events[0]
    assert created.type == "response.created"
    assert created.response.usage is None


async def test_responses_function_call(oai: openai.AsyncOpenAI) -> None:
    tools: list[Any] = [{"type": "function", **CHAT_TOOLS[0]["function"]}]
    r = await oai.responses.create(model="gpt-4o", input="weather?", tools=tools)
    item = r.output[0]
    assert item.type == "function_call"
    assert item.name == "get_weather"
    assert item.call_id.startswith("call_")
    assert json.loads(item.arguments) == WEATHER_ARGS

    stream = await oai.responses.create(model="gpt-4o", input="weather?", tools=tools, stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    assert types[-1] == "response.completed"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == WEATHER_ARGS

    follow_up: list[Any] = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": item.call_id, "name": item.name, "arguments": "{}"},
        {"type": "function_call_output", "call_id": item.call_id, "output": "21C"},
    ]
    r2 = await oai.responses.create(model="gpt-4o", input=follow_up, tools=tools)
    assert r2.output_text == ANSWER


# ---- OpenAI Embeddings ----------------------------------------------------------------


async def test_embeddings_base64_by_default(oai: openai.AsyncOpenAI, standin: StandIn) -> None:
    r = await oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    body = standin.requests[-1].json
    assert body is not None
    assert body["encoding_format"] == "base64"
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 1536 for d in r.data)
    assert all(isinstance(x, float) for x in r.data[0].embedding)
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0

    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input=["hello", "world"], encoding_format="float"
    )
    assert floats.data[0].embedding == r.data[0].embedding
    assert floats.usage.prompt_tokens == r.usage.prompt_tokens


async def test_embeddings_dimensions(oai: openai.AsyncOpenAI) -> None:
    r = await oai.embeddings.create(model="text-embedding-3-large", input="x", dimensions=8)
    assert len(r.data[0].embedding) == 8
    r = await oai.embeddings.create(model="text-embedding-3-large", input="x")
    assert len(r.data[0].embedding) == 3072


async def test_models_list(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    page = await oai.models.list()
    assert "gpt-4o" in [m.id for m in page.data]
    claude = await ant.models.list()
    assert all(m.id.startswith("claude-") for m in claude.data)


# ---- OpenAI legacy Completions --------------------------------------------------------


async def test_completions_plain(oai: openai.AsyncOpenAI, standin: StandIn) -> None:
    r = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.model == "gpt-3.5-turbo-instruct"
    (choice,) = r.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, ANSWER, "stop")
    assert choice.logprobs is None
    assert r.usage is not None
    # OpenAI's API reference reports 5 prompt tokens for this prompt.
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens == len(ANSWER.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert standin.requests[-1].path == "/v1/completions"


@pytest.mark.parametrize(
    ("args", "texts", "completion_tokens"),
    [
        ({"prompt": ["a", "b"], "n": 2}, [ANSWER] * 4, 20),
        ({"prompt": "a", "n": 2, "best_of": 3}, [ANSWER] * 2, 15),
        ({"prompt": [[1, 2], [3]], "max_tokens": 2}, ["The stand-in"] * 2, 4),
        ({"prompt": "Echo: ", "echo": True}, ["Echo: " + ANSWER], 5),
        ({"prompt": [15339, 1917], "max_tokens": 0}, [""], 0),
    ],
    ids=["batch-n", "best-of", "token-id-lists", "echo", "score-only"],
)
async def test_completions_choices_and_usage(
    oai: openai.AsyncOpenAI, args: dict[str, Any], texts: list[str], completion_tokens: int
) -> None:
    r = await oai.completions.create(model="davinci-002", **args)
    assert [c.text for c in r.choices] == texts
    assert [c.index for c in r.choices] == list(range(len(texts)))
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_completion_prompt_tokens("davinci-002", args["prompt"])
    # Every generated answer is billed, best_of per prompt.
    assert r.usage.completion_tokens == completion_tokens


async def test_completions_default_to_16_tokens(oai: openai.AsyncOpenAI) -> None:
    r = await oai.completions.create(
        model="babbage-002", prompt="x", extra_headers={"x-standin-words": "40"}
    )
    assert len(r.choices[0].text.split(" ")) == 16
    assert r.choices[0].finish_reason == "length"


async def test_completions_stream_raw_frames(url: str, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Say this is a test",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(url + "/v1/completions", json=body, headers=OPENAI_HEADERS) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    frames = raw.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert all(p["object"] == "text_completion" for p in payloads)
    assert all(p["usage"] is None for p in payloads[:-1])
    assert "".join(p["choices"][0]["text"] for p in payloads[:-1]) == ANSWER
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
    }


async def test_completions_stream_without_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.completions.create(model="davinci-002", prompt="x", stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks) == ANSWER


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prompt": "x", "n": 3, "best_of": 2}, "best_of must be greater than or equal to n"),
        ({"prompt": "x", "best_of": 2, "stream": True}, "Cannot stream results with best_of"),
        ({"prompt": []}, "'$.prompt' is invalid"),
    ],
    ids=["best-of-under-n", "stream-best-of", "empty-prompt"],
)
async def test_completions_errors(
    oai: openai.AsyncOpenAI, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=re.escape(message)):
        await oai.completions.create(model="gpt-3.5-turbo-instruct", **args)


# ---- Anthropic Messages ---------------------------------------------------------------


async def test_messages_plain(ant: anthropic.AsyncAnthropic, standin: StandIn) -> None:
    m = await ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="Be brief.", messages=USER
    )
    assert m.id.startswith("msg_")
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.model == "claude-sonnet-4-6"
    assert m.content[0].type == "text"
    assert m.content[0].text == ANSWER
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    body = standin.requests[-1].json
    assert body is not None
    assert m.usage.input_tokens == count_anthropic_input_tokens(body)
    assert m.usage.output_tokens == 5
    assert m.usage.cache_creation_input_tokens == 0
    assert m.usage.cache_read_input_tokens == 0
    headers = standin.requests[-1].headers
    assert "anthropic-version" in headers
    assert "sk-ant-test" in headers.get("x-api-key", headers.get("authorization", ""))


async def test_messages_max_tokens(ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(model="claude-haiku-4-5", max_tokens=1, messages=USER)
    assert m.stop_reason == "max_tokens"
    assert m.content[0].type == "text"
    assert m.content[0].text == "The"
    assert m.usage.output_tokens == 1


async def test_messages_tool_use_then_text(ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
    )
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert block.input == WEATHER_ARGS
    follow_up: list[Any] = [
        *USER,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "21C"}],
        },
    ]
    m2 = await ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=follow_up, tools=ANTHROPIC_TOOLS
    )
    assert m2.stop_reason == "end_turn"
    assert m2.content[0].type == "text"


async def test_messages_stream(ant: anthropic.AsyncAnthropic, standin: StandIn) -> None:
    async with ant.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=USER
    ) as stream:
        types = [e.type async for e in stream]
        final = await stream.get_final_message()
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    for expected in ("content_block_start", "content_block_delta", "message_delta"):
        assert expected in types
    assert final.content[0].type == "text"
    assert final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn"
    body = standin.requests[-1].json
    assert body is not None
    assert body["stream"] is True
    assert final.usage.input_tokens == count_anthropic_input_tokens(body)
    assert final.usage.output_tokens == 5


async def test_messages_stream_raw_events(url: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "claude-x", "max_tokens": 50, "messages": USER, "stream": True}
    async with http.post(url + "/v1/messages", json=body, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 200
        raw = (await r.read()).decode()
    names = [block.split("\n")[0].removeprefix("event: ") for block in raw.split("\n\n") if block]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = json.loads(raw.split("\n\n")[0].split("data: ", 1)[1])
    assert start["message"]["usage"]["output_tokens"] == 1
    assert start["message"]["usage"]["input_tokens"] > 0


async def test_messages_stream_tool_use(ant: anthropic.AsyncAnthropic) -> None:
    async with ant.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use"
    assert block.input == WEATHER_ARGS


async def test_count_tokens(ant: anthropic.AsyncAnthropic) -> None:
    r = await ant.messages.count_tokens(model="claude-sonnet-4-6", messages=USER)
    assert r.input_tokens == count_anthropic_input_tokens({"messages": USER})


# ---- knobs ----------------------------------------------------------------------------


async def test_status_knob_raises_typed_errors(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.RateLimitError) as oe:
        await oai.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            extra_headers={"x-standin-status": "429"},
        )
    assert oe.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        await oai.responses.create(
            model="gpt-4o", input="hi", extra_headers={"x-standin-status": "500"}
        )
    with pytest.raises(anthropic.RateLimitError) as ae:
        await ant.messages.create(
            model="claude-x",
            max_tokens=5,
            messages=USER,
            extra_headers={"x-standin-status": "429"},
        )
    assert isinstance(ae.value.body, dict)
    assert ae.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await ant.messages.create(
            model="claude-x",
            max_tokens=5,
            messages=USER,
            extra_headers={"x-standin-status": "529"},
        )
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


async def test_cut_after_breaks_streams(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    seen: list[Any] = []

    async def read_openai_stream() -> None:
        stream = await oai.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-standin-cut-after": "3"},
        )
        async for chunk in stream:
            seen.append(chunk)

    async def read_anthropic_stream() -> None:
        async with ant.messages.stream(
            model="claude-x",
            max_tokens=50,
            messages=USER,
            extra_headers={"x-standin-cut-after": "2"},
        ) as stream:
            async for event in stream:
                seen.append(event)

    with pytest.raises(openai.APIConnectionError):
        await read_openai_stream()
    assert len(seen) == 3
    assert all(c.usage is None for c in seen)

    seen.clear()
    # anthropic's stream lets the transport error through unwrapped
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        await read_anthropic_stream()
    assert [e.type for e in seen] == ["message_start", "content_block_start"]


async def test_no_usage_knob(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    knob = {"x-standin-no-usage": "1"}
    r = await oai.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=knob)
    assert r.usage is None
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=knob,
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    resp = await oai.responses.create(model="gpt-4o", input="hi", extra_headers=knob)
    assert resp.usage is None
    m = await ant.with_options().messages.with_raw_response.create(
        model="claude-x", max_tokens=5, messages=USER, extra_headers=knob
    )
    assert "usage" not in json.loads(m.http_response.text)


async def test_cached_and_reasoning_tokens_knobs(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    r = await oai.chat.completions.create(
        model="o3",
        messages=USER,
        extra_headers={"x-standin-cached-tokens": "4", "x-standin-reasoning-tokens": "7"},
    )
    assert r.usage is not None
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 7
    assert r.usage.completion_tokens == 5 + 7
    resp = await oai.responses.create(
        model="gpt-4o", input="hi", extra_headers={"x-standin-cached-tokens": "1000000"}
    )
    assert resp.usage is not None
    assert resp.usage.input_tokens_details.cached_tokens == resp.usage.input_tokens

    plain = await ant.messages.create(model="claude-x", max_tokens=5, messages=USER)
    cached = await ant.messages.create(
        model="claude-x",
        max_tokens=5,
        messages=USER,
        extra_headers={"x-standin-cached-tokens": "3", "x-standin-cache-write-tokens": "2"},
    )
    assert cached.usage.cache_read_input_tokens == 3
    assert cached.usage.cache_creation_input_tokens == 2
    assert cached.usage.input_tokens == plain.usage.input_tokens - 5


async def test_words_knob(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        extra_headers={"x-standin-words": "12"},
    )
    content = r.choices[0].message.content
    assert content is not None
    assert len(content.split(" ")) == 12
    assert content.startswith(ANSWER + " The")
    assert r.usage is not None
    assert r.usage.completion_tokens == 12


async def test_delay_knobs(oai: openai.AsyncOpenAI) -> None:
    start = time.monotonic()
    await oai.models.list(extra_headers={"x-standin-delay-ms": "150"})
    assert time.monotonic() - start >= 0.14
    start = time.monotonic()
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        extra_headers={"x-standin-chunk-delay-ms": "30"},
    )
    chunks = [c async for c in stream]
    # 7 chunks + [DONE]: 7 pauses between 8 frames
    assert len(chunks) == 7
    assert time.monotonic() - start >= 7 * 0.03 * 0.9


async def test_unknown_knob_is_rejected(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown stand-in knob"):
        await oai.models.list(extra_headers={"x-standin-bogus": "1"})


async def test_config_endpoint_applies_to_following_requests(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, url: str, standin: StandIn
) -> None:
    async with http.post(url + "/_standin/config", json={"status": 429, "times": 2}) as r:
        assert r.status == 200
        assert (await r.json())["status"] == 429
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await oai.models.list()
    await oai.models.list()  # back to normal after two requests

    async with http.post(url + "/_standin/config", json={"x-standin-cached-tokens": 2}) as r:
        assert r.status == 200
    for _ in range(2):
        c = await oai.chat.completions.create(model="gpt-4o", messages=USER)
        assert c.usage is not None
        assert c.usage.prompt_tokens_details is not None
        assert c.usage.prompt_tokens_details.cached_tokens == 2
    async with http.delete(url + "/_standin/config") as r:
        assert r.status == 200
    c = await oai.chat.completions.create(model="gpt-4o", messages=USER)
    assert c.usage is not None
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 0

    async with http.post(url + "/_standin/config", json={"nope": 1}) as r:
        assert r.status == 400

    standin.configure(status=500)
    with pytest.raises(openai.InternalServerError):
        await oai.models.list()
    standin.reset_config()
    await oai.models.list()


# ---- errors in provider shapes --------------------------------------------------------


async def test_openai_error_shapes(url: str, http: aiohttp.ClientSession) -> None:
    chat = url + "/v1/chat/completions"
    async with http.post(chat, json={"model": "gpt-4o", "messages": USER}) as r:
        assert r.status == 401
        err = (await r.json())["error"]
        assert err["type"] == "invalid_request_error"
        assert err["code"] == "invalid_api_key"
        assert set(err) == {"message", "type", "param", "code"}
    async with http.post(chat, data=b"{not json", headers=OPENAI_HEADERS) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    async with http.post(chat, json={"messages": USER}, headers=OPENAI_HEADERS) as r:
        assert r.status == 400
        assert "model" in (await r.json())["error"]["message"]
    async with http.post(chat, json={"model": "gpt-4o"}, headers=OPENAI_HEADERS) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "messages"
    async with http.get(url + "/v1/nope", headers=OPENAI_HEADERS) as r:
        assert r.status == 404
        assert (await r.json())["error"]["message"] == "Invalid URL (GET /v1/nope)"


async def test_openai_sdk_missing_key(url: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="sk", max_retries=0, default_headers={"Authorization": ""}
    ) as client:
        with pytest.raises(openai.AuthenticationError) as e:
            await client.models.list()
    assert e.value.code == "invalid_api_key"


async def test_anthropic_error_shapes(url: str, http: aiohttp.ClientSession) -> None:
    msgs = url + "/v1/messages"
    ok_body = {"model": "claude-x", "max_tokens": 5, "messages": USER}

    async def error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
        data = await resp.json()
        assert data["type"] == "error"
        assert set(data["error"]) == {"type", "message"}
        result: dict[str, Any] = data["error"]
        return result

    async with http.post(msgs, json=ok_body, headers={"x-api-key": "k"}) as r:
        assert r.status == 400
        assert (await error(r))["message"] == "anthropic-version: header is required"
    async with http.post(msgs, json=ok_body, headers={"anthropic-version": "2023-06-01"}) as r:
        assert r.status == 401
        assert (await error(r))["type"] == "authentication_error"
    async with http.post(msgs, data=b"[", headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 400
        assert (await error(r))["type"] == "invalid_request_error"
    async with http.post(msgs, json={"model": "claude-x"}, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 400
        assert (await error(r))["message"] == "messages: Field required"
    no_model = {"max_tokens": 5, "messages": USER}
    async with http.post(msgs, json=no_model, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 400
        assert (await error(r))["message"] == "model: Field required"
    async with http.post(url + "/v1/nope", json={}, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 404
        assert (await error(r))["type"] == "not_found_error"
    async with http.post(msgs, json=ok_body, headers=ANTHROPIC_HEADERS) as r:
        assert r.status == 200


# ---- recording ------------------------------------------------------------------------


async def test_recording_in_process_and_over_http(
    oai: openai.AsyncOpenAI, standin: StandIn, http: aiohttp.ClientSession, url: str
) -> None:
    await oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    async with http.get(url + "/_standin/requests") as r:
        recorded = await r.json()
    assert len(recorded) == 1
    entry = recorded[0]
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/chat/completions"
    assert entry["headers"]["authorization"] == "Bearer sk-test"
    assert entry["json"]["stream_options"] == {"include_usage": True}
    assert json.loads(entry["body"]) == entry["json"]
    assert standin.requests[0].body == entry["body"].encode()

    async with http.delete(url + "/_standin/requests") as r:
        assert (await r.json()) == {"deleted": 1}
    assert standin.requests == []

    for _ in range(MAX_RECORDED + 5):
        await oai.models.list()
    assert len(standin.requests) == MAX_RECORDED


# ---- token counting cross-check and the command line ----------------------------------


def test_cookbook_counts() -> None:
    """OpenAI cookbook ("How to count tokens with tiktoken") published results."""
    if not encodings_available():
        pytest.skip("offline tiktoken encodings absent: counts fall back to len(json)//4")
    example: list[Any] = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates "
            "corporate jargon into plain English.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on "
            "opportunities for increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the "
            "client deliverable.",
        },
    ]
    assert count_chat_prompt_tokens("gpt-4", example) == 129
    assert count_chat_prompt_tokens("gpt-3.5-turbo", example) == 129
    assert count_chat_prompt_tokens("gpt-4o", example) == 124
    assert count_chat_prompt_tokens("gpt-4o-mini", example) == 124

    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {
                            "type": "string",
                            "description": "The city and state, e.g. San Francisco, CA",
                        },
                        "unit": {
                            "type": "string",
                            "description": "The unit of temperature to return",
                            "enum": ["celsius", "fahrenheit"],
                        },
                    },
                    "required": ["location"],
                },
            },
        }
    ]
    messages: list[Any] = [
        {
            "role": "system",
            "content": "You are a helpful assistant that can answer to questions about the "
            "weather.",
        },
        {"role": "user", "content": "What's the weather like in San Francisco?"},
    ]
    assert count_chat_prompt_tokens("gpt-4", messages, tools) == 105
    assert count_chat_prompt_tokens("gpt-4o", messages, tools) == 101


async def test_command_line_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.standin",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.removeprefix("listening on ")
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/_standin/health") as r,
        ):
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
