"""SSE framing and the per-dialect stream trackers, on the providers' real event shapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a11i.core.model import Dialect, Usage
from a11i.core.streaming import SSEParser, StreamTracker


def sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {text}\n\n".encode()


def chat_chunk(content: str | None = None, finish: str | None = None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    return sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


CHAT_STREAM = [
    chat_chunk("Hel", usage=None),
    chat_chunk("lo", usage=None),
    chat_chunk(None, "stop", usage=None),
    sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
        }
    ),
    b"data: [DONE]\n\n",
]


def feed_all(tracker: StreamTracker, stream: list[bytes], split: int | None = None) -> bytes:
    parser = SSEParser()
    blob = b"".join(stream)
    pieces = [blob] if split is None else [blob[i : i + split] for i in range(0, len(blob), split)]
    out = bytearray()
    for piece in pieces:
        for event in parser.feed(piece):
            relay = tracker.observe(event)
            if relay:
                out += relay
    for event in parser.flush():
        relay = tracker.observe(event)
        if relay:
            out += relay
    return bytes(out)


@pytest.mark.parametrize("split", [None, 1, 7, 64], ids=["whole", "byte", "7", "64"])
def test_parser_reassembles_events_across_chunks(split: int | None) -> None:
    tracker = StreamTracker(Dialect.OPENAI_CHAT)
    relayed = feed_all(tracker, CHAT_STREAM, split)
    assert relayed == b"".join(CHAT_STREAM)
    outcome = tracker.outcome()
    assert outcome.usage == Usage(12, 2)
    assert outcome.text == "Hello"
    assert outcome.finish_reason == "stop"
    assert outcome.complete


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_parser_handles_every_line_ending(newline: bytes) -> None:
    raw = b"event: ping" + newline + b'data: {"a":' + newline + b"data: 1}" + newline * 2
    events = SSEParser().feed(raw)
    assert len(events) == 1
    assert events[0].event == "ping"
    assert events[0].data == '{"a":\n1}'
    assert events[0].raw == raw


def test_comments_are_relayed_and_ignored() -> None:
    events = SSEParser().feed(b": keep-alive\n\n")
    assert events[0].data == ""
    tracker = StreamTracker(Dialect.ANTHROPIC_MESSAGES)
    assert tracker.observe(events[0]) == b": keep-alive\n\n"


def test_strip_usage_hides_what_a11i_added() -> None:
    tracker = StreamTracker(Dialect.OPENAI_CHAT, strip_usage=True)
    relayed = feed_all(tracker, CHAT_STREAM)
    expected = [chat_chunk("Hel"), chat_chunk("lo"), chat_chunk(None, "stop"), b"data: [DONE]\n\n"]
    assert relayed == b"".join(expected)
    assert tracker.outcome().usage == Usage(12, 2)


def completion_chunk(
    text: str, finish: str | None = None, index: int = 0, **extra: object
) -> bytes:
    """One chunk of a streamed legacy completion, in the key order OpenAI sends."""
    return sse(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}],
            "model": "gpt-3.5-turbo-instruct",
            **extra,
        }
    )


COMPLETION_USAGE_CHUNK = sse(
    {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "choices": [],
        "model": "gpt-3.5-turbo-instruct",
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
)


@pytest.mark.parametrize(
    ("stream", "strip", "relayed", "usage"),
    [
        (
            [
                completion_chunk("\n\nThis", usage=None),
                completion_chunk(" is indeed", usage=None),
                completion_chunk(" a test", "length", usage=None),
                COMPLETION_USAGE_CHUNK,
                b"data: [DONE]\n\n",
            ],
            True,
            # What the client would have seen without include_usage: no usage key, no last chunk.
            [
                completion_chunk("\n\nThis"),
                completion_chunk(" is indeed"),
                completion_chunk(" a test", "length"),
                b"data: [DONE]\n\n",
            ],
            Usage(5, 7),
        ),
        (
            [
                completion_chunk("\n\nThis", usage=None),
                completion_chunk(" is indeed", usage=None),
                completion_chunk(" a test", "length", usage=None),
                COMPLETION_USAGE_CHUNK,
                b"data: [DONE]\n\n",
            ],
            False,
            None,
            Usage(5, 7),
        ),
        (
            [
                completion_chunk("\n\nThis"),
                completion_chunk(" is indeed"),
                completion_chunk(" a test", "length"),
                b"data: [DONE]\n\n",
            ],
            False,
            None,
            None,
        ),
    ],
    ids=["usage-added-by-a11i", "usage-asked-by-client", "no-usage"],
)
def test_completion_stream(
    stream: list[bytes], strip: bool, relayed: list[bytes] | None, usage: Usage | None
) -> None:
    tracker = StreamTracker(Dialect.OPENAI_COMPLETIONS, strip_usage=strip)
    assert feed_all(tracker, stream, split=5) == b"".join(relayed or stream)
    outcome = tracker.outcome()
    assert outcome.usage == usage
    assert outcome.text == "\n\nThis is indeed a test"
    assert outcome.finish_reason == "length"
    assert outcome.complete
    assert outcome.tool_calls == ()
    assert outcome.malformed_events == 0


def test_completion_stream_gathers_every_choice() -> None:
    tracker = StreamTracker(Dialect.OPENAI_COMPLETIONS)
    feed_all(
        tracker,
        [
            completion_chunk("a", index=0),
            completion_chunk("b", index=1),
            completion_chunk("", "stop", index=0),
            completion_chunk("", "length", index=1),
        ],
    )
    outcome = tracker.outcome()
    assert outcome.text == "ab"
    assert outcome.finish_reason == "length"
    assert not outcome.complete


def test_chat_tool_call_fragments_are_assembled() -> None:
    def tool_delta(**call: object) -> bytes:
        return sse({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})

    stream = [
        tool_delta(
            index=0, id="call_1", type="function", function={"name": "get_pods", "arguments": ""}
        ),
        tool_delta(index=0, function={"arguments": '{"namespace":'}),
        tool_delta(index=0, function={"arguments": '"prod"}'}),
        b"data: [DONE]\n\n",
    ]
    tracker = StreamTracker(Dialect.OPENAI_CHAT)
    feed_all(tracker, stream)
    (call,) = tracker.outcome().tool_calls
    assert (call.id, call.name, call.arguments) == ("call_1", "get_pods", '{"namespace":"prod"}')


def test_anthropic_usage_merges_start_and_delta() -> None:
    stream = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "usage": {
                        "input_tokens": 25,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 100,
                        "cache_creation_input_tokens": 0,
                    }
                },
            },
            "message_start",
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            "content_block_delta",
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "check_logs",
                    "input": {},
                },
            },
            "content_block_start",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"pod": "a"}'},
            },
            "content_block_delta",
        ),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 15},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    tracker = StreamTracker(Dialect.ANTHROPIC_MESSAGES)
    assert feed_all(tracker, stream) == b"".join(stream)
    outcome = tracker.outcome()
    assert outcome.usage == Usage(125, 15, cached_input_tokens=100)
    assert outcome.text == "Hi"
    assert outcome.finish_reason == "tool_use"
    assert outcome.complete
    assert [(c.name, c.arguments) for c in outcome.tool_calls] == [("check_logs", '{"pod": "a"}')]


def test_responses_usage_comes_with_completed() -> None:
    stream = [
        sse(
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {"status": "in_progress", "usage": None},
            },
            "response.created",
        ),
        sse({"type": "response.output_text.delta", "delta": "Yes"}, "response.output_text.delta"),
        sse(
            {
                "type": "response.output_item.done",
                "item": {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_9",
                    "name": "get_pods",
                    "arguments": "{}",
                },
            },
            "response.output_item.done",
        ),
        sse(
            {
                "type": "response.completed",
                "response": {
                    "status": "completed",
                    "usage": {
                        "input_tokens": 40,
                        "output_tokens": 3,
                        "input_tokens_details": {"cached_tokens": 8},
                    },
                },
            },
            "response.completed",
        ),
    ]
    tracker = StreamTracker(Dialect.OPENAI_RESPONSES)
    feed_all(tracker, stream)
    outcome = tracker.outcome()
    assert outcome.usage == Usage(40, 3, cached_input_tokens=8)
    assert outcome.text == "Yes"
    assert outcome.complete
    assert outcome.tool_calls[0].name == "get_pods"


def test_cut_stream_is_incomplete_and_malformed_data_is_counted() -> None:
    tracker = StreamTracker(Dialect.OPENAI_CHAT)
    feed_all(tracker, [chat_chunk("partial"), b"data: {broken\n\n", b"data: [1]\n\n"])
    outcome = tracker.outcome()
    assert not outcome.complete
    assert outcome.usage is None
    assert outcome.text == "partial"
    assert outcome.malformed_events == 2


def test_parser_bounds_an_event_that_never_ends() -> None:
    parser = SSEParser(max_event_bytes=1024)
    assert parser.feed(b"data: " + b"x" * 4096) == []
    assert parser.pending == b""


@given(
    dialect=st.sampled_from(list(Dialect)),
    strip=st.booleans(),
    chunks=st.lists(
        st.binary(max_size=64) | st.sampled_from([*CHAT_STREAM, COMPLETION_USAGE_CHUNK]),
        max_size=12,
    ),
)
def test_trackers_never_crash(dialect: Dialect, strip: bool, chunks: list[bytes]) -> None:
    tracker = StreamTracker(dialect, strip_usage=strip)
    feed_all(tracker, chunks)
    assert tracker.outcome().malformed_events >= 0


def test_anthropic_stream_keeps_the_cache_split_tier_and_server_tools() -> None:
    """The streamed twin of a non-streaming answer's billing fields: message_start carries
    the cache split and the tier, message_delta the (cumulative) server tool use."""
    stream = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 0,
                        "cache_creation_input_tokens": 5_000,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 1_000,
                            "ephemeral_1h_input_tokens": 4_000,
                        },
                        "service_tier": "priority",
                        "inference_geo": "us",
                    }
                },
            },
            "message_start",
        ),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {
                    "output_tokens": 30,
                    "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
                },
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    tracker = StreamTracker(Dialect.ANTHROPIC_MESSAGES)
    feed_all(tracker, stream, split=7)
    assert tracker.outcome().usage == Usage(
        5_010,
        30,
        cache_write_tokens=5_000,
        cache_write_long_tokens=4_000,
        web_search_requests=3,
        service_tier="priority",
        inference_geo="us",
    )


def test_chat_stream_usage_takes_the_service_tier_of_the_chunks() -> None:
    stream = [
        chat_chunk("Hi", service_tier="flex"),
        chat_chunk(finish="stop", service_tier="flex"),
        sse(
            {
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {
                    "prompt_tokens": 300_000,
                    "completion_tokens": 9,
                    "completion_tokens_details": {"reasoning_tokens": 4},
                },
            }
        ),
        b"data: [DONE]\n\n",
    ]
    tracker = StreamTracker(Dialect.OPENAI_CHAT)
    feed_all(tracker, stream)
    assert tracker.outcome().usage == Usage(300_000, 9, reasoning_tokens=4, service_tier="flex")


def test_responses_stream_counts_web_searches_of_the_completed_response() -> None:
    completed = {
        "type": "response.completed",
        "response": {
            "status": "completed",
            "service_tier": "priority",
            "output": [
                {"type": "web_search_call", "id": "ws_1", "action": {"type": "search"}},
                {"type": "web_search_call", "id": "ws_2", "action": {"type": "search"}},
                {"type": "message", "id": "m", "content": []},
            ],
            "usage": {"input_tokens": 50, "output_tokens": 7},
        },
    }
    tracker = StreamTracker(Dialect.OPENAI_RESPONSES)
    feed_all(tracker, [sse(completed, "response.completed")])
    assert tracker.outcome().usage == Usage(50, 7, web_search_requests=2, service_tier="priority")


@pytest.mark.parametrize(
    ("dialect", "events", "identity"),
    [
        (
            Dialect.OPENAI_CHAT,
            [chat_chunk("Hi", model="gpt-4o-2024-08-06"), chat_chunk(None, "stop"), sse("[DONE]")],
            ("chatcmpl-1", "gpt-4o-2024-08-06"),
        ),
        (
            Dialect.ANTHROPIC_MESSAGES,
            [
                sse(
                    {
                        "type": "message_start",
                        "message": {
                            "id": "msg_01",
                            "model": "claude-sonnet-4-5-20250929",
                            "usage": {"input_tokens": 10, "output_tokens": 1},
                        },
                    },
                    "message_start",
                )
            ],
            ("msg_01", "claude-sonnet-4-5-20250929"),
        ),
        (
            Dialect.OPENAI_RESPONSES,
            [
                sse(
                    {
                        "type": "response.created",
                        "response": {"id": "resp_1", "model": "gpt-4.1", "status": "in_progress"},
                    },
                    "response.created",
                )
            ],
            ("resp_1", "gpt-4.1"),
        ),
    ],
    ids=["chat", "anthropic", "responses"],
)
def test_a_stream_names_its_response(
    dialect: Dialect, events: list[bytes], identity: tuple[str, str]
) -> None:
    """``gen_ai.response.id`` and ``.model`` for streamed answers too."""
    tracker = StreamTracker(dialect)
    parser = SSEParser()
    for raw in events:
        for event in parser.feed(raw):
            tracker.observe(event)
    outcome = tracker.outcome()
    assert (outcome.response_id, outcome.response_model) == identity
