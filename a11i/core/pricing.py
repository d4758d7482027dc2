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
         gpt-5.4:
           input_per_mtok: "2.5"
           cached_input_per_mtok: "0.25"      # optional, default: the input price
           output_per_mtok: "15"
           context_window: 1050000
           max_output_tokens: 128000          # optional
           provider: openai                   # optional
           service_tiers:                     # optional: flex, priority, batch, ultrafast
             flex: {input_per_mtok: "1.25", output_per_mtok: "7.5"}
           long_context:                      # optional: every token of a longer prompt
             - {above_tokens: 272000, input_per_mtok: "5", output_per_mtok: "22.5"}
           web_search_per_call: "0.01"        # optional, USD per search
         claude-sonnet-4-5:
           input_per_mtok: "3"
           cached_input_per_mtok: "0.30"      # Anthropic's cache read
           cache_write_per_mtok: "3.75"       # cache write, 5-minute TTL (OpenAI: 30 minutes)
           cache_write_long_per_mtok: "6"     # cache write, 1-hour TTL (OpenAI: 12 hours)
           output_per_mtok: "15"
           context_window: 200000
           multipliers: {us: "1.1"}           # Anthropic's inference_geo / speed

   Both top-level keys are optional, but one of them must be there (that is how the shape is
   recognised); unknown keys and fields are errors, so a typo never silently drops a price.

2. LiteLLM's ``model_prices_and_context_window.json``: model name -> {``input_cost_per_token``,
   ``output_cost_per_token``, ``cache_read_input_token_cost``,
   ``cache_creation_input_token_cost`` (and ``_above_1hr``/``_above_12hr``), each of the token
   prices with ``_above_<N>k_tokens`` and/or ``_flex``/``_priority``/``_batches``/``_ultrafast``,
   ``search_context_cost_per_query``, ``provider_specific_entry``, ``max_input_tokens``,
   ``max_output_tokens``, ``max_tokens``, ``litellm_provider``, ...}. ``sample_spec`` is
   ignored; entries without token prices (image, audio, rerank, ...) are skipped and listed in
   :attr:`RateCard.skipped`; fields that state no price (``supports_*``, ...) are ignored; any
   other price field is not modelled and counted in :attr:`RateCard.unmodelled`, for the loader
   to report.

:func:`charge` applies every rule to the usage a provider reported (:class:`Charge` says how);
:func:`project` applies the long-context and asked-tier rules before the call.

A card that is broken anywhere raises :class:`RateCardError` and yields nothing: a half-applied
card would price some models from the new file and some from the old one without saying so.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final

from a11i.core.errors import ConfigurationError
from a11i.core.frozen import slot_init
from a11i.core.model import Usage

__all__ = [
    "DEFAULT_FALLBACK",
    "SERVICE_TIERS",
    "STANDARD",
    "AppliedRates",
    "Charge",
    "ChargeLine",
    "LongContext",
    "ModelPrice",
    "PriceLookup",
    "RateCard",
    "RateCardError",
    "Rates",
    "charge",
    "cost",
    "normalize_model_name",
    "parse_rate_card",
    "per_million",
    "project",
    "rates_for",
    "service_tier",
]

#: Arithmetic on money: wide enough that no realistic product of a token count and a per-token
#: price is rounded, and independent of whatever decimal context the calling thread has set.
#: Its own methods do the arithmetic (``_multiply(a, b)`` is ``a * b`` in it, to the digit):
#: making it the thread's context for a call (``localcontext``: a copy, a context variable set
#: and reset) cost more than the call's arithmetic. Its flags are never read.
_MONEY: Final = Context(prec=60)
_multiply: Final = _MONEY.multiply
_add: Final = _MONEY.add
#: Shared: a Decimal is immutable, and most calls apply no multiplier.
_ONE: Final = Decimal(1)

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


#: The service tier of the card's plain prices.
STANDARD: Final = "standard"
#: Service tiers a card can price apart from the standard one.
SERVICE_TIERS: Final = ("flex", "priority", "batch", "ultrafast")

