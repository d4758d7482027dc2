"""Every telemetry name a11i emits, defined once: the OpenTelemetry GenAI semantic conventions
where they have a name, the mission's own names where they have none.

Constants only; no instruments, no exporters (those live in ``a11i.sidecar.telemetry.metrics``).
"""

from __future__ import annotations

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

# -- metrics of the GenAI conventions
CLIENT_TOKEN_USAGE: Final = gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
CLIENT_OPERATION_DURATION: Final = gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION

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
#: Span event when a call's prompt passes the saturation threshold (a11i.yaml).
EVENT_SATURATION_WARNING: Final = "a11i.context_saturation_warning"
#: Instrumentation scope of every span, metric and log record of the sidecar.
SCOPE: Final = "a11i.sidecar"

# -- attributes
TOKEN_TYPE: Final = "token.type"  # the mission's: prompt | completion
GEN_AI_TOKEN_TYPE: Final = gen_ai.GEN_AI_TOKEN_TYPE  # the conventions': input | output
GEN_AI_OPERATION_NAME: Final = gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_REQUEST_MODEL: Final = gen_ai.GEN_AI_REQUEST_MODEL
K8S_NAMESPACE_NAME: Final = k8s.K8S_NAMESPACE_NAME
K8S_POD_NAME: Final = k8s.K8S_POD_NAME
AGENT: Final = "a11i.agent"
PROJECT: Final = "a11i.project"
SIGNAL: Final = "a11i.signal"  # traces | metrics | logs
TOOL_OUTCOME: Final = "a11i.tool.outcome"  # success | error | timeout
GEN_AI_TOOL_NAME: Final = gen_ai.GEN_AI_TOOL_NAME
DECISION: Final = "a11i.decision"
OPTIMIZER_STRATEGY: Final = "a11i.optimizer.strategy"
OPTIMIZER_TOKENS_SAVED_ATTR: Final = "a11i.optimizer.tokens_saved"
#: USD the rewrite is estimated to save net of the prompt cache it cost (issue 17).
OPTIMIZER_USD_SAVED_ATTR: Final = "a11i.optimizer.usd_saved"
#: Earlier turns of the conversation were replaced by a summary.
GEN_AI_CONVERSATION_COMPACTED: Final = "gen_ai.conversation.compacted"
#: The output cap a11i forwarded after fitting it to the wallet, and the one the agent asked
#: for (absent: it set none).
OUTPUT_CAP_FORWARDED: Final = "a11i.output_cap.forwarded"
OUTPUT_CAP_ASKED: Final = "a11i.output_cap.asked"
WALLET_STATE: Final = "a11i.wallet.state"
COST_PROJECTED: Final = "a11i.cost.projected_usd"
COST_SETTLED: Final = "a11i.cost.settled_usd"
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
GEN_AI_USAGE_INPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
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
