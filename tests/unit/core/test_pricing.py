"""The rate card: exact cost arithmetic, name matching, both file shapes, every invalid input."""

from __future__ import annotations

import json
import zipfile
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a11i.core.model import Usage
from a11i.core.pricing import (
    _REPORTED_TIERS,
    DEFAULT_FALLBACK,
    STANDARD,
    LongContext,
    ModelPrice,
    PriceLookup,
    RateCard,
    RateCardError,
    Rates,
    charge,
    cost,
    normalize_model_name,
    parse_rate_card,
    per_million,
    project,
    rates_for,
    service_tier,
)
from a11i.sidecar.encodings import DEFAULT_WHEEL_DIR, LITELLM_VERSION, find_wheel
from a11i.sidecar.rates import (
    builtin_rate_card,
    load_rate_card_file,
    parse_text,
    report_unmodelled,
)
from tests.support.paths import DATA

LITELLM_SAMPLE = DATA / "litellm_prices_sample.json"
SOURCE = "/etc/a11i/rates.yaml"


def price(
    input_mtok: str,
    output_mtok: str,
    *,
    cached: str | None = None,
    write: str | None = None,
    window: int = 128_000,
    max_output: int | None = None,
) -> ModelPrice:
    return ModelPrice(
        input_per_token=per_million(input_mtok),
        output_per_token=per_million(output_mtok),
        cached_input_per_token=per_million(cached) if cached is not None else None,
        cache_write_per_token=per_million(write) if write is not None else None,
        context_window=window,
        max_output_tokens=max_output,
    )


def load_sample(*, decimals: bool = True) -> RateCard:
    text = LITELLM_SAMPLE.read_text(encoding="utf-8")
    data: object = json.loads(text, parse_float=Decimal) if decimals else json.loads(text)
    return parse_rate_card(data, source=str(LITELLM_SAMPLE))


GPT_4O = price("2.50", "10.00", cached="1.25", max_output=16_384)
SONNET = price("3", "15", cached="0.30", write="3.75", window=200_000, max_output=64_000)


# --------------------------------------------------------------------------- arithmetic


def test_per_million_moves_the_decimal_point_exactly() -> None:
    assert per_million("2.50") == Decimal("0.0000025")
    assert per_million(15) == Decimal("0.000015")
    # More digits than the default context's 28 would keep: still exact.
    long = "1.234567890123456789012345678901234"
    assert per_million(long) == Decimal("0.000001234567890123456789012345678901234")


@pytest.mark.parametrize(
    ("card_price", "usage", "expected"),
    [
        pytest.param(GPT_4O, Usage(1_000, 500), "0.0075", id="gpt-4o-1k-in-500-out"),
        pytest.param(GPT_4O, Usage(0, 0), "0", id="nothing-costs-nothing"),
        pytest.param(GPT_4O, Usage(1, 0), "0.0000025", id="one-input-token"),
        pytest.param(
            GPT_4O,
            Usage(1_000, 0, cached_input_tokens=400),
            # 600 x 2.50/M + 400 x 1.25/M
            "0.002",
            id="openai-cached-input-at-half-price",
        ),
        pytest.param(
            SONNET,
            Usage(10_000, 1_000, cached_input_tokens=6_000, cache_write_tokens=2_000),
            # 2000 x 3/M + 6000 x 0.30/M + 2000 x 3.75/M + 1000 x 15/M
            "0.0303",
            id="anthropic-cache-read-and-write",
        ),
        pytest.param(
            price("2", "8"),
            Usage(1_000, 0, cached_input_tokens=1_000, cache_write_tokens=0),
            "0.002",
            id="no-cached-price-means-input-price",
        ),
        pytest.param(
            GPT_4O,
            Usage(100, 0, cached_input_tokens=500),
            # An inconsistent report: the cache reads are billed, uncached input is not negative.
            "0.000625",
            id="more-cached-than-input-never-negative",
        ),
        pytest.param(
            price("0.02", "0"), Usage(1_000_000, 0), "0.02", id="embedding-million-tokens"
        ),
    ],
)
def test_cost_is_exact(card_price: ModelPrice, usage: Usage, expected: str) -> None:
    amount = cost(card_price, usage)
    assert isinstance(amount, Decimal)
    assert amount == Decimal(expected)


def test_cost_of_the_built_in_gpt_4o() -> None:
    found = builtin_rate_card().lookup("gpt-4o")
    assert cost(found, Usage(1_000, 500)) == Decimal("0.0075")
    assert cost(found.price, Usage(1_000, 500)) == Decimal("0.0075")


def test_cost_does_not_drift_over_many_small_calls() -> None:
    one_call = cost(GPT_4O, Usage(3, 7))
    total = sum((one_call for _ in range(100_000)), Decimal(0))
    assert total == cost(GPT_4O, Usage(300_000, 700_000))


@pytest.mark.parametrize(
    ("card_price", "input_tokens", "output_tokens", "expected"),
    [
        pytest.param(GPT_4O, 1_000, 4_096, "0.04346", id="gpt-4o"),
        pytest.param(GPT_4O, 0, 0, "0", id="empty"),
        pytest.param(SONNET, 100_000, 64_000, "1.26", id="sonnet-full-output"),
        pytest.param(DEFAULT_FALLBACK, 1_000, 32_000, "2.415", id="fallback"),
    ],
)
def test_projection(
    card_price: ModelPrice, input_tokens: int, output_tokens: int, expected: str
) -> None:
    assert project(card_price, input_tokens, output_tokens) == Decimal(expected)


def test_projection_accepts_a_lookup_and_ignores_the_cache() -> None:
    found = PriceLookup("gpt-4o", "gpt-4o", GPT_4O, is_fallback=False)
    # Every input token at the full input price: a cache hit is not known in advance.
    assert project(found, 1_000, 0) == Decimal("0.0025")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"input_per_token": Decimal(-1)}, id="negative-input"),
        pytest.param({"output_per_token": Decimal("NaN")}, id="nan-output"),
        pytest.param({"cached_input_per_token": Decimal("-0.1")}, id="negative-cached"),
        pytest.param({"context_window": 0}, id="zero-window"),
        pytest.param({"context_window": True}, id="bool-window"),
        pytest.param({"max_output_tokens": 0}, id="zero-max-output"),
    ],
)
def test_model_price_refuses_nonsense(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "input_per_token": Decimal(1),
        "output_per_token": Decimal(1),
        "context_window": 10,
        **kwargs,
    }
    with pytest.raises(ValueError, match="must be"):
        ModelPrice(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(
    ("model", "matched"),
    [
        pytest.param("gpt-4o", "gpt-4o", id="exact"),
        pytest.param("GPT-4o", "gpt-4o", id="case"),
        pytest.param("gpt-4o-2024-08-06", "gpt-4o", id="openai-dated"),
        pytest.param("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", id="dated-with-own-price"),
        pytest.param("gpt-4-0613", "gpt-4", id="openai-mmdd"),
        pytest.param("gpt-3.5-turbo-0125", "gpt-3.5-turbo", id="gpt-35-mmdd"),
        pytest.param("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106", id="mmdd-with-own-price"),
        pytest.param("claude-3-5-sonnet-20241022", "claude-3-5-sonnet", id="anthropic-dated"),
        pytest.param("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", id="claude-4-dated"),
        pytest.param("claude-opus-4-1-20250805", "claude-opus-4-1", id="opus-4-1-dated"),
        pytest.param("claude-opus-4-20250514", "claude-opus-4", id="opus-4-dated"),
        pytest.param("claude-3-7-sonnet-latest", "claude-3-7-sonnet", id="latest"),
        pytest.param("openai/gpt-4o-mini", "gpt-4o-mini", id="openai-prefix"),
        pytest.param("anthropic/claude-haiku-4-5", "claude-haiku-4-5", id="anthropic-prefix"),
        pytest.param("azure/GPT-4.1-2025-04-14", "gpt-4.1", id="azure-prefix-case-dated"),
        pytest.param("openrouter/openai/o3-mini", "o3-mini", id="nested-prefix"),
        pytest.param(
            "anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet", id="bedrock"
        ),
        pytest.param(
            "us.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku", id="bedrock-us"
        ),
        pytest.param("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet", id="vertex"),
        pytest.param("gpt-4o-mini-audio-preview", "gpt-4o-mini", id="longest-prefix"),
        pytest.param("gpt-4o-mini-search-preview-2025-03-11", "gpt-4o-mini", id="prefix-dated"),
        pytest.param("gpt-4.1-mini", "gpt-4.1-mini", id="mini-not-base"),
        pytest.param("gpt-5-chat-latest", "gpt-5", id="gpt-5-chat"),
        pytest.param("gpt-5-codex", "gpt-5", id="gpt-5-codex"),
        pytest.param("o3-pro-2025-06-10", "o3-pro", id="o3-pro-not-o3"),
        pytest.param("o1-mini", "o1", id="cheaper-variant-priced-high"),
        pytest.param("text-embedding-3-small", "text-embedding-3-small", id="embedding"),
    ],
)
def test_lookup_matches(model: str, matched: str) -> None:
    found = builtin_rate_card().lookup(model)
    assert found.model == model
    assert found.matched == matched
    assert not found.is_fallback
    assert found.price is builtin_rate_card().models[matched]


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("acme-llm-9000", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("gpt", id="too-short"),
        pytest.param("gpt-4o-mini-pro", id="premium-tier-of-known-model"),
        pytest.param("o3-research", id="research-tier"),
        pytest.param("ft:gpt-4o-mini-2024-07-18:acme::abc123", id="fine-tune"),
        pytest.param("claude-2.1", id="retired-family"),
        pytest.param("mistral/mistral-large", id="other-provider"),
    ],
)
def test_unknown_models_are_priced_at_the_fallback_and_flagged(model: str) -> None:
    card = builtin_rate_card()
    found = card.lookup(model)
    assert found.is_fallback
    assert found.matched is None
    assert found.price == card.fallback
    assert cost(found, Usage(1_000, 1_000)) > 0


