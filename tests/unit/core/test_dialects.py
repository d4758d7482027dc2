"""Request validation, usage extraction and error shapes of the five dialects."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a11i.core.dialects import (
    _CHAT_ROLES,
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    DuplicateKey,
    _json_type,
    _responses_web_searches,
    _unique_keys,
    dialect_for_path,
    error_body,
    parse_json_body,
    parse_request,
    usage_from_body,
    usage_from_object,
)
from a11i.core.errors import BadRequest, BudgetExceeded
from a11i.core.model import Dialect, Usage

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"}


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", Dialect.OPENAI_CHAT),
        ("/v1/chat/completions/", Dialect.OPENAI_CHAT),
        ("/v1/responses", Dialect.OPENAI_RESPONSES),
        ("/v1/embeddings", Dialect.OPENAI_EMBEDDINGS),
        ("/v1/completions", Dialect.OPENAI_COMPLETIONS),
        ("/v1/completions/", Dialect.OPENAI_COMPLETIONS),
        ("/v1/messages", Dialect.ANTHROPIC_MESSAGES),
        ("/v1/models", None),
        ("/v1/messages/count_tokens", None),
        ("/", None),
    ],
    ids=lambda v: str(v),
)
def test_dialect_for_path(path: str, dialect: Dialect | None) -> None:
    assert dialect_for_path(path) is dialect


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"max_tokens": ' + b"9" * 5000 + b"}", "a number a11i cannot read"),
    ],
    ids=["empty", "blank", "broken", "not-utf8", "array", "string", "deep", "5000-digits"],
)
def test_parse_json_body_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_json_body(raw)


@pytest.mark.parametrize(
    ("dialect", "body", "message"),
    [
        (Dialect.OPENAI_CHAT, {"messages": []}, "'model' is required"),
        (Dialect.OPENAI_CHAT, {"model": 4, "messages": []}, "'model' must be a non-empty string"),
        (Dialect.OPENAI_CHAT, {"model": "gpt-4o"}, "'messages' is required"),
        (Dialect.OPENAI_CHAT, {"model": "m" * 300, "messages": []}, "at most 256"),
        (Dialect.OPENAI_CHAT, {"model": "gpt-4o\r\nx: y", "messages": []}, "control char"),
        (Dialect.OPENAI_CHAT, {"model": "gpt-4o", "messages": "hi"}, "must be an array"),
        (Dialect.OPENAI_CHAT, {"model": "gpt-4o", "messages": []}, "at least one"),
        (Dialect.OPENAI_CHAT, {"model": "m", "messages": ["hi"]}, r"'messages\[0\]' must be"),
        (Dialect.OPENAI_CHAT, {"model": "m", "messages": [{"role": "bot"}]}, "role"),
        (
            Dialect.OPENAI_CHAT,
            {"model": "m", "messages": [{"role": "user", "content": 5}]},
            "content",
        ),
        (Dialect.OPENAI_CHAT, {**CHAT, "max_tokens": "10"}, "'max_tokens' must be a positive"),
        (Dialect.OPENAI_CHAT, {**CHAT, "max_tokens": 0}, "'max_tokens' must be a positive"),
        (Dialect.OPENAI_CHAT, {**CHAT, "max_completion_tokens": True}, "positive integer"),
        (Dialect.OPENAI_CHAT, {**CHAT, "stream": "yes"}, "'stream' must be a boolean"),
        (Dialect.OPENAI_CHAT, {**CHAT, "stream_options": []}, "'stream_options' must be"),
        (
            Dialect.OPENAI_CHAT,
            {**CHAT, "stream_options": {"include_usage": 1}},
            "include_usage' must be a boolean",
        ),
        (Dialect.OPENAI_CHAT, {**CHAT, "tools": {}}, "'tools' must be an array"),
        (Dialect.OPENAI_CHAT, {**CHAT, "n": -1}, "'n' must be a positive"),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-4o"}, "'input' is required"),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-4o", "input": 3}, "'input' must be"),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-4o", "input": [1]}, r"'input\[0\]'"),
        (
            Dialect.OPENAI_RESPONSES,
            {"model": "gpt-4o", "input": "x", "instructions": 1},
            "instructions",
        ),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "e"}, "'input' is required"),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "e", "input": []}, "'input' must be"),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "e", "input": [1, "a"]}, "'input' must be"),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "e", "input": {"a": 1}}, "'input' must be"),
        (Dialect.ANTHROPIC_MESSAGES, {"model": "claude", "messages": []}, "'max_tokens' is req"),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            'must be "user" or "assistant"',
        ),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "c", "max_tokens": 5, "messages": [{"role": "user"}]},
            "content",
        ),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "c", "max_tokens": 5, "messages": [], "system": 3},
            "'system' must be",
        ),
    ],
    ids=lambda v: v.value if isinstance(v, Dialect) else None,
)
def test_parse_request_rejects(dialect: Dialect, body: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(dialect, body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x"}, "'model' is required"),
        ({"model": "gpt-3.5-turbo-instruct"}, "'prompt' is required"),
        ({**COMPLETION, "prompt": None}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": 5}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": []}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": ["a", 1]}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": [[]]}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": [[1, "a"]]}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": [True]}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": [-1]}, "'prompt' must be a string"),
        ({**COMPLETION, "prompt": {"text": "x"}}, "'prompt' must be a string"),
        ({**COMPLETION, "max_tokens": -1}, "'max_tokens' must be a non-negative integer"),
        ({**COMPLETION, "max_tokens": "16"}, "'max_tokens' must be a non-negative integer"),
        ({**COMPLETION, "max_tokens": 1.5}, "'max_tokens' must be a non-negative integer"),
        ({**COMPLETION, "n": 0}, "'n' must be a positive integer"),
        ({**COMPLETION, "best_of": "3"}, "'best_of' must be a positive integer"),
        ({**COMPLETION, "echo": "yes"}, "'echo' must be a boolean"),
        ({**COMPLETION, "suffix": 3}, "'suffix' must be a string"),
        ({**COMPLETION, "stream": 1}, "'stream' must be a boolean"),
        ({**COMPLETION, "stream_options": "usage"}, "'stream_options' must be an object"),
        (
            {**COMPLETION, "stream_options": {"include_usage": "yes"}},
            "'stream_options.include_usage' must be a boolean",
        ),
    ],
    ids=[
        "no-model",
        "no-prompt",
        "null-prompt",
        "number-prompt",
        "empty-prompt",
        "mixed-prompt",
        "empty-id-list",
        "mixed-id-list",
        "boolean-id",
        "negative-id",
        "object-prompt",
        "negative-max-tokens",
        "string-max-tokens",
        "float-max-tokens",
        "zero-n",
        "string-best-of",
        "string-echo",
        "number-suffix",
        "number-stream",
        "string-stream-options",
        "string-include-usage",
    ],
)
def test_parse_completions_rejects(body: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_request(Dialect.OPENAI_COMPLETIONS, body)  # type: ignore[arg-type]
    # Answered in OpenAI's shape, naming the field, so the SDK raises BadRequestError.
    assert error_body(Dialect.OPENAI_COMPLETIONS, caught.value) == {
        "error": {
            "message": caught.value.message,
            "type": "invalid_request_error",
            "param": caught.value.param,
            "code": "invalid_request_error",
        }
    }
    assert caught.value.status == 400
    assert caught.value.param


@pytest.mark.parametrize(
    ("body", "max_output", "choices", "stream", "usage_requested"),
    [
        (COMPLETION, COMPLETIONS_DEFAULT_MAX_TOKENS, 1, False, False),
        ({**COMPLETION, "max_tokens": None}, COMPLETIONS_DEFAULT_MAX_TOKENS, 1, False, False),
        ({**COMPLETION, "max_tokens": 0, "echo": True}, 0, 1, False, False),
        ({**COMPLETION, "max_tokens": 100, "n": 3}, 100, 3, False, False),
        # best_of answers are generated and billed; n of them returned.
        ({**COMPLETION, "max_tokens": 100, "n": 2, "best_of": 5}, 100, 5, False, False),
        ({**COMPLETION, "n": 4, "best_of": 1}, 16, 4, False, False),
        # Every prompt of a batch gets its own max(n, best_of) answers.
        ({**COMPLETION, "prompt": ["a", "b", "c"], "n": 2}, 16, 6, False, False),
        ({**COMPLETION, "prompt": [1, 2, 3]}, 16, 1, False, False),
        ({**COMPLETION, "prompt": [[1, 2], [3]], "best_of": 2}, 16, 4, False, False),
        ({**COMPLETION, "prompt": ""}, 16, 1, False, False),
        ({**COMPLETION, "suffix": None, "echo": None}, 16, 1, False, False),
        ({**COMPLETION, "stream": True}, 16, 1, True, False),
        (
            {**COMPLETION, "stream": True, "stream_options": {"include_usage": True}},
            16,
            1,
            True,
            True,
        ),
    ],
    ids=[
        "defaults",
        "null-max-tokens",
        "score-only",
        "n",
        "best-of",
        "n-over-best-of",
        "string-batch",
        "token-ids",
        "token-id-batch",
        "empty-string",
        "nulls",
        "stream",
        "stream-usage",
    ],
)
def test_parse_completions_reads_metering_fields(
    body: dict[str, object], max_output: int, choices: int, stream: bool, usage_requested: bool
) -> None:
    parsed = parse_request(Dialect.OPENAI_COMPLETIONS, body)  # type: ignore[arg-type]
    assert parsed.dialect is Dialect.OPENAI_COMPLETIONS
    assert parsed.model == "gpt-3.5-turbo-instruct"
    assert (parsed.max_output_tokens, parsed.choices) == (max_output, choices)
    assert (parsed.stream, parsed.stream_usage_requested) == (stream, usage_requested)


def test_parse_chat_reads_metering_fields() -> None:
    body = {
        **CHAT,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 50,
        "max_tokens": 999,
        "n": 3,
    }
    parsed = parse_request(Dialect.OPENAI_CHAT, body)  # type: ignore[arg-type]
    assert parsed.model == "gpt-4o"
    assert parsed.stream is True
    assert parsed.stream_usage_requested is True
    # max_completion_tokens supersedes the deprecated max_tokens.
    assert parsed.max_output_tokens == 50
    assert parsed.choices == 3


@pytest.mark.parametrize(
    ("dialect", "body", "max_output"),
    [
        (Dialect.OPENAI_RESPONSES, {"model": "m", "input": "x", "max_output_tokens": 7}, 7),
        (Dialect.OPENAI_RESPONSES, {"model": "m", "previous_response_id": "r", "input": []}, None),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "m", "input": [[1, 2], [3]]}, 0),
        (Dialect.OPENAI_EMBEDDINGS, {"model": "m", "input": [1, 2, 3]}, 0),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": []}]},
            9,
        ),
    ],
    ids=["responses", "responses-continued", "embed-token-lists", "embed-tokens", "anthropic"],
)
def test_parse_request_accepts(
    dialect: Dialect, body: dict[str, object], max_output: int | None
) -> None:
    parsed = parse_request(dialect, body)  # type: ignore[arg-type]
    assert parsed.dialect is dialect
    assert parsed.max_output_tokens == max_output


@pytest.mark.parametrize(
    ("dialect", "body", "usage"),
    [
        (
            Dialect.OPENAI_CHAT,
            {
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": 20,
                    "prompt_tokens_details": {"cached_tokens": 64},
                }
            },
            Usage(100, 20, cached_input_tokens=64),
        ),
        (
            Dialect.OPENAI_EMBEDDINGS,
            {"usage": {"prompt_tokens": 8, "total_tokens": 8}},
            Usage(8, 0),
        ),
        (
            # OpenAI's API reference example for POST /v1/completions.
            Dialect.OPENAI_COMPLETIONS,
            {
                "object": "text_completion",
                "choices": [{"text": "\n\nThis is indeed a test", "index": 0}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            },
            Usage(5, 7),
        ),
        (
            Dialect.OPENAI_RESPONSES,
            {
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 5,
                    "input_tokens_details": {"cached_tokens": 0},
                }
            },
            Usage(30, 5),
        ),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 4,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 50,
                }
            },
            Usage(160, 4, cached_input_tokens=100, cache_write_tokens=50),
        ),
        (Dialect.OPENAI_CHAT, {"usage": None}, None),
        (Dialect.OPENAI_CHAT, {"usage": {"prompt_tokens": "10"}}, None),
        (Dialect.OPENAI_CHAT, [], None),
        (Dialect.ANTHROPIC_MESSAGES, {"usage": {}}, None),
    ],
    ids=[
        "chat",
        "embeddings",
        "completions",
        "responses",
        "anthropic-cache",
        "null",
        "wrong-type",
        "array",
        "anthropic-empty",
    ],
)
def test_usage_from_body(dialect: Dialect, body: object, usage: Usage | None) -> None:
    assert usage_from_body(dialect, body) == usage  # type: ignore[arg-type]


def test_error_bodies_match_each_dialect() -> None:
    error = BudgetExceeded("over budget")
    assert error_body(Dialect.OPENAI_CHAT, error) == {
        "error": {
            "message": "over budget",
            "type": "budget_exceeded",
            "param": None,
            "code": "budget_exceeded",
        }
    }
    assert error_body(Dialect.OPENAI_COMPLETIONS, error) == error_body(Dialect.OPENAI_CHAT, error)
    assert error_body(Dialect.ANTHROPIC_MESSAGES, error) == {
        "type": "error",
        "error": {"type": "budget_exceeded", "message": "over budget"},
    }


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Named, not a lambda: hypothesis reads the source of ``extend`` (see test_tokens._nest).
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    _nest,
    max_leaves=8,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.sampled_from(["gpt-4o", "claude-sonnet-4-5"]),
        "messages": json_values
        | st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": json_values | st.sampled_from(["user", "assistant", "tool"]),
                    "content": json_values,
                },
            ),
            max_size=4,
        ),
        "input": json_values,
        "prompt": json_values | st.lists(st.text(max_size=8) | st.integers(), max_size=3),
        "n": json_values,
        "best_of": json_values,
        "suffix": json_values,
        "max_tokens": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "tools": json_values,
        "system": json_values,
    },
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(dialect=st.sampled_from(list(Dialect)), body=request_like)
def test_parse_request_never_crashes(dialect: Dialect, body: dict[str, object]) -> None:
    try:
        outcome = parse_request(dialect, body).model  # type: ignore[arg-type]
    except BadRequest as error:
        outcome = error.message
    assert isinstance(outcome, str)
    assert outcome


@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_json_body_never_crashes(raw: bytes) -> None:
    try:
        outcome: object = parse_json_body(raw)
    except BadRequest as error:
        outcome = {"error": error.message}
    assert isinstance(outcome, dict)


@given(dialect=st.sampled_from(list(Dialect)), body=json_values)
def test_usage_from_body_never_crashes(dialect: Dialect, body: object) -> None:
    usage = usage_from_body(dialect, body)  # type: ignore[arg-type]
    assert usage is None or usage.input_tokens >= 0


# Usage as the official SDKs type it (openai.types.CompletionUsage / responses.ResponseUsage,
# anthropic.types.Usage): every field the bill depends on.
BILLING_USAGE = [
    pytest.param(
        Dialect.ANTHROPIC_MESSAGES,
        {
            "usage": {
                "input_tokens": 10,
                "output_tokens": 40,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5_000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 1_000,
                    "ephemeral_1h_input_tokens": 4_000,
                },
                "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
                "output_tokens_details": {"thinking_tokens": 30},
                "service_tier": "batch",
                "inference_geo": "us",
                "speed": "fast",
            }
        },
        Usage(
            5_110,
            40,
            cached_input_tokens=100,
            cache_write_tokens=5_000,
            cache_write_long_tokens=4_000,
            reasoning_tokens=30,
            web_search_requests=3,
            web_fetch_requests=1,
            service_tier="batch",
            inference_geo="us",
            speed="fast",
        ),
        id="anthropic-everything",
    ),
    pytest.param(
        Dialect.ANTHROPIC_MESSAGES,
        {"usage": {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 50}},
        Usage(60, 4, cache_write_tokens=50),
        id="anthropic-writes-without-split-are-5m",
    ),
    pytest.param(
        Dialect.OPENAI_CHAT,
        {
            "service_tier": "flex",
            "usage": {
                "prompt_tokens": 300_000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 1_000, "cache_write_tokens": 2_000},
                "completion_tokens_details": {"reasoning_tokens": 400},
            },
        },
        Usage(
            300_000,
            500,
            cached_input_tokens=1_000,
            cache_write_tokens=2_000,
            reasoning_tokens=400,
            service_tier="flex",
        ),
        id="chat-tier-cache-write-reasoning",
    ),
    pytest.param(
        Dialect.OPENAI_RESPONSES,
        {
            "service_tier": "priority",
            "output": [
                {"type": "web_search_call", "id": "ws_1", "action": {"type": "search"}},
                {"type": "web_search_call", "id": "ws_2", "action": {"type": "open_page"}},
                {"type": "web_search_call", "id": "ws_3"},
                {"type": "message", "id": "msg_1", "content": []},
            ],
            "usage": {
                "input_tokens": 1_000,
                "output_tokens": 50,
                "input_tokens_details": {
                    "cached_tokens": 100,
                    "cache_write_tokens": 600,
                    "cache_write_tokens_details": {"ttl_30m_tokens": 200, "ttl_12h_tokens": 400},
                },
                "output_tokens_details": {"reasoning_tokens": 20},
            },
        },
        Usage(
            1_000,
            50,
            cached_input_tokens=100,
            cache_write_tokens=600,
            cache_write_long_tokens=400,
            reasoning_tokens=20,
            web_search_requests=2,
            service_tier="priority",
        ),
        id="responses-searches-by-item",
    ),
    pytest.param(
        Dialect.OPENAI_RESPONSES,
        {
            "output": [{"type": "web_search_call", "id": "ws_1"}] * 3,
            "tool_usage": {"web_search": {"num_requests": 1}, "image_gen": {}},
            "usage": {"input_tokens": 10, "output_tokens": 5},
        },
        Usage(10, 5, web_search_requests=1),
        id="responses-searches-as-reported",
    ),
]


@pytest.mark.parametrize(("dialect", "body", "usage"), BILLING_USAGE)
def test_usage_carries_what_the_bill_depends_on(
    dialect: Dialect, body: object, usage: Usage
) -> None:
    assert usage_from_body(dialect, body) == usage  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dialect", "body", "tier"),
    [
        (Dialect.OPENAI_CHAT, {"service_tier": "priority"}, "priority"),
        (Dialect.OPENAI_RESPONSES, {"service_tier": "flex"}, "flex"),
        (Dialect.ANTHROPIC_MESSAGES, {"service_tier": "standard_only"}, "standard_only"),
        (Dialect.OPENAI_CHAT, {}, None),
    ],
    ids=["chat", "responses", "anthropic", "absent"],
)
def test_the_asked_service_tier_is_parsed(
    dialect: Dialect, body: dict[str, object], tier: str | None
) -> None:
    base: dict[str, object] = {
        Dialect.OPENAI_CHAT: CHAT,
        Dialect.OPENAI_RESPONSES: {"model": "gpt-5.4", "input": "hi"},
        Dialect.ANTHROPIC_MESSAGES: {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
    }[dialect]
    assert parse_request(dialect, {**base, **body}).service_tier == tier  # type: ignore[arg-type]


def test_a_service_tier_that_is_no_string_is_refused() -> None:
    with pytest.raises(BadRequest, match="'service_tier' must be a string"):
        parse_request(Dialect.OPENAI_CHAT, {**CHAT, "service_tier": 1})


def _reference_parse_json_body(raw: bytes) -> object:
    """``parse_json_body`` as first written: ``json.loads`` with the duplicate-key hook, which
    builds a decoder per call. The module's one decoder must read every body the same way."""
    if not raw.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        value: object = json.loads(raw, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise BadRequest(
            f"The request body has the key {json.dumps(exc.key)} twice in one object; a11i "
            "refuses it, since a provider may read the other value than the one a11i priced.",
            param=exc.key,
        ) from exc
    except UnicodeDecodeError as exc:
        raise BadRequest("The request body is not valid UTF-8 JSON.") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc.msg} "
            f"at line {exc.lineno} column {exc.colno}."
        ) from exc
    except RecursionError as exc:
        raise BadRequest("The request body is nested too deeply to be parsed.") from exc
    except ValueError as exc:
        raise BadRequest(f"The request body has a number a11i cannot read: {exc}.") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_json_type(value)}.")
    return value


_ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "utf-32-be"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.binary(max_size=200)
    | st.tuples(json_values, _ENCODINGS).map(lambda v: json.dumps(v[0]).encode(v[1]))
    | st.sampled_from(
        [b'{"a": 1, "a": 2}', b" \t\r\n\x0b\x0c", b"\x0b{}", b'{"b": {"c": 1, "c": 1}}']
    )
)
def test_parse_json_body_reads_as_json_loads_does(raw: bytes) -> None:
    def outcome(parse: Any) -> object:
        try:
            value = parse(raw)
        except BadRequest as error:
            return ("refused", error.message, error.param)
        return ("parsed", json.dumps(value))

    assert outcome(parse_json_body) == outcome(_reference_parse_json_body)


_COUNTS = st.integers(-2, 10**6) | st.sampled_from([None, "7", 1.5, True])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    dialect=st.sampled_from(list(Dialect)),
    body=st.fixed_dictionaries(
        {},
        optional={
            "usage": json_values
            | st.fixed_dictionaries(
                {},
                optional={
                    key: _COUNTS
                    for key in (
                        "prompt_tokens",
                        "completion_tokens",
                        "input_tokens",
                        "output_tokens",
                        "cache_read_input_tokens",
                    )
                },
            ),
            "service_tier": json_values | st.sampled_from(["flex", "", "priority"]),
            "tool_usage": json_values
            | st.fixed_dictionaries(
                {"web_search": st.fixed_dictionaries({"num_requests": _COUNTS})}
            ),
            "output": json_values
            | st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["web_search_call", "message"])},
                    optional={"action": st.none() | st.fixed_dictionaries({"type": json_values})},
                ),
                max_size=3,
            ),
        },
    ),
)
def test_usage_from_body_is_the_usage_with_what_the_answer_says_beside_it(
    dialect: Dialect, body: dict[str, Any]
) -> None:
    # As first written: the usage object read alone, then the answer's tier and searches put in.
    expected = usage_from_object(dialect, body.get("usage"))
    if expected is not None and dialect is not Dialect.ANTHROPIC_MESSAGES:
        tier = body.get("service_tier")
        expected = replace(
            expected,
            service_tier=tier if isinstance(tier, str) and tier else expected.service_tier,
            web_search_requests=_responses_web_searches(body)
            if dialect is Dialect.OPENAI_RESPONSES
            else 0,
        )
    assert usage_from_body(dialect, body) == expected


