"""What a call says about the agent: tool results it ingests, tools it calls, context saturation.

Pure: reads validated request bodies and answer bodies, returns typed facts that telemetry and
the policy consume. OpenAI's tool messages carry no error flag, so an OpenAI tool result counts as
an error when it looks like one (see ``_looks_like_error``); Anthropic's ``is_error`` is taken as
given. A failed result is then classified by what it says: a timeout, a syntax or validation
error (the model's arguments were refused), or any other error output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from a11i.core.dialects import ParsedRequest
from a11i.core.frozen import slot_init
from a11i.core.model import Dialect, JSONObject, JSONValue

_ERROR_PREFIX = re.compile(
    r"^\s*(\w*error\b|exception\b|traceback \(most recent call last\)|fatal\b|failed\b"
    r"|invalid\b)",
    re.IGNORECASE,
)

_TIMEOUT = re.compile(r"\b(timed?[ -]?out|deadline exceeded|ETIMEDOUT)\b", re.IGNORECASE)
#: What a tool (or the agent's framework) says when it refused the model's arguments.
_INVALID = re.compile(
    r"(\binvalid (arguments?|parameters?|input|json|value|type)\b|validation ?error"
    r"|\b(json ?decode|syntax|schema|type|key|value)error\b|\bsyntax error\b"
    r"|missing (\d+ |a )?required (positional )?(arguments?|parameters?|fields?|properties)"
    r"|unexpected keyword argument|is not valid json|malformed (json|arguments?|input)"
    r"|\bfield required\b|does not match (the )?schema)",
    re.IGNORECASE,
)


class ToolOutcome(StrEnum):
    """How a tool run ended, as the result the agent sends back tells it."""

    SUCCESS = "success"
    #: The tool ran and failed (error output).
    ERROR = "error"
    TIMEOUT = "timeout"
    #: The tool refused the model's arguments: a syntax or validation error.
    INVALID = "invalid"


@slot_init
@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model asked the agent to run."""

    id: str
    name: str
    arguments: str


@slot_init
@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's output that the agent feeds back to the model."""

    tool_call_id: str
    is_error: bool
    chars: int
    #: The tool's name, from the assistant turn that called it ("" when the call is not in
    #: the request).
    name: str = ""
    #: Success, error, or an error that says the tool timed out.
    outcome: ToolOutcome = ToolOutcome.SUCCESS