def test_lookup_is_remembered() -> None:
    card = builtin_rate_card()
    assert card.lookup("gpt-4o-2024-11-20") is card.lookup("gpt-4o-2024-11-20")


def test_lowercase_key_wins_over_a_differently_cased_twin() -> None:
    card = RateCard({"Model-X": price("9", "9"), "model-x": price("1", "1")})
    assert card.lookup("MODEL-X").matched == "model-x"
    assert card.lookup("Model-X").matched == "Model-X"


def test_own_names_win_over_prefixed_aliases() -> None:
    card = RateCard({"gpt-4o": GPT_4O, "azure/gpt-4o": price("2.75", "11")})
    assert card.lookup("gpt-4o").matched == "gpt-4o"
    assert card.lookup("azure/gpt-4o").matched == "azure/gpt-4o"
    assert card.lookup("openai/gpt-4o-2024-08-06").matched == "gpt-4o"


def test_an_ambiguous_alias_takes_the_dearest_price() -> None:
    card = RateCard(
        {"cheap/model-y": price("1", "1"), "dear/model-y": price("5", "5"), "z/model-y-v": GPT_4O}
    )
    assert card.lookup("model-y").matched == "dear/model-y"


@pytest.mark.parametrize(
    ("model", "family"),
    [
        pytest.param("openai/GPT-4o-2024-08-06", "gpt-4o", id="prefix-case-date"),
        pytest.param("claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet", id="bedrock"),
        pytest.param("o3", "o3", id="short"),
        pytest.param("2024-08-06", "2024-08-06", id="all-suffix-kept"),
    ],
)
def test_normalize_model_name(model: str, family: str) -> None:
    assert normalize_model_name(model) == family


# --------------------------------------------------------------------------- merging


def test_a_users_card_overrides_model_by_model() -> None:
    builtin = builtin_rate_card()
    user = parse_rate_card(
        {
            "models": {
                "GPT-4o": {"input_per_mtok": "1", "output_per_mtok": "2", "context_window": 1000}
            }
        },
        source="user.yaml",
    )
    card = builtin.merged(user)
    assert card.lookup("gpt-4o").matched == "GPT-4o"
    assert card.lookup("gpt-4o-2024-08-06").price.input_per_token == Decimal("0.000001")
    assert card.lookup("gpt-4o-mini") == builtin.lookup("gpt-4o-mini")
    assert card.fallback == builtin.fallback
    assert card.source == f"{builtin.source} + user.yaml"
    # The built-in card is untouched.
    assert builtin.lookup("gpt-4o").matched == "gpt-4o"


def test_a_users_fallback_wins_only_when_stated() -> None:
    builtin = builtin_rate_card()
    stated = parse_rate_card(
        {"fallback": {"input_per_mtok": 30, "output_per_mtok": 150, "context_window": 1_000_000}},
        source="user.yaml",
    )
    assert builtin.merged(stated).fallback.input_per_token == Decimal("0.00003")
    assert builtin.merged(stated).explicit_fallback
    assert builtin.merged(load_sample()).fallback == builtin.fallback


def test_a_litellm_card_over_the_built_in_one() -> None:
    card = builtin_rate_card().merged(load_sample())
    assert card.lookup("gpt-4o").price.provider == "openai"
    assert card.lookup("azure/gpt-4o").price.input_per_token == Decimal("0.00000275")
    assert card.lookup("claude-3-opus").matched == "claude-3-opus"
    assert card.skipped == ("dall-e-3", "whisper-1")


# --------------------------------------------------------------------------- our YAML shape

OUR_CARD = """
fallback: {input_per_mtok: "20", output_per_mtok: "80", context_window: 300000}
models:
  gpt-4o: {input_per_mtok: "2.50", cached_input_per_mtok: "1.25", output_per_mtok: "10.00",
           context_window: 128000, max_output_tokens: 16384, provider: openai}
  claude-sonnet-4-5:
    input_per_mtok: 3
    cached_input_per_mtok: 0.30
    cache_write_per_mtok: "3.75"
    output_per_mtok: 15
    context_window: 200000
  local-llama: {input_per_mtok: "0", output_per_mtok: "0", context_window: 8192}
"""


def test_our_yaml_shape() -> None:
    card = parse_rate_card(parse_text(OUR_CARD, source="t", suffix=".yaml"), source="t")
    assert card.explicit_fallback
    assert card.fallback == ModelPrice(
        input_per_token=Decimal("0.00002"),
        output_per_token=Decimal("0.00008"),
        context_window=300_000,
    )
    assert card.models["gpt-4o"] == ModelPrice(
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
        cached_input_per_token=Decimal("0.00000125"),
        context_window=128_000,
        max_output_tokens=16_384,
        provider="openai",
    )
    sonnet = card.models["claude-sonnet-4-5"]
    # YAML numbers (a float 0.30 among them) are taken at their written decimal value.
    assert sonnet.cached_input_per_token == Decimal("0.0000003")
    assert sonnet.cache_write_per_token == Decimal("0.00000375")
    assert sonnet.max_output_tokens is None
    assert sonnet.provider is None
    assert card.lookup("local-llama").price.input_per_token == 0
    assert card.skipped == ()


@pytest.mark.parametrize(
    ("data", "models"),
    [
        pytest.param({"models": None}, 0, id="models-null"),
        pytest.param({"models": {}}, 0, id="models-empty"),
        pytest.param(
            {"fallback": {"input_per_mtok": "1", "output_per_mtok": "1", "context_window": 9}},
            0,
            id="fallback-only",
        ),
        pytest.param(
            {"models": {"m": {"input_per_mtok": 1.5, "output_per_mtok": 2, "context_window": 9.0}}},
            1,
            id="numbers-accepted",
        ),
    ],
)
def test_small_cards_of_our_shape(data: object, models: int) -> None:
    card = parse_rate_card(data, source="t")
    assert len(card.models) == models