@pytest.mark.parametrize(
    ("dialect", "body", "message"),
    [
        (Dialect.OPENAI_CHAT, {**CHAT, "messages": [{"role": "x"}]}, "'messages[0].role'"),
        (Dialect.OPENAI_CHAT, {**CHAT, "stream_options": 1}, "'stream_options' must be"),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-5", "input": 1}, "'input' must be"),
        (Dialect.OPENAI_RESPONSES, {"model": "gpt-5"}, "'input' is required"),
        (Dialect.ANTHROPIC_MESSAGES, {"model": "claude", "messages": []}, "'max_tokens'"),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "claude", "max_tokens": 5, "messages": [{"role": "user"}]},
            "'messages.0.content'",
        ),
    ],
    ids=[
        "chat-role",
        "chat-stream-options",
        "responses-input",
        "responses-none",
        "anthropic-cap",
        "anthropic-content",
    ],
)
def test_a_bad_service_tier_is_named_after_the_rest_of_the_body(
    dialect: Dialect, body: dict[str, object], message: str
) -> None:
    # The tier is checked last, as ever: a body with two faults is refused for the same one.
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_request(dialect, {**body, "service_tier": 1})  # type: ignore[arg-type]


def _old_chat_messages_check(messages: list[Any]) -> None:
    """The chat message checks as they were, message by message: the oracle of the glance
    ``_parse_chat`` now takes first."""
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            where = f"messages[{index}]"
            raise BadRequest(
                f"'{where}' must be an object, not {_json_type(message)}.", param=where
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in _CHAT_ROLES:
            raise BadRequest(
                f"'messages[{index}].role' must be one of {sorted(_CHAT_ROLES)}, "
                f"not {json.dumps(role)}.",
                param=f"messages[{index}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(
                f"'messages[{index}].content' must be a string, an array of parts or null, "
                f"not {_json_type(content)}.",
                param=f"messages[{index}].content",
            )


@given(
    messages=st.lists(
        json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "role": json_values | st.sampled_from(sorted(_CHAT_ROLES)),
                "content": json_values | st.text(max_size=4) | st.lists(json_values),
            },
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chat_messages_are_refused_as_before(messages: list[Any]) -> None:
    body = {"model": "gpt-4o", "messages": messages}
    expected: tuple[str, str | None] | None = None
    try:
        _old_chat_messages_check(messages)
    except BadRequest as error:
        expected = (error.message, error.param)
    if expected is None:
        assert parse_request(Dialect.OPENAI_CHAT, body).body is body
        return
    with pytest.raises(BadRequest) as refused:
        parse_request(Dialect.OPENAI_CHAT, body)
    assert (refused.value.message, refused.value.param) == expected
