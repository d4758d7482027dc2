"""The five metered API dialects: detect them, validate requests, read usage, shape errors.

Pure: takes bytes or JSON values already read by the proxy, returns typed values. Nothing here
opens a socket or a file. Validation is deliberately shallow where the provider's own validation
is authoritative (the content of a message), and strict where a11i's metering depends on it
(model, messages, token limits, stream flags): a request a11i cannot meter is never forwarded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import NoneType
from typing import Final, cast

from a11i.core.errors import A11iError, BadRequest
from a11i.core.frozen import slot_init
from a11i.core.model import Dialect, JSONObject, JSONValue, Usage

#: Path of each metered route, relative to the provider's base URL.
METERED_PATHS: Mapping[str, Dialect] = {
    "/v1/chat/completions": Dialect.OPENAI_CHAT,
    "/v1/responses": Dialect.OPENAI_RESPONSES,
    "/v1/embeddings": Dialect.OPENAI_EMBEDDINGS,
    "/v1/completions": Dialect.OPENAI_COMPLETIONS,
    "/v1/messages": Dialect.ANTHROPIC_MESSAGES,
}

#: OpenAI's default ``max_tokens`` of a legacy completion that sets none.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ANTHROPIC_ROLES = frozenset({"user", "assistant"})


@slot_init
@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated metered request: what metering needs, plus the JSON body as sent."""

    dialect: Dialect
    model: str
    body: JSONObject
    stream: bool = False
    #: The client itself asked for a usage chunk (OpenAI chat ``stream_options.include_usage``).
    stream_usage_requested: bool = False
    #: The request's own cap on output tokens per choice, if it set one.
    max_output_tokens: int | None = None
    #: Outputs generated and paid for, each up to ``max_output_tokens``: OpenAI chat's ``n``;
    #: legacy completions' ``max(n, best_of)`` times the number of prompts.
    choices: int = 1
    #: The service tier the request asks for (``service_tier``: OpenAI's flex, priority, ...;
    #: Anthropic's auto, standard_only), for the projection; the answer says what was served.
    service_tier: str | None = None


def dialect_for_path(path: str) -> Dialect | None:
    """The dialect of a metered path, or None for a path that is passed through unmetered."""
    return METERED_PATHS.get(path.rstrip("/") or "/")


def parse_json_body(raw: bytes) -> JSONObject:
    """Decode a request body into a JSON object, or raise BadRequest saying why not."""
    # isspace stops at the first other byte; strip() would copy the whole body first.
    if not raw or raw.isspace():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        # What json.loads(raw, object_pairs_hook=...) does, without building a decoder per call.
        value: object = _BODY_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
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
        # Python refuses integers of more than 4,300 digits (sys.get_int_max_str_digits).
        raise BadRequest(f"The request body has a number a11i cannot read: {exc}.") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_json_type(value)}.")
    return cast(JSONObject, value)


class DuplicateKey(ValueError):
    """A JSON object with one key twice (RFC 8259 section 4: names SHOULD be unique; parsers
    disagree on which value wins)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


#: One decoder for every body: a decoder keeps no state between calls (the standard library's
#: own ``json.loads`` shares one across threads the same way).
_BODY_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_keys)


def parse_request(dialect: Dialect, body: JSONObject) -> ParsedRequest:
    """Validate ``body`` for ``dialect`` and extract what metering needs."""
    model = _model_name(body)
    stream = _optional_bool(body, "stream") or False
    if dialect is Dialect.OPENAI_CHAT:
        return _parse_chat(body, model, stream)
    if dialect is Dialect.OPENAI_RESPONSES:
        return _parse_responses(body, model, stream)
    if dialect is Dialect.OPENAI_EMBEDDINGS:
        return _parse_embeddings(body, model)
    if dialect is Dialect.OPENAI_COMPLETIONS:
        return _parse_completions(body, model, stream)
    return _parse_anthropic(body, model, stream)


def _service_tier(body: JSONObject) -> str | None:
    """The tier a chat, Responses or Anthropic request asks for; checked after the rest of the
    body, so a body with several faults is refused for the same one as ever."""
    tier = body.get("service_tier")
    if tier is not None and not isinstance(tier, str):
        raise BadRequest(
            f"'service_tier' must be a string, not {_json_type(tier)}.", param="service_tier"
        )
    return tier


def _parse_chat(body: JSONObject, model: str, stream: bool) -> ParsedRequest:
    messages = _required_list(body, "messages")
    if not messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    for message in messages:
        # Every message at a glance; the first one at fault is then found by index and named.
        if not (
            isinstance(message, dict)
            and isinstance(role := message.get("role"), str)
            and role in _CHAT_ROLES
            and isinstance(message.get("content"), _CHAT_CONTENT)
        ):
            _refuse_chat_messages(messages)
    _optional_list(body, "tools")
    _optional_list(body, "functions")
    max_tokens = _optional_positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_positive_int(body, "max_tokens")
    choices = _optional_positive_int(body, "n") or 1
    usage_requested = _usage_requested(body)
    return ParsedRequest(
        Dialect.OPENAI_CHAT,
        model,
        body,
        stream=stream,
        stream_usage_requested=usage_requested,
        max_output_tokens=max_tokens,
        choices=choices,
        service_tier=_service_tier(body),
    )


#: What a chat message's ``content`` may be (a module constant: ``str | list`` written in the
#: check would build the union on every message).
_CHAT_CONTENT: Final = str | list | NoneType


def _refuse_chat_messages(messages: list[JSONValue]) -> None:
    """Raises ``BadRequest`` for the first malformed message of a chat request."""
    for index, message in enumerate(messages):
        # The names of the fields are only spelled out for a message that is refused.
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


def _usage_requested(body: JSONObject) -> bool:
    """OpenAI's ``stream_options.include_usage`` (chat and legacy completions)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    return _optional_bool(options, "include_usage", "stream_options.") or False


