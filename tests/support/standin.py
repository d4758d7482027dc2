"""Local stand-in for the OpenAI and Anthropic HTTP APIs.

The real providers cannot be reached from the test and benchmark environments, so the
integration tests and the benchmarks point the sidecar (or an official SDK) at this
aiohttp server instead. It answers in the providers' wire formats, exactly as the official
``openai`` and ``anthropic`` SDKs parse them, and it is deterministic.

Endpoints
---------
OpenAI (``Authorization: Bearer <key>`` required, any key accepted):
  ``POST /v1/chat/completions``  (plain and ``stream: true``, ``stream_options.include_usage``)
  ``POST /v1/responses``         (plain and streaming, named SSE events; ``background: true``
                                  answers a queued response without usage)
  ``POST /v1/embeddings``        (``encoding_format`` ``float`` or ``base64``; the SDK
                                  sends ``base64`` unless told otherwise)
  ``POST /v1/completions``       (legacy text completions, plain and ``stream: true``,
                                  ``stream_options.include_usage``, ``n``, ``best_of``, ``echo``)
  ``GET  /v1/models``, ``GET /v1/models/{id}``  (unmetered paths)
Azure OpenAI (``api-key: <key>`` required, any key accepted; answers as OpenAI chat, the
deployment standing in for ``model`` when the body has none):
  ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``
  ``POST /openai/v1/chat/completions``
Anthropic (``x-api-key`` or ``Authorization: Bearer`` required -- anthropic SDK 2.x sends
the key as a bearer token -- and the ``anthropic-version`` header):
  ``POST /v1/messages``          (plain and ``stream: true``)
  ``POST /v1/messages/count_tokens``
  ``GET  /v1/models``            (when the request carries ``anthropic-version``)
Control (never recorded, never subject to the knobs):
  ``GET/POST/DELETE /_standin/config``, ``GET/DELETE /_standin/requests``,
  ``GET /_standin/health``
Any other path answers 404 in the provider's error shape (Anthropic's when the request
carries ``anthropic-version``, OpenAI's otherwise).

Deterministic behaviour
-----------------------
* The answer is ``ANSWER`` ("The stand-in model answers deterministically.", 5 words), or
  ``words`` words cycling through it when the ``words`` knob is set. It is truncated to
  ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` words, and then
  finishes with ``length`` / ``max_tokens`` / status ``incomplete``. A legacy completion
  without ``max_tokens`` is cut at 16 words (OpenAI's default of 16 tokens).
  **Completion tokens = number of words emitted** (+ the ``reasoning_tokens`` knob); a legacy
  completion reports them for all ``max(n, best_of)`` generations of every prompt, as OpenAI
  bills them.
  A tool call costs ``TOOL_CALL_TOKENS + len(arguments_json) // 4`` completion tokens.
* OpenAI chat prompt tokens follow OpenAI's cookbook rules (3 per message, 1 per name,
  3 for priming, plus the cookbook's function-definition rules when tools are offered),
  with tiktoken ``o200k_base`` (gpt-4o/4.1/4.5/5, o-series, unknown models) or
  ``cl100k_base`` (gpt-4, gpt-3.5), loaded offline from
  ``a11i/sidecar/data/encodings/<name>.tiktoken`` (``STANDIN_ENCODINGS_DIR`` overrides the
  directory). Without those files the count falls back to ``len(json text) // 4``.
  Responses input is counted the same way (``instructions`` as a developer message),
  embeddings as the exact token count of each input, a legacy completion's prompt likewise
  (every prompt string encoded, token-id prompts by their length, plus the ``suffix``
  text). Anthropic input tokens are
  ``ceil(len(text) / 4) + 1`` per message, plus ``ceil(len / 4)`` for the system prompt
  and for the JSON of the tools.
* Tools: when the request offers (function) tools, ``tool_choice`` is not ``none`` and the
  last message is a user message that is not a tool result, the answer calls the first
  tool (or the one ``tool_choice`` names) with arguments built from the schema's
  ``required`` properties (placeholder values). After a tool result, the answer is text.

Knobs
-----
Per request through headers ``x-standin-<knob>`` (kebab case), or for all following
requests through ``POST /_standin/config`` (JSON, snake or kebab case; ``"times": N``
limits the setting to the next N provider requests) / ``StandIn.configure(...)``, reset
with ``DELETE /_standin/config`` / ``StandIn.reset_config()``. Each configuration replaces
the previous one; headers win over the configuration field by field. An unknown knob
answers 400 (in the provider's error shape for a header).

  ``delay_ms``            delay before answering
  ``chunk_delay_ms``      delay between stream frames (default: ``StandIn(chunk_delay_s)``)
  ``status``              answer this HTTP status in the provider's error shape
                          (429 rate limit, 500, 529 ``overloaded_error`` for Anthropic, ...)
  ``cut_after``           streaming: abort the connection after N SSE frames (every
                          ``data:`` frame counts, including ``[DONE]``)
  ``no_usage``            omit usage everywhere
  ``cached_tokens``       report N cached prompt tokens (capped at the prompt; for Anthropic
                          as ``cache_read_input_tokens``, taken out of ``input_tokens``)
  ``cache_write_tokens``  report N tokens written to the prompt cache: Anthropic
                          ``cache_creation_input_tokens`` (taken out of ``input_tokens``),
                          OpenAI ``cache_write_tokens`` (part of the prompt tokens)
  ``cache_write_long_tokens``  the part of them written with the long lifetime: Anthropic
                          ``cache_creation.ephemeral_1h_input_tokens`` (the rest 5m), Responses
                          ``cache_write_tokens_details.ttl_12h_tokens`` (the rest 30m)
  ``no_cache_split``      Anthropic: omit ``cache_creation`` (answers before the TTL split)
  ``extra_input_tokens``  add N to the reported prompt tokens (a long prompt, unsent)
  ``reasoning_tokens``    OpenAI: add N reasoning tokens to the output tokens
  ``web_search_requests`` N server-side web searches: Anthropic ``server_tool_use``, Responses
                          N ``web_search_call`` output items
  ``web_fetch_requests``  Anthropic: N server-side web fetches
  ``service_tier``        the tier the answer reports (default: OpenAI echoes a requested
                          flex/priority, else "default"; Anthropic "standard")
  ``inference_geo``       Anthropic: ``usage.inference_geo``
  ``speed``               Anthropic: ``usage.speed``
  ``words``               length of the answer in words (default 5)

Recording
---------
The last ``MAX_RECORDED`` provider requests (every request except ``/_standin/*``, failed
ones included) are kept in ``StandIn.requests`` as ``RecordedRequest`` (method, path,
query, headers with lower-cased names, raw body bytes, parsed JSON or None) and served as
JSON (body as text) by ``GET /_standin/requests``; ``DELETE`` clears them.

Run as a process: ``python -m tests.support.standin --host 127.0.0.1 --port 0`` prints
``listening on http://HOST:PORT`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import random
import signal
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from tests.support.paths import ENCODINGS

__all__ = [
    "ANSWER",
    "MAX_RECORDED",
    "TOOL_CALL_TOKENS",
    "Knobs",
    "RecordedRequest",
    "StandIn",
    "count_anthropic_input_tokens",
    "count_chat_prompt_tokens",
    "count_completion_prompt_tokens",
    "encoding_name_for_model",
]

log = logging.getLogger("tests.support.standin")

ANSWER = "The stand-in model answers deterministically."
_ANSWER_WORDS = ANSWER.split(" ")
MAX_RECORDED = 200
TOOL_CALL_TOKENS = 10
SYSTEM_FINGERPRINT = "fp_standin"

Provider = Literal["openai", "anthropic"]
Json = Any
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(obj: Json) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------
# Tokenisation (independent of sidecar's counter on purpose: this is the cross-check)
# --------------------------------------------------------------------------------------

_PAT_STR = {
    # Copied from tiktoken_ext.openai_public.
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
        r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
_SPECIAL_TOKENS = {
    "cl100k_base": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
    "codex",
)
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "davinci-002", "babbage-002")


def encodings_dir() -> Path:
    """Where the ``<name>.tiktoken`` files are read from."""
    env = os.environ.get("STANDIN_ENCODINGS_DIR")
    if env:
        return Path(env)
    return ENCODINGS


def encoding_name_for_model(model: str) -> str:
    """``o200k_base`` for gpt-4o/4.1/5 and o-series (and unknown models), else cl100k."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


