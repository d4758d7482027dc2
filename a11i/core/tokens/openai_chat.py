"""OpenAI's chat accounting: one message, its content parts, assistant tool calls, tool definitions
(the cookbook's ``num_tokens_from_messages`` and ``num_tokens_for_tools``) and a forced
``tool_choice``. Also used for the Responses API's items, which have no rules of their own.

Pure: rules over one unit at a time, adding to a ``Tally``; the cache lives in ``counter``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from a11i.core.model import JSONObject, JSONValue
from a11i.core.tokens.encoding import (
    CHARS_PER_TOKEN,
    Tally,
    Text,
    is_empty,
    json_text,
    str_or_none,
)
from a11i.core.tokens.images import (
    ImageRules,
    base64_size,
    data_url_payload,
    decode_prefix,
    image_size,
    image_tokens,
)

# OpenAI cookbook, num_tokens_from_messages: every message follows
# <|start|>{role/name}\n{content}<|end|>\n, and every reply is primed with
# <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING: Final = 3
# hmarr/openai-chat-tokens (empirical, cl100k era): a function call in an assistant message costs
# its name, its arguments and 3 more tokens.
TOKENS_PER_TOOL_CALL: Final = 3
# A forced function costs its name plus 4 (legacy function_call) or 7 (tool_choice object) tokens
# in the same empirical work (the latter as adopted by litellm); "none" costs 1.
FORCED_FUNCTION_TOKENS: Final = 4
FORCED_TOOL_TOKENS: Final = 7
# Tools are rendered into the system message; without one the API adds one: 3 + the role token.
IMPLICIT_SYSTEM_TOKENS: Final = 4


#: Audio in a request: about 10 tokens a second, at the 16 kB/s of a 128 kbit/s encoding (a WAV
#: at 32 kB/s is then overestimated two-fold, which errs on the safe side).
AUDIO_TOKENS_PER_SECOND: Final = 10
AUDIO_BYTES_PER_SECOND: Final = 16_000
#: A file referenced by id only: its content is unknown.
UNKNOWN_FILE_TOKENS: Final = 1_000


# Cookbook tools: keys that carry no tokens of their own in the verified shape.
_SCHEMA_KEYS_IGNORED: Final = frozenset({"type", "properties", "required", "additionalProperties"})
_FUNCTION_KEYS_COUNTED: Final = frozenset({"name", "description", "parameters", "strict"})
_PROPERTY_KEYS_COUNTED: Final = frozenset({"type", "description", "enum"})


@dataclass(frozen=True, slots=True)
class ToolRules:
    """The cookbook's ``num_tokens_for_tools`` constants for one model generation."""

    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


TOOLS_O200K: Final = ToolRules(
    func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12
)
TOOLS_CL100K: Final = ToolRules(
    func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12
)


def is_system(message: JSONValue) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "developer")


def forced_choice(tally: Tally, text: Text, choice: JSONValue) -> None:
    if choice is None or choice == "auto":
        return
    if choice == "none":
        tally.add(1, exact=False)
        return
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str):
            overhead = FORCED_TOOL_TOKENS if "type" in choice else FORCED_FUNCTION_TOKENS
            tally.add(overhead + text.count(name), exact=False)
            return
    # "required", allowed_tools and shapes without a published cost.
    tally.exact = False


def chat_message(message: JSONValue, text: Text, images: ImageRules) -> Tally:
    tally = Tally()
    tally.add(TOKENS_PER_MESSAGE)
    if not isinstance(message, dict):
        tally.add(text.json(message), exact=False)
        return tally
    if message.get("role") in ("tool", "function"):
        # No published rule for tool results; every string field is counted (errs high).
        tally.exact = False
    for key, value in message.items():
        if value is None:
            continue
        if key == "content":
            message_content(tally, text, images, value)
        elif key == "tool_calls":
            _tool_calls(tally, text, value)
        elif key == "function_call":
            one_call(tally, text, value)
        elif isinstance(value, str):
            tally.add(text.count(value))
            if key == "name":
                tally.add(TOKENS_PER_NAME)
        elif is_empty(value):
            # SDKs echo assistant messages back with "refusal": null, "annotations": [].
            continue
        else:
            tally.add(text.json(value), exact=False)
    return tally


def message_content(tally: Tally, text: Text, images: ImageRules, content: JSONValue) -> None:
    if isinstance(content, str):
        tally.add(text.count(content))
    elif isinstance(content, list):
        for part in content:
            _part(tally, text, images, part)
    elif content is not None:
        tally.add(text.json(content), exact=False)


def _part(tally: Tally, text: Text, images: ImageRules, part: JSONValue) -> None:
    """One content part of a chat message or a Responses item."""
    if isinstance(part, str):
        tally.add(text.count(part), exact=False)
        return
    if not isinstance(part, dict):
        tally.add(text.json(part), exact=False)
        return
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
        tally.add(text.count(str_or_none(part.get("text")) or ""))
    elif kind == "refusal" and isinstance(part.get("refusal"), str):
        tally.add(text.count(str_or_none(part.get("refusal")) or ""))
    elif kind in ("image_url", "input_image"):
        tally.add(_openai_image_part(images, part), exact=False)
    elif kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        seconds = base64_size(data) / AUDIO_BYTES_PER_SECOND if isinstance(data, str) else 0
        tally.add(math.ceil(seconds * AUDIO_TOKENS_PER_SECOND), exact=False)
    elif kind in ("file", "input_file"):
        tally.add(_openai_file_part(text, part), exact=False)
    else:
        tally.add(text.json(part), exact=False)


