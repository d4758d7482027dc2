"""The rate card: what a model's tokens cost, how a model name finds its price, what a call costs.

Pure: this module parses data that was already loaded (a dict from YAML or JSON) and does
arithmetic on it. It never opens a file or a socket; ``a11i.sidecar.rates`` reads files and the
packaged built-in card and hands the result to :func:`parse_rate_card`.

Money is :class:`decimal.Decimal` everywhere, never ``float``: a budget is a sum of many small
amounts and must not drift. Prices are stored per token; cards state them per million tokens
(ours) or per token (LiteLLM's), and the conversion is exact.

Two file shapes are accepted, told apart automatically:

1. a11i's own shape (see ``docs/rate-card.md``), prices in USD per million tokens, written as
   decimal strings (numbers are accepted too)::

       fallback: {input_per_mtok: "15", output_per_mtok: "75", context_window: 200000}
       models:
         gpt-4o:
           input_per_mtok: "2.50"
           cached_input_per_mtok: "1.25"      # optional, default: the input price
           output_per_mtok: "10.00"
           context_window: 128000
           max_output_tokens: 16384           # optional
           provider: openai                   # optional
         claude-sonnet-4-5:
           input_per_mtok: "3"
           cached_input_per_mtok: "0.30"      # Anthropic's cache read
           cache_write_per_mtok: "3.75"       # Anthropic's cache write (5-minute TTL)
           output_per_mtok: "15"
           context_window: 200000

   Both top-level keys are optional, but one of them must be there (that is how the shape is
   recognised); unknown keys and fields are errors, so a typo never silently drops a price.

2. LiteLLM's ``model_prices_and_context_window.json``: model name -> {``input_cost_per_token``,
   ``output_cost_per_token``, ``cache_read_input_token_cost``,
   ``cache_creation_input_token_cost``, ``max_input_tokens``, ``max_output_tokens``,
   ``max_tokens``, ``litellm_provider``, ...}. ``sample_spec`` is ignored; entries without token
   prices (image, audio, rerank, ...) are skipped and listed in :attr:`RateCard.skipped`; every
   other field is ignored (batch, priority and long-context tiers are not modelled).

A card that is broken anywhere raises :class:`RateCardError` and yields nothing: a half-applied
card would price some models from the new file and some from the old one without saying so.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext
from types import MappingProxyType
from typing import Final

from a11i.core.errors import ConfigurationError
from a11i.core.model import Usage

__all__ = [
    "DEFAULT_FALLBACK",
    "ModelPrice",
    "PriceLookup",
    "RateCard",
    "RateCardError",
    "cost",
    "normalize_model_name",
    "parse_rate_card",
    "per_million",
    "project",
]

#: Arithmetic on money: wide enough that no realistic product of a token count and a per-token
#: price is rounded, and independent of whatever decimal context the calling thread has set.
_MONEY: Final = Context(prec=60)

#: A price above this per million tokens is a unit mistake (per token instead of per million),
#: not a model: refusing it also keeps every product far away from Decimal's exponent limits.
_MAX_PER_MTOK: Final = Decimal(1_000_000)
_MAX_PER_TOKEN: Final = Decimal(1)
#: Context windows and output caps above this are typos (100x the largest window of 2025).
_MAX_WINDOW: Final = 1_000_000_000
#: Distinct model names remembered by ``RateCard.lookup``: the names come from request bodies,
#: so the memo is bounded rather than growing with whatever an agent sends.
_LOOKUP_MEMO_LIMIT: Final = 4096


def per_million(value: Decimal | int | str) -> Decimal:
    """A price per million tokens as a price per token, exactly (the decimal point moves)."""
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"price {value!r} is not a finite number")
    sign, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - finite numbers have int exponents
        raise ValueError(f"price {value!r} is not a finite number")
    # Building the tuple by hand is exact whatever the context's precision; dividing is not.
    return Decimal((sign, digits, exponent - 6))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """What one model's tokens cost, per token, in USD, and how much room it has."""

    input_per_token: Decimal
    output_per_token: Decimal
    #: Price of an input token read from the prompt cache; None means the input price.
    cached_input_per_token: Decimal | None = None
    #: Price of an input token written to the prompt cache (Anthropic); None: the input price.
    cache_write_per_token: Decimal | None = None
    #: Tokens the model accepts in one call (prompt, and for most models the answer too).
    context_window: int
    max_output_tokens: int | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "input_per_token",
            "output_per_token",
            "cached_input_per_token",
            "cache_write_per_token",
        ):
            value: object = getattr(self, name)
            if value is None and name in ("cached_input_per_token", "cache_write_per_token"):
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative Decimal, not {value!r}")
        if _not_count(self.context_window):
            raise ValueError(f"context_window must be a positive int, not {self.context_window!r}")
        if self.max_output_tokens is not None and _not_count(self.max_output_tokens):
            raise ValueError(
                f"max_output_tokens must be a positive int or None, not {self.max_output_tokens!r}"
            )

    @property
    def cached_input_price(self) -> Decimal:
        """Per-token price of a cache read, the input price when the card states none."""
        if self.cached_input_per_token is None:
            return self.input_per_token
        return self.cached_input_per_token

    @property
    def cache_write_price(self) -> Decimal:
        """Per-token price of a cache write, the input price when the card states none."""
        if self.cache_write_per_token is None:
            return self.input_per_token
        return self.cache_write_per_token


