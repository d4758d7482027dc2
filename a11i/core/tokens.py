"""Token counting of request bodies: exact where OpenAI published the rules, estimated elsewhere.

Pure: no file, network or environment access, no logging, no clock. The tiktoken encodings are
handed in already loaded (``a11i.sidecar.encodings.load_encodings``); without one, the counts fall
back to a character estimate and say so (``TokenCount.exact`` is False). The counter never
raises on odd input: the proxy validates bodies elsewhere, and whatever gets through is counted
by its JSON text rather than crashing the metering of a call.

What is exact (``TokenCount.exact`` True), and why:

* OpenAI chat messages made of ``role``, string ``content`` (or text parts), ``name`` and any
  other string field: tiktoken with the model's encoding plus OpenAI's published accounting
  (cookbook "How to count tokens with tiktoken", ``num_tokens_from_messages``): 3 tokens per
  message, 1 per ``name``, 3 to prime the reply. OpenAI verified these against the API for
  gpt-3.5-turbo, gpt-4, gpt-4o and gpt-4o-mini; newer models on ``o200k_base`` (gpt-4.1, gpt-5,
  the o-series) are assumed to keep the same chat format. Several text parts in one message are
  assumed to be concatenated.
* OpenAI tool and function definitions of the shape the cookbook verified
  (``num_tokens_for_tools``): a name, a description, and flat properties with a string ``type``,
  a ``description`` and optionally an ``enum`` of strings; ``required``, ``additionalProperties``
  and ``strict`` are ignored as the cookbook does. Constants: ``func_init`` 7 on o200k models and
  10 on cl100k models, ``prop_init`` 3, ``prop_key`` 3, ``enum_init`` -3, ``enum_item`` 3,
  ``func_end`` 12. The cookbook verified them with a system message present.
* Embeddings inputs: the encoded length of every input, token-id inputs as given.
* ``count_text``: the encoded length of a text, with no overhead.

What is an estimate (``exact`` False):

* Images (OpenAI's documented tile or patch formulas when the detail and the size are known from
  a data URL's header, else the model's low-detail cost), audio and files.
* Assistant ``tool_calls`` and legacy ``function_call`` (name + arguments + 3 per call),
  ``role: tool``/``function`` messages (every string field, ``tool_call_id`` included), a forced
  ``tool_choice``, nested or incomplete tool schemas (their extra JSON text), tools without a
  system message (+4, the implicit system message): OpenAI published no rules for these; the
  constants come from empirical work (hmarr/openai-chat-tokens) and err on the high side.
* Every OpenAI Responses API count (no published rules: the chat rules applied to the items).
* Every Anthropic count: Anthropic publishes no tokenizer. Text is counted with ``cl100k_base``
  and multiplied by ``ANTHROPIC_TEXT_FACTOR``; images use Anthropic's ``width*height/750``.
* Anything counted without its encoding: ``ceil(len(text) / 4)``, overheads kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Final, Protocol

from a11i.core.model import JSONObject, JSONValue, TokenCount

CL100K_BASE: Final = "cl100k_base"
O200K_BASE: Final = "o200k_base"
#: Every encoding the counter uses; ``Encodings.missing`` lists those not loaded.
ENCODING_NAMES: Final = (CL100K_BASE, O200K_BASE)

#: Default capacity of the per-message cache (entries, not bytes: an entry is ~200 bytes).
DEFAULT_CACHE_SIZE: Final = 65_536

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

#: Claude's tokenizer yields more tokens than cl100k_base for the same English text (about 10-20%
#: in published comparisons). The projection should err high: the settled cost always comes from
#: the provider's reported usage, so an overestimate only makes a near-empty budget stricter.
ANTHROPIC_TEXT_FACTOR: Final = 1.2
ANTHROPIC_TOKENS_PER_MESSAGE: Final = 4
ANTHROPIC_REQUEST_OVERHEAD: Final = 4
#: Anthropic's documented tool-use system prompt for tool_choice auto (Claude 3.7/4 models).
ANTHROPIC_TOOL_SYSTEM_PROMPT: Final = 346
#: Anthropic: images are scaled to at most ~1.15 megapixels, about 1,600 tokens.
ANTHROPIC_IMAGE_MAX_TOKENS: Final = 1_600
ANTHROPIC_IMAGE_MAX_PIXELS: Final = 1_150_000
ANTHROPIC_IMAGE_MAX_EDGE: Final = 1_568
#: Anthropic: "each page typically uses 1,500-3,000 text tokens" plus its image; the upper end.
ANTHROPIC_PDF_PAGE_TOKENS: Final = 3_000

#: Characters per token when no encoding is available (OpenAI's rule of thumb for English).
CHARS_PER_TOKEN: Final = 4
#: Audio in a request: about 10 tokens a second, at the 16 kB/s of a 128 kbit/s encoding (a WAV
#: at 32 kB/s is then overestimated two-fold, which errs on the safe side).
AUDIO_TOKENS_PER_SECOND: Final = 10
AUDIO_BYTES_PER_SECOND: Final = 16_000
#: A file referenced by id only: its content is unknown.
UNKNOWN_FILE_TOKENS: Final = 1_000

# Only the first bytes of a data URL are decoded to read an image's size from its header.
_IMAGE_HEADER_CHARS: Final = 65_536
# Cookbook tools: keys that carry no tokens of their own in the verified shape.
_SCHEMA_KEYS_IGNORED: Final = frozenset({"type", "properties", "required", "additionalProperties"})
_FUNCTION_KEYS_COUNTED: Final = frozenset({"name", "description", "parameters", "strict"})
_PROPERTY_KEYS_COUNTED: Final = frozenset({"type", "description", "enum"})


class Encoder(Protocol):
    """What the counter needs of a ``tiktoken.Encoding``: its name and ``encode_ordinary``."""

    @property
    def name(self) -> str: ...

    def encode_ordinary(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Encodings:
    """The encodings loaded at start, immutable; ``missing`` names those that could not be.

    ``problems`` says why each missing encoding is missing (for logs and the readiness answer).
    """

    available: Mapping[str, Encoder] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copies behind read-only views: the loader's dicts cannot change what the counter sees.
        object.__setattr__(self, "available", MappingProxyType(dict(self.available)))
        object.__setattr__(self, "problems", MappingProxyType(dict(self.problems)))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in ENCODING_NAMES if name not in self.available)

    def get(self, name: str) -> Encoder | None:
        return self.available.get(name)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Per-message cache statistics: a hit is a message (or tool list) not tokenized again."""

    hits: int
    misses: int
    size: int
    capacity: int