def test_float_prices_keep_their_written_value() -> None:
    card = parse_rate_card(
        {"models": {"m": {"input_per_mtok": 0.1, "output_per_mtok": 0.3, "context_window": 9}}},
        source="t",
    )
    assert card.models["m"].input_per_token == Decimal("0.0000001")
    assert card.models["m"].output_per_token == Decimal("0.0000003")


# --------------------------------------------------------------------------- LiteLLM's shape


def test_litellm_shape() -> None:
    card = load_sample()
    assert card.source == str(LITELLM_SAMPLE)
    assert not card.explicit_fallback
    assert card.fallback == DEFAULT_FALLBACK
    assert "sample_spec" not in card.models
    # Priced per image and per second: skipped and listed, sample_spec not counted.
    assert card.skipped == ("dall-e-3", "whisper-1")
    assert len(card.models) == 9
    assert card.models["gpt-4o"] == ModelPrice(
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
        cached_input_per_token=Decimal("0.00000125"),
        context_window=128_000,
        max_output_tokens=16_384,
        provider="openai",
        # input_cost_per_token_batches / output_cost_per_token_batches
        service_tiers={
            "batch": Rates(
                input_per_token=Decimal("0.00000125"), output_per_token=Decimal("0.000005")
            )
        },
    )
    sonnet = card.models["claude-sonnet-4-5-20250929"]
    assert sonnet.cache_write_per_token == Decimal("0.00000375")
    assert sonnet.cached_input_per_token == Decimal("0.0000003")
    assert cost(sonnet, Usage(10_000, 1_000, 6_000, 2_000)) == Decimal("0.0303")


def test_litellm_special_entries() -> None:
    card = load_sample()
    # An embedding without an output price produces no output tokens: output costs 0.
    assert card.models["text-embedding-3-large"].output_per_token == 0
    # A window of 0 means unknown: the fallback's (large) window is assumed.
    ada = card.models["vercel_ai_gateway/openai/text-embedding-ada-002"]
    assert ada.context_window == DEFAULT_FALLBACK.context_window
    assert ada.max_output_tokens is None


@pytest.mark.parametrize(
    ("model", "matched"),
    [
        pytest.param("gpt-4o", "gpt-4o", id="own-name"),
        pytest.param("gpt-4o-2024-08-06", "gpt-4o", id="dated"),
        pytest.param("azure/gpt-4o", "azure/gpt-4o", id="prefixed-as-given"),
        pytest.param("gpt-4.1-nano", "azure/gpt-4.1-nano", id="only-prefixed-entry"),
        pytest.param(
            "openai/gpt-4.1-nano-2025-04-14", "azure/gpt-4.1-nano", id="prefix-alias-dated"
        ),
        pytest.param("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", id="only-dated-entry"),
        pytest.param("claude-3-haiku", "anthropic.claude-3-haiku-20240307-v1:0", id="bedrock-key"),
        pytest.param(
            "text-embedding-ada-002",
            "vercel_ai_gateway/openai/text-embedding-ada-002",
            id="gateway",
        ),
    ],
)
def test_litellm_lookup(model: str, matched: str) -> None:
    assert load_sample().lookup(model).matched == matched


def test_litellm_float_and_decimal_json_agree() -> None:
    assert load_sample(decimals=False) == load_sample(decimals=True)


# --------------------------------------------------------------------------- invalid cards


def _model(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "input_per_mtok": "2.50",
        "output_per_mtok": "10",
        "context_window": 128_000,
    }
    entry.update(fields)
    return {"models": {"gpt-4o": {k: v for k, v in entry.items() if v is not _DROP}}}


_DROP = object()


def _litellm(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "litellm_provider": "openai",
        "max_input_tokens": 128_000,
        "mode": "chat",
    }
    entry.update(fields)
    return {"gpt-4o": {k: v for k, v in entry.items() if v is not _DROP}}


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        pytest.param(None, "", "the card is empty", id="empty"),
        pytest.param([1, 2], "", "expected a mapping at the top level, got a list", id="list"),
        pytest.param("rates", "", 'got a string ("rates")', id="string"),
        pytest.param({}, "", "not a rate card", id="empty-mapping"),
        pytest.param({"gpt-4o": 1}, "", "not a rate card", id="no-recognisable-shape"),
        pytest.param(
            {"models": {}, "fallbak": {}}, "fallbak", "did you mean 'fallback'?", id="top-typo"
        ),
        pytest.param({"models": {}, 3: 1}, "3", "unknown key", id="top-non-string-key"),
        pytest.param(
            {"models": ["gpt-4o"]}, "models", "expected a mapping of model name", id="models-list"
        ),
        pytest.param(
            {"models": {"gpt-4o": "2.50"}},
            "models.gpt-4o",
            "expected a mapping of price fields, got a string",
            id="entry-not-mapping",
        ),
        pytest.param({"models": {"gpt-4o": None}}, "models.gpt-4o", "got null", id="entry-null"),
        pytest.param(
            {"models": {4: {}}},
            "models.4",
            "a model name must be a non-empty string",
            id="int-name",
        ),
        pytest.param({"models": {"": {}}}, 'models.""', "non-empty string", id="empty-name"),
        pytest.param(
            {"models": {" gpt-4o": {}}}, "models. gpt-4o", "surrounding spaces", id="spaced-name"
        ),
        pytest.param(
            _model(input_per_mtok="abc"),
            "models.gpt-4o.input_per_mtok",
            '"abc" is not a decimal number',
            id="price-not-decimal",
        ),
        pytest.param(
            _model(output_per_mtok="-1"),
            "models.gpt-4o.output_per_mtok",
            '"-1" is negative: a price must be zero or more',
            id="price-negative-string",
        ),
        pytest.param(
            _model(cached_input_per_mtok=-0.5),
            "models.gpt-4o.cached_input_per_mtok",
            "-0.5 is negative",
            id="cached-negative",
        ),
        pytest.param(
            _model(cache_write_per_mtok="NaN"),
            "models.gpt-4o.cache_write_per_mtok",
            "is not a finite number",
            id="nan",
        ),
        pytest.param(
            _model(input_per_mtok=float("inf")),
            "models.gpt-4o.input_per_mtok",
            "inf is not a finite number",
            id="infinity",
        ),
        pytest.param(
            _model(input_per_mtok=True),
            "models.gpt-4o.input_per_mtok",
            "true is not a decimal number",
            id="price-bool",
        ),
        pytest.param(
            _model(input_per_mtok=["2.50"]),
            "models.gpt-4o.input_per_mtok",
            "expected a decimal number, got a list",
            id="price-list",
        ),
        pytest.param(
            _model(output_per_mtok="2000000"),
            "models.gpt-4o.output_per_mtok",
            "implausibly high for a price per million tokens",
            id="price-absurd",
        ),
        pytest.param(
            _model(input_per_mtok=_DROP),
            "models.gpt-4o.input_per_mtok",
            "is required",
            id="missing-input",
        ),
        pytest.param(
            _model(output_per_mtok=None),
            "models.gpt-4o.output_per_mtok",
            "is required",
            id="null-output",
        ),
        pytest.param(
            _model(context_window=_DROP),
            "models.gpt-4o.context_window",
            "is required",
            id="missing-window",
        ),
        pytest.param(
            _model(context_window=1.5),
            "models.gpt-4o.context_window",
            "1.5 is not a whole number of tokens",
            id="window-fraction",
        ),
        pytest.param(
            _model(context_window="128k"),
            "models.gpt-4o.context_window",
            'expected a whole number of tokens, got a string ("128k")',
            id="window-string",
        ),
        pytest.param(
            _model(context_window=0),
            "models.gpt-4o.context_window",
            "0 must be a positive number of tokens",
            id="window-zero",
        ),
        pytest.param(
            _model(context_window=-1),
            "models.gpt-4o.context_window",
            "must be a positive number",
            id="window-negative",
        ),
        pytest.param(
            _model(context_window=False),
            "models.gpt-4o.context_window",
            "false is not a whole number",
            id="window-bool",
        ),
        pytest.param(
            _model(context_window=10**12),
            "models.gpt-4o.context_window",
            "implausibly large",
            id="window-absurd",
        ),
        pytest.param(
            _model(max_output_tokens=0),
            "models.gpt-4o.max_output_tokens",
            "must be a positive number",
            id="max-output-zero",
        ),
        pytest.param(
            _model(provider=1),
            "models.gpt-4o.provider",
            "expected a string, got a number (1)",
            id="provider-number",
        ),
        pytest.param(
            _model(input_per_mtoks="2.50"),
            "models.gpt-4o.input_per_mtoks",
            "did you mean 'input_per_mtok'?",
            id="field-typo",
        ),
        pytest.param(
            _model(input_cost_per_token=2.5e-6),
            "models.gpt-4o.input_cost_per_token",
            "unknown key",
            id="litellm-field-in-our-shape",
        ),
        pytest.param(
            {"fallback": {"input_per_mtok": "1", "output_per_mtok": "x", "context_window": 9}},
            "fallback.output_per_mtok",
            '"x" is not a decimal number',
            id="fallback-bad-price",
        ),
        pytest.param({"fallback": []}, "fallback", "got a list", id="fallback-list"),
        pytest.param(
            _litellm(input_cost_per_token="abc"),
            "gpt-4o.input_cost_per_token",
            '"abc" is not a decimal number',
            id="litellm-price-not-decimal",
        ),
        pytest.param(
            _litellm(output_cost_per_token=-1e-05),
            "gpt-4o.output_cost_per_token",
            "is negative",
            id="litellm-negative",
        ),
        pytest.param(
            _litellm(cache_read_input_token_cost=15),
            "gpt-4o.cache_read_input_token_cost",
            "implausibly high for a price per token",
            id="litellm-per-million-by-mistake",
        ),
        pytest.param(
            _litellm(max_input_tokens=-5),
            "gpt-4o.max_input_tokens",
            "must be a positive number",
            id="litellm-window-negative",
        ),
        pytest.param(
            _litellm(max_output_tokens="lots"),
            "gpt-4o.max_output_tokens",
            "expected a whole number of tokens",
            id="litellm-window-string",
        ),
        pytest.param(
            _litellm(litellm_provider=["openai"]),
            "gpt-4o.litellm_provider",
            "expected a string, got a list",
            id="litellm-provider-list",
        ),
        pytest.param(
            {**_litellm(), "gpt-4o-mini": [1]},
            "gpt-4o-mini",
            "expected a mapping of fields, got a list",
            id="litellm-entry-not-mapping",
        ),
        pytest.param(
            {7: {"mode": "chat"}, "gpt-4o": _litellm()["gpt-4o"]},
            "7",
            "a model name must be a non-empty string",
            id="litellm-int-name",
        ),
        pytest.param(
            {"sample_spec": {"mode": "chat"}},
            "",
            "no model in the card has token prices",
            id="litellm-only-sample-spec",
        ),
        pytest.param(
            {"dall-e-3": {"mode": "image_generation", "output_cost_per_image": 0.04}},
            "",
            "no model in the card has token prices",
            id="litellm-nothing-priced",
        ),
    ],
)
def test_invalid_cards_are_refused_with_a_helpful_message(
    data: object, path: str, message: str
) -> None:
    with pytest.raises(RateCardError) as caught:
        parse_rate_card(data, source=SOURCE)
    error = caught.value
    assert error.source == SOURCE
    assert error.path == path
    assert message in error.message
    prefix = f"rate card {SOURCE}: {path}: " if path else f"rate card {SOURCE}: "
    assert str(error) == prefix + error.message


