"""Typed values shared by the whole core: dialects, JSON shapes, usage.

Pure data: no I/O, no behaviour beyond small derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TypeAlias

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"


class Provider(StrEnum):
    """Who answers a dialect; also the value of ``gen_ai.provider.name``."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Dialect(StrEnum):
    """The API shape of a metered request, detected from its path."""

    OPENAI_CHAT = "openai.chat"
    OPENAI_RESPONSES = "openai.responses"
    OPENAI_EMBEDDINGS = "openai.embeddings"
    #: The legacy ``POST /v1/completions`` (gpt-3.5-turbo-instruct, davinci-002, babbage-002).
    OPENAI_COMPLETIONS = "openai.completions"
    ANTHROPIC_MESSAGES = "anthropic.messages"

    @property
    def provider(self) -> Provider:
        return Provider.ANTHROPIC if self is Dialect.ANTHROPIC_MESSAGES else Provider.OPENAI


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, normalised across dialects, and what else the provider bills.

    ``input_tokens`` counts every prompt token, cached ones included; ``cached_input_tokens`` is
    the part of it read from the provider's prompt cache and ``cache_write_tokens`` the part
    written to it, of which ``cache_write_long_tokens`` were written with the long lifetime
    (Anthropic's 1-hour TTL, OpenAI's 12-hour retention; the rest is the short one: 5 minutes,
    30 minutes). ``output_tokens`` counts every generated token; ``reasoning_tokens`` is the part
    of it spent thinking (never billed on top). The other fields say how the provider served the
    call, as reported, for pricing by the card's matching rules.
    """

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_long_tokens: int = 0
    reasoning_tokens: int = 0
    #: Server-side tool calls billed per call: Anthropic's web search and web fetch, OpenAI's
    #: web search on the Responses API.
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    #: The service tier the answer reports (OpenAI ``service_tier``: default, flex, priority,
    #: ...; Anthropic ``usage.service_tier``: standard, priority, batch); None: not reported.
    service_tier: str | None = None
    #: Anthropic: where inference ran (``usage.inference_geo``) and at what speed (``speed``).
    inference_geo: str | None = None
    speed: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count and whether it is exact (tiktoken with the model's own rules) or estimated."""

    tokens: int
    exact: bool


def usd(amount: Decimal) -> str:
    """Money as the decimal string a11i puts in headers, JSON and events: no exponent, no
    trailing zeros (``Decimal("0.00007000")`` -> ``"0.00007"``), never a float."""
    return format(amount.normalize(), "f") if amount else "0"