# What the providers report (OpenAI's ``service_tier``, Anthropic's ``usage.service_tier``) ->
# the tier the card prices it by. OpenAI answers "default" for the standard tier (an "auto"
# request is served at the project's tier and reported as such) and shows "fast" requests as
# "priority"; "scale" is bought in advance as units, its tokens are priced as standard here.
_REPORTED_TIERS: Final = MappingProxyType(
    {
        "default": STANDARD,
        "auto": STANDARD,
        "standard": STANDARD,
        "standard_only": STANDARD,
        "scale": STANDARD,
        "flex": "flex",
        "priority": "priority",
        "fast": "priority",
        "batch": "batch",
        "ultrafast": "ultrafast",
    }
)


def service_tier(reported: str | None) -> str:
    """The card's tier for a service tier as a provider reports it: absent, ``default``,
    ``auto`` and unknown names are the standard tier (the charge keeps what was reported)."""
    if reported is None:
        return STANDARD
    # Most answers spell a name as the map does ("default"): one lookup, no copies.
    found = _REPORTED_TIERS.get(reported)
    if found is not None:
        return found
    return _REPORTED_TIERS.get(reported.strip().lower(), STANDARD)


_RATE_NAMES: Final = (
    "input_per_token",
    "output_per_token",
    "cached_input_per_token",
    "cache_write_per_token",
    "cache_write_long_per_token",
)


