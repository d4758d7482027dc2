"""The meter from its files: the encodings and the rate card, loaded once.

Adapter: loads the encodings and rate card once (file I/O), then hands out a pure ``Meter``
(the proxy's and library mode's, ``a11i.instrument()``; usable alone to count and price):

    from a11i.sidecar.meter import load_meter
    meter = load_meter()
    plan = meter.plan(Dialect.OPENAI_CHAT, {"model": "gpt-4o", "messages": [...]})
    plan.input.tokens, plan.projected_usd
    verdict = decide(BudgetPolicy(limit_usd=Decimal("5")), committed, plan.projected_usd)
"""

from __future__ import annotations

import logging
from pathlib import Path

from a11i.core.meter import Meter
from a11i.core.pricing import RateCard
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.encodings import Tokenizer, load_encodings
from a11i.sidecar.rates import builtin_rate_card, load_rate_card_file

log = logging.getLogger(__name__)


def load_meter(
    *,
    encodings_dir: Path | None = None,
    rate_card_path: Path | None = None,
    tokenizer: Tokenizer = Tokenizer.AUTO,
) -> Meter:
    """A meter with the packaged encodings (or ``encodings_dir``; found and verified now, built
    on first use by ``tokenizer``'s library) and the built-in rate card, overridden model by
    model by the card at ``rate_card_path`` when given. Raises ``TokenizerUnavailable`` for
    ``compact`` without the a11i_bpe extension."""
    # Lazy: an encoding is built when a model needing it is first counted (2-5 MiB each
    # compact, 22-42 MiB with tiktoken).
    encodings = load_encodings(
        [encodings_dir] if encodings_dir else None, lazy=True, tokenizer=tokenizer
    )
    if encodings.missing:
        log.warning(
            "tiktoken encodings %s not found: token counts are estimates. "
            "Run `python -m a11i.sidecar.encodings fetch` or set A11I_ENCODINGS_DIR.",
            ", ".join(encodings.missing),
        )
    return Meter(TokenCounter(encodings), effective_rate_card(rate_card_path))


def effective_rate_card(rate_card_path: Path | None) -> RateCard:
    """The built-in card, overridden model by model by the file at ``rate_card_path``.
    Raises ``RateCardError`` naming the file and the problem; nothing is half-applied."""
    card = builtin_rate_card()
    if rate_card_path is not None:
        card = card.merged(load_rate_card_file(rate_card_path))
    return card