def tool_results(request: ParsedRequest) -> tuple[ToolResult, ...]:
    """The tool results carried by the newest turn of the request (after the last assistant
    message): older ones were already ingested by earlier calls of the loop."""
    body = request.body
    if request.dialect is Dialect.OPENAI_CHAT:
        answered, fed = _fed_chat_results(body.get("messages"))
        if not fed:
            # Most calls of a loop carry no tool result: the names are not looked for.
            return ()
        names = _called_names(answered)
        results: list[ToolResult] = []
        for message in fed:
            text = _text_of(message.get("content"))
            results.append(
                _result(
                    str(message.get("tool_call_id") or message.get("name") or ""),
                    text,
                    _looks_like_error(text),
                    names,
                    fallback_name=str(message.get("name") or ""),
                )
            )
        return tuple(results)
    if request.dialect is Dialect.OPENAI_RESPONSES:
        items = body.get("input")
        _call, turn = _newest_turn(items, "function_call", "type")
        outputs = [item for item in turn if item.get("type") == "function_call_output"]
        if not outputs:
            return ()
        called = {
            str(item.get("call_id")): str(item.get("name") or "")
            for item in _objects(items)
            if item.get("type") == "function_call"
        }
        results = []
        for item in outputs:
            text = _text_of(item.get("output"))
            results.append(
                _result(str(item.get("call_id") or ""), text, _looks_like_error(text), called)
            )
        return tuple(results)
    if request.dialect is Dialect.ANTHROPIC_MESSAGES:
        answered, turn = _newest_turn(body.get("messages"), "assistant", "role")
        blocks = [
            block
            for message in turn
            if isinstance(content := message.get("content"), list)
            for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        if not blocks:
            return ()
        names = _called_names(answered)
        return tuple(
            _result(
                str(block.get("tool_use_id") or ""),
                _text_of(block.get("content")),
                block.get("is_error") is True,
                names,
            )
            for block in blocks
        )
    return ()


def _fed_chat_results(messages: JSONValue) -> tuple[JSONObject | None, list[JSONObject]]:
    """The last assistant message of a chat history (None: there is none) and the tool and
    function results after it, in order: ``_newest_turn`` and a filter of its turn, in one
    walk back from the end that copies no list (it runs on every chat call, and the turn is
    the last few messages of a history of any length)."""
    fed: list[JSONObject] = []
    answered: JSONObject | None = None
    if isinstance(messages, list):
        for message in reversed(messages):
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            if role == "assistant":
                answered = message
                break
            if role in ("tool", "function"):
                fed.append(message)
        fed.reverse()
    return answered, fed


def _result(
    call_id: str,
    text: str,
    is_error: bool,
    names: dict[str, str],
    *,
    fallback_name: str = "",
) -> ToolResult:
    outcome = classify_failure(text) if is_error else ToolOutcome.SUCCESS
    return ToolResult(
        tool_call_id=call_id,
        is_error=is_error,
        chars=len(text),
        name=names.get(call_id, fallback_name),
        outcome=outcome,
    )


def classify_failure(text: str) -> ToolOutcome:
    """How a failed tool run ended, from what its result says (the first 2,000 characters)."""
    head = text[:2000]
    if _TIMEOUT.search(head):
        return ToolOutcome.TIMEOUT
    if _INVALID.search(head):
        return ToolOutcome.INVALID
    return ToolOutcome.ERROR


@slot_init
@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What the provider said about its answer: ``gen_ai.response.*`` of the conventions."""

    id: str = ""
    model: str = ""
    finish_reasons: tuple[str, ...] = ()


def response_facts(dialect: Dialect, answer: JSONValue) -> ResponseFacts:
    """The id, model and finish reasons of a non-streaming answer body."""
    if not isinstance(answer, dict):
        return ResponseFacts()
    reasons: list[str] = []
    if dialect in (Dialect.OPENAI_CHAT, Dialect.OPENAI_COMPLETIONS):
        for choice in _objects(answer.get("choices")):
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                reasons.append(reason)
    elif dialect is Dialect.OPENAI_RESPONSES:
        status = answer.get("status")
        if isinstance(status, str):
            reasons.append(status)
    elif dialect is Dialect.ANTHROPIC_MESSAGES:
        reason = answer.get("stop_reason")
        if isinstance(reason, str):
            reasons.append(reason)
    identifier, model = answer.get("id"), answer.get("model")
    return ResponseFacts(
        id=identifier if isinstance(identifier, str) else "",
        model=model if isinstance(model, str) else "",
        finish_reasons=tuple(reasons),
    )


#: Claude Code's ``metadata.user_id``: ``user_<hash>_account_<uuid>_session_<uuid>``.
_CLAUDE_CODE_SESSION = re.compile(r"_session_([0-9A-Za-z-]{1,128})$")


@dataclass(frozen=True, slots=True)
class ClientIds:
    """The ids an agent's own framework put in the request body for its conversation."""

    #: The conversation, and who named it (``claude-code``, ``openai-conversation``).
    conversation: str | None = None
    source: str = ""
    #: The Responses API's ``previous_response_id``: the turn this one continues.
    previous_response: str | None = None


def client_ids(request: ParsedRequest) -> ClientIds:
    """Conversation ids from the body: the Responses API's ``conversation`` (a string or
    ``{"id": ...}``) and ``previous_response_id``, Claude Code's session in ``metadata``."""
    body = request.body
    if request.dialect is Dialect.OPENAI_RESPONSES:
        conversation = body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        previous = body.get("previous_response_id")
        return ClientIds(
            conversation=conversation if isinstance(conversation, str) and conversation else None,
            source="openai-conversation",
            previous_response=previous if isinstance(previous, str) and previous else None,
        )
    if request.dialect is Dialect.ANTHROPIC_MESSAGES:
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        found = _CLAUDE_CODE_SESSION.search(user) if isinstance(user, str) else None
        if found is not None:
            return ClientIds(conversation=found.group(1), source="claude-code")
    return ClientIds()


def _called_names(answered: JSONObject | None) -> dict[str, str]:
    """Tool call id -> tool name, from the assistant message the results answer (the last
    one; None: there is none): OpenAI ``tool_calls`` and Anthropic ``tool_use`` blocks."""
    names: dict[str, str] = {}
    if answered is None:
        return names
    for call in _objects(answered.get("tool_calls")):
        function = call.get("function")
        if isinstance(function, dict):
            names[str(call.get("id") or "")] = str(function.get("name") or "")
    for block in _objects(answered.get("content")):
        if block.get("type") in ("tool_use", "server_tool_use"):
            names[str(block.get("id") or "")] = str(block.get("name") or "")
    return names


def tool_calls(dialect: Dialect, answer: JSONValue) -> tuple[ToolCall, ...]:
    """The tool calls in a non-streaming answer body."""
    if not isinstance(answer, dict):
        return ()
    calls: list[ToolCall] = []
    if dialect is Dialect.OPENAI_CHAT:
        for choice in _objects(answer.get("choices")):
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            for call in _objects(message.get("tool_calls")):
                function = call.get("function")
                if isinstance(function, dict):
                    calls.append(
                        ToolCall(
                            id=str(call.get("id") or ""),
                            name=str(function.get("name") or ""),
                            arguments=str(function.get("arguments") or ""),
                        )
                    )
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                calls.append(
                    ToolCall(
                        id="",
                        name=str(legacy.get("name") or ""),
                        arguments=str(legacy.get("arguments") or ""),
                    )
                )
    elif dialect is Dialect.OPENAI_RESPONSES:
        for item in _objects(answer.get("output")):
            if item.get("type") == "function_call":
                calls.append(
                    ToolCall(
                        id=str(item.get("call_id") or ""),
                        name=str(item.get("name") or ""),
                        arguments=str(item.get("arguments") or ""),
                    )
                )
    elif dialect is Dialect.ANTHROPIC_MESSAGES:
        for block in _objects(answer.get("content")):
            if block.get("type") in ("tool_use", "server_tool_use"):
                calls.append(
                    ToolCall(
                        id=str(block.get("id") or ""),
                        name=str(block.get("name") or ""),
                        arguments=json.dumps(block.get("input"), separators=(",", ":")),
                    )
                )
    return tuple(calls)


def answer_text(dialect: Dialect, answer: JSONValue) -> str:
    """The text the model produced in a non-streaming answer (used to count output tokens when
    the provider reports no usage)."""
    if not isinstance(answer, dict):
        return ""
    parts: list[str] = []
    if dialect is Dialect.OPENAI_CHAT:
        for choice in _objects(answer.get("choices")):
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(str(message["content"]))
    elif dialect is Dialect.OPENAI_COMPLETIONS:
        for choice in _objects(answer.get("choices")):
            if isinstance(choice.get("text"), str):
                parts.append(str(choice["text"]))
    elif dialect is Dialect.OPENAI_RESPONSES:
        for item in _objects(answer.get("output")):
            for part in _objects(item.get("content")):
                if isinstance(part.get("text"), str):
                    parts.append(str(part["text"]))
    elif dialect is Dialect.ANTHROPIC_MESSAGES:
        for block in _objects(answer.get("content")):
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(str(block["text"]))
    return "".join(parts)


def tool_names(request: ParsedRequest) -> tuple[str, ...]:
    """Names of the tools the request offers the model."""
    body = request.body
    tools, functions = body.get("tools"), body.get("functions")
    if not tools and not functions:
        return ()  # most requests offer none
    names: list[str] = []
    for tool in _objects(tools):
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str) and name:
            names.append(name)
    for function in _objects(functions):
        if isinstance(function.get("name"), str):
            names.append(str(function["name"]))
    return tuple(names)