def _openai_image_part(images: ImageRules, part: JSONObject) -> int:
    # Chat: {"image_url": {"url", "detail"}} (or a bare URL string); Responses: {"image_url",
    # "detail"} or {"file_id"}.
    spec = part.get("image_url")
    detail = part.get("detail")
    url = spec
    if isinstance(spec, dict):
        url = spec.get("url")
        detail = spec.get("detail", detail)
    width = height = None
    payload = data_url_payload(url) if isinstance(url, str) else None
    if payload is not None:
        size = image_size(decode_prefix(payload))
        if size is not None:
            width, height = size
    return image_tokens(images, width, height, detail if isinstance(detail, str) else "auto")


def _openai_file_part(text: Text, part: JSONObject) -> int:
    spec = part.get("file")
    file = spec if isinstance(spec, dict) else part
    tokens = 0
    name = file.get("filename")
    if isinstance(name, str):
        tokens += text.count(name)
    data = file.get("file_data")
    if isinstance(data, str):
        # A PDF's pages become text and images; its size is the only thing known here.
        payload = data_url_payload(data) or data
        tokens += -(-base64_size(payload) // CHARS_PER_TOKEN)
    else:
        tokens += UNKNOWN_FILE_TOKENS
    return tokens


def _tool_calls(tally: Tally, text: Text, calls: JSONValue) -> None:
    if not isinstance(calls, list):
        tally.add(text.json(calls), exact=False)
        return
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("function") or call.get("custom"), dict):
            one_call(tally, text, call.get("function") or call.get("custom"))
        else:
            tally.add(TOKENS_PER_TOOL_CALL + text.json(call), exact=False)


def one_call(tally: Tally, text: Text, call: JSONValue) -> None:
    """A function call: its name, its arguments' JSON text (or a custom tool's input), and 3."""
    tally.add(TOKENS_PER_TOOL_CALL, exact=False)
    if not isinstance(call, dict):
        tally.add(text.json(call), exact=False)
        return
    name = call.get("name")
    tally.add(text.count(name) if isinstance(name, str) else text.json(name), exact=False)
    arguments = call.get("arguments", call.get("input"))
    if arguments is not None:
        tally.add(text.json(arguments), exact=False)


def openai_tools(
    text: Text, rules: ToolRules, tools: list[JSONValue], functions: list[JSONValue]
) -> Tally:
    """Tool definitions by the cookbook's ``num_tokens_for_tools``; shapes it did not verify add
    their JSON text and make the count an estimate."""
    tally = Tally()
    definitions: list[JSONObject] = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            # Chat nests the definition under "function"; the Responses API puts it flat.
            nested = tool.get("function")
            definitions.append(nested if isinstance(nested, dict) else tool)
        else:
            # Custom, web search, file search...: hidden prompts of unknown size.
            tally.add(text.json(tool), exact=False)
    for function in functions:
        if isinstance(function, dict):
            definitions.append(function)
        else:
            tally.add(text.json(function), exact=False)
    if not definitions:
        return tally
    for definition in definitions:
        _function_definition(tally, text, rules, definition)
    tally.add(rules.func_end)
    return tally


def _function_definition(tally: Tally, text: Text, rules: ToolRules, function: JSONObject) -> None:
    tally.add(rules.func_init)
    name = function.get("name")
    description = function.get("description")
    if not isinstance(name, str) or not isinstance(description, str):
        tally.exact = False
    line = f"{str_or_none(name) or ''}:{_strip_period(str_or_none(description) or '')}"
    tally.add(text.count(line))
    extras = {k: v for k, v in function.items() if k not in _FUNCTION_KEYS_COUNTED}
    if isinstance(function.get("type"), str):
        extras.pop("type", None)
    if extras:
        tally.add(text.json(extras), exact=False)
    parameters = function.get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        tally.add(text.json(parameters), exact=False)
        return
    schema_extras = {k: v for k, v in parameters.items() if k not in _SCHEMA_KEYS_IGNORED}
    if schema_extras:
        tally.add(text.json(schema_extras), exact=False)
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        if properties is not None:
            tally.add(text.json(properties), exact=False)
        return
    if not properties:
        return
    tally.add(rules.prop_init)
    for key, prop in properties.items():
        tally.add(rules.prop_key)
        if not isinstance(prop, dict):
            tally.add(text.count(key) + text.json(prop), exact=False)
            continue
        _property(tally, text, rules, key, prop)


def _property(tally: Tally, text: Text, rules: ToolRules, key: str, prop: JSONObject) -> None:
    p_type = prop.get("type")
    p_description = prop.get("description")
    if "enum" in prop:
        tally.add(rules.enum_init)
        values = prop.get("enum")
        if isinstance(values, list):
            for value in values:
                tally.add(rules.enum_item)
                if isinstance(value, str):
                    tally.add(text.count(value))
                else:
                    tally.add(text.json(value), exact=False)
        else:
            tally.add(text.json(values), exact=False)
    if not isinstance(p_type, str) or not isinstance(p_description, str):
        tally.exact = False
    type_text = p_type if isinstance(p_type, str) else (json_text(p_type) or "")
    if p_type is None:
        type_text = ""
    tally.add(text.count(f"{key}:{type_text}:{_strip_period(str_or_none(p_description) or '')}"))
    extras = {k: v for k, v in prop.items() if k not in _PROPERTY_KEYS_COUNTED}
    if extras:
        # Nested objects, arrays, anyOf, defaults...: rendered by rules OpenAI did not publish.
        tally.add(text.json(extras), exact=False)


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text