# --------------------------------------------------------------------------------------------
# Models


def _bare_model(model: object) -> str:
    """The model name without provider prefixes ("openai/", "azure/eu/") or fine-tune wrapping."""
    if not isinstance(model, str):
        return ""
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        # ft:gpt-4o-mini-2024-07-18:org:suffix:id
        name = name[3:].split(":", 1)[0]
    return name


_CL100K_MODEL: Final = re.compile(
    r"gpt-4(?:-.*)?|gpt-3\.5.*|gpt-35.*|text-embedding-ada-002.*|text-embedding-3-.*"
    r"|davinci-002|babbage-002"
)


def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding of an OpenAI model: ``o200k_base`` for gpt-4o and everything newer
    (gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4, chatgpt-4o, gpt-oss, unknown future names),
    ``cl100k_base`` for gpt-4 (not 4o), gpt-3.5-turbo and the embedding models."""
    return CL100K_BASE if _CL100K_MODEL.fullmatch(_bare_model(model)) else O200K_BASE


@dataclass(frozen=True, slots=True)
class _ToolRules:
    """The cookbook's ``num_tokens_for_tools`` constants for one model generation."""

    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


_TOOLS_O200K: Final = _ToolRules(
    func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12
)
_TOOLS_CL100K: Final = _ToolRules(
    func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12
)


@dataclass(frozen=True, slots=True)
class _ImageRules:
    """OpenAI's image accounting for a model family (vision guide, "Calculating costs").

    Tile models: ``base`` at low detail; at high detail the image is fit into 2048x2048, its
    short side scaled to 768, and every 512px tile costs ``per_tile`` more. Patch models: the
    32px patches (at most 1,536) times ``multiplier``.
    """

    key: str
    base: int = 85
    per_tile: int = 170
    multiplier: float | None = None