def test_the_documented_error_message() -> None:
    with pytest.raises(RateCardError) as caught:
        parse_rate_card(_model(input_per_mtok="abc"), source=SOURCE)
    assert str(caught.value) == (
        "rate card /etc/a11i/rates.yaml: "
        'models.gpt-4o.input_per_mtok: "abc" is not a decimal number'
    )


def test_one_bad_entry_spoils_the_whole_card() -> None:
    data = {**load_sample_data(), "gpt-4o-mini": {"input_cost_per_token": "free", "mode": "chat"}}
    with pytest.raises(RateCardError, match=r"gpt-4o-mini\.input_cost_per_token"):
        parse_rate_card(data, source="t")


def load_sample_data() -> dict[str, object]:
    data = json.loads(LITELLM_SAMPLE.read_text(encoding="utf-8"), parse_float=Decimal)
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- property

_KEYS = st.sampled_from(
    [
        "models",
        "fallback",
        "sample_spec",
        "gpt-4o",
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
        "context_window",
        "max_output_tokens",
        "provider",
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "max_input_tokens",
        "max_tokens",
        "litellm_provider",
        "mode",
        "embedding",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.decimals()
    | st.text(max_size=12)
    | st.sampled_from(["2.50", "-1", "1e400", "NaN", "0", "1_000", " 3 ", "embedding"])
)


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Named, not a lambda: hypothesis reads the source of ``extend`` (see test_tokens._nest).
    return st.lists(children, max_size=4) | st.dictionaries(
        _KEYS | st.text(max_size=8) | st.integers(), children, max_size=6
    )


_JSONISH = st.recursive(_SCALARS, _nest, max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_JSONISH)
def test_any_data_is_a_card_or_a_rate_card_error(data: object) -> None:
    try:
        card = parse_rate_card(data, source="fuzz")
    except RateCardError as error:
        message = str(error)
    else:
        message = ""
    if message:
        assert message.startswith("rate card fuzz: ")
        return
    assert isinstance(card, RateCard)
    # Whatever parsed can be used: looked up and priced without surprises.
    found = card.lookup("gpt-4o")
    assert cost(found, Usage(1_000, 1_000, 100, 100)) >= 0
    assert project(found, 1_000, 1_000) >= 0


_MTOK = st.decimals(min_value=0, max_value=100_000, places=6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda s: s == s.strip()),
        st.fixed_dictionaries(
            {
                "input_per_mtok": _MTOK.map(str),
                "output_per_mtok": _MTOK,
                "context_window": st.integers(1, 10_000_000),
            },
            optional={
                "cached_input_per_mtok": _MTOK.map(str),
                "max_output_tokens": st.integers(1, 1_000_000),
                "provider": st.sampled_from(["openai", "anthropic"]),
            },
        ),
        max_size=5,
    )
)
def test_valid_cards_keep_their_prices_exactly(models: dict[str, dict[str, object]]) -> None:
    card = parse_rate_card({"models": models}, source="gen")
    for name, entry in models.items():
        parsed = card.models[name]
        assert parsed.input_per_token * 1_000_000 == Decimal(str(entry["input_per_mtok"]))
        assert parsed.output_per_token * 1_000_000 == entry["output_per_mtok"]
        assert card.lookup(name).matched == name


# --------------------------------------------------------------------------- the built-in card

#: OpenAI's base models for the legacy completions endpoint.
BASE_MODELS = ("davinci-002", "babbage-002")
REQUIRED_MODELS = [
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-4-turbo",
    "gpt-4",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-opus-4-1",
    "claude-opus-4",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-haiku-4-5",
    "claude-3-7-sonnet",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-haiku",
    "claude-3-opus",
    "gpt-3.5-turbo-instruct",
    *BASE_MODELS,
]


def test_the_built_in_card_loads_once() -> None:
    card = builtin_rate_card()
    assert card is builtin_rate_card()
    assert card.explicit_fallback
    assert card.fallback == DEFAULT_FALLBACK


@pytest.mark.parametrize("model", REQUIRED_MODELS)
def test_the_built_in_card_lists(model: str) -> None:
    assert model in builtin_rate_card().models


