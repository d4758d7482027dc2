"""``TokenCounter``: the input tokens of a whole request, from the rules of its dialect, behind a
per-message cache so a history re-sent every turn is tokenized once.

Pure: no I/O; the cache is in memory and guarded by a lock (large bodies may be counted on worker
threads). Never raises on odd input: a rule that trips degrades to a character estimate.
"""

from __future__ import annotations

import hashlib
import marshal
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Final

from a11i.core.model import JSONObject, JSONValue, TokenCount
from a11i.core.tokens.anthropic import (
    ANTHROPIC_REQUEST_OVERHEAD,
    anthropic_message,
    anthropic_system,
    anthropic_tools,
)
from a11i.core.tokens.encoding import (
    CHARS_PER_TOKEN,
    CL100K_BASE,
    Encodings,
    Tally,
    Text,
    approximate_chars,
    encoding_name_for_model,
    is_empty,
)
from a11i.core.tokens.images import ImageRules, image_rules
from a11i.core.tokens.openai_chat import (
    IMPLICIT_SYSTEM_TOKENS,
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    TOOLS_CL100K,
    TOOLS_O200K,
    chat_message,
    forced_choice,
    is_system,
    openai_tools,
)
from a11i.core.tokens.plain_inputs import count_plain_input
from a11i.core.tokens.responses import responses_item

#: Default capacity of the per-message cache (entries, not bytes: an entry is ~200 bytes).
DEFAULT_CACHE_SIZE: Final = 65_536


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Per-message cache statistics: a hit is a message (or tool list) not tokenized again."""

    hits: int
    misses: int
    size: int
    capacity: int


def _digest(value: JSONValue) -> bytes | None:
    """A collision-resistant key of a value's exact structure, or None if it has none.

    ``marshal`` (format 2: no references between objects, so the structure alone makes the
    bytes) is four times cheaper than canonical JSON, and it is paid for every message of every
    call. Any two bytes strings decode to their values, so two different values never share a
    key; one value spelled two ways (keys in another order, ``1`` and ``1.0``) gets two keys:
    one more cache entry, never a wrong count."""
    try:
        data = marshal.dumps(value, 2)
    except (ValueError, TypeError, RecursionError):
        return None
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class AnthropicParts:
    """An Anthropic request's estimate, part by part."""

    #: The whole estimate (``count_anthropic``).
    count: TokenCount
    #: The request overhead, the system prompt and the tools.
    fixed: int
    #: Each message's estimate, in order.
    per_message: tuple[int, ...]
    #: ``prefixes[k]``: a key of the system prompt, the tools and messages ``0..k``.
    prefixes: tuple[bytes, ...]


