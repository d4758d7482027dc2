"""Every telemetry name a11i emits, defined once: the OpenTelemetry GenAI semantic conventions
where they have a name, the mission's own names where they have none.

Constants only; no instruments, no exporters (those live in ``sidecar.metrics``).
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import k8s_attributes as k8s
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from sidecar.core.model import Dialect

# -- metrics of the mission (DESIGN §3 "Telemetry names")
TOKEN_USAGE: Final = "ai.token_usage_counter"
COST_ESTIMATE: Final = "ai.cost_estimate_counter"
CONTEXT_SATURATION: Final = "ai.context_saturation_gauge"
TOOL_ERROR_RATE: Final = "ai.tool_error_rate"
LOOP_VELOCITY: Final = "ai.loop_velocity_gauge"
OPTIMIZER_TOKENS_SAVED: Final = "ai.optimizer.tokens_saved"
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
TOOL_OUTCOME: Final = "a11i.tool.outcome"  # success | error | timeout
GEN_AI_TOOL_NAME: Final = gen_ai.GEN_AI_TOOL_NAME
DECISION: Final = "a11i.decision"
OPTIMIZER_STRATEGY: Final = "a11i.optimizer.strategy"

#: ``gen_ai.operation.name`` of each dialect.
OPERATION: Final = {
    Dialect.OPENAI_CHAT: gen_ai.GenAiOperationNameValues.CHAT.value,
    Dialect.OPENAI_RESPONSES: gen_ai.GenAiOperationNameValues.CHAT.value,
    Dialect.OPENAI_EMBEDDINGS: gen_ai.GenAiOperationNameValues.EMBEDDINGS.value,
    Dialect.ANTHROPIC_MESSAGES: gen_ai.GenAiOperationNameValues.CHAT.value,
}