@pytest.mark.parametrize("model", sorted(builtin_rate_card().models))
def test_every_built_in_price_is_sane(model: str) -> None:
    card = builtin_rate_card()
    p = card.models[model]
    assert p.input_per_token > 0
    assert p.context_window > 0
    assert p.provider in ("openai", "anthropic")
    assert p.cached_input_price <= p.input_per_token
    if model.startswith("text-embedding"):
        assert p.output_per_token == 0
    else:
        if model in BASE_MODELS:
            # OpenAI's base models bill input and output tokens alike.
            assert p.output_per_token == p.input_per_token
        else:
            assert p.output_per_token > p.input_per_token
        assert p.max_output_tokens is not None
        assert p.max_output_tokens <= p.context_window
    if p.cache_write_per_token is not None:
        # Writing to a prompt cache never costs less than plain input (Anthropic: 1.25x).
        assert p.cache_write_per_token >= p.input_per_token
    if p.provider == "anthropic":
        # Anthropic bills cache reads and writes for every model, at their own price.
        assert p.cached_input_per_token is not None
        assert p.cache_write_per_token is not None
    if p.provider == "anthropic" and p.context_window <= 200_000:
        # Until 2026 a cache read cost 0.1x and a 5-minute write 1.25x the input price,
        # published rounded to the cent (Claude 3 Haiku: $0.03 and $0.30 for $0.25).
        assert p.cached_input_per_token is not None
        assert p.cache_write_per_token is not None
        cent = per_million("0.0125")
        assert abs(p.cached_input_per_token - p.input_per_token / 10) <= cent
        assert abs(p.cache_write_per_token - p.input_per_token * Decimal("1.25")) <= cent
    if not {"pro", "research"} & set(model.split("-")):
        # The fallback is as dear as any ordinary model: an unknown one is never cheap.
        fallback = card.fallback
        assert p.output_per_token <= fallback.output_per_token
        assert p.input_per_token + p.output_per_token <= (
            fallback.input_per_token + fallback.output_per_token
        )


# --------------------------------------------------------------------------- files


