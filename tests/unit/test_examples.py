"""The files in examples/ apply as they are."""

from __future__ import annotations

from decimal import Decimal

from a11i.sidecar.meter import effective_rate_card
from tests.support.paths import ROOT

EXAMPLES = ROOT / "examples"


def test_example_rate_card_lays_over_the_built_in_one() -> None:
    card = effective_rate_card(EXAMPLES / "rate-card.yaml")
    assert card.lookup("gpt-4o").price.input_per_token == Decimal("0.000002")
    assert not card.lookup("llama-3.3-70b-instruct").is_fallback
    # Models the example does not name keep their built-in price.
    assert not card.lookup("claude-haiku-4-5").is_fallback


def test_example_a11i_yaml_loads() -> None:
    from a11i.sidecar.settings import from_env

    settings = from_env({"A11I_CONFIG": str(EXAMPLES / "a11i.yaml")})
    assert settings.optimizer.core.rag_top_k == 5
    assert settings.optimizer.core.keep_last_turns == 8