@cache
def _load_encoding(name: str) -> Any | None:
    """Build a tiktoken Encoding from the offline rank file, or None when absent."""
    path = encodings_dir() / f"{name}.tiktoken"
    try:
        import tiktoken

        ranks: dict[bytes, int] = {}
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
        return tiktoken.Encoding(
            name=f"standin_{name}",
            pat_str=_PAT_STR[name],
            mergeable_ranks=ranks,
            special_tokens=_SPECIAL_TOKENS[name],
        )
    except (OSError, ImportError, ValueError) as exc:
        log.warning(
            "stand-in: tiktoken encoding %s unavailable (%s: %s); "
            "falling back to len(json text)//4 token counts",
            name,
            type(exc).__name__,
            exc,
        )
        return None


def encodings_available() -> bool:
    """True when both offline encodings load (so counts follow the cookbook rules)."""
    return all(_load_encoding(n) is not None for n in ("cl100k_base", "o200k_base"))


@lru_cache(maxsize=8192)
def _text_tokens(encoding: str, text: str) -> int:
    enc = _load_encoding(encoding)
    if enc is None:
        return len(text) // 4
    return len(enc.encode_ordinary(text))


def _value_tokens(encoding: str, value: Json) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return _text_tokens(encoding, value)
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += _text_tokens(encoding, part["text"])
            elif isinstance(part, str):
                total += _text_tokens(encoding, part)
            else:
                total += _text_tokens(encoding, _dumps(part))
        return total
    return _text_tokens(encoding, _dumps(value))


def _tools_tokens(encoding: str, tools: list[Json]) -> int:
    """OpenAI cookbook ``num_tokens_for_tools`` (function definitions)."""
    func_init = 7 if encoding == "o200k_base" else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    count = 0
    seen = False
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        seen = True
        count += func_init
        desc = str(fn.get("description") or "").removesuffix(".")
        count += _text_tokens(encoding, f"{fn['name']}:{desc}")
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if isinstance(props, dict) and props:
            count += prop_init
            for key, prop in props.items():
                count += prop_key
                prop = prop if isinstance(prop, dict) else {}
                enum = prop.get("enum")
                if isinstance(enum, list):
                    count += enum_init
                    for item in enum:
                        count += enum_item + _text_tokens(encoding, str(item))
                p_desc = str(prop.get("description") or "").removesuffix(".")
                count += _text_tokens(encoding, f"{key}:{prop.get('type', '')}:{p_desc}")
    return count + func_end if seen else count


def count_chat_prompt_tokens(
    model: str, messages: list[Json], tools: list[Json] | None = None
) -> int:
    """Prompt tokens of a Chat Completions request (cookbook rules, offline tiktoken)."""
    encoding = encoding_name_for_model(model)
    if _load_encoding(encoding) is None:
        text = _dumps(messages) + (_dumps(tools) if tools else "")
        return len(text) // 4
    total = 0
    for message in messages:
        total += 3
        if isinstance(message, dict):
            for key, value in message.items():
                total += _value_tokens(encoding, value)
                if key == "name":
                    total += 1
        else:
            total += _value_tokens(encoding, message)
    total += 3
    if tools:
        total += _tools_tokens(encoding, tools)
    return total


