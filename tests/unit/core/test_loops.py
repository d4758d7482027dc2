"""Which agent loop a call belongs to."""

from __future__ import annotations

import pytest

from a11i.core.dialects import parse_request
from a11i.core.loops import loop_key
from a11i.core.model import Dialect, JSONObject


def chat(*messages: JSONObject) -> JSONObject:
    return {"model": "gpt-4o", "messages": list(messages)}


SYSTEM: JSONObject = {"role": "system", "content": "You are an SRE agent."}
TASK: JSONObject = {"role": "user", "content": "Why is checkout down?"}
CALL: JSONObject = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_pods", "arguments": "{}"}}
    ],
}
RESULT: JSONObject = {"role": "tool", "tool_call_id": "c1", "content": "3 pods"}


def key_of(body: JSONObject, dialect: Dialect = Dialect.OPENAI_CHAT, session: str | None = None):
    return loop_key(parse_request(dialect, body), session)


def test_turns_of_one_loop_share_the_prefix_key() -> None:
    first = key_of(chat(SYSTEM, TASK))
    second = key_of(chat(SYSTEM, TASK, CALL, RESULT))
    assert first is not None
    assert second is not None
    assert first.key == second.key
    assert first.key.startswith("prefix:")
    assert (first.length, second.length) == (2, 4)
    assert not first.named


@pytest.mark.parametrize(
    "other",
    [
        chat(SYSTEM, {"role": "user", "content": "Why is search down?"}),
        chat({"role": "system", "content": "You are a billing agent."}, TASK),
        chat(TASK),
    ],
    ids=["other-task", "other-system-prompt", "no-system-prompt"],
)
def test_other_conversations_are_other_loops(other: JSONObject) -> None:
    mine, theirs = key_of(chat(SYSTEM, TASK)), key_of(other)
    assert mine is not None
    assert theirs is not None
    assert mine.key != theirs.key


def test_the_session_header_names_the_loop() -> None:
    a = key_of(chat(SYSTEM, TASK), session="run-42")
    b = key_of(chat(SYSTEM, {"role": "user", "content": "something else"}), session="run-42")
    assert a is not None
    assert b is not None
    assert a.key == b.key == "session:run-42"
    assert a.named


def test_a_long_session_id_is_hashed() -> None:
    key = key_of(chat(SYSTEM, TASK), session="x" * 1000)
    assert key is not None
    assert len(key.key) < 100


def test_anthropic_system_and_first_user_message() -> None:
    body: JSONObject = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "You are an SRE agent.",
        "messages": [TASK],
    }
    longer: JSONObject = {**body, "messages": [TASK, {"role": "assistant", "content": "ok"}, TASK]}
    a = key_of(body, Dialect.ANTHROPIC_MESSAGES)
    b = key_of(longer, Dialect.ANTHROPIC_MESSAGES)
    assert a is not None
    assert b is not None
    assert a.key == b.key
    # The same words to the other provider are another loop.
    openai = key_of(chat({"role": "system", "content": "You are an SRE agent."}, TASK))
    assert openai is not None
    assert openai.key != a.key


def test_responses_string_input_and_instructions() -> None:
    a = key_of(
        {"model": "gpt-4.1", "input": "pods?", "instructions": "be brief"}, Dialect.OPENAI_RESPONSES
    )
    b = key_of(
        {
            "model": "gpt-4.1",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "pods?"},
                {"type": "function_call", "call_id": "c", "name": "get_pods", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "3"},
            ],
        },
        Dialect.OPENAI_RESPONSES,
    )
    assert a is not None
    assert b is not None
    assert a.key == b.key
    assert b.length == 3


def test_embeddings_belong_to_no_loop() -> None:
    assert (
        key_of({"model": "text-embedding-3-small", "input": "hi"}, Dialect.OPENAI_EMBEDDINGS)
        is None
    )
