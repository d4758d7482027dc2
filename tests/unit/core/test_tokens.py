"""Token counting: OpenAI's published counts reproduced, estimates flagged, the cache, odd input.

The counts marked "published" come from OpenAI's cookbook "How to count tokens with tiktoken"
(examples/How_to_count_tokens_with_tiktoken.ipynb), whose printed output shows the counter's
result next to the ``prompt_tokens`` the OpenAI API reported for the same request.
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a11i.core.model import JSONObject, JSONValue, TokenCount
from a11i.core.tokens.anthropic import ANTHROPIC_IMAGE_MAX_TOKENS, ANTHROPIC_TOOL_SYSTEM_PROMPT
from a11i.core.tokens.counter import TokenCounter, _model_rules
from a11i.core.tokens.encoding import (
    CL100K_BASE,
    O200K_BASE,
    Encoder,
    Encodings,
    chunked_count,
    encoding_name_for_model,
    is_empty,
)
from a11i.core.tokens.images import image_rules, image_size, openai_image_tokens
from a11i.sidecar.encodings import PACKAGE_DIR, load_encodings


@pytest.fixture(scope="module")
def encodings() -> Encodings:
    loaded = load_encodings([PACKAGE_DIR], include_defaults=False)
    if loaded.missing:
        pytest.fail(
            f"tiktoken encodings {list(loaded.missing)} are missing from {PACKAGE_DIR} "
            f"({dict(loaded.problems)}): "
            "run `python -m a11i.sidecar.encodings fetch` (make encodings)"
        )
    return loaded


@pytest.fixture
def counter(encodings: Encodings) -> TokenCounter:
    return TokenCounter(encodings)


@pytest.fixture(scope="module")
def shared_counter(encodings: Encodings) -> TokenCounter:
    """One counter for the Hypothesis tests (a function-scoped one is not reset per example)."""
    return TokenCounter(encodings, cache_size=256)


def encode_len(encodings: Encodings, name: str, text: str) -> int:
    encoder = encodings.get(name)
    assert encoder is not None
    return len(encoder.encode_ordinary(text))


# ---- models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", O200K_BASE),
        ("gpt-4o-mini-2024-07-18", O200K_BASE),
        ("chatgpt-4o-latest", O200K_BASE),
        ("gpt-4.1", O200K_BASE),
        ("gpt-4.1-nano", O200K_BASE),
        ("gpt-4.5-preview", O200K_BASE),
        ("gpt-5", O200K_BASE),
        ("gpt-5-mini", O200K_BASE),
        ("o1", O200K_BASE),
        ("o3-mini", O200K_BASE),
        ("o4-mini", O200K_BASE),
        ("gpt-oss-120b", O200K_BASE),
        ("gpt-7-future", O200K_BASE),
        ("openai/gpt-4o", O200K_BASE),
        ("azure/gpt-4.1", O200K_BASE),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", O200K_BASE),
        ("gpt-4", CL100K_BASE),
        ("gpt-4-0613", CL100K_BASE),
        ("gpt-4-turbo", CL100K_BASE),
        ("gpt-4-32k", CL100K_BASE),
        ("gpt-3.5-turbo", CL100K_BASE),
        ("gpt-3.5-turbo-0125", CL100K_BASE),
        ("azure/gpt-35-turbo", CL100K_BASE),
        ("openai/gpt-4", CL100K_BASE),
        ("ft:gpt-3.5-turbo-0125:acme::x1", CL100K_BASE),
        ("text-embedding-ada-002", CL100K_BASE),
        ("text-embedding-3-small", CL100K_BASE),
        ("text-embedding-3-large", CL100K_BASE),
        ("GPT-4O", O200K_BASE),
    ],
    ids=lambda value: str(value),
)
def test_encoding_for_model(model: str, expected: str) -> None:
    assert encoding_name_for_model(model) == expected


# ---- the cookbook's published counts ---------------------------------------------------------

COOKBOOK_MESSAGES: list[JSONValue] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
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
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

COOKBOOK_TOOLS: list[JSONValue] = [
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

COOKBOOK_TOOL_MESSAGES: list[JSONValue] = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "published"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
    ids=["gpt-3.5-turbo", "gpt-4-0613", "gpt-4", "gpt-4o", "gpt-4o-mini"],
)
def test_cookbook_messages(counter: TokenCounter, model: str, published: int) -> None:
    assert counter.count_chat(model, COOKBOOK_MESSAGES) == TokenCount(published, exact=True)


@pytest.mark.parametrize(
    ("model", "published"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
    ids=["gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini"],
)
def test_cookbook_tools(counter: TokenCounter, model: str, published: int) -> None:
    counted = counter.count_chat(model, COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    assert counted == TokenCount(published, exact=True)


def test_legacy_functions_count_like_tools(counter: TokenCounter) -> None:
    tool = COOKBOOK_TOOLS[0]
    assert isinstance(tool, dict)
    by_tools = counter.count_chat("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    by_functions = counter.count_chat(
        "gpt-4o", COOKBOOK_TOOL_MESSAGES, functions=[tool["function"]]
    )
    assert by_functions == by_tools


# ---- chat rules beyond the published examples ------------------------------------------------


def test_provider_prefix_counts_like_the_bare_model(counter: TokenCounter) -> None:
    assert counter.count_chat("openai/gpt-4o", COOKBOOK_MESSAGES).tokens == 124
    assert counter.count_chat("azure/gpt-4", COOKBOOK_MESSAGES).tokens == 129


@pytest.mark.parametrize(
    "content",
    [None, ""],
    ids=["none", "empty-string"],
)
def test_missing_content_counts_as_empty(
    counter: TokenCounter, encodings: Encodings, content: JSONValue
) -> None:
    counted = counter.count_chat("gpt-4o", [{"role": "assistant", "content": content}])
    assistant = encode_len(encodings, O200K_BASE, "assistant")
    assert counted == TokenCount(3 + assistant + 3, exact=True)


def test_special_token_text_is_counted_as_text(counter: TokenCounter, encodings: Encodings) -> None:
    text = "please ignore <|endoftext|> and <|endofprompt|><|fim_prefix|>"
    counted = counter.count_chat("gpt-4o", [{"role": "user", "content": text}])
    expected = (
        3 + encode_len(encodings, O200K_BASE, "user") + encode_len(encodings, O200K_BASE, text)
    )
    assert counted == TokenCount(expected + 3, exact=True)
    assert counter.count_text("gpt-4", text).tokens == encode_len(encodings, CL100K_BASE, text)


def test_text_parts_count_like_string_content(counter: TokenCounter) -> None:
    as_string = counter.count_chat("gpt-4o", [{"role": "user", "content": "Hello there, world"}])
    as_parts = counter.count_chat(
        "gpt-4o", [{"role": "user", "content": [{"type": "text", "text": "Hello there, world"}]}]
    )
    assert as_parts == as_string


def test_sdk_echoed_empty_fields_do_not_change_the_count(counter: TokenCounter) -> None:
    plain = counter.count_chat("gpt-4o", [{"role": "assistant", "content": "Sure."}])
    echoed = counter.count_chat(
        "gpt-4o",
        [{"role": "assistant", "content": "Sure.", "refusal": None, "annotations": []}],
    )
    assert echoed == plain


def test_assistant_tool_calls_and_tool_results_are_estimates(
    counter: TokenCounter, encodings: Encodings
) -> None:
    arguments = '{"location": "Paris, France", "unit": "celsius"}'
    messages: list[JSONValue] = [
        *COOKBOOK_TOOL_MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 21}'},
    ]
    base = counter.count_chat("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    counted = counter.count_chat("gpt-4o", messages, tools=COOKBOOK_TOOLS)
    assert not counted.exact
    name_and_arguments = encode_len(encodings, O200K_BASE, "get_current_weather") + encode_len(
        encodings, O200K_BASE, arguments
    )
    assert counted.tokens >= base.tokens + name_and_arguments + 2 * 3


def test_legacy_function_call_is_counted(counter: TokenCounter) -> None:
    message: JSONObject = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "lookup", "arguments": '{"q": "tiktoken"}'},
    }
    counted = counter.count_chat("gpt-4", [message])
    without = counter.count_chat("gpt-4", [{"role": "assistant", "content": None}])
    assert not counted.exact
    assert counted.tokens > without.tokens + 3


@pytest.mark.parametrize(
    ("tool_choice", "exact"),
    [
        (None, True),
        ("auto", True),
        ("none", False),
        ("required", False),
        ({"type": "function", "function": {"name": "get_current_weather"}}, False),
    ],
    ids=["absent", "auto", "none", "required", "named"],
)
def test_tool_choice(counter: TokenCounter, tool_choice: JSONValue, exact: bool) -> None:
    counted = counter.count_chat(
        "gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS, tool_choice=tool_choice
    )
    assert counted.exact is exact
    assert counted.tokens >= 101


def test_tools_without_a_system_message_are_an_estimate(counter: TokenCounter) -> None:
    user_only = [COOKBOOK_TOOL_MESSAGES[1]]
    counted = counter.count_chat("gpt-4o", user_only, tools=COOKBOOK_TOOLS)
    assert not counted.exact


def test_nested_tool_schemas_add_their_json_and_are_estimates(counter: TokenCounter) -> None:
    nested: list[JSONValue] = [
        {
            "type": "function",
            "function": {
                "name": "create_event",
                "description": "Create a calendar event.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "attendees": {
                            "type": "array",
                            "description": "Who is invited.",
                            "items": {"type": "string", "format": "email"},
                        }
                    },
                },
            },
        }
    ]
    flat = counter.count_chat("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    counted = counter.count_chat("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=nested)
    assert not counted.exact
    assert counted.tokens > 0
    assert flat.exact


# ---- images ------------------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"


def webp(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


@pytest.mark.parametrize(
    "make",
    [png, jpeg, gif, webp],
    ids=["png", "jpeg", "gif", "webp"],
)
def test_image_size_from_headers(make: object) -> None:
    assert callable(make)
    assert image_size(make(1234, 567)) == (1234, 567)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG", b"\xff\xd8\xff\xe0\x00", b"RIFF\x00\x00\x00\x00WEBPVP8Z", b"not an image"],
    ids=["empty", "short-png", "short-jpeg", "odd-webp", "text"],
)
def test_image_size_of_garbage_is_unknown(data: bytes) -> None:
    assert image_size(data) is None


@pytest.mark.parametrize(
    ("model", "width", "height", "detail", "tokens"),
    [
        # OpenAI vision guide, "Calculating costs", worked examples (gpt-4o).
        ("gpt-4o", 1024, 1024, "high", 765),
        ("gpt-4o", 2048, 4096, "high", 1105),
        ("gpt-4o", 4096, 8192, "low", 85),
        # Same guide: gpt-4o-mini's base 2,833 and 5,667 a tile.
        ("gpt-4o-mini", 1024, 1024, "high", 2833 + 4 * 5667),
        ("gpt-4o-mini", 512, 512, "low", 2833),
        # Patch models: the guide's patch counts (1024x1024 -> 1024, 1800x2400 -> 1452 after
        # the 1,536-patch cap) times gpt-4.1-mini's multiplier 1.62.
        ("gpt-4.1-mini", 1024, 1024, "high", math.ceil(1024 * 1.62)),
        ("gpt-4.1-mini", 1800, 2400, "high", math.ceil(1452 * 1.62)),
        # Unknown size: the low-detail cost.
        ("gpt-4o", None, None, "high", 85),
    ],
    ids=[
        "4o-1024-high",
        "4o-2048x4096-high",
        "4o-low",
        "4o-mini-1024-high",
        "4o-mini-low",
        "4.1-mini-1024",
        "4.1-mini-1800x2400",
        "4o-unknown-size",
    ],
)
def test_openai_image_formula(
    model: str, width: int | None, height: int | None, detail: str, tokens: int
) -> None:
    assert openai_image_tokens(model, width, height, detail) == tokens


@pytest.mark.parametrize(
    ("url", "detail", "image_tokens"),
    [
        (data_url(png(1024, 1024)), "high", 765),
        (data_url(jpeg(2048, 4096), "image/jpeg"), "auto", 1105),
        (data_url(png(1024, 1024)), "low", 85),
        ("https://example.com/cat.png", "high", 85),
        ("data:image/png;base64,@@@not-base64@@@", "high", 85),
    ],
    ids=["png-high", "jpeg-auto", "png-low", "http-url", "bad-data-url"],
)
def test_image_parts_are_estimates(
    counter: TokenCounter, url: str, detail: str, image_tokens: int
) -> None:
    text_only = counter.count_chat(
        "gpt-4o", [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]
    )
    counted = counter.count_chat(
        "gpt-4o",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url, "detail": detail}},
                ],
            }
        ],
    )
    assert counted == TokenCount(text_only.tokens + image_tokens, exact=False)


# ---- Responses, embeddings, text ---------------------------------------------------------------


def test_responses_string_input_is_an_estimate_by_the_chat_rules(counter: TokenCounter) -> None:
    chat = counter.count_chat("gpt-4o", [{"role": "user", "content": "Tell me a joke."}])
    responses = counter.count_responses("gpt-4o", "Tell me a joke.")
    assert responses == TokenCount(chat.tokens, exact=False)


def test_responses_items(counter: TokenCounter, encodings: Encodings) -> None:
    items: list[JSONValue] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_current_weather",
            "arguments": '{"location": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature": 21}'},
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": data_url(png(512, 512))}],
        },
    ]
    tools: list[JSONValue] = [
        {
            "type": "function",
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {}},
        }
    ]
    counted = counter.count_responses("gpt-4o", items, instructions="Be brief.", tools=tools)
    assert not counted.exact
    assert counted.tokens > 85 + 170 + encode_len(encodings, O200K_BASE, "Be brief.")


@pytest.mark.parametrize(
    ("model", "value"),
    [
        ("text-embedding-3-small", "The food was delicious."),
        ("text-embedding-ada-002", ["first text", "second, longer text"]),
        ("text-embedding-3-large", ["one", "two <|endoftext|>"]),
    ],
    ids=["string", "strings", "special-token-text"],
)
def test_embeddings_text(
    counter: TokenCounter, encodings: Encodings, model: str, value: str | list[str]
) -> None:
    texts = [value] if isinstance(value, str) else value
    expected = sum(encode_len(encodings, CL100K_BASE, text) for text in texts)
    assert counter.count_embeddings(model, list(texts) if isinstance(value, list) else value) == (
        TokenCount(expected, exact=True)
    )


@pytest.mark.parametrize(
    ("value", "tokens"),
    [([15339, 1917], 2), ([[1, 2, 3], [4, 5]], 5), ([], 0)],
    ids=["token-ids", "lists-of-token-ids", "empty"],
)
def test_embeddings_token_ids(counter: TokenCounter, value: JSONValue, tokens: int) -> None:
    assert counter.count_embeddings("text-embedding-3-small", value) == TokenCount(tokens, True)


# ---- Legacy completions --------------------------------------------------------------------------


def test_completion_prompt_matches_openai_api_reference(counter: TokenCounter) -> None:
    # OpenAI's API reference, POST /v1/completions: "Say this is a test" with
    # gpt-3.5-turbo-instruct reports "prompt_tokens": 5.
    assert counter.count_completions("gpt-3.5-turbo-instruct", "Say this is a test") == (
        TokenCount(5, exact=True)
    )


@pytest.mark.parametrize(
    ("model", "prompt", "texts", "ids"),
    [
        ("gpt-3.5-turbo-instruct", "Once upon a time", ["Once upon a time"], 0),
        (
            "davinci-002",
            ["def add(a, b):", "class Pod:\n    name: str"],
            ["def add(a, b):", "class Pod:\n    name: str"],
            0,
        ),
        ("babbage-002", ["", "x"], ["", "x"], 0),
        ("gpt-3.5-turbo-instruct", [15339, 1917, 0], [], 3),
        ("davinci-002", [[1, 2, 3], [4]], [], 4),
        ("gpt-3.5-turbo-instruct-0914", "Dated snapshot", ["Dated snapshot"], 0),
    ],
    ids=["string", "strings", "empty-string", "token-ids", "token-id-lists", "dated-model"],
)
def test_completion_prompts_are_exact(
    counter: TokenCounter,
    encodings: Encodings,
    model: str,
    prompt: JSONValue,
    texts: list[str],
    ids: int,
) -> None:
    # The legacy models all use cl100k_base; a prompt carries no per-message overhead.
    assert encoding_name_for_model(model) == CL100K_BASE
    expected = sum(encode_len(encodings, CL100K_BASE, text) for text in texts) + ids
    assert counter.count_completions(model, prompt) == TokenCount(expected, exact=True)


def test_completion_suffix_is_added_as_an_estimate(
    counter: TokenCounter, encodings: Encodings
) -> None:
    plain = counter.count_completions("gpt-3.5-turbo-instruct", "def main():")
    with_suffix = counter.count_completions(
        "gpt-3.5-turbo-instruct", "def main():", suffix="    return 0"
    )
    assert with_suffix == TokenCount(
        plain.tokens + encode_len(encodings, CL100K_BASE, "    return 0"), exact=False
    )
    assert counter.count_completions("gpt-3.5-turbo-instruct", "def main():", suffix="") == plain


def test_completion_without_encodings_is_an_estimate() -> None:
    counted = TokenCounter(Encodings()).count_completions("davinci-002", "abcdefgh")
    assert counted == TokenCount(2, exact=False)


def test_count_text(counter: TokenCounter, encodings: Encodings) -> None:
    text = "Streaming completions are counted by their text alone."
    assert counter.count_text("gpt-4o", text) == TokenCount(
        encode_len(encodings, O200K_BASE, text), exact=True
    )
    assert counter.count_text("gpt-4o", "") == TokenCount(0, exact=True)


# ---- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_is_an_estimate_that_errs_high(
    counter: TokenCounter, encodings: Encodings
) -> None:
    text = "Explain the difference between a process and a thread, with an example. " * 20
    counted = counter.count_anthropic(
        "claude-sonnet-4-5", "You are terse.", [{"role": "user", "content": text}]
    )
    assert not counted.exact
    assert counted.tokens > encode_len(encodings, CL100K_BASE, text) * 1.1


def test_anthropic_blocks(counter: TokenCounter) -> None:
    image: JSONObject = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(png(750, 400)).decode(),
        },
    }
    messages: list[JSONValue] = [
        {"role": "user", "content": [{"type": "text", "text": "Look at this."}, image]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {"factor": 2}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "zoomed"}],
                }
            ],
        },
    ]
    system: list[JSONValue] = [{"type": "text", "text": "You are a careful viewer."}]
    without_image = counter.count_anthropic(
        "claude-opus-4-1", system, [{"role": "user", "content": "Look at this."}, *messages[1:]]
    )
    counted = counter.count_anthropic("claude-opus-4-1", system, messages)
    # 750 x 400 / 750 = 400 image tokens (Anthropic's documented approximation).
    assert counted.tokens - without_image.tokens == 400
    tools: list[JSONValue] = [
        {
            "name": "zoom",
            "description": "Zoom into the image.",
            "input_schema": {"type": "object", "properties": {"factor": {"type": "number"}}},
        }
    ]
    with_tools = counter.count_anthropic("claude-opus-4-1", system, messages, tools=tools)
    assert with_tools.tokens > counted.tokens + ANTHROPIC_TOOL_SYSTEM_PROMPT
    assert not with_tools.exact


def test_anthropic_image_of_unknown_size(counter: TokenCounter) -> None:
    url_image: JSONObject = {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/x.png"},
    }
    empty = counter.count_anthropic("claude-haiku-4-5", None, [{"role": "user", "content": []}])
    counted = counter.count_anthropic(
        "claude-haiku-4-5", None, [{"role": "user", "content": [url_image]}]
    )
    assert counted.tokens - empty.tokens == ANTHROPIC_IMAGE_MAX_TOKENS


# ---- missing encodings -------------------------------------------------------------------------


def test_missing_encodings_fall_back_to_an_estimate() -> None:
    counter = TokenCounter(Encodings())
    assert counter.missing_encodings == (CL100K_BASE, O200K_BASE)
    text = "x" * 41
    counted = counter.count_chat("gpt-4o", [{"role": "user", "content": text}])
    # ceil(41 / 4) = 11 for the content, ceil(4 / 4) = 1 for "user", overheads kept.
    assert counted == TokenCount(3 + 1 + 11 + 3, exact=False)
    assert counter.count_text("gpt-4o", text) == TokenCount(11, exact=False)
    assert counter.count_embeddings("text-embedding-3-small", text) == TokenCount(11, False)
    assert not counter.count_chat("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS).exact


def test_one_missing_encoding_affects_only_its_models(encodings: Encodings) -> None:
    o200k = encodings.get(O200K_BASE)
    assert o200k is not None
    counter = TokenCounter(Encodings(available={O200K_BASE: o200k}, problems={CL100K_BASE: "gone"}))
    assert counter.missing_encodings == (CL100K_BASE,)
    assert counter.count_chat("gpt-4o", COOKBOOK_MESSAGES) == TokenCount(124, exact=True)
    assert not counter.count_chat("gpt-4", COOKBOOK_MESSAGES).exact


# ---- long texts ----------------------------------------------------------------------------------


CHUNK_ALPHABET = st.sampled_from(
    [
        *"aAbZz09 \n\t\r'!/.,-_\"",
        *["é", "漢", "😀", "\u0301", "\u00a0", "  ", "\n\n", "'s", "ll"],
        *["word", " word", "\nWord", "\n42", " x", "Mixed", "snake_case", "\n    "],
    ]
)


@pytest.mark.parametrize("name", [CL100K_BASE, O200K_BASE], ids=[CL100K_BASE, O200K_BASE])
@given(pieces=st.lists(CHUNK_ALPHABET, min_size=0, max_size=400))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chunked_count_is_exact_when_it_says_so(
    encodings: Encodings, name: str, pieces: list[str]
) -> None:
    encoder = encodings.get(name)
    assert encoder is not None
    text = "".join(pieces)
    tokens, exact = chunked_count(encoder, text, target=8, limit=16)
    whole = len(encoder.encode_ordinary(text))
    if exact:
        assert tokens == whole
    else:
        # A blind cut may split one piece: a few tokens each, never a different order of size.
        assert abs(tokens - whole) <= 3 * (len(text) // 16 + 1)


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        (("The quick brown fox jumps over the lazy dog.\n" * 40_000), True),
        (" " * 1_000_000, False),
        ("\t" * 1_000_000, False),
    ],
    ids=["prose-1.8MB", "spaces-1M", "tabs-1M"],
)
def test_long_texts_never_crash_tiktoken(
    counter: TokenCounter, encodings: Encodings, text: str, exact: bool
) -> None:
    # tiktoken's regex engine panics (a BaseException) on ~1M-character whitespace runs in one
    # piece; the counter cuts them first.
    counted = counter.count_text("gpt-4o", text)
    assert counted.exact is exact
    if exact:
        assert counted.tokens == encode_len(encodings, O200K_BASE, text)
    else:
        assert counted.tokens > 0


# ---- the per-message cache -----------------------------------------------------------------------


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def encode_ordinary(self, text: str) -> list[int]:
        with self._lock:
            self.texts.append(text)
        return self.inner.encode_ordinary(text)


VOCABULARY = (
    "agent tool call result budget token model context window history message assistant user "
    "system cost wallet meter sidecar proxy stream request response function argument value "
    "the a of to and in is for on with as by at from that this it be are was were"
)
WORDS = VOCABULARY.split()


def history(tokens_wanted: int, encodings: Encodings, seed: int = 7) -> list[JSONValue]:
    """A chat history of at least ``tokens_wanted`` o200k tokens, alternating user/assistant."""
    rng = random.Random(seed)
    messages: list[JSONValue] = [{"role": "system", "content": "You are a coding agent."}]
    total = 0
    while total < tokens_wanted:
        lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(60)]
        content = "\n".join(lines)
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": content})
        total += encode_len(encodings, O200K_BASE, content)
    return messages


@pytest.fixture(scope="module")
def long_history(encodings: Encodings) -> list[JSONValue]:
    return history(128_000, encodings)


def test_a_resent_history_tokenizes_only_the_new_message(
    encodings: Encodings, long_history: list[JSONValue]
) -> None:
    o200k = encodings.get(O200K_BASE)
    assert o200k is not None
    spy = CountingEncoder(o200k)
    counter = TokenCounter(Encodings(available={O200K_BASE: spy}))

    cold = counter.count_chat("gpt-4o", long_history)
    assert cold.exact
    assert cold.tokens >= 128_000
    assert counter.cache_stats().misses == len(long_history)

    new_message: JSONValue = {"role": "user", "content": "Now run the tests again, please."}
    spy.texts.clear()
    warm = counter.count_chat("gpt-4o", [*long_history, new_message])
    assert sorted(spy.texts) == sorted(["user", "Now run the tests again, please."])
    stats = counter.cache_stats()
    assert stats.hits == len(long_history)
    assert stats.misses == len(long_history) + 1

    fresh = TokenCounter(encodings).count_chat("gpt-4o", [*long_history, new_message])
    assert warm == fresh


def test_a_history_parsed_again_from_the_wire_hits_the_cache(encodings: Encodings) -> None:
    # An agent re-sends its history as JSON every turn: the sidecar parses new objects each time.
    counter = TokenCounter(encodings)
    wire = json.dumps([*COOKBOOK_MESSAGES, {"role": "user", "content": "a"}])
    first = counter.count_chat("gpt-4o", json.loads(wire))
    second = counter.count_chat("gpt-4o", json.loads(wire))
    assert first == second
    stats = counter.cache_stats()
    assert (stats.hits, stats.misses) == (len(COOKBOOK_MESSAGES) + 1, len(COOKBOOK_MESSAGES) + 1)


def test_values_that_differ_only_in_type_never_share_a_count(encodings: Encodings) -> None:
    counter = TokenCounter(encodings)
    fresh = TokenCounter(encodings, cache_size=0)
    spellings: list[JSONValue] = [
        {"role": "user", "content": "7", "name": "x"},
        {"role": "user", "content": [{"type": "text", "text": "7"}], "name": "x"},
        {"role": "user", "content": "7", "name": "x", "tool_call_id": None},
    ]
    for message in spellings:
        assert counter.count_chat("gpt-4o", [message]) == fresh.count_chat("gpt-4o", [message])
    assert counter.cache_stats().size == len(spellings)


def test_a_value_without_a_key_is_counted_uncached(encodings: Encodings) -> None:
    # Library mode may hand the counter objects JSON never produces: counted, not cached.
    class Opaque:
        def __repr__(self) -> str:
            return "opaque"

    counter = TokenCounter(encodings)
    message: JSONValue = {"role": "user", "content": "hello", "extra": Opaque()}  # type: ignore[dict-item]
    assert counter.count_chat("gpt-4o", [message]).tokens > 0
    assert counter.cache_stats().size == 0


def test_the_cache_keys_on_the_rules(counter: TokenCounter) -> None:
    # The same message under another encoding or image rule set must not reuse a count.
    gpt4o = counter.count_chat("gpt-4o", COOKBOOK_MESSAGES)
    gpt4 = counter.count_chat("gpt-4", COOKBOOK_MESSAGES)
    assert (gpt4o.tokens, gpt4.tokens) == (124, 129)
    image: list[JSONValue] = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}]}
    ]
    assert counter.count_chat("gpt-4o-mini", image).tokens - counter.count_chat(
        "gpt-4o", image
    ).tokens == (2833 - 85)


def test_the_cache_is_a_bounded_lru(encodings: Encodings) -> None:
    counter = TokenCounter(encodings, cache_size=3)
    messages: list[JSONValue] = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    for message in messages:
        counter.count_chat("gpt-4o", [message])
    assert counter.cache_stats().size == 3
    counter.count_chat("gpt-4o", [messages[4]])
    assert counter.cache_stats().hits == 1
    counter.count_chat("gpt-4o", [messages[0]])
    assert counter.cache_stats().hits == 1


def test_a_zero_cache_still_counts(encodings: Encodings) -> None:
    counter = TokenCounter(encodings, cache_size=0)
    assert counter.count_chat("gpt-4o", COOKBOOK_MESSAGES).tokens == 124
    assert counter.count_chat("gpt-4o", COOKBOOK_MESSAGES).tokens == 124
    assert counter.cache_stats().size == 0


def test_counting_from_threads(encodings: Encodings) -> None:
    counter = TokenCounter(encodings, cache_size=8)
    errors: list[BaseException] = []
    results: list[int] = []

    def work(seed: int) -> None:
        try:
            for i in range(200):
                message: JSONValue = {"role": "user", "content": f"thread {seed} item {i % 13}"}
                results.append(counter.count_chat("gpt-4o", [*COOKBOOK_MESSAGES, message]).tokens)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(tokens > 124 for tokens in results)


# ---- odd input never raises ----------------------------------------------------------------

KEYS = [
    "role",
    "content",
    "name",
    "type",
    "text",
    "tool_calls",
    "function_call",
    "function",
    "arguments",
    "custom",
    "input",
    "image_url",
    "url",
    "detail",
    "input_audio",
    "data",
    "file",
    "file_data",
    "filename",
    "parameters",
    "properties",
    "description",
    "enum",
    "source",
    "media_type",
    "tool_use_id",
    "summary",
    "output",
    "call_id",
    "input_schema",
    "thinking",
    "refusal",
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "system",
            "user",
            "assistant",
            "tool",
            "function",
            "developer",
            "text",
            "input_text",
            "image_url",
            "input_image",
            "input_audio",
            "file",
            "function_call",
            "function_call_output",
            "reasoning",
            "message",
            "image",
            "document",
            "tool_use",
            "tool_result",
            "search_result",
            "base64",
            "content",
            "low",
            "high",
            "auto",
            "<|endoftext|>",
            data_url(png(4000, 3000)),
            data_url(jpeg(10, 10), "image/jpeg"),
            base64.b64encode(gif(0, 0)).decode(),
            base64.b64encode(b"%PDF-1.4 /Type /Page /Type /Pages").decode(),
            "data:image/png;base64,=====",
            "data:;base64,",
        ]
    )
)


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: hypothesis inspects the source of ``extend`` to check it
    # recurses, and cannot read a multi-line lambda's (a deprecation warning, an error here).
    return st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5
    )


JSON = st.recursive(LEAVES, _nest, max_leaves=25)


@given(
    messages=st.lists(JSON, max_size=4),
    tools=st.none() | st.lists(JSON, max_size=3),
    functions=st.none() | st.lists(JSON, max_size=2),
    tool_choice=JSON,
    model=st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-4", "o3", "x/odd"]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chat_never_raises(
    shared_counter: TokenCounter,
    messages: list[JSONValue],
    tools: list[JSONValue] | None,
    functions: list[JSONValue] | None,
    tool_choice: JSONValue,
    model: str,
) -> None:
    counted = shared_counter.count_chat(model, messages, tools, functions, tool_choice)
    assert counted.tokens >= 0


@given(value=JSON, instructions=st.none() | st.text(max_size=20), tools=st.none() | st.lists(JSON))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_responses_embeddings_and_completions_never_raise(
    shared_counter: TokenCounter,
    value: JSONValue,
    instructions: str | None,
    tools: list[JSONValue] | None,
) -> None:
    assert shared_counter.count_responses("gpt-5", value, instructions, tools).tokens >= 0
    assert shared_counter.count_embeddings("text-embedding-3-small", value).tokens >= 0
    assert shared_counter.count_completions("babbage-002", value, instructions).tokens >= 0
    assert shared_counter.count_text("gpt-4o", value).tokens >= 0  # type: ignore[arg-type]


@given(system=JSON, messages=st.lists(JSON, max_size=4), tools=st.none() | st.lists(JSON))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_anthropic_never_raises(
    shared_counter: TokenCounter,
    system: JSONValue,
    messages: list[JSONValue],
    tools: list[JSONValue] | None,
) -> None:
    counted = shared_counter.count_anthropic("claude-sonnet-4-5", system, messages, tools)
    assert counted.tokens >= 0
    assert not counted.exact


def deep(levels: int) -> Iterator[JSONValue]:
    value: JSONValue = "leaf"
    for _ in range(levels):
        value = {"content": [value]}
    yield value


@pytest.mark.parametrize("levels", [50, 5_000], ids=["deep-50", "deep-5000"])
def test_deep_nesting_never_raises(counter: TokenCounter, levels: int) -> None:
    (value,) = deep(levels)
    message: JSONValue = {"role": "user", "content": [value]}
    assert counter.count_chat("gpt-4o", [message]).tokens > 0
    assert counter.count_anthropic("claude", value, [message]).tokens > 0
    assert counter.count_responses("gpt-4o", [message]).tokens > 0


@given(
    messages=st.lists(JSON, max_size=4),
    items=JSON,
    model=st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4", "o3", "x/odd", "GPT-4O-MINI"]),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_count_from_the_cache_is_the_count_of_the_rules(
    encodings: Encodings, messages: list[JSONValue], items: JSONValue, model: str
) -> None:
    # Counted twice by a caching counter (the second time from its cache, message by message)
    # and by one without a cache: the same counts, and one lookup per message.
    uncached = TokenCounter(encodings, cache_size=0)
    cached = TokenCounter(encodings, cache_size=64)
    for _ in range(2):
        assert cached.count_chat(model, messages) == uncached.count_chat(model, messages)
        assert cached.count_responses(model, items) == uncached.count_responses(model, items)
        assert cached.anthropic_parts(model, items, messages) == uncached.anthropic_parts(
            model, items, messages
        )
    stats = cached.cache_stats()
    units = 2 * len(messages) + (len(items) if isinstance(items, list) else 0)
    units += 0 if is_empty(items) else 1
    assert stats.hits + stats.misses == 2 * units


@given(model=st.text(max_size=30) | st.sampled_from(["gpt-4", "ft:gpt-4o-mini:org:x:1", "o1"]))
def test_a_models_rules_are_remembered_as_worked_out(model: str) -> None:
    # The encoding and image rules of a name, remembered per name, are those of the name.
    assert _model_rules(model) == (encoding_name_for_model(model), image_rules(model))
    assert _model_rules(model) == (encoding_name_for_model(model), image_rules(model))


class _UnitByUnit(TokenCounter):
    """The counter as it was before ``_add_units``: every message and item through ``_unit``
    on its own (the oracle of the batched lookup)."""

    def _add_units(self, tally, prefix, units, rule, text):  # type: ignore[no-untyped-def]
        for unit in units:
            tally.add(*self._unit(prefix, unit, rule, text))


# A few shapes that repeat, so the histories hit, miss and evict in one example.
_REPEATED = st.sampled_from(
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Why does checkout return 503?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {}}]},
        {"role": "tool", "tool_call_id": "c", "content": "CrashLoopBackOff"},
    ]
)


@given(
    turns=st.lists(st.lists(_REPEATED | JSON, max_size=5), min_size=1, max_size=4),
    capacity=st.sampled_from([0, 1, 2, 3, 64]),
    model=st.sampled_from(["gpt-4o", "gpt-4", "o3"]),
    responses=st.booleans(),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batched_cache_lookups_match_unit_by_unit(
    encodings: Encodings,
    turns: list[list[JSONValue]],
    capacity: int,
    model: str,
    responses: bool,
) -> None:
    """Counts, hit and miss counts and the cache's entries in LRU order are what counting
    unit by unit gives, whatever the cache holds and however small it is."""
    batched, oracle = TokenCounter(encodings, capacity), _UnitByUnit(encodings, capacity)
    for messages in turns:
        if responses:
            assert batched.count_responses(model, messages) == oracle.count_responses(
                model, messages
            )
        else:
            assert batched.count_chat(model, messages) == oracle.count_chat(model, messages)
        assert batched.cache_stats() == oracle.cache_stats()
        assert list(batched._cache.items()) == list(oracle._cache.items())