def _completion_prompts(prompt: Json) -> list[str | list[int]] | None:
    """The prompts of a legacy completion (a string or one token-id array is one), or None
    when ``prompt`` has none of OpenAI's four shapes."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(item, str) for item in prompt):
        return list(prompt)
    if all(isinstance(item, int) and not isinstance(item, bool) for item in prompt):
        return [list(prompt)]
    if all(
        isinstance(item, list)
        and item
        and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        for item in prompt
    ):
        return [list(item) for item in prompt]
    return None


def count_completion_prompt_tokens(model: str, prompt: Json, suffix: Json = None) -> int:
    """Prompt tokens of a legacy completion: each prompt string encoded, token-id prompts by
    their length, plus the ``suffix`` text."""
    encoding = encoding_name_for_model(model)
    prompts = _completion_prompts(prompt) or []
    total = sum(len(p) if isinstance(p, list) else _text_tokens(encoding, p) for p in prompts)
    if isinstance(suffix, str):
        total += _text_tokens(encoding, suffix)
    return total


def _responses_as_chat(body: Mapping[str, Json]) -> tuple[list[Json], list[Json]]:
    """Normalise a Responses request to chat-style messages and chat-style tools."""
    messages: list[Json] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "developer", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind == "message" or "role" in item:
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            elif kind == "function_call":
                messages.append(
                    {"role": "assistant", "content": f"{item.get('name')}{item.get('arguments')}"}
                )
            elif kind == "function_call_output":
                messages.append({"role": "tool", "content": item.get("output")})
            else:
                messages.append({"role": "user", "content": _dumps(item)})
    tools = [
        {"function": t}
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    return messages, tools


def _rough(text: str) -> int:
    return (len(text) + 3) // 4


def _anthropic_text(content: Json) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, dict) and block.get("type") == "tool_result":
                parts.append(_anthropic_text(block.get("content")))
            else:
                parts.append(_dumps(block))
        return "".join(parts)
    return "" if content is None else _dumps(content)


def count_anthropic_input_tokens(body: Mapping[str, Json]) -> int:
    """``ceil(len/4) + 1`` per message, plus system prompt and tools JSON (``ceil(len/4)``)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else message
        total += _rough(_anthropic_text(content)) + 1
    if body.get("system"):
        total += _rough(_anthropic_text(body["system"]))
    if body.get("tools"):
        total += _rough(_dumps(body["tools"]))
    return total


# --------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------


def _answer_pieces(words: int | None, limit: Json) -> tuple[list[str], bool]:
    """Stream pieces of the answer (one per word) and whether it was truncated."""
    wanted = len(_ANSWER_WORDS) if words is None else max(words, 0)
    emitted = wanted
    if isinstance(limit, int) and not isinstance(limit, bool):
        emitted = max(min(wanted, limit), 0)
    pieces = [(" " if i else "") + _ANSWER_WORDS[i % len(_ANSWER_WORDS)] for i in range(emitted)]
    return pieces, emitted < wanted


def _placeholder(schema: Json) -> Json:
    if not isinstance(schema, dict):
        return "placeholder"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _placeholder_args(schema)
    if kind == "null":
        return None
    return "placeholder"


def _placeholder_args(schema: Json) -> dict[str, Json]:
    """Arguments with a placeholder for every ``required`` property of a JSON schema."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    if not isinstance(required, list):
        return {}
    return {name: _placeholder(props.get(name)) for name in required if isinstance(name, str)}


def _fragments(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _tool_tokens(arguments: str) -> int:
    return TOOL_CALL_TOKENS + len(arguments) // 4


def _chat_tool(body: Mapping[str, Json]) -> tuple[str, str] | None:
    """(name, arguments JSON) of the tool to call, or None to answer with text."""
    tools = body.get("tools")
    messages = body.get("messages")
    if not tools or not isinstance(tools, list) or not isinstance(messages, list):
        return None
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        if wanted is None or fn["name"] == wanted:
            return fn["name"], _dumps(_placeholder_args(fn.get("parameters")))
    return None


def _responses_tool(body: Mapping[str, Json]) -> tuple[str, str] | None:
    tools = body.get("tools")
    if not tools or not isinstance(tools, list):
        return None
    items = body.get("input")
    if isinstance(items, list):
        last = items[-1] if items else None
        if not isinstance(last, dict):
            return None
        if last.get("type", "message") != "message" or last.get("role", "user") != "user":
            return None
    elif not isinstance(items, str):
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    wanted = choice.get("name") if isinstance(choice, dict) else None
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        if isinstance(tool.get("name"), str) and (wanted is None or tool["name"] == wanted):
            return tool["name"], _dumps(_placeholder_args(tool.get("parameters")))
    return None


def _anthropic_tool(body: Mapping[str, Json]) -> tuple[str, dict[str, Json]] | None:
    tools = body.get("tools")
    messages = body.get("messages")
    if not tools or not isinstance(tools, list) or not isinstance(messages, list):
        return None
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    wanted = choice.get("name") if isinstance(choice, dict) else None
    for tool in tools:
        if not isinstance(tool, dict) or "input_schema" not in tool:
            continue
        if isinstance(tool.get("name"), str) and (wanted is None or tool["name"] == wanted):
            return tool["name"], _placeholder_args(tool["input_schema"])
    return None


@lru_cache(maxsize=512)
def _embedding(seed: str, dims: int) -> bytes:
    """Deterministic unit vector as little-endian float32 bytes (what base64 carries)."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return struct.pack(f"<{dims}f", *(v / norm for v in values))


# --------------------------------------------------------------------------------------
# Knobs and recording
# --------------------------------------------------------------------------------------