def context_saturation(input_tokens: int, context_window: int) -> Decimal:
    """Share of the model's context window the prompt fills, in percent (0-100, 1 decimal)."""
    if context_window <= 0:
        return Decimal(0)
    if input_tokens < 0 or context_window > _EXACT_WINDOW:
        percent = Decimal(100 * input_tokens) / Decimal(context_window)
        return min(percent, Decimal(100)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    # In whole tenths, rounded half up with integers: what dividing and quantizing Decimals
    # gives, for a fraction of the cost, on every call. The quotient's rounding to 28 digits
    # (at most 5e-25 tenths) never crosses a tie: a quotient that is not one is at least
    # 1 / (2 x window) tenths away from it, far more for any window below ``_EXACT_WINDOW``.
    tenths = min((2000 * input_tokens + context_window) // (2 * context_window), 1000)
    found = _TENTHS.get(tenths)
    if found is None:
        found = _TENTHS.setdefault(tenths, Decimal(tenths).scaleb(-1))
    return found


#: The largest context window ``context_saturation`` rounds with integers (cards refuse
#: windows above 1e9; beyond 1e24 the Decimal quotient's rounding could cross a tie).
_EXACT_WINDOW: Final = 10**18
#: ``context_saturation``'s answers by tenths of a percent (at most 1,001, shared: immutable).
_TENTHS: dict[int, Decimal] = {}


def _newest_turn(
    items: JSONValue, boundary: str, key: str
) -> tuple[JSONObject | None, list[JSONObject]]:
    """The last object whose ``key`` is ``boundary`` (None: there is none) and the objects
    after it (all of them without one)."""
    objects = _objects(items)
    for index in range(len(objects) - 1, -1, -1):
        if objects[index].get(key) == boundary:
            return objects[index], objects[index + 1 :]
    return None, objects


def _objects(value: JSONValue) -> list[JSONObject]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _text_of(value: JSONValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in value
        )
    if value is None:
        return ""
    return json.dumps(value)


def _looks_like_error(text: str) -> bool:
    if _ERROR_PREFIX.match(text):
        return True
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            parsed: object = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            return False
        if isinstance(parsed, dict):
            return parsed.get("is_error") is True or parsed.get("error") not in (None, "", False)
    return False
