"""Server-sent events: an incremental parser and per-dialect trackers of a streamed answer.

Pure: bytes in, events and decisions out. The proxy relays the provider's bytes as they arrive
and feeds them here on the side, so a tracker can read the usage, the text and the tool calls of
the answer without ever holding the whole stream. A chunk that cannot be parsed is ignored and
counted, never allowed to break the stream it observes.

SSE framing follows the WHATWG HTML standard, section 9.2 "Server-sent events": events end at a
blank line, lines end at CRLF, LF or CR, ``data`` lines of one event are joined with LF.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from a11i.core.dialects import usage_from_body, usage_from_object
from a11i.core.model import Dialect, JSONObject, JSONValue, Usage

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
# With include_usage OpenAI adds "usage":null to every chunk; when a11i asked for it on the
# client's behalf it removes that key again so the client sees exactly what it would have seen.
_NULL_USAGE = re.compile(rb',\s*"usage":\s*null(?=\s*\}\s*$)|"usage":\s*null\s*,')

#: Dialects whose stream is OpenAI's: data-only chunks, ``[DONE]`` at the end.
_OPENAI_CHUNKED = frozenset({Dialect.OPENAI_CHAT, Dialect.OPENAI_COMPLETIONS})


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One complete event: its raw bytes (boundary included), ``event`` name and ``data``."""

    raw: bytes
    event: str
    data: str


