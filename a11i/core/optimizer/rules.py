"""The rules the providers enforce on a conversation's structure, as one tested module.

The optimizer runs every rewrite through :func:`validate_conversation` (the rules a request must
keep on its own) and :func:`check_rewrite` (what a rewrite must keep of the original), and sends
the agent's request unchanged when a rewrite adds a violation.

- OpenAI chat: each ``tool`` message follows the assistant message that called it (or a sibling
  result), and every call is answered before the next non-tool message.
- OpenAI Responses: every ``function_call_output`` answers a ``function_call`` earlier in
  ``input`` (the same ``call_id``), unless ``previous_response_id`` carries the calls.
- Anthropic messages: roles alternate starting with ``user``; each ``tool_result`` answers a
  ``tool_use`` of the previous message and results come first in their message; every
  ``tool_use`` is answered in the next message. With extended thinking on, the first assistant
  message of the current turn (after the last user message that is more than tool results)
  starts with a ``thinking`` or ``redacted_thinking`` block.
- A rewrite keeps every ``thinking`` / ``redacted_thinking`` block byte-identical (signatures
  are checked by the provider), invents no tool ids, and keeps Anthropic ``cache_control``
  breakpoints and everything before them byte-identical.

Content itself is not checked: the provider's validation is authoritative. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from a11i.core.model import Dialect, JSONObject, JSONValue

Messages = list[JSONValue]

CHAT_RESULT_ROLES: Final = frozenset({"tool", "function"})
THINKING_TYPES: Final = frozenset({"thinking", "redacted_thinking"})


def role(message: JSONValue) -> str | None:
    if isinstance(message, dict):
        value = message.get("role")
        return value if isinstance(value, str) else None
    return None


def blocks(message: JSONValue) -> list[JSONObject]:
    """The content blocks (objects) of a message; a string content is one text block."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def thinking_enabled(body: JSONObject) -> bool:
    """Whether an Anthropic body asks for extended thinking."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def is_real_user_turn(message: JSONValue) -> bool:
    """A user message that says something (not only tool results): it opens a new turn."""
    if role(message) != "user":
        return False
    return any(block.get("type") != "tool_result" for block in blocks(message))


def current_turn_start(messages: Messages) -> int | None:
    """Index of the last user message that opens a turn (Anthropic), or None."""
    for index in range(len(messages) - 1, -1, -1):
        if is_real_user_turn(messages[index]):
            return index
    return None


def validate_conversation(dialect: Dialect, body: JSONObject) -> list[str]:
    """The structural rule violations of ``body`` ([] when the provider would accept the
    structure)."""
    if dialect is Dialect.OPENAI_RESPONSES:
        return _validate_responses(body)
    if dialect not in (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES):
        return []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ["'messages' must be an array"]
    return validate_messages(dialect, messages, thinking=thinking_enabled(body))


def validate_messages(dialect: Dialect, messages: Messages, *, thinking: bool = False) -> list[str]:
    """:func:`validate_conversation` for a bare message list."""
    if dialect is Dialect.OPENAI_CHAT:
        return _validate_chat(messages)
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        problems = _validate_anthropic(messages)
        if thinking:
            problems += _validate_thinking(messages)
        return problems
    return []


def check_rewrite(dialect: Dialect, before: JSONObject, after: JSONObject) -> list[str]:
    """What ``after`` (a rewrite of ``before``) broke of ``before``: thinking blocks changed,
    tool ids invented, a cache breakpoint or what precedes it changed."""
    old = before.get("messages")
    new = after.get("messages")
    if not isinstance(old, list) or not isinstance(new, list):
        return []
    problems: list[str] = []
    kept = {
        _canonical(block) for m in old for block in blocks(m) if block.get("type") in THINKING_TYPES
    }
    for index, message in enumerate(new):
        for block in blocks(message):
            if block.get("type") in THINKING_TYPES and _canonical(block) not in kept:
                problems.append(f"messages.{index}: a thinking block was changed")
    ids = _tool_ids(old)
    invented = _tool_ids(new) - ids
    if invented:
        problems.append(f"tool ids {sorted(invented)} do not appear in the original")
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        frozen = cache_prefix_end(old)
        if new[:frozen] != old[:frozen]:
            problems.append(
                f"messages before the cache breakpoint at messages.{frozen - 1} changed"
            )
    return problems


def cache_prefix_end(messages: Messages) -> int:
    """One past the last message holding an Anthropic ``cache_control`` breakpoint (0: none):
    everything before it is what the provider caches, so it is never rewritten."""
    end = 0
    for index, message in enumerate(messages):
        if _has_breakpoint(message):
            end = index + 1
    return end


def _has_breakpoint(message: JSONValue) -> bool:
    for block in blocks(message):
        if "cache_control" in block:
            return True
        inner = block.get("content")
        if isinstance(inner, list) and any(
            isinstance(part, dict) and "cache_control" in part for part in inner
        ):
            return True
    return False


def _canonical(value: JSONValue) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def _tool_ids(messages: Messages) -> set[str]:
    ids: set[str] = set()
    for message in messages:
        ids.update(call_ids(message))
        for block in blocks(message):
            for key in ("id", "tool_use_id"):
                value = block.get(key)
                if block.get("type") in ("tool_use", "tool_result") and isinstance(value, str):
                    ids.add(value)
        if isinstance(message, dict) and isinstance(message.get("tool_call_id"), str):
            ids.add(str(message["tool_call_id"]))
    return ids


def call_ids(message: JSONValue) -> list[str]:
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list):
        return []
    return [i for c in calls if isinstance(c, dict) and isinstance(i := c.get("id"), str)]


def use_ids(message: JSONValue) -> list[str]:
    return [
        use_id
        for block in blocks(message)
        if block.get("type") == "tool_use" and isinstance(use_id := block.get("id"), str)
    ]


def _validate_chat(messages: Messages) -> list[str]:
    problems: list[str] = []
    if not messages:
        return ["messages must not be empty"]
    open_calls: set[str] = set()  # calls of the current assistant group still unanswered
    in_group = False  # whether the previous messages are an assistant with tool_calls + results
    caller = -1
    for index, message in enumerate(messages):
        kind = role(message)
        if kind == "tool":
            call_id = message.get("tool_call_id") if isinstance(message, dict) else None
            if not in_group:
                problems.append(f"messages[{index}]: tool message without a preceding tool call")
            elif call_id not in open_calls:
                problems.append(
                    f"messages[{index}]: tool_call_id {call_id!r} answers no open call of "
                    f"messages[{caller}]"
                )
            else:
                open_calls.discard(str(call_id))
            continue
        if open_calls:
            problems.append(
                f"messages[{caller}]: tool calls {sorted(open_calls)} have no tool message"
            )
        ids = call_ids(message) if kind == "assistant" else []
        open_calls = set(ids)
        in_group = bool(ids)
        caller = index
    if open_calls:
        problems.append(f"messages[{caller}]: tool calls {sorted(open_calls)} have no tool message")
    return problems


def _validate_anthropic(messages: Messages) -> list[str]:
    problems: list[str] = []
    if not messages:
        return ["messages must not be empty"]
    if role(messages[0]) != "user":
        problems.append("messages.0: the first message must have role 'user'")
    previous_role: str | None = None
    previous_uses: list[str] = []
    for index, message in enumerate(messages):
        kind = role(message)
        if kind not in ("user", "assistant"):
            problems.append(f"messages.{index}: role must be 'user' or 'assistant'")
        elif kind == previous_role:
            problems.append(f"messages.{index}: roles must alternate ({kind} follows {kind})")
        found = blocks(message)
        results = [
            block.get("tool_use_id") for block in found if block.get("type") == "tool_result"
        ]
        if results and kind != "user":
            problems.append(f"messages.{index}: tool_result blocks in a non-user message")
        for use_id in results:
            if use_id not in previous_uses:
                problems.append(
                    f"messages.{index}: tool_result {use_id!r} answers no tool_use of the "
                    "previous message"
                )
        seen_other = False
        for block in found:
            if block.get("type") == "tool_result" and seen_other:
                problems.append(f"messages.{index}: tool_result blocks must come first")
                break
            seen_other = seen_other or block.get("type") != "tool_result"
        unanswered = [use_id for use_id in previous_uses if use_id not in results]
        if unanswered:
            problems.append(
                f"messages.{index - 1}: tool_use {unanswered} not answered in the next message"
            )
        previous_role = kind
        previous_uses = use_ids(message) if kind == "assistant" else []
    if previous_uses:
        problems.append(
            f"messages.{len(messages) - 1}: tool_use {previous_uses} not answered by a result"
        )
    return problems


def _validate_thinking(messages: Messages) -> list[str]:
    # Anthropic: "a final assistant message must start with a thinking block (preceding the
    # lastmost set of tool_use and tool_result blocks)": the turn the model is continuing opens
    # with its thinking, which the provider checks by signature.
    start = current_turn_start(messages)
    first = (start if start is not None else -1) + 1
    if first >= len(messages) or role(messages[first]) != "assistant":
        return []
    found = blocks(messages[first])
    if found and found[0].get("type") in THINKING_TYPES:
        return []
    return [
        f"messages.{first}: with thinking enabled, the assistant message that opens the "
        "current tool loop must start with a thinking block"
    ]


def _validate_responses(body: JSONObject) -> list[str]:
    items = body.get("input")
    if not isinstance(items, list) or body.get("previous_response_id") is not None:
        return []
    problems: list[str] = []
    calls: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        call_id = item.get("call_id")
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call") and isinstance(call_id, str):
            calls.add(call_id)
        elif kind in ("function_call_output", "custom_tool_call_output") and call_id not in calls:
            problems.append(f"input[{index}]: {kind} {call_id!r} answers no earlier call")
    return problems


@dataclass(frozen=True, slots=True)
class Scope:
    """Which messages of a request no strategy may rewrite."""

    #: Indexes of messages kept byte-identical: the latest message and the exchange it closes
    #: (the current tool turn), the cached prefix up to the last ``cache_control`` breakpoint,
    #: and with extended thinking the user message that opened the current turn and the
    #: assistant message that answers it (it carries the signed thinking).
    frozen: frozenset[int]
    #: Whether the request asks for extended thinking (Anthropic).
    thinking: bool = False

    @classmethod
    def of(cls, dialect: Dialect, messages: Messages, *, thinking: bool = False) -> Scope:
        count = len(messages)
        if count == 0:
            return cls(frozenset(), thinking)
        start = count - 1
        if dialect is Dialect.OPENAI_CHAT:
            while start > 0 and role(messages[start]) in CHAT_RESULT_ROLES:
                start -= 1
        elif start > 0 and any(b.get("type") == "tool_result" for b in blocks(messages[start])):
            start -= 1
        frozen = set(range(start, count))
        if dialect is Dialect.ANTHROPIC_MESSAGES:
            frozen.update(range(cache_prefix_end(messages)))
            if thinking:
                turn = current_turn_start(messages)
                opener = (turn if turn is not None else -1) + 1
                frozen.update(i for i in (turn, opener) if i is not None and i < count)
        return cls(frozenset(frozen), thinking)

    @classmethod
    def of_body(cls, dialect: Dialect, body: JSONObject) -> Scope:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return cls(frozenset())
        thinking = dialect is Dialect.ANTHROPIC_MESSAGES and thinking_enabled(body)
        return cls.of(dialect, messages, thinking=thinking)