def _parse_responses(body: JSONObject, model: str, stream: bool) -> ParsedRequest:
    if "input" not in body and "previous_response_id" not in body and "prompt" not in body:
        raise BadRequest("'input' is required.", param="input")
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise BadRequest(
            f"'input' must be a string or an array of items, not {_json_type(value)}.",
            param="input",
        )
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise BadRequest(
                    f"'input[{index}]' must be an object, not {_json_type(item)}.",
                    param=f"input[{index}]",
                )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("'instructions' must be a string.", param="instructions")
    _optional_list(body, "tools")
    max_tokens = _optional_positive_int(body, "max_output_tokens")
    return ParsedRequest(
        Dialect.OPENAI_RESPONSES,
        model,
        body,
        stream=stream,
        max_output_tokens=max_tokens,
        service_tier=_service_tier(body),
    )


def _parse_embeddings(body: JSONObject, model: str) -> ParsedRequest:
    if "input" not in body:
        raise BadRequest("'input' is required.", param="input")
    value = body["input"]
    valid = isinstance(value, str) or (
        isinstance(value, list)
        and bool(value)
        and (
            all(isinstance(item, str) for item in value)
            or all(_is_token(item) for item in value)
            or all(
                isinstance(item, list) and item and all(_is_token(tok) for tok in item)
                for item in value
            )
        )
    )
    if not valid:
        raise BadRequest(
            "'input' must be a string, a non-empty array of strings, an array of token ids "
            "or an array of arrays of token ids.",
            param="input",
        )
    return ParsedRequest(Dialect.OPENAI_EMBEDDINGS, model, body, max_output_tokens=0)


def _parse_completions(body: JSONObject, model: str, stream: bool) -> ParsedRequest:
    """The legacy ``POST /v1/completions``: ``best_of`` completions are generated (and billed)
    per prompt and the best ``n`` returned, so the output bound is ``max_tokens`` times
    ``max(n, best_of)`` times the number of prompts."""
    prompts = _prompt_count(body)
    # Non-negative: max_tokens 0 with echo scores a prompt without generating anything.
    max_tokens = _optional_count(body, "max_tokens")
    n = _optional_positive_int(body, "n") or 1
    best_of = _optional_positive_int(body, "best_of") or 1
    _optional_bool(body, "echo")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise BadRequest(f"'suffix' must be a string, not {_json_type(suffix)}.", param="suffix")
    return ParsedRequest(
        Dialect.OPENAI_COMPLETIONS,
        model,
        body,
        stream=stream,
        stream_usage_requested=_usage_requested(body),
        max_output_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        choices=max(n, best_of) * prompts,
    )


def _prompt_count(body: JSONObject) -> int:
    """How many prompts ``prompt`` holds: a string or an array of token ids is one."""
    if "prompt" not in body:
        raise BadRequest("'prompt' is required.", param="prompt")
    value = body["prompt"]
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return len(value)
        if all(_is_token(item) for item in value):
            return 1
        if all(
            isinstance(item, list) and item and all(_is_token(tok) for tok in item)
            for item in value
        ):
            return len(value)
    raise BadRequest(
        "'prompt' must be a string, a non-empty array of strings, an array of token ids "
        "or an array of arrays of token ids.",
        param="prompt",
    )


