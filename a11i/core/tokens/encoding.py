"""Text to tokens with one tiktoken encoding: the encodings a counter is handed, which model uses
which, exact counting of long texts in chunks, and the running tally every rule adds to.

Pure: the encodings are loaded elsewhere (``a11i.sidecar.encodings``) and handed in, built or
as loaders called on first use.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from a11i.core.model import JSONValue

CL100K_BASE: Final = "cl100k_base"
O200K_BASE: Final = "o200k_base"
#: Every encoding the counter uses; ``Encodings.missing`` lists those not loaded.
ENCODING_NAMES: Final = (CL100K_BASE, O200K_BASE)


#: Characters per token when no encoding is available (OpenAI's rule of thumb for English).
CHARS_PER_TOKEN: Final = 4


class Encoder(Protocol):
    """What the counter needs of an encoding (a ``tiktoken.Encoding`` or an ``a11i_bpe``
    one): its name and ``encode_ordinary``. One that also has ``count_ordinary`` (the length
    without the list; ``a11i_bpe``) is counted with that."""

    @property
    def name(self) -> str: ...

    def encode_ordinary(self, text: str) -> list[int]: ...


def count_ordinary(encoder: Encoder, text: str) -> int:
    """The number of tokens of ``text``: ``count_ordinary`` where the encoder has it."""
    count: Callable[[str], int] | None = getattr(encoder, "count_ordinary", None)
    return count(text) if count is not None else len(encoder.encode_ordinary(text))


class EncodingUnavailable(Exception):
    """A deferred encoding could not be built on its first use (its file vanished or changed)."""


#: Builds one encoding when it is first needed; raises ``EncodingUnavailable`` when it cannot.
EncodingLoader = Callable[[], Encoder]


@dataclass(frozen=True, slots=True, eq=False)
class Encodings:
    """The encodings a counter may use; ``missing`` names those that could not be found.

    ``available`` are built already; ``deferred`` are found (and verified) but built only when a
    model that needs one is first counted: each tiktoken encoding costs 22 (cl100k) to 42 MiB
    (o200k) of resident memory in every agent pod, and a pod rarely needs both. ``problems``
    says why each missing encoding is missing (for logs and the readiness answer).
    """

    available: Mapping[str, Encoder] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    deferred: Mapping[str, EncodingLoader] = field(default_factory=dict)
    _built: dict[str, Encoder] = field(default_factory=dict, init=False, repr=False)
    _failed: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        # Copies behind read-only views: the loader's dicts cannot change what the counter sees.
        object.__setattr__(self, "available", MappingProxyType(dict(self.available)))
        object.__setattr__(self, "problems", MappingProxyType(dict(self.problems)))
        object.__setattr__(self, "deferred", MappingProxyType(dict(self.deferred)))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(
            name
            for name in ENCODING_NAMES
            if name not in self.available and (name not in self.deferred or name in self._failed)
        )

    @property
    def loaded(self) -> tuple[str, ...]:
        """The encodings built so far (in memory), in ``ENCODING_NAMES`` order."""
        return tuple(n for n in ENCODING_NAMES if n in self.available or n in self._built)

    @property
    def pending(self) -> bool:
        """Whether an encoding found at start is still to be built (on its first use)."""
        return any(self.is_pending(name) for name in self.deferred)

    def is_pending(self, name: str) -> bool:
        """Whether the encoding ``name`` was found at start and is still to be built: the
        next count that needs it builds it (0.2-0.5 s)."""
        return name in self.deferred and name not in self._built and name not in self._failed

    def failure(self, name: str) -> str | None:
        """Why the encoding ``name`` is missing: from the start, or since its first use."""
        return self.problems.get(name) or self._failed.get(name)

    def get(self, name: str) -> Encoder | None:
        found = self.available.get(name) or self._built.get(name)
        if found is not None or name not in self.deferred or name in self._failed:
            return found
        with self._lock:  # counting may run on worker threads: build each encoding once
            if name in self._built or name in self._failed:
                return self._built.get(name)
            try:
                encoder = self.deferred[name]()
            except EncodingUnavailable as error:
                self._failed[name] = str(error)
                return None
            self._built[name] = encoder
            return encoder


def bare_model(model: object) -> str:
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
    return CL100K_BASE if _CL100K_MODEL.fullmatch(bare_model(model)) else O200K_BASE


class Tally:
    """A running count and whether every part of it is exact."""

    __slots__ = ("exact", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.exact = True

    def add(self, tokens: int, exact: bool = True) -> None:
        self.tokens += tokens
        if not exact:
            self.exact = False


class Text:
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
        try:
            tokens, exact = chunked_count(self.encoder, text)
        except ValueError:
            # The split regex gave up (a11i_bpe raises; chunks keep pieces far below where it
            # does): an estimate, marked as one, rather than a failed call.
            tokens, exact = -(-len(text) // CHARS_PER_TOKEN), False
        if not exact:
            self.cuts += 1
        return tokens

    def json(self, value: object) -> int:
        """Tokens of a value's compact JSON text: the fallback for shapes without a rule."""
        if isinstance(value, str):
            return self.count(value)
        text = json_text(value)
        if text is None:
            return -(-approximate_chars(value) // CHARS_PER_TOKEN)
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
        return count_ordinary(encoder, text), True
    total, exact, start = 0, True, 0
    while len(text) - start > limit:
        found = _SAFE_CUT.search(text, start + target, start + limit + 2)
        if found is not None and found.start() <= start + limit:
            cut = found.start()
        else:
            cut, exact = start + limit, False
        total += count_ordinary(encoder, text[start:cut])
        start = cut
    return total + count_ordinary(encoder, text[start:]), exact


def json_text(value: object) -> str | None:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        return None


def approximate_chars(value: object) -> int:
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


def str_or_none(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def is_empty(value: JSONValue) -> bool:
    return value is None or (isinstance(value, list | dict | str) and len(value) == 0)