class TokenCounter:
    """Counts the input tokens of OpenAI and Anthropic requests (the package docstring,
    ``a11i.core.tokens``, says what is exact). Thread-safe: the per-message cache is guarded by a
    lock, so large bodies may be counted on worker threads."""

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

    def builds_encoding(self, model: object, *, anthropic: bool) -> bool:
        """Whether counting a request for ``model`` would first build its encoding (0.2-0.5 s,
        once): the caller keeps that one count off its event loop. Only the encoding this
        request needs matters: a pod that never sees a gpt-4 or Claude model never builds
        ``cl100k_base``, and its calls are not held up for it."""
        if anthropic:
            name = CL100K_BASE
        elif isinstance(model, str):
            name = _model_rules(model)[0]
        else:
            return False  # the plan refuses a request without a model before counting
        return self.encodings.is_pending(name)

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
        encoding, images = _model_rules(model)
        text = self._text_for_encoding(encoding)
        tally = Tally()
        tally.exact = text.exact
        message_list = _as_list(messages, tally, text)
        rule = partial(chat_message, text=text, images=images)
        self._add_units(tally, _prefix("chat", text.name, images.key), message_list, rule, text)
        tally.add(REPLY_PRIMING)
        tool_list = _as_list(tools, tally, text)
        function_list = _as_list(functions, tally, text)
        if tool_list or function_list:
            tally.add(*self._tools(text, tool_list, function_list))
            if not any(is_system(message) for message in message_list):
                tally.add(IMPLICIT_SYSTEM_TOKENS, exact=False)
        forced_choice(tally, text, tool_choice)
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
        encoding, images = _model_rules(model)
        text = self._text_for_encoding(encoding)
        tally = Tally()
        tally.exact = False
        if isinstance(instructions, str) and instructions:
            tally.add(TOKENS_PER_MESSAGE + text.count("system") + text.count(instructions))
        if isinstance(input, str):
            tally.add(TOKENS_PER_MESSAGE + text.count("user") + text.count(input))
        elif isinstance(input, list):
            rule = partial(responses_item, text=text, images=images)
            self._add_units(tally, _prefix("responses", text.name, images.key), input, rule, text)
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
        tally = Tally()
        tally.exact = text.exact
        count_plain_input(tally, text, input)
        return _finish(tally, text)

    def count_completions(
        self, model: str, prompt: JSONValue, suffix: str | None = None
    ) -> TokenCount:
        """Prompt tokens of a legacy completions request, as the API reports ``prompt_tokens``:
        every prompt string encoded, token-id prompts by their length. A ``suffix`` (insert mode)
        is added with its text, an estimate: the tokens that frame it are not published."""
        text = self._text_for(model)
        tally = Tally()
        tally.exact = text.exact
        count_plain_input(tally, text, prompt)
        if suffix:
            tally.add(text.count(suffix), exact=False)
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
        return self.anthropic_parts(model, system, messages, tools).count

    def anthropic_parts(
        self,
        model: str,
        system: JSONValue,
        messages: Sequence[JSONValue],
        tools: Sequence[JSONValue] | None = None,
    ) -> AnthropicParts:
        """The estimate of an Anthropic request part by part, with a key for each prefix of its
        conversation (so a later turn can start from what the provider reported for this one,
        ``a11i.core.conversations``)."""
        text = self._text_for_encoding(CL100K_BASE)
        tally = Tally()
        tally.add(ANTHROPIC_REQUEST_OVERHEAD, exact=False)
        chain = hashlib.blake2b(b"anthropic", digest_size=16)
        if not is_empty(system):
            tokens, exact, digest = self._cached_digest(
                "anthropic/system", system, partial(anthropic_system, text=text), text
            )
            tally.add(tokens, exact=exact)
            chain.update(digest or b"?")
        tool_list = _as_list(tools, tally, text)
        if tool_list:
            tokens, exact, digest = self._cached_digest(
                "anthropic/tools", tool_list, partial(anthropic_tools, text=text), text
            )
            tally.add(tokens, exact=exact)
            chain.update(digest or b"?")
        per_message: list[int] = []
        prefixes: list[bytes] = []
        rule = partial(anthropic_message, text=text)
        for message in _as_list(messages, tally, text):
            tokens, exact, digest = self._cached_digest("anthropic", message, rule, text)
            tally.add(tokens, exact=exact)
            per_message.append(tokens)
            chain.update(digest or b"?")
            prefixes.append(chain.copy().digest())
        count = _finish(tally, text)
        return AnthropicParts(
            count=count,
            fixed=count.tokens - sum(per_message),
            per_message=tuple(per_message),
            prefixes=tuple(prefixes),
        )

    # ---- caching -------------------------------------------------------------------------

    def _text_for(self, model: str) -> Text:
        return self._text_for_encoding(_model_rules(model)[0])

    def _text_for_encoding(self, name: str) -> Text:
        return Text(name, self.encodings.get(name))

    def _tools(
        self, text: Text, tools: list[JSONValue], functions: list[JSONValue]
    ) -> tuple[int, bool]:
        """All tool definitions of a request, cached as one unit."""
        rules = TOOLS_CL100K if text.name == CL100K_BASE else TOOLS_O200K
        unit: JSONObject = {"tools": tools, "functions": functions}

        def rule(_unit: JSONValue) -> Tally:
            return openai_tools(text, rules, tools, functions)

        return self._unit(_prefix("tools", text.name, str(rules.func_init)), unit, rule, text)

    def _add_units(
        self,
        tally: Tally,
        prefix: str,
        units: list[JSONValue],
        rule: Callable[[JSONValue], Tally],
        text: Text,
    ) -> None:
        """Adds the counts of a list of units (``_unit`` each) to ``tally``. The cached prefix
        of the list (a history re-sent every turn: all but the newest message) is looked up
        under one hold of the lock; from the first miss on, each unit goes through ``_unit``,
        so the cache sees the same lookups, stores and hit counts, in the same order, as
        ``_unit`` called unit by unit."""
        digests = [_digest(unit) for unit in units]
        done = 0
        tokens, exact = 0, True
        with self._lock:
            cache = self._cache
            for digest in digests:
                if digest is None:
                    break
                key = (prefix, digest)
                found = cache.get(key)
                if found is None:
                    break
                cache.move_to_end(key)
                tokens += found[0]
                exact = exact and found[1]
                done += 1
            self._hits += done
        tally.add(tokens, exact)
        for index in range(done, len(units)):
            tally.add(*self._counted(prefix, units[index], digests[index], rule, text))

    def _unit(
        self, prefix: str, unit: JSONValue, rule: Callable[[JSONValue], Tally], text: Text
    ) -> tuple[int, bool]:
        """The count of one unit (a message, an item, the tools) by the hash of its canonical
        JSON, so a history re-sent every turn is tokenized once. The prefix names the rules and
        the encoding: the same message counts differently under another model's rules. The
        rule is given the unit, so the units of a list share one (no closure per message);
        ``prefix`` is interned by the caller, once per list."""
        return self._counted(prefix, unit, _digest(unit), rule, text)

    def _counted(
        self,
        prefix: str,
        unit: JSONValue,
        digest: bytes | None,
        rule: Callable[[JSONValue], Tally],
        text: Text,
    ) -> tuple[int, bool]:
        """``_unit`` for a unit whose digest is taken already."""
        key = None
        if digest is not None:
            key = (prefix, digest)
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    self._hits += 1
                    return found
                self._misses += 1
        return self._store(key, unit, partial(rule, unit), text)

    def _cached_digest(
        self, prefix: str, unit: JSONValue, rule: Callable[[JSONValue], Tally], text: Text
    ) -> tuple[int, bool, bytes | None]:
        """``_unit``, with the unit's digest (None: it has no canonical JSON)."""
        digest = _digest(unit)
        # Interned: 65,536 keys share a handful of prefix strings.
        key = (sys.intern(prefix), digest) if digest is not None else None
        if key is not None:
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    self._hits += 1
                    return (*found, digest)
                self._misses += 1
        return (*self._store(key, unit, partial(rule, unit), text), digest)

    def _store(
        self,
        key: tuple[str, bytes] | None,
        unit: JSONValue,
        rule: Callable[[], Tally],
        text: Text,
    ) -> tuple[int, bool]:
        """Counts a unit the cache missed and remembers it under ``key`` (None: no key)."""
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