def _parse_anthropic(body: JSONObject, model: str, stream: bool) -> ParsedRequest:
    max_tokens = _optional_positive_int(body, "max_tokens")
    if max_tokens is None:
        raise BadRequest("'max_tokens' is required.", param="max_tokens")
    messages = _required_list(body, "messages")
    for index, message in enumerate(messages):
        # The names of the fields are only spelled out for a message that is refused.
        if not isinstance(message, dict):
            where = f"messages.{index}"
            raise BadRequest(
                f"'{where}' must be an object, not {_json_type(message)}.", param=where
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in _ANTHROPIC_ROLES:
            raise BadRequest(
                f'\'messages.{index}.role\' must be "user" or "assistant", not {json.dumps(role)}.',
                param=f"messages.{index}.role",
            )
        content = message.get("content")
        if not isinstance(content, str | list):
            raise BadRequest(
                f"'messages.{index}.content' must be a string or an array of content blocks, "
                f"not {_json_type(content)}.",
                param=f"messages.{index}.content",
            )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BadRequest("'system' must be a string or an array of text blocks.", param="system")
    _optional_list(body, "tools")
    return ParsedRequest(
        Dialect.ANTHROPIC_MESSAGES,
        model,
        body,
        stream=stream,
        max_output_tokens=max_tokens,
        service_tier=_service_tier(body),
    )


# ---------------------------------------------------------------------------------------------
# Usage reported by the provider


def usage_from_body(dialect: Dialect, body: JSONValue) -> Usage | None:
    """The usage in an answer body (or an OpenAI stream chunk, or the ``response`` of a
    Responses stream's last event), with what the body says beside it that the bill depends
    on: OpenAI's ``service_tier`` and, on the Responses API, the web searches it ran. None when
    the provider reported no usage."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if dialect is Dialect.ANTHROPIC_MESSAGES or not isinstance(usage, dict):
        return usage_from_object(dialect, usage)
    # Read beside the usage and built into it at once: a second Usage (dataclasses.replace)
    # cost more than reading the usage itself.
    tier = body.get("service_tier")
    return _openai_usage(
        dialect,
        usage,
        service_tier=tier if isinstance(tier, str) and tier else None,
        responses=body if dialect is Dialect.OPENAI_RESPONSES else None,
    )


def _responses_web_searches(response: JSONObject) -> int:
    """Billable web searches of a Responses answer: ``tool_usage.web_search.num_requests``
    when reported (it leaves out opening a page and finding in it), else the
    ``web_search_call`` output items whose action is a search."""
    tool_usage = response.get("tool_usage")
    if isinstance(tool_usage, dict):
        web_search = tool_usage.get("web_search")
        if isinstance(web_search, dict):
            reported = _int_field(web_search, "num_requests")
            if reported is not None:
                return reported
    output = response.get("output")
    if not isinstance(output, list):
        return 0
    count = 0
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "web_search_call":
            continue
        action = item.get("action")
        kind = action.get("type") if isinstance(action, dict) else None
        if kind in (None, "search"):
            count += 1
    return count


def usage_from_object(dialect: Dialect, usage: JSONValue) -> Usage | None:
    """Normalise one dialect's ``usage`` object; None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        return _anthropic_usage(usage)
    return _openai_usage(dialect, usage)


def _openai_usage(
    dialect: Dialect,
    usage: Mapping[str, JSONValue],
    *,
    service_tier: str | None = None,
    responses: JSONObject | None = None,
) -> Usage | None:
    """An OpenAI ``usage`` object, with the answer's ``service_tier`` and, given the
    Responses answer it came in, that answer's web searches."""
    if dialect is Dialect.OPENAI_RESPONSES:
        prompt = _int_field(usage, "input_tokens")
        output = _int_field(usage, "output_tokens")
        details = usage.get("input_tokens_details")
        output_details = usage.get("output_tokens_details")
    else:
        prompt = _int_field(usage, "prompt_tokens")
        output = _int_field(usage, "completion_tokens")
        details = usage.get("prompt_tokens_details")
        output_details = usage.get("completion_tokens_details")
    if prompt is None:
        return None
    cached = written = written_long = reasoning = 0
    if isinstance(details, dict):
        cached = _int_field(details, "cached_tokens") or 0
        written = _int_field(details, "cache_write_tokens") or 0
        by_ttl = details.get("cache_write_tokens_details")
        if isinstance(by_ttl, dict):
            written_long = _int_field(by_ttl, "ttl_12h_tokens") or 0
            short = _int_field(by_ttl, "ttl_30m_tokens") or 0
            written = max(written, short + written_long)
    if isinstance(output_details, dict):
        # Inside the output tokens already: kept for the record, never billed on top.
        reasoning = _int_field(output_details, "reasoning_tokens") or 0
    return Usage(
        input_tokens=prompt,
        output_tokens=output or 0,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        cache_write_long_tokens=written_long,
        reasoning_tokens=reasoning,
        web_search_requests=_responses_web_searches(responses) if responses is not None else 0,
        service_tier=service_tier,
    )


def _anthropic_usage(usage: Mapping[str, JSONValue]) -> Usage | None:
    """Anthropic's usage: ``input_tokens`` excludes the cache reads and writes; the writes
    split by lifetime in ``cache_creation`` (absent on older answers: all 5-minute writes)."""
    uncached = _int_field(usage, "input_tokens")
    output = _int_field(usage, "output_tokens")
    if uncached is None and output is None:
        return None
    read = _int_field(usage, "cache_read_input_tokens") or 0
    written = _int_field(usage, "cache_creation_input_tokens") or 0
    written_long = 0
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        written_long = _int_field(split, "ephemeral_1h_input_tokens") or 0
        short = _int_field(split, "ephemeral_5m_input_tokens") or 0
        written = max(written, short + written_long)
    searches = fetches = 0
    server = usage.get("server_tool_use")
    if isinstance(server, dict):
        searches = _int_field(server, "web_search_requests") or 0
        fetches = _int_field(server, "web_fetch_requests") or 0
    reasoning = 0
    output_details = usage.get("output_tokens_details")
    if isinstance(output_details, dict):
        reasoning = _int_field(output_details, "thinking_tokens") or 0
    return Usage(
        input_tokens=(uncached or 0) + read + written,
        output_tokens=output or 0,
        cached_input_tokens=read,
        cache_write_tokens=written,
        cache_write_long_tokens=written_long,
        reasoning_tokens=reasoning,
        web_search_requests=searches,
        web_fetch_requests=fetches,
        service_tier=_str_field(usage, "service_tier"),
        inference_geo=_str_field(usage, "inference_geo"),
        speed=_str_field(usage, "speed"),
    )


# ---------------------------------------------------------------------------------------------
# Errors in the dialect's own shape, so the official SDKs raise a clear, typed error


def error_body(dialect: Dialect | None, error: A11iError) -> JSONObject:
    """The JSON error body for ``error`` in ``dialect`` (OpenAI's shape when unknown)."""
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        return {"type": "error", "error": {"type": error.kind, "message": error.message}}
    return {
        "error": {
            "message": error.message,
            "type": error.kind,
            "param": error.param,
            "code": error.kind,
        }
    }


# ---------------------------------------------------------------------------------------------
# Small validators: each raises BadRequest naming the field and what is wrong with it


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: Longer model names, or ones with control characters, are refused: the name is echoed in
#: answer headers, logs and metric attributes.
MAX_MODEL_CHARS = 256


def _model_name(body: JSONObject) -> str:
    model = _required_str(body, "model")
    if len(model) > MAX_MODEL_CHARS:
        raise BadRequest(
            f"'model' is {len(model)} characters long; at most {MAX_MODEL_CHARS} are accepted.",
            param="model",
        )
    if not model.isprintable():
        raise BadRequest("'model' must not contain control characters.", param="model")
    return model


def _required_str(body: JSONObject, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        if key not in body:
            raise BadRequest(f"'{key}' is required.", param=key)
        raise BadRequest(f"'{key}' must be a non-empty string, not {_json_type(value)}.", param=key)
    return value


def _required_list(body: JSONObject, key: str) -> list[JSONValue]:
    if key not in body:
        raise BadRequest(f"'{key}' is required.", param=key)
    value = body[key]
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' must be an array, not {_json_type(value)}.", param=key)
    return value


def _optional_list(body: JSONObject, key: str) -> list[JSONValue] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' must be an array, not {_json_type(value)}.", param=key)
    return value


def _optional_bool(body: JSONObject, key: str, prefix: str = "") -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(
            f"'{prefix}{key}' must be a boolean, not {_json_type(value)}.", param=prefix + key
        )
    return value


def _optional_positive_int(body: JSONObject, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"'{key}' must be a positive integer, not {json.dumps(value)}.", param=key)
    return value


def _optional_count(body: JSONObject, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(
            f"'{key}' must be a non-negative integer, not {json.dumps(value)}.", param=key
        )
    return value


def _str_field(obj: Mapping[str, JSONValue], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _int_field(obj: Mapping[str, JSONValue], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