_IMAGES_DEFAULT: Final = _ImageRules("4o")
_IMAGE_FAMILIES: Final = (
    ("gpt-4o-mini", _ImageRules("4o-mini", base=2_833, per_tile=5_667)),
    ("gpt-4.1-mini", _ImageRules("4.1-mini", multiplier=1.62)),
    ("gpt-4.1-nano", _ImageRules("4.1-nano", multiplier=2.46)),
    ("gpt-5-mini", _ImageRules("5-mini", multiplier=1.62)),
    ("gpt-5-nano", _ImageRules("5-nano", multiplier=2.46)),
    ("o4-mini", _ImageRules("o4-mini", multiplier=1.72)),
    ("gpt-5", _ImageRules("5", base=70, per_tile=140)),
    ("o1", _ImageRules("o1", base=75, per_tile=150)),
    ("o3", _ImageRules("o3", base=75, per_tile=150)),
)


def _image_rules(model: str) -> _ImageRules:
    bare = _bare_model(model)
    for prefix, rules in _IMAGE_FAMILIES:
        if bare.startswith(prefix):
            return rules
    return _IMAGES_DEFAULT


# --------------------------------------------------------------------------------------------
# Images


def openai_image_tokens(model: str, width: int | None, height: int | None, detail: str) -> int:
    """OpenAI's documented image cost for ``model``; the low-detail cost when the size is
    unknown (an http URL: the counter never fetches it)."""
    return _openai_image(_image_rules(model), width, height, detail)


def _openai_image(rules: _ImageRules, width: int | None, height: int | None, detail: str) -> int:
    known = width is not None and height is not None and width > 0 and height > 0
    if rules.multiplier is not None:
        if not known or width is None or height is None:
            width = height = 512
        return math.ceil(_patches(width, height) * rules.multiplier)
    if detail == "low" or not known or width is None or height is None:
        return rules.base
    # "auto" is counted as "high": the API picks by size, and the projection should err high.
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return rules.base + rules.per_tile * tiles


def _patches(width: int, height: int, budget: int = 1_536) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches <= budget:
        return patches
    shrink = math.sqrt(32 * 32 * budget / (width * height))
    across, down = width * shrink / 32, height * shrink / 32
    shrink *= min(math.floor(across) / across, math.floor(down) / down)
    return math.ceil(int(width * shrink) / 32) * math.ceil(int(height * shrink) / 32)


def _anthropic_image(width: int | None, height: int | None) -> int:
    if not width or not height or width <= 0 or height <= 0:
        return ANTHROPIC_IMAGE_MAX_TOKENS
    scale = min(
        1.0,
        ANTHROPIC_IMAGE_MAX_EDGE / max(width, height),
        math.sqrt(ANTHROPIC_IMAGE_MAX_PIXELS / (width * height)),
    )
    return min(math.ceil(width * height * scale * scale / 750), ANTHROPIC_IMAGE_MAX_TOKENS)


