"""The output cap fitted to the wallet: a call whose worst case does not fit, but whose useful
answer does, goes on with a lower cap instead of being refused.

Coding agents send ``max_tokens`` at the model's maximum (32k-64k) and mostly use a few hundred:
projected at the cap, a Sonnet call is held at ~$1 and refused whenever less is left, while 100%
of that money stays unused. Lowering the forwarded cap to what the money affords keeps the hard
guarantee (a provider that honours the cap cannot produce more than was reserved) and uses the
money. Below a floor an answer would be too short to help and the call is refused as before.

Pure: takes a call plan and an amount, returns the rewritten body (or None); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Final

from a11i.core.meter import CallPlan
from a11i.core.model import Dialect, JSONObject
from a11i.core.pricing import project, rates_for, service_tier

#: Anthropic's smallest extended-thinking budget (``thinking.budget_tokens`` >= 1024), and the
#: budget must stay below ``max_tokens``.
ANTHROPIC_MIN_THINKING: Final = 1024


@dataclass(frozen=True, slots=True)
class CapFit:
    """A lowered output cap: the body to plan and forward instead, and what changed."""

    body: JSONObject
    #: The cap forwarded, per choice.
    forwarded: int
    #: The cap the agent asked for (None: it set none, and a11i added one).
    asked: int | None
    #: The field that carries it (``max_tokens``, ``max_completion_tokens``, …).
    field: str

    @property
    def header(self) -> str:
        """``x-a11i-output-cap``: ``<forwarded>; asked=<n|none>``."""
        asked = "none" if self.asked is None else str(self.asked)
        return f"{self.forwarded}; asked={asked}"


def cap_field(dialect: Dialect, body: JSONObject) -> str | None:
    """The body's field for the output cap in ``dialect`` (None: the dialect produces none)."""
    if dialect is Dialect.OPENAI_CHAT:
        # Both are accepted; lower the one the agent used (``max_completion_tokens`` wins when
        # both are set, as OpenAI reads it), and add the current one when it set none.
        if "max_completion_tokens" in body or "max_tokens" not in body:
            return "max_completion_tokens"
        return "max_tokens"
    if dialect is Dialect.OPENAI_RESPONSES:
        return "max_output_tokens"
    if dialect in (Dialect.OPENAI_COMPLETIONS, Dialect.ANTHROPIC_MESSAGES):
        return "max_tokens"
    return None


def fit_output_cap(plan: CallPlan, available_usd: Decimal, floor_tokens: int) -> CapFit | None:
    """The request with its output cap lowered so that its worst case costs at most
    ``available_usd``, or None when it needs no lowering, cannot be lowered (embeddings, a free
    output price), or the affordable cap is below ``min(floor_tokens, asked)``."""
    request = plan.request
    field = cap_field(request.dialect, request.body)
    choices = max(request.choices, 1)
    # The output price of the prompt's length and the asked tier (a long prompt costs more).
    rates = rates_for(plan.price, prompt_tokens=plan.input.tokens)
    asked = rates_for(
        plan.price, prompt_tokens=plan.input.tokens, tier=service_tier(request.service_tier)
    )
    per_token = max(rates.output, asked.output) * choices
    if field is None or per_token <= 0:
        return None
    left = available_usd - project(plan.price, plan.input.tokens, 0, tier=request.service_tier)
    if left <= 0:
        return None
    affordable = int((left / per_token).to_integral_value(rounding=ROUND_FLOOR))
    planned = plan.output_bound // choices
    if affordable >= planned:
        return None
    if affordable < min(floor_tokens, planned) or affordable < 1:
        return None
    body: JSONObject = {**request.body, field: affordable}
    if request.dialect is Dialect.ANTHROPIC_MESSAGES:
        thinking = request.body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, int) and budget >= affordable:
                # The thinking budget must stay below max_tokens: lower it too, or give up
                # when it would fall under Anthropic's minimum.
                lowered = affordable - 1
                if lowered < ANTHROPIC_MIN_THINKING:
                    return None
                body["thinking"] = {**thinking, "budget_tokens": lowered}
    return CapFit(body, affordable, request.max_output_tokens, field)