class KnobError(ValueError):
    """An unknown knob or a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class Knobs:
    """Failure/shape knobs; see the module docstring."""

    delay_ms: float = 0.0
    chunk_delay_ms: float | None = None
    status: int | None = None
    cut_after: int | None = None
    no_usage: bool = False
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_long_tokens: int = 0
    no_cache_split: bool = False
    extra_input_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    words: int | None = None

    @staticmethod
    def parse(values: Mapping[str, Json]) -> dict[str, Json]:
        """Validated ``field -> value`` overrides from JSON or header-style names."""
        types = {f.name: f.type for f in fields(Knobs)}
        out: dict[str, Json] = {}
        for raw_key, raw in values.items():
            key = raw_key.lower().removeprefix("x-standin-").replace("-", "_")
            if key not in types:
                raise KnobError(f"unknown stand-in knob {raw_key!r}")
            if raw is None:
                out[key] = getattr(_DEFAULT_KNOBS, key)
                continue
            kind = str(types[key])
            try:
                if kind == "bool":
                    if isinstance(raw, str):
                        out[key] = raw.strip().lower() in ("1", "true", "yes", "on")
                    else:
                        out[key] = bool(raw)
                elif "float" in kind:
                    out[key] = float(raw)
                elif "str" in kind:
                    out[key] = str(raw)
                else:
                    out[key] = int(raw)
            except (TypeError, ValueError) as exc:
                raise KnobError(f"bad value for stand-in knob {raw_key!r}: {raw!r}") from exc
        return out


_DEFAULT_KNOBS = Knobs()


@dataclass(slots=True)
class RecordedRequest:
    """One request as it reached the stand-in (header names lower-cased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Json | None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def as_dict(self) -> dict[str, Json]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.text,
            "json": self.json,
        }


# --------------------------------------------------------------------------------------
# Errors in provider shapes
# --------------------------------------------------------------------------------------