def test_load_litellm_json_file() -> None:
    card = load_rate_card_file(LITELLM_SAMPLE)
    assert card == load_sample()
    assert card.source == str(LITELLM_SAMPLE)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("rates.yaml", OUR_CARD, id="yaml"),
        pytest.param("rates.yml", OUR_CARD, id="yml"),
        pytest.param("rates", OUR_CARD, id="yaml-by-content"),
        pytest.param(
            "rates.json",
            '{"models": {"m": {"input_per_mtok": 2.5, "output_per_mtok": "10",'
            ' "context_window": 9}}}',
            id="our-shape-as-json",
        ),
        pytest.param(
            "prices",
            '{"m": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}}',
            id="json-by-content",
        ),
        pytest.param("bom.yaml", "\ufeff" + OUR_CARD, id="utf8-bom"),
    ],
)
def test_load_rate_card_files(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    card = load_rate_card_file(path)
    assert card.source == str(path)
    assert card.models


def test_json_numbers_are_decimals_not_floats(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    # 0.1 + 0.2 in binary floating point is 0.30000000000000004.
    path.write_text('{"m": {"input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07}}')
    p = load_rate_card_file(path).models["m"]
    assert p.input_per_token + p.output_per_token == Decimal("0.0000003")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("bad.json", b'{"gpt-4o": ', "invalid JSON at line 1 column", id="json"),
        pytest.param("bad.yaml", b"models: [unclosed", "invalid YAML at line", id="yaml"),
        pytest.param("tab.yaml", b"models:\n\t- x", "invalid YAML", id="yaml-tab"),
        pytest.param("date.yaml", b"models: 2025-13-45", "invalid YAML", id="yaml-bad-date"),
        pytest.param("latin1.yaml", b"models: {caf\xe9: 1}", "not UTF-8 text", id="not-utf8"),
        pytest.param("empty.yaml", b"", "the card is empty", id="empty"),
        pytest.param(
            "shape.yaml",
            b"models:\n  gpt-4o: {input_per_mtok: abc, output_per_mtok: 1, context_window: 9}\n",
            'models.gpt-4o.input_per_mtok: "abc" is not a decimal number',
            id="bad-value",
        ),
    ],
)
def test_file_errors_name_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RateCardError) as caught:
        load_rate_card_file(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"rate card {path}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_a_rate_card_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RateCardError, match="cannot read the file: No such file") as caught:
        load_rate_card_file(path)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_syntax_errors_keep_their_cause(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{,}")
    with pytest.raises(RateCardError) as caught:
        load_rate_card_file(path)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


# --------------------------------------------------------------------------- billing rules
# Each rule the providers bill by, in LiteLLM's field names (the community card's shape), and
# the same rules in our YAML; the expected figures are usage x the card's rates, by hand.

RULES_LITELLM: dict[str, Any] = {
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "max_input_tokens": 1_000_000,
        "input_cost_per_token": "3e-06",
        "output_cost_per_token": "1.5e-05",
        "cache_read_input_token_cost": "3e-07",
        "cache_creation_input_token_cost": "3.75e-06",
        "cache_creation_input_token_cost_above_1hr": "6e-06",
        "input_cost_per_token_above_200k_tokens": "6e-06",
        "output_cost_per_token_above_200k_tokens": "2.25e-05",
        "cache_read_input_token_cost_above_200k_tokens": "6e-07",
        "cache_creation_input_token_cost_above_200k_tokens": "7.5e-06",
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": "1.2e-05",
        "input_cost_per_token_batches": "1.5e-06",
        "output_cost_per_token_batches": "7.5e-06",
        "search_context_cost_per_query": {
            "search_context_size_low": "0.01",
            "search_context_size_medium": "0.01",
            "search_context_size_high": "0.01",
        },
        # Not every entry is a factor: Bedrock keeps settings there too.
        "provider_specific_entry": {"us": "1.1", "fast": "2", "schema": "titan_v2"},
        "supports_prompt_caching": True,
    },
    "gpt-5.4": {
        "litellm_provider": "openai",
        "mode": "chat",
        "max_input_tokens": 1_050_000,
        "input_cost_per_token": "2.5e-06",
        "output_cost_per_token": "1.5e-05",
        "cache_read_input_token_cost": "2.5e-07",
        "input_cost_per_token_flex": "1.25e-06",
        "output_cost_per_token_flex": "7.5e-06",
        "cache_read_input_token_cost_flex": "1.25e-07",
        "input_cost_per_token_priority": "5e-06",
        "output_cost_per_token_priority": "3e-05",
        "input_cost_per_token_above_272k_tokens": "5e-06",
        "output_cost_per_token_above_272k_tokens": "2.25e-05",
        "cache_read_input_token_cost_above_272k_tokens": "5e-07",
        "input_cost_per_token_above_272k_tokens_flex": "2.5e-06",
        "output_cost_per_token_above_272k_tokens_flex": "1.125e-05",
        "search_context_cost_per_query": {"search_context_size_medium": "0.01"},
    },
    "gpt-6-sol": {
        "litellm_provider": "openai",
        "mode": "chat",
        "max_input_tokens": 922_000,
        "input_cost_per_token": "2e-06",
        "output_cost_per_token": "1e-05",
        "cache_read_input_token_cost": "2e-07",
        "cache_creation_input_token_cost": "2.5e-06",
        "cache_creation_input_token_cost_above_12hr": "5e-06",
        "input_cost_per_audio_token": "4e-05",
        "code_interpreter_cost_per_session": "0.03",
    },
}

RULES_OURS: dict[str, Any] = {
    "models": {
        "claude-sonnet-4-5": {
            "input_per_mtok": "3",
            "output_per_mtok": "15",
            "cached_input_per_mtok": "0.3",
            "cache_write_per_mtok": "3.75",
            "cache_write_long_per_mtok": "6",
            "context_window": 1_000_000,
            "provider": "anthropic",
            "long_context": [
                {
                    "above_tokens": 200_000,
                    "input_per_mtok": "6",
                    "output_per_mtok": "22.5",
                    "cached_input_per_mtok": "0.6",
                    "cache_write_per_mtok": "7.5",
                    "cache_write_long_per_mtok": "12",
                }
            ],
            "service_tiers": {"batch": {"input_per_mtok": "1.5", "output_per_mtok": "7.5"}},
            "web_search_per_call": "0.01",
            "multipliers": {"us": "1.1", "fast": "2"},
        },
        "gpt-5.4": {
            "input_per_mtok": "2.5",
            "output_per_mtok": "15",
            "cached_input_per_mtok": "0.25",
            "context_window": 1_050_000,
            "provider": "openai",
            "service_tiers": {
                "flex": {
                    "input_per_mtok": "1.25",
                    "output_per_mtok": "7.5",
                    "cached_input_per_mtok": "0.125",
                },
                "priority": {"input_per_mtok": "5", "output_per_mtok": "30"},
            },
            "long_context": [
                {
                    "above_tokens": 272_000,
                    "input_per_mtok": "5",
                    "output_per_mtok": "22.5",
                    "cached_input_per_mtok": "0.5",
                    "service_tiers": {
                        "flex": {"input_per_mtok": "2.5", "output_per_mtok": "11.25"}
                    },
                }
            ],
            "web_search_per_call": "0.01",
        },
        "gpt-6-sol": {
            "input_per_mtok": "2",
            "output_per_mtok": "10",
            "cached_input_per_mtok": "0.2",
            "cache_write_per_mtok": "2.5",
            "cache_write_long_per_mtok": "5",
            "context_window": 922_000,
            "provider": "openai",
        },
    }
}


def _litellm_rules() -> RateCard:
    data = json.loads(json.dumps(RULES_LITELLM), parse_float=Decimal)
    return parse_rate_card(data, source="litellm.json")


def _our_rules() -> RateCard:
    return parse_rate_card(RULES_OURS, source="rules.yaml")


D = Decimal

# (id, model, usage, expected cost by hand)
RULE_CASES: list[tuple[str, str, Usage, Decimal]] = [
    (
        "anthropic-cache-writes-5m-and-1h",
        "claude-sonnet-4-5",
        # 2,000 uncached + 1,000 written for 5 minutes + 4,000 for an hour; 300 out.
        Usage(7_000, 300, cache_write_tokens=5_000, cache_write_long_tokens=4_000),
        2_000 * D("3e-6") + 1_000 * D("3.75e-6") + 4_000 * D("6e-6") + 300 * D("15e-6"),
    ),
    (
        "anthropic-cache-read",
        "claude-sonnet-4-5",
        Usage(10_000, 100, cached_input_tokens=8_000),
        2_000 * D("3e-6") + 8_000 * D("0.3e-6") + 100 * D("15e-6"),
    ),
    (
        "anthropic-above-200k-every-token-at-the-premium",
        "claude-sonnet-4-5",
        Usage(250_000, 1_000, cached_input_tokens=50_000, cache_write_tokens=10_000),
        190_000 * D("6e-6") + 50_000 * D("0.6e-6") + 10_000 * D("7.5e-6") + 1_000 * D("22.5e-6"),
    ),
    (
        "anthropic-exactly-200k-is-standard",
        "claude-sonnet-4-5",
        Usage(200_000, 1_000),
        200_000 * D("3e-6") + 1_000 * D("15e-6"),
    ),
    (
        "anthropic-1h-write-above-200k",
        "claude-sonnet-4-5",
        Usage(210_000, 0, cache_write_tokens=10_000, cache_write_long_tokens=10_000),
        200_000 * D("6e-6") + 10_000 * D("12e-6"),
    ),
    (
        "anthropic-3-web-searches",
        "claude-sonnet-4-5",
        Usage(1_000, 200, web_search_requests=3),
        1_000 * D("3e-6") + 200 * D("15e-6") + 3 * D("0.01"),
    ),
    (
        "anthropic-batch",
        "claude-sonnet-4-5",
        Usage(1_000, 200, service_tier="batch"),
        1_000 * D("1.5e-6") + 200 * D("7.5e-6"),
    ),
    (
        "anthropic-us-inference",
        "claude-sonnet-4-5",
        Usage(1_000, 200, inference_geo="us"),
        (1_000 * D("3e-6") + 200 * D("15e-6")) * D("1.1"),
    ),
    (
        "anthropic-fast-mode-in-the-us",
        "claude-sonnet-4-5",
        Usage(1_000, 200, inference_geo="us", speed="fast", web_search_requests=1),
        (1_000 * D("3e-6") + 200 * D("15e-6")) * D("2.2") + D("0.01"),
    ),
    (
        "openai-flex",
        "gpt-5.4",
        Usage(10_000, 1_000, cached_input_tokens=4_000, service_tier="flex"),
        6_000 * D("1.25e-6") + 4_000 * D("0.125e-6") + 1_000 * D("7.5e-6"),
    ),
    (
        "openai-priority",
        "gpt-5.4",
        # No priority cache-read price: the plain one applies (as in LiteLLM's reading).
        Usage(10_000, 1_000, cached_input_tokens=4_000, service_tier="priority"),
        6_000 * D("5e-6") + 4_000 * D("0.25e-6") + 1_000 * D("30e-6"),
    ),
    (
        "openai-fast-is-billed-as-priority",
        "gpt-5.4",
        Usage(1_000, 100, service_tier="fast"),
        1_000 * D("5e-6") + 100 * D("30e-6"),
    ),
    (
        "openai-default",
        "gpt-5.4",
        Usage(1_000, 100, service_tier="default"),
        1_000 * D("2.5e-6") + 100 * D("15e-6"),
    ),
    (
        "openai-auto",
        "gpt-5.4",
        Usage(1_000, 100, service_tier="auto"),
        1_000 * D("2.5e-6") + 100 * D("15e-6"),
    ),
    (
        "openai-reasoning-inside-the-output",
        "gpt-5.4",
        Usage(1_000, 500, reasoning_tokens=400),
        1_000 * D("2.5e-6") + 500 * D("15e-6"),
    ),
    (
        "openai-above-272k",
        "gpt-5.4",
        Usage(300_000, 2_000, cached_input_tokens=100_000),
        200_000 * D("5e-6") + 100_000 * D("0.5e-6") + 2_000 * D("22.5e-6"),
    ),
    (
        "openai-flex-above-272k",
        "gpt-5.4",
        # The flex long-context tier has no cache-read price: the long-context one applies.
        Usage(300_000, 2_000, cached_input_tokens=100_000, service_tier="flex"),
        200_000 * D("2.5e-6") + 100_000 * D("0.5e-6") + 2_000 * D("11.25e-6"),
    ),
    (
        "openai-responses-web-search",
        "gpt-5.4",
        Usage(1_000, 100, web_search_requests=2),
        1_000 * D("2.5e-6") + 100 * D("15e-6") + 2 * D("0.01"),
    ),
    (
        "openai-cache-writes-30m-and-12h",
        "gpt-6-sol",
        Usage(
            10_000,
            100,
            cached_input_tokens=1_000,
            cache_write_tokens=5_000,
            cache_write_long_tokens=2_000,
        ),
        4_000 * D("2e-6")
        + 1_000 * D("0.2e-6")
        + 3_000 * D("2.5e-6")
        + 2_000 * D("5e-6")
        + 100 * D("10e-6"),
    ),
]


@pytest.mark.parametrize("card", ["litellm", "ours"])
@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_every_billing_rule_settles_to_the_nano_dollar(
    card: str, model: str, usage: Usage, expected: Decimal
) -> None:
    rates = _litellm_rules() if card == "litellm" else _our_rules()
    billed = charge(rates.lookup(model), usage)
    assert billed.total == expected
    assert cost(rates.lookup(model), usage) == expected
    assert sum(line.amount for line in billed.lines) == expected


def test_both_shapes_describe_the_same_rules() -> None:
    litellm, ours = _litellm_rules(), _our_rules()
    assert litellm.models["gpt-6-sol"] == ours.models["gpt-6-sol"]
    sonnet = litellm.models["claude-sonnet-4-5"]
    assert sonnet.long_context == ours.models["claude-sonnet-4-5"].long_context
    assert sonnet.multipliers == {"us": D("1.1"), "fast": D(2)}
    assert sonnet.web_search_per_call == D("0.01")


def test_the_charge_says_how_it_was_computed() -> None:
    card = _litellm_rules()
    billed = charge(card.lookup("gpt-5.4"), Usage(300_000, 2_000, service_tier="flex"))
    assert (billed.service_tier, billed.reported_service_tier) == ("flex", "flex")
    assert billed.above_tokens == 272_000
    assert [line.item for line in billed.lines] == ["input", "output"]
    assert billed.describe() == (
        "flex, prompt above 272000; input 300000 x 0.0000025; output 2000 x 0.00001125"
    )


def test_a_tier_the_card_does_not_price_is_billed_standard_and_says_so() -> None:
    billed = charge(_litellm_rules().lookup("gpt-6-sol"), Usage(1_000, 10, service_tier="batch"))
    assert billed.total == 1_000 * D("2e-6") + 10 * D("10e-6")
    assert (billed.service_tier, billed.reported_service_tier) == ("standard", "batch")
    assert billed.describe().startswith("standard (reported batch);")


def test_a_web_search_without_a_fee_in_the_card_is_flagged_unpriced() -> None:
    billed = charge(GPT_4O, Usage(1_000, 10, web_search_requests=2, web_fetch_requests=1))
    assert billed.total == 1_000 * D("2.5e-6") + 10 * D("10e-6")
    # Anthropic bills a web fetch by its tokens only: not flagged.
    assert billed.unpriced == ("web_search",)
    assert billed.describe().endswith("; unpriced: web_search")


def test_cache_split_without_the_1h_price_falls_back_to_the_5m_one() -> None:
    # SONNET states no 1-hour price (LiteLLM's reading too): priced as a 5-minute write.
    usage = Usage(5_000, 0, cache_write_tokens=5_000, cache_write_long_tokens=4_000)
    assert cost(SONNET, usage) == 5_000 * D("3.75e-6")


def test_inconsistent_cache_counts_never_go_negative() -> None:
    usage = Usage(100, 0, cache_write_tokens=50, cache_write_long_tokens=500)
    assert cost(SONNET, usage) == 50 * D("3.75e-6") + 50 * D("3e-6")


@pytest.mark.parametrize(
    ("input_tokens", "output", "tier", "expected"),
    [
        (250_000, 1_000, None, 250_000 * D("6e-6") + 1_000 * D("22.5e-6")),
        (200_000, 1_000, None, 200_000 * D("3e-6") + 1_000 * D("15e-6")),
        (1_000, 100, "batch", 1_000 * D("3e-6") + 100 * D("15e-6")),
    ],
    ids=["above-200k-at-the-premium", "at-200k-standard", "batch-never-below-standard"],
)
def test_projection_uses_the_tier_the_request_will_hit(
    input_tokens: int, output: int, tier: str | None, expected: Decimal
) -> None:
    assert (
        project(_litellm_rules().lookup("claude-sonnet-4-5"), input_tokens, output, tier=tier)
        == expected
    )


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ("priority", 1_000 * D("5e-6") + 100 * D("30e-6")),
        ("flex", 1_000 * D("2.5e-6") + 100 * D("15e-6")),
        ("auto", 1_000 * D("2.5e-6") + 100 * D("15e-6")),
    ],
    ids=["priority", "flex-at-standard", "auto"],
)
def test_projection_at_the_asked_service_tier(tier: str, expected: Decimal) -> None:
    assert project(_litellm_rules().lookup("gpt-5.4"), 1_000, 100, tier=tier) == expected


