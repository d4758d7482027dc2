"""Money net of the prompt cache: whether a rewrite saves dollars, not only tokens.

Providers bill a prompt's cached prefix at a fraction of the input price (OpenAI caches every
prefix automatically; Anthropic up to each ``cache_control`` breakpoint, and bills the write).
A rewrite that changes message k makes everything after k uncached again, so a request with
81% fewer tokens can cost more than the original when the original was 99% cache reads.

The estimate: a request's messages are fingerprinted prefix by prefix (:func:`prefix_prints`).
What the provider holds is what the conversation's last forwarded request shared with this one,
up to the tokens the provider reported as cached (read or written) for it
(:class:`CacheState`). The cached part is billed at the cache-read price, the rest at the input
price (the cache-write price where the request has breakpoints). Tokens per prefix are taken in
proportion to characters of the serialised messages: close enough for a decision, and the
proxy re-counts the winner exactly.

:class:`CacheMemory` keeps the last forwarded request of a few conversations, keyed by what
opens them (model, system, tools, first message). Pure: no I/O, no clock; the proxy owns it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from a11i.core.model import Dialect, JSONObject, JSONValue, Usage
from a11i.core.optimizer.rules import cache_prefix_end

#: Conversations remembered per sidecar (an agent pod runs one or a few at a time).
MEMORY_CONVERSATIONS: Final = 8


@dataclass(frozen=True, slots=True)
class CachePrices:
    """USD per token of a model's input: uncached, read from the cache, written to it."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal


@dataclass(frozen=True, slots=True)
class Prints:
    """A request's prefix fingerprints: ``hashes[i]`` covers the model, system and tools and
    the first ``i`` messages; ``chars[i]`` is how many serialised bytes (UTF-8) that is."""

    hashes: tuple[bytes, ...]
    chars: tuple[int, ...]

    @property
    def key(self) -> bytes:
        """The conversation: what opens it (its first message, or its setup alone)."""
        return self.hashes[min(1, len(self.hashes) - 1)]


# Keys in the order sent: agents and SDKs serialise a message the same way on every call, and
# sorting would double the cost of a fingerprint (paid on every metered call).
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dump(value: JSONValue) -> bytes:
    # surrogatepass: a lone surrogate is a character of the conversation like any other.
    return _ENCODER.encode(value).encode("utf-8", "surrogatepass")


def prefix_prints(dialect: Dialect, body: JSONObject) -> Prints:
    """The prefix fingerprints of ``body`` (one pass over its serialised messages)."""
    messages = body.get("messages")
    items = messages if isinstance(messages, list) else []
    head = _dump([str(dialect), body.get("model"), body.get("system"), body.get("tools")])
    digest = hashlib.sha256(head)
    hashes = [digest.digest()]
    chars = [len(head)]
    for message in items:
        text = _dump(message)
        digest.update(text)
        hashes.append(digest.copy().digest())
        chars.append(chars[-1] + len(text))
    return Prints(tuple(hashes), tuple(chars))


def has_breakpoints(body: JSONObject) -> bool:
    """Whether an Anthropic body marks anything for the prompt cache (``cache_control`` at the
    top, on a system or tool block, or in a message): its fresh input is billed as a write."""
    if "cache_control" in body:
        return True
    for key in ("system", "tools"):
        value = body.get(key)
        if isinstance(value, list) and any(
            isinstance(block, dict) and "cache_control" in block for block in value
        ):
            return True
    messages = body.get("messages")
    return isinstance(messages, list) and cache_prefix_end(messages) > 0


@dataclass(frozen=True, slots=True)
class CacheState:
    """What the provider caches of a conversation, as of its last reported call."""

    #: The prefix fingerprints of the request last forwarded.
    prints: Prints
    #: Tokens of it the provider holds: cache reads plus writes it reported (Anthropic), or
    #: the whole prompt (OpenAI caches every prompt of 1024 tokens or more).
    cached_tokens: int


def cached_tokens_after(dialect: Dialect, usage: Usage) -> int:
    """How many tokens of a call's prompt the provider holds afterwards, from its usage."""
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        return max(usage.cached_input_tokens, 0) + max(usage.cache_write_tokens, 0)
    # OpenAI caches prompts of 1024+ tokens automatically, in steps of 128 tokens.
    return usage.input_tokens // 128 * 128 if usage.input_tokens >= 1024 else 0


@dataclass(frozen=True, slots=True)
class CacheContext:
    """Everything :func:`estimated_cost` needs besides the request."""

    prices: CachePrices
    #: The conversation's cache, None when unknown (nothing cached is assumed).
    state: CacheState | None
    #: Tokens per serialised character of this request (its exact count over its size).
    tokens_per_char: float
    #: Whether uncached input is billed as a cache write (Anthropic breakpoints).
    writes: bool = False


def estimated_cost(context: CacheContext, prints: Prints) -> Decimal:
    """The estimated input cost of a request with ``prints``, net of what is cached."""
    total = round(prints.chars[-1] * context.tokens_per_char)
    cached = 0
    state = context.state
    if state is not None:
        shared = 0
        for mine, theirs in zip(prints.hashes, state.prints.hashes, strict=False):
            if mine != theirs:
                break
            shared += 1
        if shared:
            chars = prints.chars[shared - 1]
            cached = min(round(chars * context.tokens_per_char), state.cached_tokens, total)
    fresh = total - cached
    price = context.prices.cache_write if context.writes else context.prices.input
    return cached * context.prices.cache_read + fresh * price


def net_saving(context: CacheContext, before: Prints, after: Prints) -> Decimal:
    """USD the rewrite ``after`` saves over forwarding ``before`` (negative: it costs more)."""
    return estimated_cost(context, before) - estimated_cost(context, after)


class CacheMemory:
    """The last forwarded request of the most recent conversations, and what the provider
    reported caching for it. Bounded (:data:`MEMORY_CONVERSATIONS`); least recently used go."""

    def __init__(self, capacity: int = MEMORY_CONVERSATIONS) -> None:
        self._capacity = capacity
        self._states: OrderedDict[bytes, CacheState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def observe(self, prints: Prints, cached_tokens: int) -> None:
        """A request with ``prints`` was forwarded and the provider reported caching
        ``cached_tokens`` of it."""
        key = prints.key
        self._states[key] = CacheState(prints, cached_tokens)
        self._states.move_to_end(key)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)

    def state(self, prints: Prints) -> CacheState | None:
        """The cache of the conversation ``prints`` belongs to, if it was seen."""
        return self._states.get(prints.key)
