"""Every telemetry name a11i emits, defined once: the OpenTelemetry GenAI semantic conventions
where they have a name, the mission's own names where they have none.

The GenAI conventions (now in their own repository, semantic-conventions-genai) renamed some of
what a11i emitted; ``OTEL_SEMCONV_STABILITY_OPT_IN`` picks the old names, the new ones or both
(``Semconv``). Constants and that one pure choice only; no instruments, no exporters (those
live in ``a11i.sidecar.telemetry.metrics`` and ``traces``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import k8s_attributes as k8s
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, http_attributes

from a11i.core.model import Dialect

# -- metrics of the mission (DESIGN §3 "Telemetry names")
TOKEN_USAGE: Final = "ai.token_usage_counter"
COST_ESTIMATE: Final = "ai.cost_estimate_counter"
CONTEXT_SATURATION: Final = "ai.context_saturation_gauge"
TOOL_ERROR_RATE: Final = "ai.tool_error_rate"
LOOP_VELOCITY: Final = "ai.loop_velocity_gauge"
OPTIMIZER_TOKENS_SAVED: Final = "ai.optimizer.tokens_saved"
#: OTLP exports that failed, by signal (attribute ``a11i.signal``).
TELEMETRY_EXPORT_FAILURES: Final = "a11i.telemetry.export_failures"
#: Tool results the agents sent back, by outcome (the Tool Success Ratio panel).
TOOL_RESULTS: Final = "ai.tool_result_counter"

#: Calls by the guard's decision (attribute ``a11i.decision``).
DECISIONS: Final = "a11i.budget.decisions"
#: The wallets a sidecar spends from (attribute ``a11i.wallet``: ``<namespace>`` for the
#: namespace's, ``<namespace>/<agent>`` for an agent's own), in USD.
BUDGET_LIMIT: Final = "a11i.budget.limit"
BUDGET_SPENT: Final = "a11i.budget.spent"
BUDGET_RESERVED: Final = "a11i.budget.reserved"
BUDGET_REMAINING: Final = "a11i.budget.remaining"
#: Seconds until the wallet is empty at the burn rate of the last minutes (absent while
#: nothing is spent or the wallet has no limit).
BUDGET_EXHAUSTION: Final = "a11i.budget.time_to_exhaustion"

# -- metrics of the GenAI conventions
CLIENT_OPERATION_DURATION: Final = gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
#: Old (semantic-conventions v1.36): one histogram of tokens per call, by ``gen_ai.token.type``.
CLIENT_TOKEN_USAGE: Final = gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
#: New (semantic-conventions-genai, gen-ai-token-metrics): counters of what was spent, with
#: ``gen_ai.token.modality``; the cache counters are parts of the input counter.
INFERENCE_INPUT_TOKENS: Final = "gen_ai.client.inference.usage.input_tokens"
INFERENCE_OUTPUT_TOKENS: Final = "gen_ai.client.inference.usage.output_tokens"
INFERENCE_CACHE_READ_TOKENS: Final = "gen_ai.client.inference.usage.cache_read.input_tokens"
INFERENCE_CACHE_WRITE_TOKENS: Final = "gen_ai.client.inference.usage.cache_write.input_tokens"
#: New: histograms of each call's tokens, for percentiles.
INFERENCE_OPERATION_INPUT_TOKENS: Final = "gen_ai.client.inference.operation.input_tokens"
INFERENCE_OPERATION_OUTPUT_TOKENS: Final = "gen_ai.client.inference.operation.output_tokens"

#: Bucket boundaries the conventions give for gen_ai.client.token.usage (tokens).
TOKEN_USAGE_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
#: Bucket boundaries the conventions give for gen_ai.client.operation.duration (seconds).
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

# -- spans
SPAN_AGENT_TURN: Final = "agent_turn"
SPAN_TOOL_RESULT_INGEST: Final = "tool_result_ingest"
#: Span event of each tool call the model asked for in its answer (on ``agent_turn``).
EVENT_TOOL_CALL: Final = "a11i.tool_call"
#: Span event when a call's prompt passes the saturation threshold (a11i.yaml).
EVENT_SATURATION_WARNING: Final = "a11i.context_saturation_warning"
#: Instrumentation scope of every span, metric and log record of the sidecar.
SCOPE: Final = "a11i.sidecar"

# -- attributes
TOKEN_TYPE: Final = "token.type"  # the mission's: prompt | completion
GEN_AI_TOKEN_TYPE: Final = gen_ai.GEN_AI_TOKEN_TYPE  # the conventions': input | output
GEN_AI_OPERATION_NAME: Final = gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = gen_ai.GEN_AI_PROVIDER_NAME  # new name of gen_ai.system
GEN_AI_SYSTEM: Final = "gen_ai.system"  # old (v1.36)
GEN_AI_AGENT_NAME: Final = gen_ai.GEN_AI_AGENT_NAME
GEN_AI_TOKEN_MODALITY: Final = "gen_ai.token.modality"
GEN_AI_RESPONSE_ID: Final = gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_MODEL: Final = gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_FINISH_REASONS: Final = gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_REQUEST_MODEL: Final = gen_ai.GEN_AI_REQUEST_MODEL
K8S_NAMESPACE_NAME: Final = k8s.K8S_NAMESPACE_NAME
K8S_POD_NAME: Final = k8s.K8S_POD_NAME
AGENT: Final = "a11i.agent"
PROJECT: Final = "a11i.project"
SIGNAL: Final = "a11i.signal"  # traces | metrics | logs
TOOL_OUTCOME: Final = "a11i.tool.outcome"  # success | error | timeout | invalid
GEN_AI_TOOL_NAME: Final = gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_TYPE: Final = gen_ai.GEN_AI_TOOL_TYPE
#: ``gen_ai.tool.type`` of a tool the agent runs itself (all a proxy sees of function calls).
TOOL_TYPE_FUNCTION: Final = "function"
#: The span context of the ``agent_turn`` whose answer asked for a tool (on a link).
TOOL_REQUESTED_BY: Final = "a11i.tool.requested_by"
WALLET: Final = "a11i.wallet"
DECISION: Final = "a11i.decision"
#: Why the guard decided as it did (thresholds crossed, cap fitted, refused), on decision logs.
DECISION_REASON: Final = "a11i.decision.reason"
#: The client's ``x-request-id``, as the HTTP conventions name a captured request header.
HTTP_REQUEST_HEADER_REQUEST_ID: Final = "http.request.header.x-request-id"
OPTIMIZER_STRATEGY: Final = "a11i.optimizer.strategy"
OPTIMIZER_TOKENS_SAVED_ATTR: Final = "a11i.optimizer.tokens_saved"
#: USD the rewrite is estimated to save net of the prompt cache it cost.
OPTIMIZER_USD_SAVED_ATTR: Final = "a11i.optimizer.usd_saved"
#: The output cap a11i forwarded after fitting it to the wallet, and the one the agent asked
#: for (absent: it set none).
OUTPUT_CAP_FORWARDED: Final = "a11i.output_cap.forwarded"
OUTPUT_CAP_ASKED: Final = "a11i.output_cap.asked"
#: How long the call waited in line for money held by calls in flight before it was admitted.
ADMISSION_WAIT_MS: Final = "a11i.admission.wait_ms"
WALLET_STATE: Final = "a11i.wallet.state"
COST_PROJECTED: Final = "a11i.cost.projected_usd"
COST_SETTLED: Final = "a11i.cost.settled_usd"
#: How the settled cost was computed, to reconcile with the provider's invoice: the service
#: tier priced, the long-context threshold passed, and every item with its quantity and rate.
COST_SERVICE_TIER: Final = "a11i.cost.service_tier"
COST_LONG_CONTEXT_ABOVE: Final = "a11i.cost.long_context_above_tokens"
COST_BREAKDOWN: Final = "a11i.cost.breakdown"
CONTEXT_SATURATION_ATTR: Final = "a11i.context.saturation_percent"
SATURATION_WARNING: Final = "a11i.context.saturation_warning"
TOKEN_COUNT: Final = "a11i.token_count"  # exact | estimate
INPUT_TOKENS_COUNTED: Final = "a11i.input_tokens"  # the sidecar's own count
USAGE_SOURCE: Final = "a11i.usage.source"  # provider | estimate
PRICING_FALLBACK: Final = "a11i.pricing.fallback"
LOOP_TURN: Final = "a11i.loop.turn"
TOOLS_OFFERED: Final = "a11i.tools.offered"
TOOLS_CALLED: Final = "a11i.tools.called"
TOOL_RESULTS_COUNT: Final = "a11i.tool_results"
TOOL_RESULT_CHARS: Final = "a11i.tool_result.chars"
#: A tool in the configured skill list (a11i.yaml ``skills``).
SKILL_NAME: Final = "skill.name"
SKILLS: Final = "a11i.skills"
LOG_EVENT: Final = "event.name"
GEN_AI_REQUEST_STREAM: Final = gen_ai.GEN_AI_REQUEST_STREAM
GEN_AI_REQUEST_MAX_TOKENS: Final = gen_ai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_CHOICE_COUNT: Final = gen_ai.GEN_AI_REQUEST_CHOICE_COUNT
GEN_AI_REQUEST_TEMPERATURE: Final = gen_ai.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_CONVERSATION_ID: Final = gen_ai.GEN_AI_CONVERSATION_ID
#: True (never false, as the conventions say) when a11i's optimizer compacted the history this
#: turn sent.
GEN_AI_CONVERSATION_COMPACTED: Final = "gen_ai.conversation.compacted"
#: Where the conversation id came from: a11i | claude-code | openai-conversation |
#: openai-previous-response | request-id.
CONVERSATION_SOURCE: Final = "a11i.conversation.source"
GEN_AI_USAGE_INPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_TOOL_CALL_ID: Final = gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_CALL_ARGUMENTS: Final = gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_INPUT_MESSAGES: Final = gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = gen_ai.GEN_AI_OUTPUT_MESSAGES
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
HTTP_RESPONSE_STATUS_CODE: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
SERVICE_INSTANCE_ID: Final = "service.instance.id"

#: ``gen_ai.operation.name`` of each dialect.
OPERATION: Final = {
    Dialect.OPENAI_CHAT: gen_ai.GenAiOperationNameValues.CHAT.value,
    Dialect.OPENAI_RESPONSES: gen_ai.GenAiOperationNameValues.CHAT.value,
    Dialect.OPENAI_EMBEDDINGS: gen_ai.GenAiOperationNameValues.EMBEDDINGS.value,
    Dialect.OPENAI_COMPLETIONS: gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value,
    Dialect.ANTHROPIC_MESSAGES: gen_ai.GenAiOperationNameValues.CHAT.value,
}

#: ``gen_ai.operation.name`` of a tool run (on ``tool_result_ingest``).
OPERATION_EXECUTE_TOOL: Final = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value

# -- old and new names ------------------------------------------------------------------------
#: ``OTEL_SEMCONV_STABILITY_OPT_IN`` values (comma separated, other categories ignored).
OPT_IN_LATEST: Final = "gen_ai_latest_experimental"
OPT_IN_DUP: Final = "gen_ai_latest_experimental/dup"
#: a11i's own value: only the names of semantic-conventions v1.36 (for dashboards not yet moved).
OPT_IN_OLD: Final = "gen_ai_v1.36"


class NameSet(StrEnum):
    """Which GenAI names are emitted where the conventions renamed them."""

    OLD = "old"
    NEW = "new"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class Semconv:
    """The names in force: old (v1.36: ``gen_ai.system``, the ``gen_ai.client.token.usage``
    histogram), new (``gen_ai.provider.name``, the ``gen_ai.client.inference.*`` token metrics),
    or both. Names that did not change are emitted whatever the choice."""

    names: NameSet = NameSet.BOTH

    @property
    def old(self) -> bool:
        return self.names is not NameSet.NEW

    @property
    def new(self) -> bool:
        return self.names is not NameSet.OLD

    @classmethod
    def from_opt_in(cls, value: str | None) -> Semconv:
        """The choice of ``OTEL_SEMCONV_STABILITY_OPT_IN``: ``gen_ai_latest_experimental`` new
        only, ``gen_ai_latest_experimental/dup`` both, ``gen_ai_v1.36`` old only. Unset (or no
        gen_ai value) is both: nothing a dashboard read from a11i before disappears, and the
        current names are there to move to."""
        values = {item.strip() for item in (value or "").split(",")}
        if OPT_IN_DUP in values:
            return cls(NameSet.BOTH)
        if OPT_IN_LATEST in values:
            return cls(NameSet.NEW)
        if OPT_IN_OLD in values:
            return cls(NameSet.OLD)
        return cls(NameSet.BOTH)

    def provider(self, provider: str) -> dict[str, str]:
        """The provider's attribute(s) under the names in force."""
        attributes: dict[str, str] = {}
        if self.new:
            attributes[GEN_AI_PROVIDER_NAME] = provider
        if self.old:
            attributes[GEN_AI_SYSTEM] = provider
        return attributes