_OPENAI_STATUS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (stand-in)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    409: ("invalid_request_error", None, "Conflict (stand-in)."),
    422: ("invalid_request_error", None, "Unprocessable entity (stand-in)."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (stand-in). Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class StandIn:
    """In-process stand-in provider; ``await start()`` returns its base URL."""

    def __init__(self, chunk_delay_s: float = 0.0) -> None:
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[RecordedRequest] = []
        self.config: Knobs = _DEFAULT_KNOBS
        self.config_times: int | None = None
        self.url: str | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 * 1024**2)
        r = self.app.router
        r.add_post("/v1/chat/completions", self._provider("openai", self._chat))
        r.add_post("/v1/responses", self._provider("openai", self._responses))
        r.add_post("/v1/embeddings", self._provider("openai", self._embeddings))
        r.add_post("/v1/completions", self._provider("openai", self._completions))
        r.add_post(
            "/openai/deployments/{deployment}/chat/completions",
            self._provider("openai", self._azure_chat, azure=True),
        )
        r.add_post("/openai/v1/chat/completions", self._provider("openai", self._chat, azure=True))
        r.add_post("/v1/messages", self._provider("anthropic", self._messages))
        r.add_post("/v1/messages/count_tokens", self._provider("anthropic", self._count_tokens))
        r.add_get("/v1/models", self._provider("openai", self._models, sniff=True))
        r.add_get("/v1/models/{model}", self._provider("openai", self._models, sniff=True))
        r.add_get("/_standin/health", self._health)
        r.add_get("/_standin/config", self._get_config)
        r.add_post("/_standin/config", self._post_config)
        r.add_delete("/_standin/config", self._delete_config)
        r.add_get("/_standin/requests", self._get_requests)
        r.add_delete("/_standin/requests", self._delete_requests)
        r.add_route(
            "*",
            "/{tail:.*}",
            self._provider("openai", self._not_found, route_known=False, sniff=True),
        )

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port) and return ``http://host:port``."""
        for name in ("cl100k_base", "o200k_base"):
            _load_encoding(name)  # warm the caches before the first timed request
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = host if host not in ("0.0.0.0", "::", "") else bound_host
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- in-process control ----------------------------------------------------------

    def configure(self, times: int | None = None, **knobs: Json) -> Knobs:
        """Apply knobs to all following requests (or the next ``times`` ones)."""
        self.config = replace(_DEFAULT_KNOBS, **Knobs.parse(knobs))
        self.config_times = times
        return self.config

    def reset_config(self) -> None:
        self.config = _DEFAULT_KNOBS
        self.config_times = None

    def clear_requests(self) -> None:
        self.requests.clear()

    # ---- plumbing --------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}standin{next(self._ids):016d}"

    def _knobs(self, request: web.Request) -> Knobs:
        knobs = self.config
        if self.config_times is not None:
            self.config_times -= 1
            if self.config_times <= 0:
                self.reset_config()
        overrides = {k: v for k, v in request.headers.items() if k.lower().startswith("x-standin-")}
        if overrides:
            knobs = replace(knobs, **Knobs.parse(overrides))
        return knobs

    def _record(self, request: web.Request, body: bytes, parsed: Json | None) -> None:
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, headers, body, parsed
            )
        )
        if len(self.requests) > MAX_RECORDED:
            del self.requests[: len(self.requests) - MAX_RECORDED]

    def _openai_error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return web.json_response(
            body, status=status, headers={"x-request-id": self._next_id("req_")}, dumps=_dumps
        )

    def _anthropic_error(self, status: int, type_: str, message: str) -> web.Response:
        rid = self._next_id("req_")
        body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": rid}
        return web.json_response(body, status=status, headers={"request-id": rid}, dumps=_dumps)

    def _status_error(self, provider: Provider, status: int) -> web.Response:
        if provider == "anthropic":
            type_ = _ANTHROPIC_STATUS.get(status, "api_error")
            if type_ == "overloaded_error":
                message = "Overloaded"
            else:
                message = f"stand-in error {status} ({type_})"
            return self._anthropic_error(status, type_, message)
        type_, code, message = _OPENAI_STATUS.get(
            status,
            ("server_error" if status >= 500 else "invalid_request_error", None, "stand-in error"),
        )
        return self._openai_error(status, message, type_, None, code)

    def _provider(
        self,
        provider: Provider,
        impl: Callable[[web.Request, Json, Knobs, Provider], Awaitable[web.StreamResponse]],
        *,
        route_known: bool = True,
        sniff: bool = False,
        azure: bool = False,
    ) -> _Handler:
        """Wrap an endpoint: record, apply knobs, check auth and JSON, then answer.

        ``sniff``: the path is shared by both providers, so a request carrying
        ``anthropic-version`` is answered as Anthropic.
        """

        async def handler(request: web.Request) -> web.StreamResponse:
            prov: Provider = provider
            if sniff and "anthropic-version" in request.headers:
                prov = "anthropic"
            body = await request.read()
            parsed: Json | None = None
            bad_json = False
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    bad_json = True
            self._record(request, body, parsed)
            try:
                knobs = self._knobs(request)
            except KnobError as exc:
                if prov == "anthropic":
                    return self._anthropic_error(400, "invalid_request_error", str(exc))
                return self._openai_error(400, str(exc))
            if knobs.delay_ms > 0:
                await asyncio.sleep(knobs.delay_ms / 1000)
            if azure and not request.headers.get("api-key"):
                return self._openai_error(
                    401,
                    "Access denied due to missing subscription key. Make sure to include "
                    "subscription key when making requests to an API.",
                    code="401",
                )
            if route_known and not azure:
                denied = self._check_auth(request, prov)
                if denied is not None:
                    return denied
            if knobs.status is not None and knobs.status >= 400:
                return self._status_error(prov, knobs.status)
            if (
                route_known
                and request.method == "POST"
                and (bad_json or not isinstance(parsed, dict))
            ):
                return self._bad_json(prov)
            return await impl(request, parsed, knobs, prov)

        return handler

    def _check_auth(self, request: web.Request, provider: Provider) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        has_bearer = auth.startswith("Bearer ") and bool(auth[7:].strip())
        if provider == "openai":
            if not has_bearer:
                return self._openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code="invalid_api_key",
                )
            return None
        if not has_bearer and not request.headers.get("x-api-key"):
            return self._anthropic_error(
                401, "authentication_error", "x-api-key header is required"
            )
        if not request.headers.get("anthropic-version"):
            return self._anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        return None

    def _bad_json(self, provider: Provider) -> web.Response:
        if provider == "anthropic":
            return self._anthropic_error(
                400,
                "invalid_request_error",
                "There was an issue with your request body: the body is not a valid JSON object",
            )
        return self._openai_error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )

    def _chunk_delay(self, knobs: Knobs) -> float:
        if knobs.chunk_delay_ms is not None:
            return knobs.chunk_delay_ms / 1000
        return self.chunk_delay_s

    async def _stream(
        self,
        request: web.Request,
        frames: list[bytes],
        knobs: Knobs,
        headers: Mapping[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **headers,
            }
        )
        await resp.prepare(request)
        delay = self._chunk_delay(knobs)
        cut = knobs.cut_after
        for i, frame in enumerate(frames):
            if cut is not None and i >= cut:
                # Abort: no terminating chunk, the client sees an incomplete body.
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if i and delay > 0:
                await asyncio.sleep(delay)
            await resp.write(frame)
        await resp.write_eof()
        return resp

    # ---- OpenAI ----------------------------------------------------------------------

    def _openai_missing(self, param: str) -> web.Response:
        if param == "model":
            return self._openai_error(400, "you must provide a model parameter")
        return self._openai_error(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )

    def _chat_usage(self, prompt: int, completion: int, knobs: Knobs) -> dict[str, Json]:
        output = completion + knobs.reasoning_tokens
        prompt += knobs.extra_input_tokens
        cached = min(knobs.cached_tokens, prompt)
        details: dict[str, Json] = {"cached_tokens": cached, "audio_tokens": 0}
        if knobs.cache_write_tokens:
            details["cache_write_tokens"] = min(knobs.cache_write_tokens, prompt - cached)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": details,
            "completion_tokens_details": {
                "reasoning_tokens": knobs.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _openai_tier(body: Mapping[str, Json], knobs: Knobs) -> str:
        """The tier an OpenAI answer reports: the knob, else a requested flex or priority
        (``fast`` is shown as priority), else ``default``."""
        if knobs.service_tier is not None:
            return knobs.service_tier
        asked = body.get("service_tier")
        return {"flex": "flex", "priority": "priority", "fast": "priority"}.get(
            asked if isinstance(asked, str) else "", "default"
        )

    async def _azure_chat(
        self, request: web.Request, body: Json, knobs: Knobs, prov: Provider
    ) -> web.StreamResponse:
        """Azure OpenAI's deployment route: the deployment names the model."""
        if isinstance(body, dict) and not body.get("model"):
            body = {**body, "model": request.match_info["deployment"]}
        return await self._chat(request, body, knobs, prov)

    async def _chat(
        self, request: web.Request, body: Json, knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._openai_missing("model")
        messages = body.get("messages")
        if messages is None:
            return self._openai_missing("messages")
        if not isinstance(messages, list) or not messages:
            return self._openai_error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        prompt = count_chat_prompt_tokens(model, messages, tools)
        call = _chat_tool(body)
        pieces: list[str] = []
        if call is not None:
            completion = _tool_tokens(call[1])
            finish = "tool_calls"
        else:
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            pieces, truncated = _answer_pieces(knobs.words, limit)
            completion = len(pieces)
            finish = "length" if truncated else "stop"
        usage = None if knobs.no_usage else self._chat_usage(prompt, completion, knobs)
        cid = self._next_id("chatcmpl-")
        call_id = self._next_id("call_") if call is not None else ""
        created = int(time.time())
        rid = {"x-request-id": self._next_id("req_")}

        if not body.get("stream"):
            message: dict[str, Json] = {
                "role": "assistant",
                "content": None if call is not None else "".join(pieces),
                "refusal": None,
                "annotations": [],
            }
            if call is not None:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call[0], "arguments": call[1]},
                    }
                ]
            out: dict[str, Json] = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "service_tier": self._openai_tier(body, knobs),
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
            if usage is not None:
                out["usage"] = usage
            return web.json_response(out, headers=rid, dumps=_dumps)

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        prefix = (
            f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
            f'"model":{_dumps(model)},"service_tier":{_dumps(self._openai_tier(body, knobs))},'
            f'"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":'
        )
        tail = ',"usage":null}\n\n' if include_usage else "}\n\n"

        def frame(delta: Json, finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return f"data: {prefix}[{_dumps(choice)}]{tail}".encode()

        frames: list[bytes] = []
        if call is not None:
            first_call = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": call[0], "arguments": ""},
            }
            frames.append(
                frame(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [first_call],
                        "refusal": None,
                    }
                )
            )
            for frag in _fragments(call[1]):
                frames.append(
                    frame({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
                )
        else:
            frames.append(frame({"role": "assistant", "content": "", "refusal": None}))
            frames.extend(frame({"content": piece}) for piece in pieces)
        frames.append(frame({}, finish))
        if include_usage and usage is not None:
            frames.append(f"data: {prefix}[],{_dumps({'usage': usage})[1:]}\n\n".encode())
        frames.append(b"data: [DONE]\n\n")
        return await self._stream(request, frames, knobs, rid)

    async def _completions(
        self, request: web.Request, body: Json, knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        """Legacy text completions: ``max(n, best_of)`` answers per prompt are generated (and
        counted in ``completion_tokens``), ``n`` per prompt returned, indexed prompt-major."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._openai_missing("model")
        if "prompt" not in body:
            return self._openai_missing("prompt")
        prompts = _completion_prompts(body.get("prompt"))
        if prompts is None:
            return self._openai_error(
                400, "'$.prompt' is invalid. Please check the API reference.", param="prompt"
            )
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        asked = body.get("best_of")
        # Absent, best_of is n: n answers generated, n returned.
        best_of = asked if isinstance(asked, int) else n
        if best_of < n:
            return self._openai_error(
                400, "best_of must be greater than or equal to n.", param="best_of"
            )
        if body.get("stream") and isinstance(asked, int) and asked > 1:
            return self._openai_error(
                400, "Cannot stream results with best_of > 1.", param="best_of"
            )
        limit = body.get("max_tokens")
        pieces, truncated = _answer_pieces(knobs.words, 16 if limit is None else limit)
        finish = "length" if truncated else "stop"
        prompt_tokens = count_completion_prompt_tokens(
            model, body.get("prompt"), body.get("suffix")
        )
        completion = len(pieces) * best_of * len(prompts)
        usage: dict[str, Json] | None = None
        if not knobs.no_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            }
        echo = body.get("echo") is True
        texts = [(p if echo and isinstance(p, str) else "") + "".join(pieces) for p in prompts]
        cid = self._next_id("cmpl-")
        created = int(time.time())
        rid = {"x-request-id": self._next_id("req_")}

        if not body.get("stream"):
            out: dict[str, Json] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {
                        "text": text,
                        "index": i * n + j,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                    for i, text in enumerate(texts)
                    for j in range(n)
                ],
            }
            if usage is not None:
                out["usage"] = usage
            return web.json_response(out, headers=rid, dumps=_dumps)

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        prefix = f'{{"id":"{cid}","object":"text_completion","created":{created},"choices":'
        meta = f',"model":{_dumps(model)},"system_fingerprint":"{SYSTEM_FINGERPRINT}"'
        tail = meta + (',"usage":null}\n\n' if include_usage else "}\n\n")

        def frame(index: int, text: str, finish_reason: str | None = None) -> bytes:
            choice = {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            return f"data: {prefix}[{_dumps(choice)}]{tail}".encode()

        frames: list[bytes] = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                index = i * n + j
                if echo and isinstance(prompt, str):
                    frames.append(frame(index, prompt))
                frames.extend(frame(index, piece) for piece in pieces)
                frames.append(frame(index, "", finish))
        if include_usage and usage is not None:
            frames.append(f"data: {prefix}[]{meta},{_dumps({'usage': usage})[1:]}\n\n".encode())
        frames.append(b"data: [DONE]\n\n")
        return await self._stream(request, frames, knobs, rid)

    def _responses_object(
        self,
        body: Mapping[str, Json],
        rid: str,
        created: int,
        status: str,
        output: list[Json],
        usage: Json | None,
        incomplete: bool,
        tier: str = "default",
    ) -> dict[str, Json]:
        text = body.get("text") if isinstance(body.get("text"), dict) else None
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "completed_at": created if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": tier,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": text or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    async def _responses(
        self, request: web.Request, body: Json, knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._openai_error(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        messages, tools = _responses_as_chat(body)
        prompt = count_chat_prompt_tokens(model, messages, tools or None)
        call = _responses_tool(body)
        pieces: list[str] = []
        truncated = False
        if call is not None:
            completion = _tool_tokens(call[1])
        else:
            pieces, truncated = _answer_pieces(knobs.words, body.get("max_output_tokens"))
            completion = len(pieces)
        status = "incomplete" if truncated else "completed"
        output_tokens = completion + knobs.reasoning_tokens
        prompt += knobs.extra_input_tokens
        usage: dict[str, Json] | None = None
        if not knobs.no_usage:
            cached = min(knobs.cached_tokens, prompt)
            written = min(knobs.cache_write_tokens, prompt - cached)
            written_long = min(knobs.cache_write_long_tokens, written)
            input_details: dict[str, Json] = {
                "cached_tokens": cached,
                "cache_write_tokens": written,
            }
            if written:
                input_details["cache_write_tokens_details"] = {
                    "ttl_30m_tokens": written - written_long,
                    "ttl_12h_tokens": written_long,
                }
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": input_details,
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": knobs.reasoning_tokens},
                "total_tokens": prompt + output_tokens,
            }
        resp_id = self._next_id("resp_")
        created = int(time.time())
        headers = {"x-request-id": self._next_id("req_")}
        text = "".join(pieces)
        if call is not None:
            item_id = self._next_id("fc_")
            call_id = self._next_id("call_")
            item: dict[str, Json] = {
                "id": item_id,
                "type": "function_call",
                "status": "completed",
                "arguments": call[1],
                "call_id": call_id,
                "name": call[0],
            }
        else:
            item_id = self._next_id("msg_")
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item = {
                "id": item_id,
                "type": "message",
                "status": status,
                "content": [part],
                "role": "assistant",
            }
        searches: list[Json] = [
            {
                "id": self._next_id("ws_"),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": "a11i", "sources": None},
            }
            for _ in range(knobs.web_search_requests)
        ]
        tier = self._openai_tier(body, knobs)
        final = self._responses_object(
            body, resp_id, created, status, [*searches, item], usage, truncated, tier
        )
        if body.get("background") is True and not body.get("stream"):
            # Background mode: the answer is a queued response; the model runs on, and its
            # usage is read later with GET /v1/responses/{id}.
            queued = self._responses_object(body, resp_id, created, "queued", [], None, False)
            return web.json_response({**queued, "background": True}, headers=headers, dumps=_dumps)
        if not body.get("stream"):
            return web.json_response(final, headers=headers, dumps=_dumps)

        seq = itertools.count()
        frames: list[bytes] = []

        def event(kind: str, **data: Json) -> None:
            payload = {"type": kind, "sequence_number": next(seq), **data}
            frames.append(f"event: {kind}\ndata: {_dumps(payload)}\n\n".encode())

        start = self._responses_object(body, resp_id, created, "in_progress", [], None, False)
        event("response.created", response=start)
        event("response.in_progress", response=start)
        for at, search in enumerate(searches):
            event(
                "response.output_item.added",
                output_index=at,
                item={**search, "status": "in_progress"},
            )
            event("response.output_item.done", output_index=at, item=search)
        at = len(searches)
        if call is not None:
            event(
                "response.output_item.added",
                output_index=at,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for frag in _fragments(call[1]):
                event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=at,
                    delta=frag,
                )
            event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=at,
                name=call[0],
                arguments=call[1],
            )
        else:
            event(
                "response.output_item.added",
                output_index=at,
                item={**item, "status": "in_progress", "content": []},
            )
            empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            loc = {"item_id": item_id, "output_index": at, "content_index": 0}
            event("response.content_part.added", **loc, part=empty_part)
            for piece in pieces:
                event("response.output_text.delta", **loc, delta=piece, logprobs=[])
            event("response.output_text.done", **loc, text=text, logprobs=[])
            event("response.content_part.done", **loc, part={**empty_part, "text": text})
        event("response.output_item.done", output_index=at, item=item)
        event("response.incomplete" if truncated else "response.completed", response=final)
        return await self._stream(request, frames, knobs, headers)

    async def _embeddings(
        self, request: web.Request, body: Json, knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._openai_missing("model")
        raw = body.get("input")
        if raw is None:
            return self._openai_missing("input")
        inputs: list[Json]
        if isinstance(raw, str) or (raw and isinstance(raw, list) and isinstance(raw[0], int)):
            inputs = [raw]
        elif isinstance(raw, list) and raw:
            inputs = raw
        else:
            return self._openai_error(
                400, "'$.input' is invalid. Please check the API reference.", param="input"
            )
        dims = body.get("dimensions")
        if not isinstance(dims, int) or dims <= 0:
            dims = 3072 if "large" in model else 1536
        as_base64 = body.get("encoding_format") == "base64"
        encoding = encoding_name_for_model(model)
        tokens = 0
        data: list[Json] = []
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                tokens += _text_tokens(encoding, item)
                seed = item
            elif isinstance(item, list):
                tokens += len(item)
                seed = _dumps(item)
            else:
                return self._openai_error(
                    400, "'$.input' is invalid. Please check the API reference.", param="input"
                )
            packed = _embedding(seed, dims)
            vector: Json = (
                base64.b64encode(packed).decode()
                if as_base64
                else list(struct.unpack(f"<{dims}f", packed))
            )
            data.append({"object": "embedding", "index": index, "embedding": vector})
        out: dict[str, Json] = {"object": "list", "data": data, "model": model}
        if not knobs.no_usage:
            out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(out, headers={"x-request-id": self._next_id("req_")}, dumps=_dumps)

    async def _models(
        self, request: web.Request, _body: Json, _knobs: Knobs, provider: Provider
    ) -> web.StreamResponse:
        one = request.match_info.get("model")
        if provider == "anthropic":
            names = ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"]
            items = [
                {
                    "type": "model",
                    "id": n,
                    "display_name": n,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for n in ([one] if one else names)
            ]
            if one:
                return web.json_response(items[0], dumps=_dumps)
            listing = {"data": items, "has_more": False, "first_id": names[0], "last_id": names[-1]}
            return web.json_response(listing, dumps=_dumps)
        names = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "text-embedding-3-small"]
        models = [
            {"id": n, "object": "model", "created": 1700000000, "owned_by": "system"}
            for n in ([one] if one else names)
        ]
        if one:
            return web.json_response(models[0], dumps=_dumps)
        return web.json_response({"object": "list", "data": models}, dumps=_dumps)

    async def _not_found(
        self, request: web.Request, _body: Json, _knobs: Knobs, provider: Provider
    ) -> web.StreamResponse:
        if provider == "anthropic":
            return self._anthropic_error(404, "not_found_error", "Not Found")
        return self._openai_error(404, f"Invalid URL ({request.method} {request.path})")

    # ---- Anthropic -------------------------------------------------------------------

    def _anthropic_validate(self, body: Mapping[str, Json], need_max_tokens: bool) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if "messages" not in body:
            return "messages: Field required"
        if not isinstance(body["messages"], list):
            return "messages: Input should be a valid list"
        if need_max_tokens:
            if "max_tokens" not in body:
                return "max_tokens: Field required"
            if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool):
                return "max_tokens: Input should be a valid integer"
        return None

    async def _count_tokens(
        self, request: web.Request, body: Json, _knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        problem = self._anthropic_validate(body, need_max_tokens=False)
        if problem:
            return self._anthropic_error(400, "invalid_request_error", problem)
        return web.json_response({"input_tokens": count_anthropic_input_tokens(body)})

    async def _messages(
        self, request: web.Request, body: Json, knobs: Knobs, _prov: Provider
    ) -> web.StreamResponse:
        problem = self._anthropic_validate(body, need_max_tokens=True)
        if problem:
            return self._anthropic_error(400, "invalid_request_error", problem)
        model: str = body["model"]
        counted = count_anthropic_input_tokens(body)
        cache_read = min(knobs.cached_tokens, counted)
        cache_write = min(knobs.cache_write_tokens, counted - cache_read)
        cache_write_1h = min(knobs.cache_write_long_tokens, cache_write)
        input_tokens = counted - cache_read - cache_write + knobs.extra_input_tokens
        server_tools: dict[str, Json] | None = None
        if knobs.web_search_requests or knobs.web_fetch_requests:
            server_tools = {
                "web_search_requests": knobs.web_search_requests,
                "web_fetch_requests": knobs.web_fetch_requests,
            }
        call = _anthropic_tool(body)
        pieces: list[str] = []
        if call is not None:
            arguments = _dumps(call[1])
            completion = _tool_tokens(arguments)
            stop_reason = "tool_use"
        else:
            arguments = ""
            pieces, truncated = _answer_pieces(knobs.words, body["max_tokens"])
            completion = len(pieces)
            stop_reason = "max_tokens" if truncated else "end_turn"
        msg_id = self._next_id("msg_")
        tool_id = self._next_id("toolu_") if call is not None else ""
        rid = self._next_id("req_")
        headers = {"request-id": rid}

        def usage(output_tokens: int, *, tools: bool = True) -> dict[str, Json]:
            out: dict[str, Json] = {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
                "output_tokens": output_tokens,
                "service_tier": knobs.service_tier or "standard",
            }
            if not knobs.no_cache_split:
                out["cache_creation"] = {
                    "ephemeral_5m_input_tokens": cache_write - cache_write_1h,
                    "ephemeral_1h_input_tokens": cache_write_1h,
                }
            if tools and server_tools is not None:
                out["server_tool_use"] = server_tools
            if knobs.inference_geo is not None:
                out["inference_geo"] = knobs.inference_geo
            if knobs.speed is not None:
                out["speed"] = knobs.speed
            return out

        if not body.get("stream"):
            block: dict[str, Json]
            if call is not None:
                block = {"type": "tool_use", "id": tool_id, "name": call[0], "input": call[1]}
            else:
                block = {"type": "text", "text": "".join(pieces)}
            out: dict[str, Json] = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "stop_reason": stop_reason,
                "stop_sequence": None,
            }
            if not knobs.no_usage:
                out["usage"] = usage(completion)
            return web.json_response(out, headers=headers, dumps=_dumps)

        frames: list[bytes] = []

        def event(kind: str, data: Json) -> None:
            frames.append(f"event: {kind}\ndata: {_dumps(data)}\n\n".encode())

        start: dict[str, Json] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if not knobs.no_usage:
            # The server tools run during the answer: their count comes with message_delta.
            start["usage"] = usage(1, tools=False)
        event("message_start", {"type": "message_start", "message": start})
        if call is not None:
            first: dict[str, Json] = {
                "type": "tool_use",
                "id": tool_id,
                "name": call[0],
                "input": {},
            }
            deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                {"type": "input_json_delta", "partial_json": frag} for frag in _fragments(arguments)
            ]
        else:
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": first},
        )
        event("ping", {"type": "ping"})
        for delta in deltas:
            event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        message_delta: dict[str, Json] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        if not knobs.no_usage:
            delta_usage: dict[str, Json] = {"output_tokens": completion}
            if server_tools is not None:
                delta_usage["server_tool_use"] = server_tools
            message_delta["usage"] = delta_usage
        event("message_delta", message_delta)
        event("message_stop", {"type": "message_stop"})
        return await self._stream(request, frames, knobs, headers)

    # ---- control endpoints -----------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def _config_json(self) -> dict[str, Json]:
        return {**asdict(self.config), "times": self.config_times}

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._config_json())

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(data, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        times = data.pop("times", None)
        try:
            self.configure(times=int(times) if times is not None else None, **data)
        except (KnobError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self._config_json())

    async def _delete_config(self, request: web.Request) -> web.Response:
        self.reset_config()
        return web.json_response(self._config_json())

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.as_dict() for r in self.requests], dumps=_dumps)

    async def _delete_requests(self, request: web.Request) -> web.Response:
        count = len(self.requests)
        self.clear_requests()
        return web.json_response({"deleted": count})


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


async def _serve(host: str, port: int, chunk_delay_s: float) -> None:
    standin = StandIn(chunk_delay_s=chunk_delay_s)
    url = await standin.start(host, port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.standin",
        description="Local stand-in for the OpenAI and Anthropic HTTP APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="default delay between stream frames"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args.host, args.port, args.chunk_delay_ms / 1000))


if __name__ == "__main__":
    main()