def _not_count(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < 1


#: The price of a model the card does not know. Deliberately the dearest common list price of
#: 2025 (Claude Opus 4/4.1: $15 in, $75 out per million tokens) with a 200k window and Opus's
#: 32k output cap: an unknown model must never be free or cheap by accident, since a too-low
#: price lets an agent overspend its budget, while a too-high one only blocks early and is
#: flagged (``PriceLookup.is_fallback``, header ``x-a11i-pricing: fallback``).
DEFAULT_FALLBACK: Final = ModelPrice(
    input_per_token=per_million(15),
    output_per_token=per_million(75),
    context_window=200_000,
    max_output_tokens=32_000,
)


@dataclass(frozen=True, slots=True)
class PriceLookup:
    """The answer of :meth:`RateCard.lookup`: the price and how it was found."""

    #: The model name as asked.
    model: str
    #: The card's key that priced it; None for the fallback.
    matched: str | None
    price: ModelPrice
    is_fallback: bool


class RateCardError(ConfigurationError, ValueError):
    """A rate card that cannot be used, with where (file, key path) and what is wrong."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        where = f"rate card {source}: {path}: " if path else f"rate card {source}: "
        super().__init__(where + message)


# Provider prefixes as LiteLLM, routers and gateways write them ("openai/", "azure/",
# "openrouter/anthropic/"), and Bedrock's "anthropic." with an optional region.
_BEDROCK_PREFIX: Final = re.compile(r"^(?:(?:us|eu|apac|au|jp|global)\.)?anthropic\.")
# Version suffixes that do not change the price: "-latest", OpenAI's "-2024-08-06" and
# "-0613", Anthropic's "-20241022", Vertex's "@20241022", Bedrock's "-v2:0". Stripped
# repeatedly from the end ("claude-3-5-sonnet-20241022-v2:0").
_VERSION_SUFFIX: Final = re.compile(
    r"(?:-latest|-v\d+:\d+|@\d{8}|-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4})$"
)

# Name segments of premium tiers that cost many times their base model (o3-pro, gpt-5-pro,
# o3-deep-research): a name is never priced by a prefix that drops one of them.
_PREMIUM_SEGMENTS: Final = frozenset({"pro", "research"})


def _unprefixed(name: str) -> str:
    return _BEDROCK_PREFIX.sub("", name.rsplit("/", 1)[-1])


def _unversioned(name: str) -> str:
    while True:
        shorter = _VERSION_SUFFIX.sub("", name)
        if shorter == name or not shorter:
            return name
        name = shorter


def normalize_model_name(model: str) -> str:
    """The family name a model name is priced by when the card lacks the exact one:
    lower case, without provider prefix and version suffix (``openai/GPT-4o-2024-08-06`` ->
    ``gpt-4o``)."""
    return _unversioned(_unprefixed(model.lower()))


def _candidates(model: str) -> Iterator[str]:
    """Names to try, most specific first: as given in lower case, without the provider
    prefix, without version suffixes, then ever shorter prefixes cut at a ``-``."""
    lowered = model.lower()
    yield lowered
    bare = _unprefixed(lowered)
    yield bare
    family = _unversioned(bare)
    yield family
    # gpt-4o-mini-audio-preview -> gpt-4o-mini-audio -> gpt-4o-mini: the longest known prefix.
    cut = family.rfind("-")
    while cut > 0:
        if family[cut + 1 :] in _PREMIUM_SEGMENTS:
            # "gpt-5.2-pro" is not "gpt-5.2" (12x the price): better the flagged fallback.
            return
        family = family[:cut]
        yield family
        cut = family.rfind("-")


def _dearness(price: ModelPrice) -> Decimal:
    return price.input_per_token + price.output_per_token


@dataclass(frozen=True, slots=True)
class RateCard:
    """Model name -> price, plus the price of every model it does not know."""

    models: Mapping[str, ModelPrice]
    fallback: ModelPrice = DEFAULT_FALLBACK
    #: Whether the card states its own fallback (then it wins in :meth:`merged`).
    explicit_fallback: bool = False
    #: Where the card came from, for messages.
    source: str = field(default="<inline>", compare=False)
    #: LiteLLM entries without token prices (image, audio, ...), left out of the card.
    skipped: tuple[str, ...] = field(default=(), compare=False)
    _index: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _memo: dict[str, PriceLookup] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        models = dict(self.models)
        for key, price in models.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"model names must be non-empty strings, not {key!r}")
            if not isinstance(price, ModelPrice):
                raise TypeError(f"the price of {key!r} must be a ModelPrice, not {price!r}")
        object.__setattr__(self, "models", MappingProxyType(models))
        object.__setattr__(self, "_index", MappingProxyType(_build_index(models)))
        object.__setattr__(self, "_memo", {})

    def lookup(self, model: str) -> PriceLookup:
        """The price of ``model``: the exact key, else the same name in any case, without
        provider prefix, without date or version suffix, else its longest known prefix at a
        ``-`` boundary, else the fallback (``is_fallback``)."""
        found = self._memo.get(model)
        if found is None:
            found = self._resolve(model)
            # Runs on every request: remember answers, but only so many distinct names.
            if len(self._memo) < _LOOKUP_MEMO_LIMIT:
                self._memo[model] = found
        return found

    def _resolve(self, model: str) -> PriceLookup:
        if model in self.models:
            return PriceLookup(model, model, self.models[model], is_fallback=False)
        for candidate in _candidates(model):
            key = self._index.get(candidate)
            if key is not None:
                return PriceLookup(model, key, self.models[key], is_fallback=False)
        return PriceLookup(model, None, self.fallback, is_fallback=True)

    def merged(self, other: RateCard) -> RateCard:
        """This card overridden model by model by ``other`` (a user's card over the built-in
        one); ``other``'s fallback wins only when it states one."""
        # A user's "GPT-4o" replaces the built-in "gpt-4o": both would answer the same query.
        shadowed = {key.lower() for key in other.models}
        models = {k: v for k, v in self.models.items() if k.lower() not in shadowed}
        models.update(other.models)
        return RateCard(
            models=models,
            fallback=other.fallback if other.explicit_fallback else self.fallback,
            explicit_fallback=self.explicit_fallback or other.explicit_fallback,
            source=f"{self.source} + {other.source}",
            skipped=self.skipped + other.skipped,
        )


def _build_index(models: Mapping[str, ModelPrice]) -> dict[str, str]:
    """Lower-cased name -> card key. The card's own names come first; then, for names the
    card lacks, the keys' forms without provider prefix or version suffix (so a LiteLLM
    card's ``azure/gpt-4o`` or ``claude-3-5-sonnet-20241022`` answers ``gpt-4o`` or
    ``claude-3-5-sonnet``). When several keys give the same alias, the dearest wins: an
    ambiguous name must not be priced low."""
    index: dict[str, str] = {}
    # An all-lower-case key beats a differently cased twin; then alphabetical, for determinism.
    for key in sorted(models, key=lambda k: (k != k.lower(), k)):
        index.setdefault(key.lower(), key)
    aliases: dict[str, str] = {}
    for key in sorted(models):
        bare = _unprefixed(key.lower())
        for alias in (bare, _unversioned(bare)):
            if alias in index:
                continue
            current = aliases.get(alias)
            if current is None or _dearness(models[key]) > _dearness(models[current]):
                aliases[alias] = key
    index.update(aliases)
    return index


def _price_of(price: ModelPrice | PriceLookup) -> ModelPrice:
    return price.price if isinstance(price, PriceLookup) else price


def cost(price: ModelPrice | PriceLookup, usage: Usage) -> Decimal:
    """What a call cost in USD, exactly: uncached input, cache reads, cache writes and output,
    each at its own price. ``usage.input_tokens`` includes the cached and cache-write tokens."""
    p = _price_of(price)
    cached = max(usage.cached_input_tokens, 0)
    written = max(usage.cache_write_tokens, 0)
    # A provider that reports more cache tokens than input tokens is inconsistent; never let it
    # produce a negative amount of uncached input.
    uncached = max(usage.input_tokens - cached - written, 0)
    with localcontext(_MONEY):
        return (
            uncached * p.input_per_token
            + cached * p.cached_input_price
            + written * p.cache_write_price
            + max(usage.output_tokens, 0) * p.output_per_token
        )


def project(price: ModelPrice | PriceLookup, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The most a call can cost before it is sent: every input token at the full input price
    (a cache hit is not known in advance) and every output token it may produce."""
    p = _price_of(price)
    with localcontext(_MONEY):
        return (
            max(input_tokens, 0) * p.input_per_token
            + max(max_output_tokens, 0) * p.output_per_token
        )


# --------------------------------------------------------------------------------------------
# Parsing


_OURS_TOP: Final = ("fallback", "models")
_PRICE_FIELDS: Final = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "output_per_mtok",
)
_OURS_FIELDS: Final = (*_PRICE_FIELDS, "context_window", "max_output_tokens", "provider")
# Fields whose presence in an entry identifies LiteLLM's shape.
_LITELLM_MARKERS: Final = frozenset(
    {
        "input_cost_per_token",
        "output_cost_per_token",
        "litellm_provider",
        "mode",
        "max_tokens",
        "max_input_tokens",
        "max_output_tokens",
    }
)
# LiteLLM modes whose models produce no output tokens: a missing output price means zero.
_NO_OUTPUT_MODES: Final = frozenset({"embedding", "moderation", "rerank"})


def parse_rate_card(data: object, *, source: str) -> RateCard:
    """A rate card from loaded YAML or JSON, in a11i's shape or LiteLLM's (detected).

    Raises :class:`RateCardError` naming the source, the key path and the problem.
    """
    if data is None:
        raise RateCardError(source, "", "the card is empty")
    if not isinstance(data, Mapping):
        raise RateCardError(source, "", f"expected a mapping at the top level, got {_kind(data)}")
    if any(key in data for key in _OURS_TOP):
        return _parse_ours(data, source)
    if "sample_spec" in data or any(
        isinstance(entry, Mapping) and not _LITELLM_MARKERS.isdisjoint(entry)
        for entry in data.values()
    ):
        return _parse_litellm(data, source)
    raise RateCardError(
        source,
        "",
        "not a rate card: expected a11i's shape (top-level 'models' and/or 'fallback') or "
        "LiteLLM's (model name -> {input_cost_per_token, output_cost_per_token, ...})",
    )


def _parse_ours(data: Mapping[object, object], source: str) -> RateCard:
    for key in data:
        if key not in _OURS_TOP:
            raise RateCardError(source, _show_key(key), _unknown(key, _OURS_TOP))
    fallback = DEFAULT_FALLBACK
    raw_fallback = data.get("fallback")
    explicit = raw_fallback is not None
    if raw_fallback is not None:
        fallback = _our_price(raw_fallback, source, "fallback")
    raw_models = data.get("models")
    models: dict[str, ModelPrice] = {}
    # "models:" with every entry commented out is an empty card, not an error.
    if raw_models is not None:
        if not isinstance(raw_models, Mapping):
            raise RateCardError(
                source,
                "models",
                f"expected a mapping of model name to prices, got {_kind(raw_models)}",
            )
        for name, entry in raw_models.items():
            if not isinstance(name, str) or not name or name != name.strip():
                raise RateCardError(
                    source,
                    f"models.{_show_key(name)}",
                    "a model name must be a non-empty string without surrounding spaces, "
                    f"not {_show(name)}",
                )
            models[name] = _our_price(entry, source, f"models.{name}")
    return RateCard(models=models, fallback=fallback, explicit_fallback=explicit, source=source)


def _our_price(entry: object, source: str, path: str) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise RateCardError(source, path, f"expected a mapping of price fields, got {_kind(entry)}")
    for key in entry:
        if key not in _OURS_FIELDS:
            raise RateCardError(source, f"{path}.{_show_key(key)}", _unknown(key, _OURS_FIELDS))

    def price(name: str) -> Decimal | None:
        value = entry.get(name)
        if value is None:
            return None
        amount = _decimal(value, source, f"{path}.{name}", _MAX_PER_MTOK, "per million tokens")
        return per_million(amount)

    def required(name: str) -> Decimal:
        found = price(name)
        if found is None:
            raise RateCardError(source, f"{path}.{name}", "is required")
        return found

    input_price = required("input_per_mtok")
    output_price = required("output_per_mtok")
    window = _count(entry.get("context_window"), source, f"{path}.context_window")
    if window is None:
        raise RateCardError(source, f"{path}.context_window", "is required")
    provider = entry.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise RateCardError(source, f"{path}.provider", f"expected a string, got {_kind(provider)}")
    return ModelPrice(
        input_per_token=input_price,
        output_per_token=output_price,
        cached_input_per_token=price("cached_input_per_mtok"),
        cache_write_per_token=price("cache_write_per_mtok"),
        context_window=window,
        max_output_tokens=_count(
            entry.get("max_output_tokens"), source, f"{path}.max_output_tokens"
        ),
        provider=provider,
    )


def _parse_litellm(data: Mapping[object, object], source: str) -> RateCard:
    models: dict[str, ModelPrice] = {}
    skipped: list[str] = []
    for name, entry in data.items():
        if name == "sample_spec":
            continue
        if not isinstance(name, str) or not name.strip():
            raise RateCardError(
                source,
                _show_key(name),
                f"a model name must be a non-empty string, not {_show(name)}",
            )
        if not isinstance(entry, Mapping):
            raise RateCardError(source, name, f"expected a mapping of fields, got {_kind(entry)}")
        price = _litellm_price(name, entry, source)
        if price is None:
            skipped.append(name)
        else:
            models[name] = price
    if not models:
        raise RateCardError(source, "", "no model in the card has token prices")
    return RateCard(models=models, source=source, skipped=tuple(skipped))


def _litellm_price(name: str, entry: Mapping[object, object], source: str) -> ModelPrice | None:
    def price(key: str) -> Decimal | None:
        value = entry.get(key)
        if value is None:
            return None
        return _decimal(value, source, f"{name}.{key}", _MAX_PER_TOKEN, "per token")

    def window(key: str) -> int | None:
        # LiteLLM writes 0 where a window is unknown: treat it as absent.
        return _count(entry.get(key), source, f"{name}.{key}", zero_is_none=True)

    input_price = price("input_cost_per_token")
    output_price = price("output_cost_per_token")
    if output_price is None and input_price is not None and entry.get("mode") in _NO_OUTPUT_MODES:
        output_price = Decimal(0)
    if input_price is None or output_price is None:
        # Priced per image, per second, per character, per query...: not a token model.
        return None
    provider = entry.get("litellm_provider")
    if provider is not None and not isinstance(provider, str):
        raise RateCardError(
            source, f"{name}.litellm_provider", f"expected a string, got {_kind(provider)}"
        )
    # max_input_tokens is the prompt room; the legacy max_tokens is the best guess without it;
    # without either, the fallback's window (a large one, so projections err high).
    context = window("max_input_tokens") or window("max_tokens") or DEFAULT_FALLBACK.context_window
    return ModelPrice(
        input_per_token=input_price,
        output_per_token=output_price,
        cached_input_per_token=price("cache_read_input_token_cost"),
        cache_write_per_token=price("cache_creation_input_token_cost"),
        context_window=context,
        max_output_tokens=window("max_output_tokens"),
        provider=provider,
    )


def _decimal(value: object, source: str, path: str, ceiling: Decimal, unit: str) -> Decimal:
    """A non-negative, finite price from a decimal string, an int, a Decimal or a float."""
    amount: Decimal
    if isinstance(value, bool):
        raise RateCardError(source, path, f"{_show(value)} is not a decimal number")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # repr is the shortest string that round-trips: 2.5 -> "2.5", not 2.5000000000000001...
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise RateCardError(source, path, f"{_show(value)} is not a decimal number") from None
    else:
        raise RateCardError(source, path, f"expected a decimal number, got {_kind(value)}")
    if not amount.is_finite():
        raise RateCardError(source, path, f"{_show(value)} is not a finite number")
    if amount < 0:
        raise RateCardError(
            source, path, f"{_show(value)} is negative: a price must be zero or more"
        )
    if amount > ceiling:
        raise RateCardError(
            source,
            path,
            f"{_show(value)} is implausibly high for a price {unit} (more than {ceiling} USD)",
        )
    return amount


def _count(value: object, source: str, path: str, *, zero_is_none: bool = False) -> int | None:
    """A positive whole number of tokens, or None when absent."""
    if value is None:
        return None
    number: int
    if isinstance(value, bool):
        raise RateCardError(source, path, f"{_show(value)} is not a whole number of tokens")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal | float):
        # 128000.0 is a whole number; 128000.5 is not.
        exact = Decimal(repr(value)) if isinstance(value, float) else value
        if not exact.is_finite() or exact != exact.to_integral_value():
            raise RateCardError(source, path, f"{_show(value)} is not a whole number of tokens")
        if exact > _MAX_WINDOW:
            raise RateCardError(source, path, f"{_show(value)} tokens is implausibly large")
        number = int(exact)
    else:
        raise RateCardError(source, path, f"expected a whole number of tokens, got {_kind(value)}")
    if number == 0 and zero_is_none:
        return None
    if number < 1:
        raise RateCardError(source, path, f"{_show(value)} must be a positive number of tokens")
    if number > _MAX_WINDOW:
        raise RateCardError(source, path, f"{_show(value)} tokens is implausibly large")
    return number


def _unknown(key: object, expected: tuple[str, ...]) -> str:
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, expected, n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return f"unknown key (expected one of: {', '.join(expected)}){hint}"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if isinstance(value, int | float | Decimal):
        return f"a number ({_show(value)})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """A value as the user wrote it, JSON-style and short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif value is None:
        text = "null"
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_key(key: object) -> str:
    return key if isinstance(key, str) and key else _show(key)