class SSEParser:
    """Split a byte stream into complete events, holding only the unfinished tail."""

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events they complete, in order."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            match = _BOUNDARY.search(self._buffer, start)
            if match is None:
                break
            raw = bytes(self._buffer[start : match.end()])
            start = match.end()
            events.append(_parse_event(raw))
        del self._buffer[:start]
        if len(self._buffer) > self._max_event_bytes:
            # A peer that never ends an event must not grow memory without bound.
            self._buffer.clear()
        return events

    def flush(self) -> list[SSEEvent]:
        """The last event if the stream ended without a blank line (the standard drops it;
        providers never send one, but usage in it is still worth reading)."""
        if not self._buffer.strip():
            return []
        raw = bytes(self._buffer)
        self._buffer.clear()
        return [_parse_event(raw)]

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete event."""
        return bytes(self._buffer)


def _parse_event(raw: bytes) -> SSEEvent:
    name = ""
    data: list[str] = []
    for line in _LINE.split(raw):
        if not line or line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"event":
            name = value.decode("utf-8", "replace")
        elif key == b"data":
            data.append(value.decode("utf-8", "replace"))
    # A comment or keep-alive has neither: it is still relayed, with nothing to read in it.
    return SSEEvent(raw=raw, event=name, data="\n".join(data))


@dataclass(frozen=True, slots=True)
class StreamedToolCall:
    """A tool call assembled from stream fragments."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """What a stream said about itself by its end (or by the point where it was cut)."""

    usage: Usage | None
    text: str
    tool_calls: tuple[StreamedToolCall, ...]
    finish_reason: str | None
    #: The provider's terminal event arrived ([DONE], response.completed, message_stop).
    complete: bool
    #: Events whose data was not the JSON the dialect promises.
    malformed_events: int
    #: The response's id and model as the provider named them (``gen_ai.response.*``).
    response_id: str | None = None
    response_model: str | None = None


class StreamTracker:
    """Reads one dialect's streamed answer event by event.

    ``strip_usage`` is set when a11i itself added ``stream_options.include_usage`` to an OpenAI
    chat or legacy completions request: the usage-only chunk is read and then withheld, and
    ``"usage":null`` removed from the other chunks, so the client sees the stream it asked for.
    """

    def __init__(self, dialect: Dialect, *, strip_usage: bool = False) -> None:
        self.dialect = dialect
        self.strip_usage = strip_usage
        self._usage: Usage | None = None
        #: OpenAI chat: the service tier of the chunks, for a usage chunk that lacks it.
        self._service_tier: str | None = None
        self._anthropic_input: JSONObject | None = None
        self._text: list[str] = []
        self._tools: dict[str, _ToolCallParts] = {}
        self._finish: str | None = None
        self._response_id: str | None = None
        self._response_model: str | None = None
        self._complete = False
        self._malformed = 0

    def observe(self, event: SSEEvent) -> bytes | None:
        """Read ``event``; return the bytes to relay for it (None: withhold it)."""
        chunked = self.dialect in _OPENAI_CHUNKED
        if chunked and event.data.strip() == "[DONE]":
            self._complete = True
            return event.raw
        payload = self._decode(event.data)
        if payload is None:
            return event.raw
        if chunked:
            return self._observe_chunk(event, payload)
        if self.dialect is Dialect.OPENAI_RESPONSES:
            self._observe_responses(payload)
        elif self.dialect is Dialect.ANTHROPIC_MESSAGES:
            self._observe_anthropic(payload)
        return event.raw

    @property
    def complete(self) -> bool:
        """The stream's terminal event was read: every usage it reports is known."""
        return self._complete

    def outcome(self) -> StreamOutcome:
        calls = tuple(
            StreamedToolCall(id=parts.id, name=parts.name, arguments="".join(parts.arguments))
            for parts in self._tools.values()
        )
        return StreamOutcome(
            usage=self._usage,
            text="".join(self._text),
            tool_calls=calls,
            finish_reason=self._finish,
            response_id=self._response_id,
            response_model=self._response_model,
            complete=self._complete,
            malformed_events=self._malformed,
        )

    def _identify(self, obj: JSONObject) -> None:
        """The response's id and model, from the first event that carries them."""
        if self._response_id is None and isinstance(obj.get("id"), str):
            self._response_id = str(obj["id"])
        if self._response_model is None and isinstance(obj.get("model"), str):
            self._response_model = str(obj["model"])

    def _decode(self, data: str) -> JSONObject | None:
        if not data:
            return None
        try:
            value: object = json.loads(data)
        except (json.JSONDecodeError, RecursionError):
            self._malformed += 1
            return None
        if not isinstance(value, dict):
            self._malformed += 1
            return None
        return value

    # -- OpenAI Chat Completions (chat.completion.chunk objects) and legacy Completions
    # (text_completion objects): then [DONE]; usage in a last chunk without choices
    def _observe_chunk(self, event: SSEEvent, chunk: JSONObject) -> bytes | None:
        self._identify(chunk)
        tier = chunk.get("service_tier")
        if isinstance(tier, str) and tier:
            self._service_tier = tier
        # The chunk, not only its usage: the service tier the bill depends on sits beside it.
        usage = usage_from_body(self.dialect, chunk)
        if usage is not None:
            if usage.service_tier is None and self._service_tier is not None:
                usage = replace(usage, service_tier=self._service_tier)
            self._usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                if self.dialect is Dialect.OPENAI_COMPLETIONS:
                    self._completion_choice(choice)
                else:
                    self._chat_choice(choice)
        if not self.strip_usage:
            return event.raw
        if usage is not None and choices == []:
            return None
        body = event.raw.rstrip(b"\r\n")
        return _NULL_USAGE.sub(b"", body) + event.raw[len(body) :]

    def _completion_choice(self, choice: JSONObject) -> None:
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
        text = choice.get("text")
        if isinstance(text, str):
            self._text.append(text)

    def _chat_choice(self, choice: JSONObject) -> None:
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        content = delta.get("content")
        if isinstance(content, str):
            self._text.append(content)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._chat_tool_fragment(call)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self._chat_tool_fragment({"index": -1, "function": legacy})

    def _chat_tool_fragment(self, call: JSONObject) -> None:
        key = str(call.get("index", 0))
        parts = self._tools.setdefault(key, _ToolCallParts())
        if isinstance(call.get("id"), str):
            parts.id = str(call["id"])
        function = call.get("function")
        if isinstance(function, dict):
            name = function.get("name")
            if isinstance(name, str):
                parts.name += name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                parts.arguments.append(arguments)

    # -- OpenAI Responses: typed events, usage on response.completed/incomplete/failed
    def _observe_responses(self, payload: JSONObject) -> None:
        kind = payload.get("type")
        if kind == "response.created" and isinstance(payload.get("response"), dict):
            self._identify(payload["response"])  # type: ignore[arg-type]
        if kind == "response.output_text.delta":
            delta = payload.get("delta")
            if isinstance(delta, str):
                self._text.append(delta)
        elif kind == "response.output_item.done":
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                key = str(item.get("id") or item.get("call_id") or len(self._tools))
                self._tools[key] = _ToolCallParts(
                    id=str(item.get("call_id") or ""),
                    name=str(item.get("name") or ""),
                    arguments=[str(item.get("arguments") or "")],
                )
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = payload.get("response")
            if isinstance(response, dict):
                # The whole response: its service tier and web search calls are billed too.
                usage = usage_from_body(Dialect.OPENAI_RESPONSES, response)
                if usage is not None:
                    self._usage = usage
                status = response.get("status")
                self._finish = status if isinstance(status, str) else None
            self._complete = True

    # -- Anthropic Messages: usage split between message_start and message_delta
    def _observe_anthropic(self, payload: JSONObject) -> None:
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._identify(message)
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self._anthropic_input = dict(message["usage"])  # type: ignore[arg-type]
                self._usage = usage_from_object(Dialect.ANTHROPIC_MESSAGES, self._anthropic_input)
        elif kind == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, dict) and block.get("type") in ("tool_use", "server_tool_use"):
                self._tools[str(payload.get("index", len(self._tools)))] = _ToolCallParts(
                    id=str(block.get("id") or ""), name=str(block.get("name") or "")
                )
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    self._text.append(str(delta["text"]))
                elif delta.get("type") == "input_json_delta":
                    parts = self._tools.get(str(payload.get("index")))
                    if parts is not None and isinstance(delta.get("partial_json"), str):
                        parts.arguments.append(str(delta["partial_json"]))
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._finish = str(delta["stop_reason"])
            usage = payload.get("usage")
            if isinstance(usage, dict):
                # message_delta's usage is cumulative and may restate the input counts.
                merged: dict[str, JSONValue] = dict(self._anthropic_input or {})
                merged.update(usage)
                self._anthropic_input = merged
                self._usage = usage_from_object(Dialect.ANTHROPIC_MESSAGES, merged)
        elif kind == "message_stop":
            self._complete = True