def _check_money(owner: object, names: tuple[str, ...], *, optional: tuple[str, ...]) -> None:
    for name in names:
        value: object = getattr(owner, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise ValueError(f"{name} must be a finite, non-negative Decimal, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rates:
    """Per-token prices that apply under one billing rule (a service tier, a long prompt).
    A price left None is not changed by the rule: the next rule down states it."""

    input_per_token: Decimal | None = None
    output_per_token: Decimal | None = None
    cached_input_per_token: Decimal | None = None
    cache_write_per_token: Decimal | None = None
    cache_write_long_per_token: Decimal | None = None

    def __post_init__(self) -> None:
        _check_money(self, _RATE_NAMES, optional=_RATE_NAMES)

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in _RATE_NAMES)


def _tier_map(value: Mapping[str, Rates], what: str) -> Mapping[str, Rates]:
    tiers = dict(value)
    for name, rates in tiers.items():
        if name not in SERVICE_TIERS:
            raise ValueError(f"{what}: unknown service tier {name!r} (one of {SERVICE_TIERS})")
        if not isinstance(rates, Rates):
            raise TypeError(f"{what}: the rates of {name!r} must be Rates, not {rates!r}")
    return MappingProxyType(tiers)


@dataclass(frozen=True, slots=True, kw_only=True)
class LongContext:
    """The prices of a call whose prompt (cached and cache-written tokens included) has more
    than ``above_tokens`` tokens: every token of such a call, output too, is billed at them
    (Anthropic above 200k, OpenAI's gpt-5.4 above 272k)."""

    above_tokens: int
    rates: Rates
    #: The long-context prices of a service tier, where they differ from the standard ones.
    service_tiers: Mapping[str, Rates] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if _not_count(self.above_tokens):
            raise ValueError(f"above_tokens must be a positive int, not {self.above_tokens!r}")
        if not isinstance(self.rates, Rates):
            raise TypeError(f"rates must be Rates, not {self.rates!r}")
        object.__setattr__(
            self, "service_tiers", _tier_map(self.service_tiers, f"above {self.above_tokens}")
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """What one model's tokens cost, per token, in USD, and how much room it has.

    The plain prices are the standard tier's for a prompt of ordinary length; the optional
    rules replace them for a service tier, a long prompt, or both, and add per-call fees.
    """

    input_per_token: Decimal
    output_per_token: Decimal
    #: Price of an input token read from the prompt cache; None means the input price.
    cached_input_per_token: Decimal | None = None
    #: Price of an input token written to the prompt cache with the short lifetime
    #: (Anthropic's 5 minutes, OpenAI's 30 minutes); None: the input price.
    cache_write_per_token: Decimal | None = None
    #: Price of a cache write with the long lifetime (Anthropic's 1 hour, OpenAI's 12 hours);
    #: None: the short lifetime's price.
    cache_write_long_per_token: Decimal | None = None
    #: Tokens the model accepts in one call (prompt, and for most models the answer too).
    context_window: int
    max_output_tokens: int | None = None
    provider: str | None = None
    #: Prices of the service tiers (flex, priority, batch, ultrafast) where they differ.
    service_tiers: Mapping[str, Rates] = field(default_factory=dict)
    #: Long-prompt prices, by threshold.
    long_context: tuple[LongContext, ...] = ()
    #: USD per server-side web search (Anthropic ``web_search_requests``, OpenAI's
    #: ``web_search_call`` items); None: the card states no fee.
    web_search_per_call: Decimal | None = None
    #: USD per server-side web fetch (Anthropic bills only its tokens today).
    web_fetch_per_call: Decimal | None = None
    #: Factors on the token prices by how the call was served, keyed by the reported value:
    #: Anthropic's ``inference_geo`` ("us": 1.1) and ``speed`` ("fast": 2).
    multipliers: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_money(
            self,
            (*_RATE_NAMES, "web_search_per_call", "web_fetch_per_call"),
            optional=(*_RATE_NAMES[2:], "web_search_per_call", "web_fetch_per_call"),
        )
        if _not_count(self.context_window):
            raise ValueError(f"context_window must be a positive int, not {self.context_window!r}")
        if self.max_output_tokens is not None and _not_count(self.max_output_tokens):
            raise ValueError(
                f"max_output_tokens must be a positive int or None, not {self.max_output_tokens!r}"
            )
        object.__setattr__(self, "service_tiers", _tier_map(self.service_tiers, "service_tiers"))
        tiers = tuple(sorted(self.long_context, key=lambda tier: tier.above_tokens))
        for tier in tiers:
            if not isinstance(tier, LongContext):
                raise TypeError(f"long_context entries must be LongContext, not {tier!r}")
        thresholds = [tier.above_tokens for tier in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"long_context thresholds must differ, not {thresholds}")
        object.__setattr__(self, "long_context", tiers)
        factors = dict(self.multipliers)
        for key, factor in factors.items():
            if not isinstance(factor, Decimal) or not factor.is_finite() or factor <= 0:
                raise ValueError(f"multiplier {key!r} must be a positive Decimal, not {factor!r}")
        object.__setattr__(
            self, "multipliers", MappingProxyType({k.lower(): v for k, v in factors.items()})
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

    @property
    def standard_rates(self) -> Rates:
        return Rates(
            input_per_token=self.input_per_token,
            output_per_token=self.output_per_token,
            cached_input_per_token=self.cached_input_per_token,
            cache_write_per_token=self.cache_write_per_token,
            cache_write_long_per_token=self.cache_write_long_per_token,
        )


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
    #: Price fields of a LiteLLM card that a11i does not model -> how many models state them
    #: (audio and image tokens, per-session tool fees, ...): reported when the card is loaded.
    unmodelled: Mapping[str, int] = field(default_factory=dict, compare=False)
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
        object.__setattr__(self, "unmodelled", MappingProxyType(dict(self.unmodelled)))
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
            unmodelled={
                key: self.unmodelled.get(key, 0) + other.unmodelled.get(key, 0)
                for key in {*self.unmodelled, *other.unmodelled}
            },
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


@dataclass(frozen=True, slots=True)
class AppliedRates:
    """The per-token prices one call is billed at, after every rule of the card."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_long: Decimal
    #: The tier whose prices apply: the reported one, or "standard" when the card has none.
    service_tier: str
    #: The long-context threshold the prompt passed, if any.
    above_tokens: int | None


def rates_for(
    price: ModelPrice | PriceLookup, *, prompt_tokens: int, tier: str = STANDARD
) -> AppliedRates:
    """The prices of a call with a prompt of ``prompt_tokens`` tokens served at ``tier``.

    Each price comes from the most specific rule that states it: the long-context prices of
    the tier, the long-context prices, the tier's prices, the plain prices. A cache read or a
    cache write without a price of its own costs an input token; a long-lived cache write
    without one costs a short-lived one (LiteLLM's reading of its own card, too).
    """
    p = _price_of(price)
    context: LongContext | None = None
    for candidate in p.long_context:
        if prompt_tokens > candidate.above_tokens:
            context = candidate
    key = (id(p), context.above_tokens if context is not None else None, tier)
    known = _APPLIED.get(key)
    # The price itself is kept with its rates: an id is reused once a reloaded card's old
    # prices are gone, and must then miss.
    if known is not None and known[0] is p:
        return known[1]
    applied = _applied_rates(p, context, tier)
    if len(_APPLIED) >= _APPLIED_SIZE:
        _APPLIED.clear()
    _APPLIED[key] = (p, applied)
    return applied


#: The rates applied per (price, long-context rule, tier), worked out once: twice per call
#: otherwise (projection and charge), each building and checking the layers anew.
_APPLIED: dict[tuple[int, int | None, str], tuple[ModelPrice, AppliedRates]] = {}
_APPLIED_SIZE: Final = 4096


def _applied_rates(p: ModelPrice, context: LongContext | None, tier: str) -> AppliedRates:
    layers: list[Rates] = []
    applied_tier = STANDARD
    if context is not None:
        tier_rates = context.service_tiers.get(tier)
        if tier_rates is not None:
            layers.append(tier_rates)
            applied_tier = tier
        layers.append(context.rates)
    tier_rates = p.service_tiers.get(tier)
    if tier_rates is not None:
        layers.append(tier_rates)
        applied_tier = tier
    layers.append(p.standard_rates)

    def pick(name: str) -> Decimal | None:
        for rates in layers:
            value: Decimal | None = getattr(rates, name)
            if value is not None:
                return value
        return None

    input_price = pick("input_per_token") or Decimal(0)
    write = pick("cache_write_per_token")
    write = input_price if write is None else write
    read = pick("cached_input_per_token")
    long_write = pick("cache_write_long_per_token")
    return AppliedRates(
        input=input_price,
        output=pick("output_per_token") or Decimal(0),
        cache_read=input_price if read is None else read,
        cache_write=write,
        cache_write_long=write if long_write is None else long_write,
        service_tier=applied_tier,
        above_tokens=context.above_tokens if context is not None else None,
    )


@slot_init
@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One item of a bill: so many tokens or calls at a price each."""

    item: str
    quantity: int
    #: USD per token or per call, multipliers included.
    rate: Decimal
    amount: Decimal


@slot_init
@dataclass(frozen=True, slots=True)
class Charge:
    """What a call cost and how that was computed, item by item, to reconcile with a bill."""

    total: Decimal
    lines: tuple[ChargeLine, ...]
    #: The tier priced ("standard" when the card has no prices for the reported tier).
    service_tier: str
    #: The service tier the provider reported, as written (None: not reported).
    reported_service_tier: str | None
    #: The long-context threshold the prompt passed, if any.
    above_tokens: int | None
    #: The product of the card's multipliers that applied (inference region, speed).
    multiplier: Decimal
    #: Items the provider reported that the card has no price for (billed at 0 here).
    unpriced: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for logs and spans: the rule, then ``item quantity x rate``."""
        rule = self.service_tier
        if self.reported_service_tier is not None and self.reported_service_tier != rule:
            rule += f" (reported {self.reported_service_tier})"
        if self.above_tokens is not None:
            rule += f", prompt above {self.above_tokens}"
        if self.multiplier != 1:
            rule += f", x{_plain(self.multiplier)}"
        parts = [f"{line.item} {line.quantity} x {_plain(line.rate)}" for line in self.lines]
        if self.unpriced:
            parts.append("unpriced: " + ",".join(self.unpriced))
        return "; ".join([rule, *parts])


def _plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def charge(price: ModelPrice | PriceLookup, usage: Usage) -> Charge:
    """What a call cost in USD, exactly, by every rule the card states for the usage the
    provider reported: uncached input, cache reads, short- and long-lived cache writes and
    output at the prices of the reported service tier and of the prompt's length, times the
    region and speed multipliers, plus per-call fees of server-side tools. Reasoning tokens are
    part of the output tokens and are not billed twice."""
    p = _price_of(price)
    cached = max(usage.cached_input_tokens, 0)
    written = max(usage.cache_write_tokens, 0)
    written_long = min(max(usage.cache_write_long_tokens, 0), written)
    # A provider that reports more cache tokens than input tokens is inconsistent; never let
    # it produce a negative amount of uncached input.
    uncached = max(usage.input_tokens - cached - written, 0)
    prompt = uncached + cached + written
    rates = rates_for(p, prompt_tokens=prompt, tier=service_tier(usage.service_tier))
    multiplier = _ONE
    if usage.inference_geo or usage.speed:
        for served in (usage.inference_geo, usage.speed):
            if served:
                multiplier *= p.multipliers.get(served.strip().lower(), _ONE)
    lines: list[ChargeLine] = []
    unpriced: list[str] = []
    # Added up line by line, in the lines' order: the same sums as adding the lines after.
    total = Decimal(0)
    for item, quantity, rate in (
        ("input", uncached, rates.input),
        ("cache_read", cached, rates.cache_read),
        ("cache_write", written - written_long, rates.cache_write),
        ("cache_write_long", written_long, rates.cache_write_long),
        ("output", max(usage.output_tokens, 0), rates.output),
    ):
        if quantity:
            effective = _multiply(rate, multiplier)
            amount = _multiply(quantity, effective)
            lines.append(ChargeLine(item, quantity, effective, amount))
            total = _add(total, amount)
    if usage.web_search_requests > 0 or usage.web_fetch_requests > 0:
        for item, quantity, fee in (
            ("web_search", usage.web_search_requests, p.web_search_per_call),
            ("web_fetch", usage.web_fetch_requests, p.web_fetch_per_call),
        ):
            if quantity <= 0:
                continue
            if fee is None:
                # Anthropic bills a web fetch by its tokens only: no fee is no mistake there.
                if item == "web_search":
                    unpriced.append(item)
                continue
            amount = _multiply(quantity, fee)
            lines.append(ChargeLine(item, quantity, fee, amount))
            total = _add(total, amount)
    return Charge(
        total=total,
        lines=tuple(lines),
        service_tier=rates.service_tier,
        reported_service_tier=usage.service_tier,
        above_tokens=rates.above_tokens,
        multiplier=multiplier,
        unpriced=tuple(unpriced),
    )


def cost(price: ModelPrice | PriceLookup, usage: Usage) -> Decimal:
    """What a call cost in USD, exactly (:func:`charge` without the breakdown)."""
    return charge(price, usage).total


def project(
    price: ModelPrice | PriceLookup,
    input_tokens: int,
    max_output_tokens: int,
    *,
    tier: str | None = None,
) -> Decimal:
    """The most a call can cost before it is sent: every input token at the full input price
    (a cache hit is not known in advance) and every output token it may produce, at the prices
    of the prompt's length (a 250k-token prompt is projected at the long-context prices) and
    of the service tier the request asks for, never below the standard tier's."""
    p = _price_of(price)
    inputs = max(input_tokens, 0)
    outputs = max(max_output_tokens, 0)
    standard = rates_for(p, prompt_tokens=inputs)
    amount = _add(_multiply(inputs, standard.input), _multiply(outputs, standard.output))
    asked = service_tier(tier)
    if asked != STANDARD:
        rates = rates_for(p, prompt_tokens=inputs, tier=asked)
        # Prices are finite: comparing them signals nothing, in whatever context.
        amount = max(amount, _add(_multiply(inputs, rates.input), _multiply(outputs, rates.output)))
    return amount


# --------------------------------------------------------------------------------------------
# Parsing


_OURS_TOP: Final = ("fallback", "models")
#: Our per-million price fields -> the attribute of ``Rates``/``ModelPrice`` they set.
_OUR_RATES: Final = MappingProxyType(
    {
        "input_per_mtok": "input_per_token",
        "cached_input_per_mtok": "cached_input_per_token",
        "cache_write_per_mtok": "cache_write_per_token",
        "cache_write_long_per_mtok": "cache_write_long_per_token",
        "output_per_mtok": "output_per_token",
    }
)
_PRICE_FIELDS: Final = tuple(_OUR_RATES)
_OURS_FIELDS: Final = (
    *_PRICE_FIELDS,
    "context_window",
    "max_output_tokens",
    "provider",
    "service_tiers",
    "long_context",
    "web_search_per_call",
    "web_fetch_per_call",
    "multipliers",
)
_OUR_TIER_FIELDS: Final = _PRICE_FIELDS
_OUR_LONG_FIELDS: Final = ("above_tokens", *_PRICE_FIELDS, "service_tiers")
#: A fee per call above this is a unit mistake.
_MAX_PER_CALL: Final = Decimal(100)
_MAX_MULTIPLIER: Final = Decimal(100)
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


def _fields(
    entry: object, source: str, path: str, allowed: tuple[str, ...]
) -> Mapping[object, object]:
    if not isinstance(entry, Mapping):
        raise RateCardError(source, path, f"expected a mapping of price fields, got {_kind(entry)}")
    for key in entry:
        if key not in allowed:
            raise RateCardError(source, f"{path}.{_show_key(key)}", _unknown(key, allowed))
    return entry


def _our_rates(entry: Mapping[object, object], source: str, path: str) -> Rates:
    values: dict[str, Decimal] = {}
    for name, attribute in _OUR_RATES.items():
        value = entry.get(name)
        if value is not None:
            amount = _decimal(value, source, f"{path}.{name}", _MAX_PER_MTOK, "per million tokens")
            values[attribute] = per_million(amount)
    return Rates(**values)


def _our_tiers(value: object, source: str, path: str) -> dict[str, Rates]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RateCardError(
            source, path, f"expected a mapping of tier to prices, got {_kind(value)}"
        )
    tiers: dict[str, Rates] = {}
    for name, entry in value.items():
        where = f"{path}.{_show_key(name)}"
        if name not in SERVICE_TIERS:
            raise RateCardError(source, where, _unknown(name, SERVICE_TIERS))
        rates = _our_rates(_fields(entry, source, where, _OUR_TIER_FIELDS), source, where)
        if rates.empty:
            raise RateCardError(source, where, "states no price")
        tiers[str(name)] = rates
    return tiers


def _our_long_context(value: object, source: str, path: str) -> tuple[LongContext, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RateCardError(source, path, f"expected a list of tiers, got {_kind(value)}")
    tiers: list[LongContext] = []
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        fields_ = _fields(entry, source, where, _OUR_LONG_FIELDS)
        above = _count(fields_.get("above_tokens"), source, f"{where}.above_tokens")
        if above is None:
            raise RateCardError(source, f"{where}.above_tokens", "is required")
        if any(tier.above_tokens == above for tier in tiers):
            raise RateCardError(source, f"{where}.above_tokens", f"{above} is listed twice")
        tiers.append(
            LongContext(
                above_tokens=above,
                rates=_our_rates(fields_, source, where),
                service_tiers=_our_tiers(
                    fields_.get("service_tiers"), source, f"{where}.service_tiers"
                ),
            )
        )
    return tuple(tiers)


def _our_multipliers(value: object, source: str, path: str) -> dict[str, Decimal]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RateCardError(
            source, path, f"expected a mapping of name to factor, got {_kind(value)}"
        )
    factors: dict[str, Decimal] = {}
    for name, factor in value.items():
        where = f"{path}.{_show_key(name)}"
        if not isinstance(name, str) or not name.strip():
            raise RateCardError(source, where, "a multiplier's name must be a non-empty string")
        amount = _decimal(factor, source, where, _MAX_MULTIPLIER, "factor")
        if amount == 0:
            raise RateCardError(source, where, "a multiplier must be more than zero")
        factors[name] = amount
    return factors


def _our_price(entry: object, source: str, path: str) -> ModelPrice:
    fields_ = _fields(entry, source, path, _OURS_FIELDS)
    rates = _our_rates(fields_, source, path)
    if rates.input_per_token is None:
        raise RateCardError(source, f"{path}.input_per_mtok", "is required")
    if rates.output_per_token is None:
        raise RateCardError(source, f"{path}.output_per_mtok", "is required")
    window = _count(fields_.get("context_window"), source, f"{path}.context_window")
    if window is None:
        raise RateCardError(source, f"{path}.context_window", "is required")
    provider = fields_.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise RateCardError(source, f"{path}.provider", f"expected a string, got {_kind(provider)}")

    def fee(name: str) -> Decimal | None:
        value = fields_.get(name)
        if value is None:
            return None
        return _decimal(value, source, f"{path}.{name}", _MAX_PER_CALL, "per call")

    return ModelPrice(
        input_per_token=rates.input_per_token,
        output_per_token=rates.output_per_token,
        cached_input_per_token=rates.cached_input_per_token,
        cache_write_per_token=rates.cache_write_per_token,
        cache_write_long_per_token=rates.cache_write_long_per_token,
        context_window=window,
        max_output_tokens=_count(
            fields_.get("max_output_tokens"), source, f"{path}.max_output_tokens"
        ),
        provider=provider,
        service_tiers=_our_tiers(fields_.get("service_tiers"), source, f"{path}.service_tiers"),
        long_context=_our_long_context(fields_.get("long_context"), source, f"{path}.long_context"),
        web_search_per_call=fee("web_search_per_call"),
        web_fetch_per_call=fee("web_fetch_per_call"),
        multipliers=_our_multipliers(fields_.get("multipliers"), source, f"{path}.multipliers"),
    )


# LiteLLM's token price keys: the price, an optional long-context threshold
# ("_above_200k_tokens"), an optional service tier ("_flex", "_priority", "_batches",
# "_ultrafast"), e.g. cache_creation_input_token_cost_above_1hr_above_200k_tokens_batches.
_LITELLM_RATE: Final = re.compile(
    r"^(?P<price>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost_above_1hr|cache_creation_input_token_cost_above_12hr"
    r"|cache_creation_input_token_cost)"
    r"(?:_above_(?P<number>\d+)(?P<k>k?)_tokens)?"
    r"(?:_(?P<tier>flex|priority|batches|ultrafast))?$"
)
_LITELLM_PRICES: Final = MappingProxyType(
    {
        "input_cost_per_token": "input_per_token",
        "output_cost_per_token": "output_per_token",
        "cache_read_input_token_cost": "cached_input_per_token",
        "cache_creation_input_token_cost": "cache_write_per_token",
        "cache_creation_input_token_cost_above_1hr": "cache_write_long_per_token",
        "cache_creation_input_token_cost_above_12hr": "cache_write_long_per_token",
    }
)
#: LiteLLM fields that state no price (capabilities, limits, provenance): read or ignored
#: knowingly. Every other field of an entry is a price rule a11i does not model, reported.
_LITELLM_INERT: Final = frozenset(
    {
        "mode",
        "litellm_provider",
        "source",
        "metadata",
        "comment",
        "deprecation_date",
        "rpm",
        "tpm",
        "output_vector_size",
        "default_reasoning_effort",
        "prompt_cache_min_tokens",
        "thinking_always_on",
        "tool_use_system_prompt_tokens",
        "use_openai_responses_path",
        "uses_embed_content",
        "vertex_ai_audio_api",
        "audio_transcription_config",
        "rules",
        "provider_specific_entry",
        "search_context_cost_per_query",
    }
)
_LITELLM_INERT_PREFIXES: Final = (
    "supports_",
    "supported_",
    "max_",
    "bedrock_",
    "gemini_",
    "reasoning_",
    "token_count_",
)
# The size OpenAI bills a web search at unless the request asks otherwise; LiteLLM states a
# price per size (all equal for OpenAI's and Anthropic's current models).
_SEARCH_SIZE: Final = "search_context_size_medium"


def _parse_litellm(data: Mapping[object, object], source: str) -> RateCard:
    models: dict[str, ModelPrice] = {}
    skipped: list[str] = []
    unmodelled: dict[str, int] = {}
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
            continue
        models[name] = price
        for key in entry:
            if isinstance(key, str) and _litellm_unmodelled(key):
                unmodelled[key] = unmodelled.get(key, 0) + 1
    if not models:
        raise RateCardError(source, "", "no model in the card has token prices")
    return RateCard(models=models, source=source, skipped=tuple(skipped), unmodelled=unmodelled)


def _litellm_unmodelled(key: str) -> bool:
    if key in _LITELLM_INERT or key.startswith(_LITELLM_INERT_PREFIXES):
        return False
    return _LITELLM_RATE.match(key) is None


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
    # Every token price by (threshold or 0, tier or ""): the plain prices are (0, "").
    rules: dict[tuple[int, str], dict[str, Decimal]] = {}
    for key in entry:
        if not isinstance(key, str):
            continue
        match = _LITELLM_RATE.match(key)
        if match is None:
            continue
        amount = price(key)
        if amount is None:
            continue
        number = match["number"]
        above = int(number) * (1000 if match["k"] else 1) if number else 0
        tier = {"batches": "batch"}.get(match["tier"] or "", match["tier"] or "")
        attribute = _LITELLM_PRICES[match["price"]]
        slot = rules.setdefault((above, tier), {})
        # A model with both a 1-hour and a 12-hour write price: the dearer one, never less.
        slot[attribute] = max(amount, slot.get(attribute, amount))
    plain = rules.pop((0, ""), {})
    tiers = {tier: Rates(**values) for (above, tier), values in rules.items() if above == 0}
    long_context: list[LongContext] = []
    for above in sorted({above for above, _ in rules if above > 0}):
        long_context.append(
            LongContext(
                above_tokens=above,
                rates=Rates(**rules.get((above, ""), {})),
                service_tiers={
                    tier: Rates(**values)
                    for (threshold, tier), values in rules.items()
                    if threshold == above and tier
                },
            )
        )
    # max_input_tokens is the prompt room; the legacy max_tokens is the best guess without it;
    # without either, the fallback's window (a large one, so projections err high).
    context = window("max_input_tokens") or window("max_tokens") or DEFAULT_FALLBACK.context_window
    return ModelPrice(
        input_per_token=input_price,
        output_per_token=output_price,
        cached_input_per_token=plain.get("cached_input_per_token"),
        cache_write_per_token=plain.get("cache_write_per_token"),
        cache_write_long_per_token=plain.get("cache_write_long_per_token"),
        context_window=context,
        max_output_tokens=window("max_output_tokens"),
        provider=provider,
        service_tiers=tiers,
        long_context=tuple(long_context),
        web_search_per_call=_litellm_search_fee(name, entry, source),
        multipliers=_litellm_multipliers(name, entry, source),
    )


def _litellm_search_fee(name: str, entry: Mapping[object, object], source: str) -> Decimal | None:
    sizes = entry.get("search_context_cost_per_query")
    if sizes is None:
        return None
    path = f"{name}.search_context_cost_per_query"
    if not isinstance(sizes, Mapping):
        raise RateCardError(source, path, f"expected a mapping of size to USD, got {_kind(sizes)}")
    fees = {
        str(size): _decimal(value, source, f"{path}.{_show_key(size)}", _MAX_PER_CALL, "per call")
        for size, value in sizes.items()
        if value is not None
    }
    if not fees:
        return None
    return fees.get(_SEARCH_SIZE, max(fees.values()))


def _litellm_multipliers(
    name: str, entry: Mapping[object, object], source: str
) -> dict[str, Decimal]:
    # provider_specific_entry: {"us": 1.1, "fast": 2}, the factors of Anthropic's US-only
    # inference and fast mode; it also holds settings that are no factor (Bedrock's
    # "bedrock_invocation_schema": "titan_v2"), which are left alone.
    value = entry.get("provider_specific_entry")
    if not isinstance(value, Mapping):
        return {}
    factors: dict[str, Decimal] = {}
    for key, factor in value.items():
        if not isinstance(key, str) or isinstance(factor, bool):
            continue
        if isinstance(factor, str):
            try:
                factor = Decimal(factor.strip())
            except InvalidOperation:
                continue
        if isinstance(factor, int | float | Decimal) and factor:
            where = f"{name}.provider_specific_entry.{key}"
            factors[key] = _decimal(factor, source, where, _MAX_MULTIPLIER, "factor")
    return factors


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