@lru_cache(maxsize=1024)
def _named_rules(model: str) -> tuple[str, ImageRules]:
    return encoding_name_for_model(model), image_rules(model)


def _model_rules(model: str) -> tuple[str, ImageRules]:
    """A model's encoding and image rules: two regular-expression and prefix walks over its
    name, done once per name (request bodies name a handful of models, the cache is bounded)."""
    if type(model) is str:
        return _named_rules(model)
    return encoding_name_for_model(model), image_rules(model)


#: Interned cache-key prefixes by (kind, encoding, rules): a handful, built once each instead
#: of an f-string and an intern per counted request.
_PREFIXES: dict[tuple[str, str, str], str] = {}


def _prefix(kind: str, encoding: str, rules: str) -> str:
    """The interned ``kind/encoding/rules`` prefix of a cache key: the same message counts
    differently under another model's rules or encoding."""
    parts = (kind, encoding, rules)
    found = _PREFIXES.get(parts)
    if found is None:
        found = _PREFIXES.setdefault(parts, sys.intern("/".join(parts)))
    return found


def _finish(tally: Tally, text: Text) -> TokenCount:
    return TokenCount(max(tally.tokens, 0), exact=tally.exact and text.exact and text.cuts == 0)


def _guarded(rule: Callable[[], Tally], unit: JSONValue) -> tuple[int, bool]:
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
        return -(-approximate_chars(unit) // CHARS_PER_TOKEN), False
    return tally.tokens, tally.exact


def _as_list(value: object, tally: Tally, text: Text) -> list[JSONValue]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    # Validated elsewhere; count what came rather than fail.
    tally.add(text.json(value), exact=False)
    return []
