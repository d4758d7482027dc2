"""Tool results, tool calls, answer text and context saturation."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a11i.core.analysis import (
    ClientIds,
    ResponseFacts,
    ToolOutcome,
    _fed_chat_results,
    _newest_turn,
    _objects,
    answer_text,
    classify_failure,
    client_ids,
    context_saturation,
    response_facts,
    tool_calls,
    tool_names,
    tool_results,
)
from a11i.core.dialects import ParsedRequest, parse_request
from a11i.core.model import Dialect, JSONObject, JSONValue

SRE_CHAT: JSONObject = {
    "model": "gpt-4o",
    "tools": [{"type": "function", "function": {"name": "get_pods", "parameters": {}}}],
    "messages": [
        {"role": "user", "content": "why is checkout down?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_pods", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "old result"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_pods", "arguments": "{}"},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "check_logs", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "checkout-7d9 CrashLoopBackOff"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: pod not found"},
    ],
}


def test_tool_results_of_the_newest_turn_only() -> None:
    results = tool_results(parse_request(Dialect.OPENAI_CHAT, SRE_CHAT))
    assert [(r.tool_call_id, r.is_error) for r in results] == [
        ("call_1", False),
        ("call_2", True),
    ]
    assert results[0].chars == len("checkout-7d9 CrashLoopBackOff")
    # Names come from the assistant turn the results answer.
    assert [(r.name, r.outcome) for r in results] == [
        ("get_pods", ToolOutcome.SUCCESS),
        ("check_logs", ToolOutcome.ERROR),
    ]


def test_anthropic_tool_result_error_flag() -> None:
    body: JSONObject = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "restart it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "restart_server", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "permission denied"}],
                    }
                ],
            },
        ],
    }
    (result,) = tool_results(parse_request(Dialect.ANTHROPIC_MESSAGES, body))
    assert result.tool_call_id == "toolu_1"
    assert result.is_error
    assert result.chars == len("permission denied")
    assert (result.name, result.outcome) == ("restart_server", ToolOutcome.ERROR)


def test_responses_function_call_output() -> None:
    body: JSONObject = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "pods?"},
            {"type": "function_call", "call_id": "c1", "name": "get_pods", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": '{"error": "timeout"}'},
        ],
    }
    (result,) = tool_results(parse_request(Dialect.OPENAI_RESPONSES, body))
    assert (result.tool_call_id, result.is_error) == ("c1", True)
    assert (result.name, result.outcome) == ("get_pods", ToolOutcome.TIMEOUT)


@pytest.mark.parametrize(
    ("content", "outcome"),
    [
        ("Error: connection refused", ToolOutcome.ERROR),
        ("Error: request timed out after 30s", ToolOutcome.TIMEOUT),
        ('{"error": "context deadline exceeded"}', ToolOutcome.TIMEOUT),
        ("The job finished; no timeout occurred", ToolOutcome.SUCCESS),
        ("3 pods running", ToolOutcome.SUCCESS),
    ],
    ids=["error", "timed-out", "deadline", "timeout-word-in-success", "plain"],
)
def test_tool_outcome(content: str, outcome: ToolOutcome) -> None:
    body: JSONObject = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "t", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": content},
        ],
    }
    (result,) = tool_results(parse_request(Dialect.OPENAI_CHAT, body))
    assert result.outcome is outcome


@pytest.mark.parametrize(
    ("dialect", "answer", "expected"),
    [
        (
            Dialect.OPENAI_CHAT,
            {
                "choices": [
                    {
                        "message": {
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_pods", "arguments": '{"ns":"a"}'},
                                }
                            ],
                        }
                    }
                ]
            },
            [("call_1", "get_pods", '{"ns":"a"}')],
        ),
        (
            Dialect.OPENAI_CHAT,
            {"choices": [{"message": {"function_call": {"name": "legacy", "arguments": "{}"}}}]},
            [("", "legacy", "{}")],
        ),
        (
            Dialect.OPENAI_RESPONSES,
            {"output": [{"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"}]},
            [("c", "n", "{}")],
        ),
        (
            Dialect.ANTHROPIC_MESSAGES,
            {
                "content": [
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "t", "name": "check_logs", "input": {"a": 1}},
                ]
            },
            [("t", "check_logs", '{"a":1}')],
        ),
        (Dialect.OPENAI_CHAT, {"choices": "nonsense"}, []),
        (Dialect.ANTHROPIC_MESSAGES, None, []),
    ],
    ids=["chat", "legacy-function-call", "responses", "anthropic", "malformed", "none"],
)
def test_tool_calls(
    dialect: Dialect, answer: JSONObject, expected: list[tuple[str, str, str]]
) -> None:
    assert [(c.id, c.name, c.arguments) for c in tool_calls(dialect, answer)] == expected


def test_answer_text_and_tool_names() -> None:
    assert answer_text(Dialect.OPENAI_CHAT, {"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert (
        answer_text(
            Dialect.OPENAI_RESPONSES,
            {"output": [{"type": "message", "content": [{"type": "output_text", "text": "yo"}]}]},
        )
        == "yo"
    )
    assert (
        answer_text(Dialect.ANTHROPIC_MESSAGES, {"content": [{"type": "text", "text": "a"}]}) == "a"
    )
    completion = {"object": "text_completion", "choices": [{"text": "a"}, {"text": "b"}, {}]}
    assert answer_text(Dialect.OPENAI_COMPLETIONS, completion) == "ab"
    assert tool_calls(Dialect.OPENAI_COMPLETIONS, completion) == ()
    assert tool_names(parse_request(Dialect.OPENAI_CHAT, SRE_CHAT)) == ("get_pods",)


@pytest.mark.parametrize(
    ("tokens", "window", "percent"),
    [(0, 128_000, "0.0"), (115_200, 128_000, "90.0"), (300_000, 200_000, "100"), (5, 0, "0")],
    ids=["empty", "ninety", "over-is-capped", "no-window"],
)
def test_context_saturation(tokens: int, window: int, percent: str) -> None:
    assert context_saturation(tokens, window) == Decimal(percent)


@pytest.mark.parametrize(
    ("dialect", "answer", "facts"),
    [
        pytest.param(
            Dialect.OPENAI_CHAT,
            {
                "id": "chatcmpl-1",
                "model": "gpt-4o-2024-08-06",
                "choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}],
            },
            ResponseFacts("chatcmpl-1", "gpt-4o-2024-08-06", ("stop", "length")),
            id="chat",
        ),
        pytest.param(
            Dialect.OPENAI_RESPONSES,
            {"id": "resp_1", "model": "gpt-4o", "status": "completed"},
            ResponseFacts("resp_1", "gpt-4o", ("completed",)),
            id="responses",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            {"id": "msg_1", "model": "claude-sonnet-4-5", "stop_reason": "tool_use"},
            ResponseFacts("msg_1", "claude-sonnet-4-5", ("tool_use",)),
            id="anthropic",
        ),
        pytest.param(Dialect.OPENAI_CHAT, ["not", "an", "object"], ResponseFacts(), id="junk"),
        pytest.param(
            Dialect.OPENAI_EMBEDDINGS, {"model": 3, "id": None}, ResponseFacts(), id="wrong-types"
        ),
    ],
)
def test_response_facts(dialect: Dialect, answer: JSONValue, facts: ResponseFacts) -> None:
    assert response_facts(dialect, answer) == facts


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("Error: connection refused", ToolOutcome.ERROR),
        ("context deadline exceeded", ToolOutcome.TIMEOUT),
        ("missing 1 required positional argument: 'pod'", ToolOutcome.INVALID),
        ("SyntaxError: unexpected EOF", ToolOutcome.INVALID),
        ("Input does not match the schema", ToolOutcome.INVALID),
    ],
    ids=["error", "timeout", "missing-argument", "syntax", "schema"],
)
def test_failures_are_classified(text: str, outcome: ToolOutcome) -> None:
    assert classify_failure(text) is outcome


@pytest.mark.parametrize(
    ("dialect", "body", "ids"),
    [
        pytest.param(
            Dialect.OPENAI_RESPONSES,
            {"model": "m", "input": "x", "conversation": "conv_1", "previous_response_id": "r"},
            ClientIds("conv_1", "openai-conversation", "r"),
            id="responses",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            {
                "model": "m",
                "max_tokens": 1,
                "metadata": {"user_id": "user_ab_account_cd_session_0f-1e"},
                "messages": [],
            },
            ClientIds("0f-1e", "claude-code"),
            id="claude-code",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            {"model": "m", "max_tokens": 1, "metadata": {"user_id": "u-1"}, "messages": []},
            ClientIds(),
            id="plain-user-id",
        ),
    ],
)
def test_client_ids(dialect: Dialect, body: JSONObject, ids: ClientIds) -> None:
    assert client_ids(parse_request(dialect, body)) == ids


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        pytest.param(
            Dialect.OPENAI_CHAT,
            {
                **SRE_CHAT,
                "messages": [*SRE_CHAT["messages"][:3], {"role": "assistant", "content": "ok"}],
            },  # type: ignore[misc]
            id="chat",
        ),
        pytest.param(
            Dialect.OPENAI_RESPONSES,
            {
                "model": "gpt-5",
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "done"},
                    {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                ],
            },
            id="responses",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
                ],
            },
            id="anthropic",
        ),
    ],
)
def test_results_of_older_turns_are_not_fed_again(dialect: Dialect, body: JSONObject) -> None:
    assert tool_results(parse_request(dialect, body)) == ()


# ---- restructured for speed: each held to a copy of what it replaced --------------------------


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Named, not a lambda: hypothesis reads the source of ``extend``.
    return st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["role", "name", "function", "content"]) | st.text(max_size=4),
        children,
        max_size=4,
    )


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.sampled_from(["assistant", "tool", "function", "user", "get_pods", ""]),
    _nest,
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["assistant", "tool", "function", "user", "system"]) | _JSON,
        "content": _JSON,
    },
)


@given(messages=_JSON | st.lists(_MESSAGE | _JSON, max_size=8))
@settings(max_examples=400, deadline=None)
def test_fed_chat_results_match_the_newest_turn_filtered(messages: JSONValue) -> None:
    answered, turn = _newest_turn(messages, "assistant", "role")
    fed = [message for message in turn if message.get("role") in ("tool", "function")]
    found_answered, found_fed = _fed_chat_results(messages)
    assert found_answered is answered
    assert found_fed == fed
    assert all(a is b for a, b in zip(found_fed, fed, strict=True))


def _old_tool_names(request: ParsedRequest) -> tuple[str, ...]:
    names: list[str] = []
    for tool in _objects(request.body.get("tools")):
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str) and name:
            names.append(name)
    for function in _objects(request.body.get("functions")):
        if isinstance(function.get("name"), str):
            names.append(str(function["name"]))
    return tuple(names)


@given(
    body=st.fixed_dictionaries(
        {}, optional={"tools": _JSON | st.lists(_JSON), "functions": _JSON | st.lists(_JSON)}
    )
)
@settings(max_examples=300, deadline=None)
def test_tool_names_match_the_old_walk(body: JSONObject) -> None:
    request = ParsedRequest(Dialect.OPENAI_CHAT, "gpt-4o", body)
    assert tool_names(request) == _old_tool_names(request)


def _old_saturation(input_tokens: int, context_window: int) -> Decimal:
    if context_window <= 0:
        return Decimal(0)
    percent = Decimal(100 * input_tokens) / Decimal(context_window)
    return min(percent, Decimal(100)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@given(
    input_tokens=st.integers(-(10**6), 10**9) | st.integers(0, 10**30),
    context_window=st.integers(-5, 10**9) | st.integers(1, 2_000) | st.integers(0, 10**30),
)
@settings(max_examples=2000, deadline=None)
def test_saturation_matches_the_decimal_division(input_tokens: int, context_window: int) -> None:
    found, expected = (
        context_saturation(input_tokens, context_window),
        _old_saturation(input_tokens, context_window),
    )
    # The same digits and exponent, not only an equal number: it is exported as text.
    assert (str(found), found.as_tuple()) == (str(expected), expected.as_tuple())


@pytest.mark.parametrize(
    ("input_tokens", "window"),
    [(1, 2000), (3, 2000), (5, 10_000), (999, 1000), (9_995, 10_000), (128_000, 128_000)],
    ids=["tie-0.05", "tie-0.15", "tie-0.05-of-10k", "99.9", "99.95-up", "full"],
)
def test_saturation_ties_round_half_up(input_tokens: int, window: int) -> None:
    assert str(context_saturation(input_tokens, window)) == str(
        _old_saturation(input_tokens, window)
    )