def _decode_prefix(data: str, chars: int = _IMAGE_HEADER_CHARS) -> bytes:
    """The first bytes of a base64 payload (invalid base64 gives no bytes)."""
    head = "".join(data[: chars + chars // 16].split())[:chars]
    head = head[: len(head) - len(head) % 4]
    try:
        return base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _data_url_payload(url: str) -> str | None:
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    return payload if sep and header.endswith(";base64") else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header, or None."""
    try:
        return _image_size(data)
    except (struct.error, IndexError, ValueError):
        return None


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:4] == b"GIF8":
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return (
                int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1,
            )
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the segments to the first start-of-frame marker (SOF0-SOF15 but DHT, JPG and DAC).
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        i += 2 + int(length)
    return None


def _base64_size(payload: str) -> int:
    """Decoded byte size of a base64 payload, without decoding it."""
    return len(payload) * 3 // 4


# --------------------------------------------------------------------------------------------
# Tallies


class _Tally:
    """A running count and whether every part of it is exact."""

    __slots__ = ("exact", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.exact = True

    def add(self, tokens: int, exact: bool = True) -> None:
        self.tokens += tokens
        if not exact:
            self.exact = False


class _Text:
    """Counts text with one encoding, or estimates it by characters when the encoding is missing.

    One instance per counting call: ``cuts`` records texts that had to be cut where a token may
    straddle the cut (see ``chunked_count``), which makes the call's count an estimate.
    """

    __slots__ = ("cuts", "encoder", "name")

    def __init__(self, name: str, encoder: Encoder | None) -> None:
        self.name = name
        self.encoder = encoder
        self.cuts = 0

    @property
    def exact(self) -> bool:
        return self.encoder is not None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self.encoder is None:
            return -(-len(text) // CHARS_PER_TOKEN)
        tokens, exact = chunked_count(self.encoder, text)
        if not exact:
            self.cuts += 1
        return tokens

    def json(self, value: object) -> int:
        """Tokens of a value's compact JSON text: the fallback for shapes without a rule."""
        if isinstance(value, str):
            return self.count(value)
        text = _json_text(value)
        if text is None:
            return -(-_approximate_chars(value) // CHARS_PER_TOKEN)
        return self.count(text)


# tiktoken splits text with a regex into pieces and encodes each piece on its own; its cost grows
# faster than linearly with a piece's length, and its regex engine gives up (a Rust panic that
# no ``except Exception`` catches) on whitespace runs of ~1M characters. Long texts are therefore
# encoded in chunks cut only where every encoding's regex splits anyway, so the sum is exact:
# after a newline followed by an ASCII letter or digit (no piece spans a newline into a letter or
# a digit: letter pieces never start with a newline, punctuation pieces only end with them), and
# before a space between two ASCII letters (a letter piece ends at its last letter; " x" starts
# the next one). Only a run of CHUNK_LIMIT characters without any such point is cut blindly.
CHUNK_TARGET: Final = 32_768
CHUNK_LIMIT: Final = 65_536
_SAFE_CUT: Final = re.compile(r"(?<=\n)(?=[A-Za-z0-9])|(?<=[A-Za-z])(?= [A-Za-z])")


def chunked_count(
    encoder: Encoder, text: str, *, target: int = CHUNK_TARGET, limit: int = CHUNK_LIMIT
) -> tuple[int, bool]:
    """The token count of ``text`` and whether it is exact (False only after a blind cut)."""
    if len(text) <= limit:
        return len(encoder.encode_ordinary(text)), True
    total, exact, start = 0, True, 0
    while len(text) - start > limit:
        found = _SAFE_CUT.search(text, start + target, start + limit + 2)
        if found is not None and found.start() <= start + limit:
            cut = found.start()
        else:
            cut, exact = start + limit, False
        total += len(encoder.encode_ordinary(text[start:cut]))
        start = cut
    return total + len(encoder.encode_ordinary(text[start:])), exact


def _json_text(value: object) -> str | None:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        return None


def _approximate_chars(value: object) -> int:
    """A size for values JSON cannot render (too deep, odd keys), walked without recursion."""
    total, stack, seen = 0, [value], 0
    while stack and seen < 1_000_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            total += sum(len(str(key)) for key in item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            total += len(repr(item))
    return total


def _digest(value: object) -> bytes | None:
    """A collision-resistant key of a value's canonical JSON, or None if it has none."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        return None
    # ensure_ascii (the default) makes the text ASCII, lone surrogates included.
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()


def _str(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def _empty(value: JSONValue) -> bool:
    return value is None or (isinstance(value, list | dict | str) and len(value) == 0)


# --------------------------------------------------------------------------------------------
# The counter


class TokenCounter:
    """Counts the input tokens of OpenAI and Anthropic requests (see the module docstring for what
    is exact). Thread-safe: the per-message cache is guarded by a lock, so large bodies may be
    counted on worker threads."""

    def __init__(self, encodings: Encodings, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.encodings = encodings
        self._capacity = max(int(cache_size), 0)
        self._cache: OrderedDict[tuple[str, bytes], tuple[int, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def missing_encodings(self) -> tuple[str, ...]:
        return self.encodings.missing

    def cache_stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._cache), self._capacity)

    # ---- public counts -------------------------------------------------------------------

    def count_text(self, model: str, text: str) -> TokenCount:
        """Tokens of a plain text (a streamed completion), no overhead."""
        counter = self._text_for(model)
        if not isinstance(text, str):
            return TokenCount(counter.json(text), exact=False)
        tokens = counter.count(text)
        return TokenCount(tokens, exact=counter.exact and counter.cuts == 0)

    def count_chat(
        self,
        model: str,
        messages: Sequence[JSONValue],
        tools: Sequence[JSONValue] | None = None,
        functions: Sequence[JSONValue] | None = None,
        tool_choice: JSONValue = None,
    ) -> TokenCount:
        """Prompt tokens of a chat completions request, as the API reports ``prompt_tokens``."""
        text = self._text_for(model)
        images = _image_rules(model)
        tally = _Tally()
        tally.exact = text.exact
        message_list = _as_list(messages, tally, text)
        prefix = f"chat/{text.name}/{images.key}"
        for message in message_list:
            tally.add(
                *self._cached(prefix, message, partial(_chat_message, message, text, images), text)
            )
        tally.add(REPLY_PRIMING)
        tool_list = _as_list(tools, tally, text)
        function_list = _as_list(functions, tally, text)
        if tool_list or function_list:
            tally.add(*self._tools(text, tool_list, function_list))
            if not any(_is_system(message) for message in message_list):
                tally.add(IMPLICIT_SYSTEM_TOKENS, exact=False)
        _tool_choice(tally, text, tool_choice)
        return _finish(tally, text)

    def count_responses(
        self,
        model: str,
        input: JSONValue,
        instructions: str | None = None,
        tools: Sequence[JSONValue] | None = None,
    ) -> TokenCount:
        """Input tokens of a Responses API request. Always an estimate: OpenAI published no rules
        for it, so the chat rules are applied to the input items."""
        text = self._text_for(model)
        images = _image_rules(model)
        tally = _Tally()
        tally.exact = False
        if isinstance(instructions, str) and instructions:
            tally.add(TOKENS_PER_MESSAGE + text.count("system") + text.count(instructions))
        if isinstance(input, str):
            tally.add(TOKENS_PER_MESSAGE + text.count("user") + text.count(input))
        elif isinstance(input, list):
            prefix = f"responses/{text.name}/{images.key}"
            for item in input:
                tally.add(
                    *self._cached(prefix, item, partial(_responses_item, item, text, images), text)
                )
        elif input is not None:
            tally.add(text.json(input))
        tally.add(REPLY_PRIMING)
        tool_list = _as_list(tools, tally, text)
        if tool_list:
            tally.add(*self._tools(text, tool_list, []))
        return _finish(tally, text)

    def count_embeddings(self, model: str, input: JSONValue) -> TokenCount:
        """Tokens of an embeddings input: a string, strings, token ids or lists of token ids."""
        text = self._text_for(model)
        tally = _Tally()
        tally.exact = text.exact
        if isinstance(input, str):
            tally.add(text.count(input))
        elif isinstance(input, list):
            for item in input:
                if isinstance(item, str):
                    tally.add(text.count(item))
                elif _is_token_id(item):
                    tally.add(1)
                elif isinstance(item, list) and all(_is_token_id(i) for i in item):
                    tally.add(len(item))
                else:
                    tally.add(text.json(item), exact=False)
        elif input is not None:
            tally.add(text.json(input), exact=False)
        return _finish(tally, text)

    def count_anthropic(
        self,
        model: str,
        system: JSONValue,
        messages: Sequence[JSONValue],
        tools: Sequence[JSONValue] | None = None,
    ) -> TokenCount:
        """Input tokens of an Anthropic messages request. Always an estimate: ``cl100k_base``
        text counts times ``ANTHROPIC_TEXT_FACTOR``, plus overheads and image estimates."""
        text = self._text_for_encoding(CL100K_BASE)
        tally = _Tally()
        tally.add(ANTHROPIC_REQUEST_OVERHEAD, exact=False)
        if not _empty(system):
            tally.add(
                *self._cached(
                    "anthropic/system", system, partial(_anthropic_system, system, text), text
                )
            )
        for message in _as_list(messages, tally, text):
            tally.add(
                *self._cached(
                    "anthropic", message, partial(_anthropic_message, message, text), text
                )
            )
        tool_list = _as_list(tools, tally, text)
        if tool_list:
            tally.add(
                *self._cached(
                    "anthropic/tools", tool_list, partial(_anthropic_tools, tool_list, text), text
                )
            )
        return _finish(tally, text)

    # ---- caching -------------------------------------------------------------------------

    def _text_for(self, model: str) -> _Text:
        return self._text_for_encoding(encoding_name_for_model(model))

    def _text_for_encoding(self, name: str) -> _Text:
        return _Text(name, self.encodings.get(name))

    def _tools(
        self, text: _Text, tools: list[JSONValue], functions: list[JSONValue]
    ) -> tuple[int, bool]:
        """All tool definitions of a request, cached as one unit."""
        rules = _TOOLS_CL100K if text.name == CL100K_BASE else _TOOLS_O200K
        unit: JSONObject = {"tools": tools, "functions": functions}
        rule = partial(_openai_tools, text, rules, tools, functions)
        return self._cached(f"tools/{text.name}/{rules.func_init}", unit, rule, text)

    def _cached(
        self, prefix: str, unit: JSONValue, rule: Callable[[], _Tally], text: _Text
    ) -> tuple[int, bool]:
        """The count of one unit (a message, an item, the tools) by the hash of its canonical
        JSON, so a history re-sent every turn is tokenized once. The prefix names the rules and
        the encoding: the same message counts differently under another model's rules."""
        digest = _digest(unit)
        # Interned: 65,536 keys share a handful of prefix strings.
        key = (sys.intern(prefix), digest) if digest is not None else None
        if key is not None:
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    self._hits += 1
                    return found
                self._misses += 1
        cuts = text.cuts
        tokens, exact = _guarded(rule, unit)
        value = (tokens, exact and text.exact and text.cuts == cuts)
        if key is not None and self._capacity:
            with self._lock:
                self._cache[key] = value
                self._cache.move_to_end(key)
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        return value


def _finish(tally: _Tally, text: _Text) -> TokenCount:
    return TokenCount(max(tally.tokens, 0), exact=tally.exact and text.exact and text.cuts == 0)


def _guarded(rule: Callable[[], _Tally], unit: JSONValue) -> tuple[int, bool]:
    """Runs one counting rule. A rule that trips on an unforeseen shape, or on nesting deeper
    than the interpreter's recursion limit, degrades to a character estimate: never raises."""
    try:
        tally = rule()
    except (
        RecursionError,
        ArithmeticError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
    ):
        return -(-_approximate_chars(unit) // CHARS_PER_TOKEN), False
    return tally.tokens, tally.exact


def _is_token_id(value: JSONValue) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(value: object, tally: _Tally, text: _Text) -> list[JSONValue]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    # Validated elsewhere; count what came rather than fail.
    tally.add(text.json(value), exact=False)
    return []


def _is_system(message: JSONValue) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "developer")


def _tool_choice(tally: _Tally, text: _Text, choice: JSONValue) -> None:
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


# --------------------------------------------------------------------------------------------
# Units: one message, item or system prompt


def _chat_message(message: JSONValue, text: _Text, images: _ImageRules) -> _Tally:
    tally = _Tally()
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
            _content(tally, text, images, value)
        elif key == "tool_calls":
            _tool_calls(tally, text, value)
        elif key == "function_call":
            _one_call(tally, text, value)
        elif isinstance(value, str):
            tally.add(text.count(value))
            if key == "name":
                tally.add(TOKENS_PER_NAME)
        elif _empty(value):
            # SDKs echo assistant messages back with "refusal": null, "annotations": [].
            continue
        else:
            tally.add(text.json(value), exact=False)
    return tally


def _content(tally: _Tally, text: _Text, images: _ImageRules, content: JSONValue) -> None:
    if isinstance(content, str):
        tally.add(text.count(content))
    elif isinstance(content, list):
        for part in content:
            _part(tally, text, images, part)
    elif content is not None:
        tally.add(text.json(content), exact=False)


def _part(tally: _Tally, text: _Text, images: _ImageRules, part: JSONValue) -> None:
    """One content part of a chat message or a Responses item."""
    if isinstance(part, str):
        tally.add(text.count(part), exact=False)
        return
    if not isinstance(part, dict):
        tally.add(text.json(part), exact=False)
        return
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
        tally.add(text.count(_str(part.get("text")) or ""))
    elif kind == "refusal" and isinstance(part.get("refusal"), str):
        tally.add(text.count(_str(part.get("refusal")) or ""))
    elif kind in ("image_url", "input_image"):
        tally.add(_openai_image_part(images, part), exact=False)
    elif kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        seconds = _base64_size(data) / AUDIO_BYTES_PER_SECOND if isinstance(data, str) else 0
        tally.add(math.ceil(seconds * AUDIO_TOKENS_PER_SECOND), exact=False)
    elif kind in ("file", "input_file"):
        tally.add(_openai_file_part(text, part), exact=False)
    else:
        tally.add(text.json(part), exact=False)


def _openai_image_part(images: _ImageRules, part: JSONObject) -> int:
    # Chat: {"image_url": {"url", "detail"}} (or a bare URL string); Responses: {"image_url",
    # "detail"} or {"file_id"}.
    spec = part.get("image_url")
    detail = part.get("detail")
    url = spec
    if isinstance(spec, dict):
        url = spec.get("url")
        detail = spec.get("detail", detail)
    width = height = None
    payload = _data_url_payload(url) if isinstance(url, str) else None
    if payload is not None:
        size = image_size(_decode_prefix(payload))
        if size is not None:
            width, height = size
    return _openai_image(images, width, height, detail if isinstance(detail, str) else "auto")


def _openai_file_part(text: _Text, part: JSONObject) -> int:
    spec = part.get("file")
    file = spec if isinstance(spec, dict) else part
    tokens = 0
    name = file.get("filename")
    if isinstance(name, str):
        tokens += text.count(name)
    data = file.get("file_data")
    if isinstance(data, str):
        # A PDF's pages become text and images; its size is the only thing known here.
        payload = _data_url_payload(data) or data
        tokens += -(-_base64_size(payload) // CHARS_PER_TOKEN)
    else:
        tokens += UNKNOWN_FILE_TOKENS
    return tokens


def _tool_calls(tally: _Tally, text: _Text, calls: JSONValue) -> None:
    if not isinstance(calls, list):
        tally.add(text.json(calls), exact=False)
        return
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("function") or call.get("custom"), dict):
            _one_call(tally, text, call.get("function") or call.get("custom"))
        else:
            tally.add(TOKENS_PER_TOOL_CALL + text.json(call), exact=False)


def _one_call(tally: _Tally, text: _Text, call: JSONValue) -> None:
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


def _openai_tools(
    text: _Text, rules: _ToolRules, tools: list[JSONValue], functions: list[JSONValue]
) -> _Tally:
    """Tool definitions by the cookbook's ``num_tokens_for_tools``; shapes it did not verify add
    their JSON text and make the count an estimate."""
    tally = _Tally()
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


def _function_definition(
    tally: _Tally, text: _Text, rules: _ToolRules, function: JSONObject
) -> None:
    tally.add(rules.func_init)
    name = function.get("name")
    description = function.get("description")
    if not isinstance(name, str) or not isinstance(description, str):
        tally.exact = False
    line = f"{_str(name) or ''}:{_strip_period(_str(description) or '')}"
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


def _property(tally: _Tally, text: _Text, rules: _ToolRules, key: str, prop: JSONObject) -> None:
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
    type_text = p_type if isinstance(p_type, str) else (_json_text(p_type) or "")
    if p_type is None:
        type_text = ""
    tally.add(text.count(f"{key}:{type_text}:{_strip_period(_str(p_description) or '')}"))
    extras = {k: v for k, v in prop.items() if k not in _PROPERTY_KEYS_COUNTED}
    if extras:
        # Nested objects, arrays, anyOf, defaults...: rendered by rules OpenAI did not publish.
        tally.add(text.json(extras), exact=False)


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


# ---- Responses API ---------------------------------------------------------------------------


def _responses_item(item: JSONValue, text: _Text, images: _ImageRules) -> _Tally:
    tally = _Tally()
    tally.exact = False
    if isinstance(item, str):
        tally.add(TOKENS_PER_MESSAGE + text.count("user") + text.count(item))
        return tally
    if not isinstance(item, dict):
        tally.add(TOKENS_PER_MESSAGE + text.json(item))
        return tally
    kind = item.get("type", "message")
    if kind == "message" or (kind is None and "role" in item):
        tally.add(TOKENS_PER_MESSAGE)
        role = item.get("role")
        tally.add(text.count(role) if isinstance(role, str) else 0)
        name = item.get("name")
        if isinstance(name, str):
            tally.add(text.count(name) + TOKENS_PER_NAME)
        _content(tally, text, images, item.get("content"))
    elif kind in ("function_call", "custom_tool_call"):
        tally.add(TOKENS_PER_MESSAGE + text.count("assistant"))
        _one_call(tally, text, item)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        tally.add(TOKENS_PER_MESSAGE + text.count("tool"))
        output = item.get("output")
        call_id = item.get("call_id")
        if isinstance(call_id, str):
            tally.add(text.count(call_id))
        _content(tally, text, images, output)
    elif kind == "reasoning":
        # Earlier reasoning passed back: its summary text (the encrypted content is opaque).
        summary = item.get("summary")
        if isinstance(summary, list):
            for part in summary:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    tally.add(text.count(_str(part.get("text")) or ""))
    else:
        tally.add(TOKENS_PER_MESSAGE + text.json(item))
    return tally


# ---- Anthropic -------------------------------------------------------------------------------


class _Claude:
    """Anthropic counts: cl100k text scaled by the factor at the end; images and overheads not."""

    __slots__ = ("fixed", "text", "text_tokens")

    def __init__(self, text: _Text) -> None:
        self.text = text
        self.text_tokens = 0
        self.fixed = 0

    def add_text(self, value: str) -> None:
        self.text_tokens += self.text.count(value)

    def add_json(self, value: JSONValue) -> None:
        self.text_tokens += self.text.json(value)

    def tally(self) -> _Tally:
        tally = _Tally()
        tally.add(math.ceil(self.text_tokens * ANTHROPIC_TEXT_FACTOR) + self.fixed, exact=False)
        return tally


def _anthropic_system(system: JSONValue, text: _Text) -> _Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOKENS_PER_MESSAGE
    if isinstance(system, str):
        claude.add_text(system)
    elif isinstance(system, list):
        for block in system:
            _anthropic_block(claude, block)
    else:
        claude.add_json(system)
    return claude.tally()


def _anthropic_message(message: JSONValue, text: _Text) -> _Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOKENS_PER_MESSAGE
    if not isinstance(message, dict):
        claude.add_json(message)
        return claude.tally()
    content = message.get("content")
    if isinstance(content, str):
        claude.add_text(content)
    elif isinstance(content, list):
        for block in content:
            _anthropic_block(claude, block)
    elif content is not None:
        claude.add_json(content)
    return claude.tally()


def _anthropic_block(claude: _Claude, block: JSONValue) -> None:
    if isinstance(block, str):
        claude.add_text(block)
        return
    if not isinstance(block, dict):
        claude.add_json(block)
        return
    kind = block.get("type")
    if kind == "text":
        claude.add_text(_str(block.get("text")) or "")
    elif kind == "thinking":
        claude.add_text(_str(block.get("thinking")) or "")
    elif kind == "tool_use" or kind == "server_tool_use":
        claude.add_text(_str(block.get("name")) or "")
        claude.add_json(block.get("input"))
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            for inner in content:
                _anthropic_block(claude, inner)
        elif isinstance(content, str):
            claude.add_text(content)
        elif content is not None:
            claude.add_json(content)
    elif kind == "image":
        claude.fixed += _anthropic_image_block(block)
    elif kind == "document":
        _anthropic_document(claude, block)
    elif kind == "search_result":
        for key in ("title", "source"):
            claude.add_text(_str(block.get(key)) or "")
        content = block.get("content")
        for inner in content if isinstance(content, list) else []:
            _anthropic_block(claude, inner)
    else:
        claude.add_json(block)


def _anthropic_image_block(block: JSONObject) -> int:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        data = source.get("data")
        if isinstance(data, str):
            size = image_size(_decode_prefix(data))
            if size is not None:
                return _anthropic_image(*size)
    return ANTHROPIC_IMAGE_MAX_TOKENS


_PDF_PAGE: Final = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _anthropic_document(claude: _Claude, block: JSONObject) -> None:
    for key in ("title", "context"):
        claude.add_text(_str(block.get(key)) or "")
    source = block.get("source")
    if not isinstance(source, dict):
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS
        return
    kind = source.get("type")
    data = source.get("data")
    if kind == "text" and isinstance(data, str):
        claude.add_text(data)
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            claude.add_text(content)
        elif isinstance(content, list):
            for inner in content:
                _anthropic_block(claude, inner)
    elif kind == "base64" and isinstance(data, str):
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS * _pdf_pages(data)
    else:
        claude.fixed += ANTHROPIC_PDF_PAGE_TOKENS


def _pdf_pages(data: str) -> int:
    """Pages of a base64 PDF by its page objects; at least one (compressed object streams hide
    them, and then one page per 100 kB is assumed)."""
    try:
        pdf = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    found = len(_PDF_PAGE.findall(pdf))
    return found if found else max(1, -(-len(pdf) // 100_000))


def _anthropic_tools(tools: JSONValue, text: _Text) -> _Tally:
    claude = _Claude(text)
    claude.fixed += ANTHROPIC_TOOL_SYSTEM_PROMPT
    for tool in tools if isinstance(tools, list) else [tools]:
        if isinstance(tool, dict) and "input_schema" in tool:
            claude.add_text(_str(tool.get("name")) or "")
            claude.add_text(_str(tool.get("description")) or "")
            claude.add_json(tool.get("input_schema"))
        else:
            # Server tools (web search, code execution...) and odd shapes: their JSON text.
            claude.add_json(tool)
    return claude.tally()
