"""Metering of one call, start to end: plan it (count, price, project), then settle it.

Pure: the proxy and library mode both call ``Meter.plan`` with a request body and
``Meter.settle`` with what the provider reported. No I/O; the token counter and the rate card
are handed in already loaded.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from a11i.core.analysis import ToolResult, context_saturation, tool_names, tool_results
from a11i.core.conversations import ConversationLedger, Estimate
from a11i.core.dialects import ParsedRequest, parse_request
from a11i.core.frozen import slot_init
from a11i.core.model import Dialect, JSONObject, JSONValue, TokenCount, Usage
from a11i.core.pricing import Charge, PriceLookup, RateCard, charge, project
from a11i.core.tokens.counter import TokenCounter
from a11i.core.usage_bounds import BoundedUsage, bound_usage, bounds_for


class UsageSource(StrEnum):
    """Where a settled usage came from."""

    PROVIDER = "provider"
    #: The provider reported none (or the stream was cut): the sidecar's own count.
    ESTIMATE = "estimate"
    #: The provider answers later (an OpenAI background response): charged at the call's
    #: projection, its worst case, since the answer that would report usage never passes a11i.
    PROJECTION = "projection"
    #: The provider reported counts the request cannot have used (``a11i.core.usage_bounds``):
    #: those counts were replaced by the sidecar's own.
    BOUNDED = "bounded"


@slot_init
@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything known about a call before it is forwarded."""

    request: ParsedRequest
    input: TokenCount
    price: PriceLookup
    #: Output tokens the projection allows for (max tokens x choices).
    output_bound: int
    projected_usd: Decimal
    saturation_percent: Decimal
    tool_results: tuple[ToolResult, ...]
    tools_offered: tuple[str, ...]
    #: An Anthropic request's estimate, to be calibrated by the provider's report.
    conversation: Estimate | None = None


@slot_init
@dataclass(frozen=True, slots=True)
class Settlement:
    """What a call cost, by the provider's usage when it reported one."""

    usage: Usage
    cost_usd: Decimal
    source: UsageSource
    #: How the cost was computed (rule, rates, items), to reconcile with the provider's bill.
    charge: Charge | None = None
    #: What the provider reported out of bounds, when ``source`` is ``bounded``.
    violations: tuple[str, ...] = ()