@pytest.mark.parametrize(
    ("reported", "tier"),
    [
        (None, "standard"),
        ("default", "standard"),
        ("auto", "standard"),
        ("scale", "standard"),
        ("standard", "standard"),
        ("flex", "flex"),
        ("FLEX", "flex"),
        ("priority", "priority"),
        ("fast", "priority"),
        ("batch", "batch"),
        ("ultrafast", "ultrafast"),
        ("something-new", "standard"),
    ],
)
def test_service_tier_names(reported: str | None, tier: str) -> None:
    assert service_tier(reported) == tier


def test_a_litellm_card_reports_the_price_fields_it_does_not_model(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    card = _litellm_rules()
    assert dict(card.unmodelled) == {
        "input_cost_per_audio_token": 1,
        "code_interpreter_cost_per_session": 1,
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(RULES_LITELLM), encoding="utf-8")
    with caplog.at_level("WARNING", logger="a11i.sidecar.rates"):
        loaded = load_rate_card_file(path)
    assert loaded.unmodelled == card.unmodelled
    (record,) = caplog.records
    assert "code_interpreter_cost_per_session (1), input_cost_per_audio_token (1)" in (
        record.getMessage()
    )
    # Merged over the built-in card, the report survives.
    assert builtin_rate_card().merged(loaded).unmodelled == card.unmodelled
    assert report_unmodelled(builtin_rate_card()) is None


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (
            {"service_tiers": {"turbo": {"input_per_mtok": "1"}}},
            "service_tiers.turbo",
            "unknown key",
        ),
        ({"service_tiers": {"flex": {}}}, "service_tiers.flex", "states no price"),
        (
            {"service_tiers": {"flex": {"context_window": 5}}},
            "service_tiers.flex.context_window",
            "unknown key",
        ),
        (
            {"long_context": [{"input_per_mtok": "1"}]},
            "long_context[0].above_tokens",
            "is required",
        ),
        ({"long_context": {"above_tokens": 5}}, "long_context", "expected a list"),
        (
            {"long_context": [{"above_tokens": 5}, {"above_tokens": 5}]},
            "long_context[1].above_tokens",
            "listed twice",
        ),
        ({"multipliers": {"us": "0"}}, "multipliers.us", "more than zero"),
        ({"multipliers": {"us": "1000"}}, "multipliers.us", "implausibly high"),
        ({"web_search_per_call": "-1"}, "web_search_per_call", "negative"),
        ({"web_search_per_call": "500"}, "web_search_per_call", "implausibly high"),
    ],
)
def test_bad_rules_in_our_shape_are_refused(
    entry: dict[str, object], path: str, message: str
) -> None:
    model = {"input_per_mtok": "1", "output_per_mtok": "2", "context_window": 1000, **entry}
    with pytest.raises(RateCardError) as caught:
        parse_rate_card({"models": {"m": model}}, source=SOURCE)
    assert caught.value.path == f"models.m.{path}"
    assert message in caught.value.message


def test_the_built_in_card_prices_the_issue_examples() -> None:
    card = builtin_rate_card()
    sonnet = card.lookup("claude-sonnet-4-5-20250929")
    assert cost(
        sonnet, Usage(5_000, 0, cache_write_tokens=5_000, cache_write_long_tokens=4_000)
    ) == (1_000 * D("3.75e-6") + 4_000 * D("6e-6"))
    assert cost(sonnet, Usage(250_000, 0)) == 250_000 * D("6e-6")
    assert cost(sonnet, Usage(0, 0, web_search_requests=3)) == D("0.03")
    gpt = card.lookup("gpt-5.4")
    assert cost(gpt, Usage(100_000, 0, service_tier="flex")) == D("0.125")
    assert cost(gpt, Usage(100_000, 0, service_tier="priority")) == D("0.5")
    assert cost(gpt, Usage(0, 0, web_search_requests=2)) == D("0.02")
    assert cost(gpt, Usage(300_000, 0)) == 300_000 * D("5e-6")


def test_litellms_whole_price_list_loads_with_its_rules() -> None:
    """The community list itself, from the litellm wheel ``make encodings`` fetched: it loads
    (3,600+ models), its billing rules land where they belong, and the price fields a11i does
    not model are counted, not dropped silently."""
    wheel = find_wheel(DEFAULT_WHEEL_DIR)
    if wheel is None:
        pytest.skip(f"no litellm {LITELLM_VERSION} wheel in {DEFAULT_WHEEL_DIR}")
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("litellm/model_prices_and_context_window_backup.json").decode()
    card = parse_rate_card(json.loads(text, parse_float=Decimal), source=wheel.name)
    assert len(card.models) > 3_000
    gpt = card.lookup("gpt-5.4").price
    assert set(gpt.service_tiers) == {"flex", "priority", "batch"}
    assert [tier.above_tokens for tier in gpt.long_context] == [272_000]
    sonnet = card.lookup("claude-sonnet-4-6").price
    assert sonnet.cache_write_long_per_token == D("0.000006")
    assert sonnet.web_search_per_call == D("0.01")
    assert sonnet.multipliers == {"us": D("1.1")}
    assert card.unmodelled["input_cost_per_audio_token"] > 0
    assert "input_cost_per_token_flex" not in card.unmodelled
    assert "supports_vision" not in card.unmodelled