class Meter:
    """Counts and prices calls with one token counter and one rate card."""

    def __init__(self, counter: TokenCounter, rate_card: RateCard) -> None:
        self.counter = counter
        self.rate_card = rate_card
        #: Anthropic input counts learned from the provider's reports.
        self.conversations = ConversationLedger()

    def plan(
        self, dialect: Dialect, body: JSONObject, expected_output: int | None = None
    ) -> CallPlan:
        """Validate and measure a request body (raises ``BadRequest`` for a malformed one).
        ``expected_output`` is the realistic output of a call that sets no cap of its own
        (``OutputHistory.estimate``); without it such a call is projected at the model's cap."""
        request = parse_request(dialect, body)
        conversation: Estimate | None = None
        if dialect is Dialect.ANTHROPIC_MESSAGES:
            parts = self.counter.anthropic_parts(
                request.model,
                body.get("system"),
                _list(body.get("messages")),
                tools=_optional_list(body.get("tools")),
            )
            conversation = self.conversations.estimate(request.model, parts)
            counted = TokenCount(conversation.tokens, exact=False)
        else:
            counted = self.count_input(request)
        price = self.rate_card.lookup(request.model)
        bound = self._output_bound(request, price, counted.tokens, expected_output)
        return CallPlan(
            request=request,
            input=counted,
            price=price,
            output_bound=bound,
            projected_usd=project(price.price, counted.tokens, bound, tier=request.service_tier),
            saturation_percent=context_saturation(counted.tokens, price.price.context_window),
            tool_results=tool_results(request),
            tools_offered=tool_names(request),
            conversation=conversation,
        )

    def count_input(self, request: ParsedRequest) -> TokenCount:
        body = request.body
        if request.dialect is Dialect.OPENAI_CHAT:
            return self.counter.count_chat(
                request.model,
                _list(body.get("messages")),
                tools=_optional_list(body.get("tools")),
                functions=_optional_list(body.get("functions")),
                tool_choice=body.get("tool_choice"),
            )
        if request.dialect is Dialect.OPENAI_RESPONSES:
            instructions = body.get("instructions")
            return self.counter.count_responses(
                request.model,
                body.get("input"),
                instructions=instructions if isinstance(instructions, str) else None,
                tools=_optional_list(body.get("tools")),
            )
        if request.dialect is Dialect.OPENAI_EMBEDDINGS:
            return self.counter.count_embeddings(request.model, body.get("input"))
        if request.dialect is Dialect.OPENAI_COMPLETIONS:
            suffix = body.get("suffix")
            return self.counter.count_completions(
                request.model, body.get("prompt"), suffix if isinstance(suffix, str) else None
            )
        return self.counter.count_anthropic(
            request.model,
            body.get("system"),
            _list(body.get("messages")),
            tools=_optional_list(body.get("tools")),
        )

    def settle(
        self,
        plan: CallPlan,
        usage: Usage | None,
        output_text: str = "",
        *,
        input_reported: bool = True,
    ) -> Settlement:
        """Price the call by the provider's usage, or by the sidecar's own count without one.
        ``input_reported``: the usage's input tokens are the provider's (not filled in from the
        sidecar's count for a cut stream), so they may calibrate later estimates."""
        source = UsageSource.PROVIDER
        violations: tuple[str, ...] = ()
        if usage is None:
            source = UsageSource.ESTIMATE
            output = self.counter.count_text(plan.request.model, output_text).tokens
            usage = Usage(input_tokens=plan.input.tokens, output_tokens=output)
        else:
            checked = self._bounded(plan, usage, output_text)
            if checked.violations:
                usage, source, violations = checked.usage, UsageSource.BOUNDED, checked.violations
            elif plan.conversation is not None and input_reported:
                # Only a report within bounds may teach later estimates.
                self.conversations.record(plan.request.model, plan.conversation, usage.input_tokens)
        billed = charge(plan.price.price, usage)
        return Settlement(
            usage=usage,
            cost_usd=billed.total,
            source=source,
            charge=billed,
            violations=violations,
        )

    def _bounded(self, plan: CallPlan, usage: Usage, output_text: str) -> BoundedUsage:
        """The provider's usage held to what the request can have used."""
        request, price = plan.request, plan.price.price
        limits = bounds_for(
            counted_input=plan.input.tokens,
            context_window=price.context_window,
            max_output_per_choice=request.max_output_tokens,
            model_output_cap=price.max_output_tokens,
            choices=request.choices,
            tools=request.body.get("tools"),
        )
        return bound_usage(
            usage,
            limits,
            own_input=plan.input.tokens,
            # Counting the text costs a pass over it: only done for a usage out of bounds.
            own_output=self.counter.count_text(request.model, output_text).tokens
            if not 0 <= usage.output_tokens <= limits.output_tokens
            else 0,
        )

    @staticmethod
    def settle_projected(plan: CallPlan) -> Settlement:
        """A call whose usage the provider reports elsewhere, charged at its projection."""
        usage = Usage(input_tokens=plan.input.tokens, output_tokens=plan.output_bound)
        return Settlement(usage=usage, cost_usd=plan.projected_usd, source=UsageSource.PROJECTION)

    @staticmethod
    def _output_bound(
        request: ParsedRequest, price: PriceLookup, input_tokens: int, expected: int | None
    ) -> int:
        if request.dialect is Dialect.OPENAI_EMBEDDINGS:
            return 0
        per_choice = request.max_output_tokens
        if per_choice is None:
            room = max(price.price.context_window - input_tokens, 0)
            model_cap = price.price.max_output_tokens
            per_choice = min(model_cap, room) if model_cap else room
            if expected is not None:
                per_choice = min(per_choice, expected)
        return per_choice * request.choices


class OutputHistory:
    """Recent output sizes per model, to project a call that sets no output cap.

    Reserving the model's maximum output (128k tokens for some) for every such call pins a
    wallet at its limit while real spend is far below it. Instead a call is projected at the
    95th percentile of the last ``window`` outputs of its model, times a margin, and at
    ``default_tokens`` until ``min_samples`` were seen; settlement corrects the difference.
    """

    def __init__(
        self,
        window: int = 200,
        min_samples: int = 10,
        default_tokens: int = 4096,
        margin: float = 1.25,
    ) -> None:
        self._window = window
        self._min_samples = min_samples
        self._default = default_tokens
        self._margin = margin
        self._outputs: dict[str, deque[int]] = {}
        # Sorting the window on every call would cost more than the rest of the projection.
        self._estimates: dict[str, int] = {}
        self._observed: dict[str, int] = {}

    #: Models tracked at most: names come from request bodies, so they are bounded.
    max_models = 1024

    def observe(self, model: str, output_tokens: int) -> None:
        if model not in self._outputs and len(self._outputs) >= self.max_models:
            oldest = next(iter(self._outputs))
            del self._outputs[oldest]
            self._estimates.pop(oldest, None)
            self._observed.pop(oldest, None)
        seen = self._outputs.setdefault(model, deque(maxlen=self._window))
        seen.append(output_tokens)
        self._observed[model] = count = self._observed.get(model, 0) + 1
        if count <= self._min_samples or count % 16 == 0:
            # The 95th percentile of a window moves slowly: re-sort every 16th output.
            self._estimates.pop(model, None)

    def estimate(self, model: str) -> int:
        cached = self._estimates.get(model)
        if cached is not None:
            return cached
        seen = self._outputs.get(model)
        if seen is None or len(seen) < self._min_samples:
            return self._default
        ordered = sorted(seen)
        p95 = ordered[min(len(ordered) - 1, (95 * len(ordered)) // 100)]
        estimate = max(1, math.ceil(p95 * self._margin))
        self._estimates[model] = estimate
        return estimate


def _list(value: JSONValue) -> list[JSONValue]:
    return value if isinstance(value, list) else []


def _optional_list(value: JSONValue) -> list[JSONValue] | None:
    return value if isinstance(value, list) else None