def test_applied_rates_are_never_those_of_another_price_with_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Applied rates are remembered by the price's id; a reloaded card's price may get the id of
    # a collected one, and must then be priced by its own rates.
    from a11i.core import pricing

    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert charge(GPT_4O, usage).total == Decimal("12.5")
    dearer = price("5", "20")
    stale = pricing.rates_for(GPT_4O, prompt_tokens=1_000_000)
    applied = dict(pricing._APPLIED)
    monkeypatch.setattr(
        pricing,
        "_APPLIED",
        {(id(dearer), None, "standard"): (GPT_4O, stale), **applied},
    )
    assert charge(dearer, usage).total == Decimal(25)
    assert charge(dearer, usage).total == Decimal(25)
    assert charge(GPT_4O, usage).total == Decimal("12.5")


# ------------------------------------------------------- the arithmetic against its definition


def _reference_charge(p: ModelPrice, usage: Usage) -> tuple[object, ...]:
    """``charge`` as first written: every product and sum in a ``localcontext`` of 60 digits.
    ``charge`` calls the context's methods instead; the digits must be the same."""
    cached = max(usage.cached_input_tokens, 0)
    written = max(usage.cache_write_tokens, 0)
    written_long = min(max(usage.cache_write_long_tokens, 0), written)
    uncached = max(usage.input_tokens - cached - written, 0)
    rates = rates_for(
        p, prompt_tokens=uncached + cached + written, tier=service_tier(usage.service_tier)
    )
    multiplier = Decimal(1)
    for served in (usage.inference_geo, usage.speed):
        if served:
            multiplier *= p.multipliers.get(served.strip().lower(), Decimal(1))
    lines: list[tuple[object, ...]] = []
    with localcontext(Context(prec=60)):
        for item, quantity, rate in (
            ("input", uncached, rates.input),
            ("cache_read", cached, rates.cache_read),
            ("cache_write", written - written_long, rates.cache_write),
            ("cache_write_long", written_long, rates.cache_write_long),
            ("output", max(usage.output_tokens, 0), rates.output),
        ):
            if quantity:
                effective = rate * multiplier
                lines.append((item, quantity, effective, quantity * effective))
        for item, quantity, fee in (
            ("web_search", usage.web_search_requests, p.web_search_per_call),
            ("web_fetch", usage.web_fetch_requests, p.web_fetch_per_call),
        ):
            if quantity > 0 and fee is not None:
                lines.append((item, quantity, fee, quantity * fee))
        total = sum((line[3] for line in lines), Decimal(0))
    assert isinstance(total, Decimal)
    return (
        total.as_tuple(),
        [(item, n, rate.as_tuple(), amount.as_tuple()) for item, n, rate, amount in lines],  # type: ignore[union-attr]
        multiplier.as_tuple(),
    )


def _reference_project(p: ModelPrice, inputs: int, outputs: int, tier: str | None) -> Decimal:
    inputs, outputs = max(inputs, 0), max(outputs, 0)
    standard = rates_for(p, prompt_tokens=inputs)
    with localcontext(Context(prec=60)):
        amount = inputs * standard.input + outputs * standard.output
        asked = service_tier(tier)
        if asked != "standard":
            rates = rates_for(p, prompt_tokens=inputs, tier=asked)
            amount = max(amount, inputs * rates.input + outputs * rates.output)
        return amount


# Prices with many digits (more than the 60 kept) and counts up to 10**70 make the context round:
# the fast arithmetic must round the same way, digit for digit, exponent for exponent.
_PRICE_DIGITS = st.decimals(min_value=0, max_value=1, allow_nan=False, allow_infinity=False) | (
    st.integers(0, 10**70).map(lambda n: Decimal(n).scaleb(-75))
)
_COUNT = st.integers(-5, 2_000_000) | st.integers(0, 10**70)


@st.composite
def _priced(draw: st.DrawFn) -> ModelPrice:
    def rates() -> Rates:
        return Rates(
            input_per_token=draw(st.none() | _PRICE_DIGITS),
            output_per_token=draw(st.none() | _PRICE_DIGITS),
            cached_input_per_token=draw(st.none() | _PRICE_DIGITS),
            cache_write_per_token=draw(st.none() | _PRICE_DIGITS),
            cache_write_long_per_token=draw(st.none() | _PRICE_DIGITS),
        )

    return ModelPrice(
        input_per_token=draw(_PRICE_DIGITS),
        output_per_token=draw(_PRICE_DIGITS),
        cached_input_per_token=draw(st.none() | _PRICE_DIGITS),
        cache_write_per_token=draw(st.none() | _PRICE_DIGITS),
        cache_write_long_per_token=draw(st.none() | _PRICE_DIGITS),
        context_window=1_000_000,
        service_tiers=draw(
            st.dictionaries(st.sampled_from(["flex", "priority"]), st.builds(rates))
        ),
        long_context=tuple(
            LongContext(above_tokens=above, rates=rates())
            for above in draw(st.sets(st.integers(1, 500_000), max_size=2))
        ),
        web_search_per_call=draw(st.none() | _PRICE_DIGITS),
        web_fetch_per_call=draw(st.none() | _PRICE_DIGITS),
        multipliers=draw(
            st.dictionaries(
                st.sampled_from(["us", "fast"]),
                st.decimals(min_value="0.001", max_value=100, allow_nan=False),
            )
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    p=_priced(),
    counts=st.tuples(*[_COUNT] * 7),
    tier=st.none() | st.sampled_from(["default", "flex", " Priority", "batch", "odd"]),
    served=st.tuples(*[st.none() | st.sampled_from(["us", "US ", "fast", "eu", ""])] * 2),
    precision=st.sampled_from([28, 5, 80]),
)
def test_charge_and_project_keep_every_digit_of_their_definition(
    p: ModelPrice,
    counts: tuple[int, ...],
    tier: str | None,
    served: tuple[str | None, str | None],
    precision: int,
) -> None:
    usage = Usage(
        input_tokens=counts[0],
        output_tokens=counts[1],
        cached_input_tokens=counts[2],
        cache_write_tokens=counts[3],
        cache_write_long_tokens=counts[4],
        web_search_requests=counts[5],
        web_fetch_requests=counts[6],
        service_tier=tier,
        inference_geo=served[0],
        speed=served[1],
    )
    # Whatever context the calling thread set, only the multipliers' product is computed in it.
    with localcontext(Context(prec=precision)):
        billed = charge(p, usage)
        expected = _reference_charge(p, usage)
        projected = project(p, counts[0], counts[1], tier=tier)
        expected_projection = _reference_project(p, counts[0], counts[1], tier)
    assert (
        billed.total.as_tuple(),
        [(ln.item, ln.quantity, ln.rate.as_tuple(), ln.amount.as_tuple()) for ln in billed.lines],
        billed.multiplier.as_tuple(),
    ) == expected
    assert projected.as_tuple() == expected_projection.as_tuple()


@given(
    reported=st.none()
    | st.text(max_size=12)
    | st.builds(
        lambda name, pad, upper: pad + (name.upper() if upper else name) + pad,
        st.sampled_from(sorted(_REPORTED_TIERS)),
        st.sampled_from(["", " ", "\t"]),
        st.booleans(),
    )
)
@settings(max_examples=500, deadline=None)
def test_service_tier_matches_the_normalising_lookup(reported: str | None) -> None:
    """The exact-spelling shortcut answers what stripping and lower-casing first answered."""
    expected = STANDARD if reported is None else _REPORTED_TIERS.get(reported.strip().lower())
    assert service_tier(reported) == (expected or STANDARD)
