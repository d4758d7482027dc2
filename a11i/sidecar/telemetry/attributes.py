"""Span attributes and log records of a metered call: pure functions, tested with no network.

Turns a ``CallRecord`` into the attributes of its ``agent_turn`` span, the ``tool_result_ingest``
spans of the tool results it carries, and the decision log records; every string that leaves
through them passes the PII scrubber here, before anything reaches an export buffer. No
exporters, no providers, no clocks: those live in ``a11i.sidecar.telemetry.traces``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from a11i.core.analysis import ToolResult, client_ids
from a11i.core.dialects import ParsedRequest
from a11i.core.meter import Settlement
from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.scrub import Scrubber, Target
from a11i.sidecar.call import CallRecord
from a11i.sidecar.telemetry import conventions as names

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = dict[str, AttributeValue]

#: Tool names and model names repeat: at most this many characters of one are exported.
_MAX_NAME_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Tagging:
    """What the configuration adds to spans: skills, the saturation threshold, content, and
    the GenAI names in force."""

    #: Tool names tagged ``skill.name``; empty: every tool is a skill.
    skills: frozenset[str] = frozenset()
    saturation_warning_percent: Decimal = Decimal(90)
    #: Export prompt and completion text (scrubbed), cut to ``capture_max_chars`` each.
    capture_content: bool = False
    capture_max_chars: int = 16384
    semconv: names.Semconv = field(default_factory=names.Semconv)

    def is_skill(self, tool: str) -> bool:
        """Whether a tool is tagged ``skill.name``: any tool unless a list restricts it."""
        return bool(tool) and (not self.skills or tool in self.skills)


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation a call belongs to, and who named it."""

    id: str
    source: str


def conversation_of(record: CallRecord) -> Conversation | None:
    """The conversation id the agent gave, strongest first: ``x-a11i-session``, Claude Code's
    session header, then the body's ids (the Responses API's ``conversation``, Claude Code's
    ``metadata.user_id``). A ``previous_response_id`` chain is joined by the caller, which
    remembers the responses it saw."""
    origin = record.origin
    if origin.session and origin.session.strip():
        return Conversation(origin.session.strip(), "a11i")
    if origin.client_session and origin.client_session.strip():
        return Conversation(origin.client_session.strip(), "claude-code")
    ids = client_ids(record.plan.request)
    if ids.conversation:
        return Conversation(ids.conversation, ids.source)
    return None


def turn_attributes(
    record: CallRecord,
    scrubber: Scrubber,
    tagging: Tagging,
    *,
    loop_turn: int | None = None,
    conversation: Conversation | None = None,
) -> Attributes:
    """The ``agent_turn`` span's attributes: the GenAI conventions' and a11i's own.
    ``conversation`` defaults to what the call itself says (``conversation_of``)."""
    plan = record.plan
    request = plan.request
    other = Target.OTHER
    attributes: Attributes = {
        names.GEN_AI_OPERATION_NAME: names.OPERATION[request.dialect],
        **tagging.semconv.provider(request.dialect.provider.value),
        names.GEN_AI_REQUEST_MODEL: scrubber.scrub(request.model[:_MAX_NAME_CHARS], other),
        names.GEN_AI_REQUEST_STREAM: request.stream,
        names.HTTP_RESPONSE_STATUS_CODE: record.status,
        names.DECISION: record.verdict.decision.value,
        names.WALLET_STATE: record.verdict.state.value,
        names.COST_PROJECTED: float(plan.projected_usd),
        names.CONTEXT_SATURATION_ATTR: float(plan.saturation_percent),
        names.TOKEN_COUNT: "exact" if plan.input.exact else "estimate",
        names.INPUT_TOKENS_COUNTED: plan.input.tokens,
    }
    if request.max_output_tokens is not None:
        attributes[names.GEN_AI_REQUEST_MAX_TOKENS] = request.max_output_tokens
    choice_count = _choice_count(request)
    if choice_count != 1:
        attributes[names.GEN_AI_REQUEST_CHOICE_COUNT] = choice_count
    temperature = request.body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        attributes[names.GEN_AI_REQUEST_TEMPERATURE] = float(temperature)
    if conversation is None:
        conversation = conversation_of(record)
    if conversation is not None:
        attributes[names.GEN_AI_CONVERSATION_ID] = scrubber.scrub(
            conversation.id[:_MAX_NAME_CHARS], other
        )
        attributes[names.CONVERSATION_SOURCE] = conversation.source
    if record.origin.request_id:
        attributes[names.HTTP_REQUEST_HEADER_REQUEST_ID] = [
            scrubber.scrub(record.origin.request_id[:_MAX_NAME_CHARS], other)
        ]
    response = record.response
    if response.id:
        attributes[names.GEN_AI_RESPONSE_ID] = scrubber.scrub(response.id[:_MAX_NAME_CHARS], other)
    if response.model:
        attributes[names.GEN_AI_RESPONSE_MODEL] = scrubber.scrub(
            response.model[:_MAX_NAME_CHARS], other
        )
    if response.finish_reasons:
        attributes[names.GEN_AI_RESPONSE_FINISH_REASONS] = _names(response.finish_reasons, scrubber)
    if loop_turn is not None:
        attributes[names.LOOP_TURN] = loop_turn
    if plan.price.is_fallback:
        attributes[names.PRICING_FALLBACK] = True
    settled = record.settlement
    if settled is not None:
        attributes[names.GEN_AI_USAGE_INPUT_TOKENS] = settled.usage.input_tokens
        attributes[names.GEN_AI_USAGE_OUTPUT_TOKENS] = settled.usage.output_tokens
        if settled.usage.cached_input_tokens:
            attributes[names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = (
                settled.usage.cached_input_tokens
            )
        if settled.usage.cache_write_tokens:
            attributes[names.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = (
                settled.usage.cache_write_tokens
            )
        attributes[names.COST_SETTLED] = float(settled.cost_usd)
        attributes[names.USAGE_SOURCE] = settled.source.value
        attributes.update(cost_basis(settled))
    if record.error_type is not None:
        attributes[names.ERROR_TYPE] = record.error_type
    if plan.tools_offered:
        attributes[names.TOOLS_OFFERED] = _names(plan.tools_offered, scrubber)
    called = tuple(call.name for call in record.tool_calls)
    if called:
        attributes[names.TOOLS_CALLED] = _names(called, scrubber)
    skills = [name for name in called if tagging.is_skill(name)]
    if skills:
        attributes[names.SKILL_NAME] = scrubber.scrub(skills[0][:_MAX_NAME_CHARS], other)
        attributes[names.SKILLS] = _names(tuple(dict.fromkeys(skills)), scrubber)
    if plan.tool_results:
        attributes[names.TOOL_RESULTS_COUNT] = len(plan.tool_results)
    if record.optimization is not None:
        attributes[names.OPTIMIZER_STRATEGY] = list(record.optimization.strategies)
        attributes[names.OPTIMIZER_TOKENS_SAVED_ATTR] = record.optimization.tokens_saved
        if record.optimization.usd_saved is not None:
            attributes[names.OPTIMIZER_USD_SAVED_ATTR] = float(record.optimization.usd_saved)
        if record.optimization.compacted:
            # Only ever true, as the conventions say.
            attributes[names.GEN_AI_CONVERSATION_COMPACTED] = True
    attributes.update(admission_attributes(record))
    if plan.saturation_percent > tagging.saturation_warning_percent:
        attributes[names.SATURATION_WARNING] = True
    if tagging.capture_content:
        attributes.update(captured_content(record, scrubber, tagging.capture_max_chars))
    return attributes


def tool_call_events(record: CallRecord, scrubber: Scrubber, tagging: Tagging) -> list[Attributes]:
    """The attributes of one ``a11i.tool_call`` span event per tool the model asked for in its
    answer: name, call id, type and skill (arguments only with content capture)."""
    events: list[Attributes] = []
    for call in record.tool_calls:
        name = scrubber.scrub(call.name[:_MAX_NAME_CHARS], Target.OTHER)
        attributes: Attributes = {
            names.GEN_AI_TOOL_NAME: name,
            names.GEN_AI_TOOL_CALL_ID: scrubber.scrub(call.id[:_MAX_NAME_CHARS]),
            names.GEN_AI_TOOL_TYPE: names.TOOL_TYPE_FUNCTION,
        }
        if tagging.is_skill(call.name):
            attributes[names.SKILL_NAME] = name
        if tagging.capture_content:
            attributes[names.GEN_AI_TOOL_CALL_ARGUMENTS] = scrubber.scrub(
                call.arguments[: tagging.capture_max_chars], Target.TOOL_ARGS
            )
        events.append(attributes)
    return events


def tool_result_attributes(result: ToolResult, scrubber: Scrubber, tagging: Tagging) -> Attributes:
    """A ``tool_result_ingest`` span's attributes: which tool, how it ended, how large."""
    name = scrubber.scrub(result.name[:_MAX_NAME_CHARS], Target.OTHER)
    attributes: Attributes = {
        names.GEN_AI_OPERATION_NAME: names.OPERATION_EXECUTE_TOOL,
        names.GEN_AI_TOOL_NAME: name,
        names.GEN_AI_TOOL_CALL_ID: scrubber.scrub(result.tool_call_id[:_MAX_NAME_CHARS]),
        names.GEN_AI_TOOL_TYPE: names.TOOL_TYPE_FUNCTION,
        names.TOOL_OUTCOME: result.outcome.value,
        names.TOOL_RESULT_CHARS: result.chars,
    }
    if tagging.is_skill(result.name):
        attributes[names.SKILL_NAME] = name
    if result.outcome.value != "success":
        attributes[names.ERROR_TYPE] = result.outcome.value
    return attributes


def cost_basis(settled: Settlement) -> Attributes:
    """How a settled cost was computed: the tier priced, the long-context threshold passed,
    and the items with quantities and rates (``Charge.describe``); numbers and rule names,
    nothing from the prompt, so nothing to scrub."""
    charge = settled.charge
    if charge is None:
        return {}
    attributes: Attributes = {
        names.COST_SERVICE_TIER: charge.service_tier,
        names.COST_BREAKDOWN: charge.describe(),
    }
    if charge.above_tokens is not None:
        attributes[names.COST_LONG_CONTEXT_ABOVE] = charge.above_tokens
    return attributes


def decision_record(record: CallRecord, scrubber: Scrubber) -> tuple[str, Attributes]:
    """The log record of the guard's decision on a call: a message and its attributes."""
    plan = record.plan
    verdict = record.verdict
    attributes: Attributes = {
        names.LOG_EVENT: "a11i.decision",
        names.DECISION: verdict.decision.value,
        names.WALLET_STATE: verdict.state.value,
        names.GEN_AI_REQUEST_MODEL: scrubber.scrub(plan.request.model[:_MAX_NAME_CHARS]),
        names.COST_PROJECTED: float(plan.projected_usd),
        names.HTTP_RESPONSE_STATUS_CODE: record.status,
    }
    reason = scrubber.scrub(verdict.reason)
    attributes[names.DECISION_REASON] = reason
    if record.settlement is not None:
        attributes[names.COST_SETTLED] = float(record.settlement.cost_usd)
        attributes[names.USAGE_SOURCE] = record.settlement.source.value
        attributes.update(cost_basis(record.settlement))
    if record.optimization is not None:
        attributes[names.OPTIMIZER_STRATEGY] = list(record.optimization.strategies)
    attributes.update(admission_attributes(record))
    if record.error_type is not None:
        attributes[names.ERROR_TYPE] = record.error_type
    message = f"{verdict.decision.value} {plan.request.model[:_MAX_NAME_CHARS]}: {reason}"
    return scrubber.scrub(message), attributes


def admission_attributes(record: CallRecord) -> Attributes:
    """How the call was admitted when it did not fit as asked: the output cap a11i fitted to
    the wallet, and how long it waited in line (the span and the decision log both say so)."""
    attributes: Attributes = {}
    if record.output_cap is not None:
        attributes[names.OUTPUT_CAP_FORWARDED] = record.output_cap.forwarded
        if record.output_cap.asked is not None:
            attributes[names.OUTPUT_CAP_ASKED] = record.output_cap.asked
    if record.admission_wait_s > 0:
        attributes[names.ADMISSION_WAIT_MS] = round(record.admission_wait_s * 1000, 1)
    return attributes


def tool_choice_records(
    record: CallRecord, scrubber: Scrubber, tagging: Tagging
) -> list[tuple[str, Attributes]]:
    """One log record per tool the model chose in its answer."""
    records: list[tuple[str, Attributes]] = []
    for call in record.tool_calls:
        name = scrubber.scrub(call.name[:_MAX_NAME_CHARS])
        attributes: Attributes = {
            names.LOG_EVENT: "a11i.tool_choice",
            names.GEN_AI_TOOL_NAME: name,
            names.GEN_AI_TOOL_CALL_ID: scrubber.scrub(call.id[:_MAX_NAME_CHARS]),
        }
        if tagging.is_skill(call.name):
            attributes[names.SKILL_NAME] = name
        if tagging.capture_content:
            attributes[names.GEN_AI_TOOL_CALL_ARGUMENTS] = scrubber.scrub(
                call.arguments[: tagging.capture_max_chars], Target.TOOL_ARGS
            )
        records.append((f"model chose tool {name}", attributes))
    return records


def captured_content(record: CallRecord, scrubber: Scrubber, max_chars: int) -> Attributes:
    """``gen_ai.input.messages`` (the messages this turn added) and ``gen_ai.output.messages``
    in the conventions' JSON shape, each text scrubbed and cut to ``max_chars``."""
    request = record.plan.request
    if request.dialect is Dialect.OPENAI_EMBEDDINGS:
        return {}
    inputs = [
        _captured_message(message, scrubber, max_chars)
        for message in _newest_messages(request.dialect, request.body)
    ]
    parts: list[JSONObject] = []
    if record.output_text:
        text = scrubber.scrub(record.output_text[:max_chars], Target.COMPLETIONS)
        parts.append({"type": "text", "content": text})
    for call in record.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": scrubber.scrub(call.id[:_MAX_NAME_CHARS]),
                "name": scrubber.scrub(call.name[:_MAX_NAME_CHARS]),
                "arguments": scrubber.scrub(call.arguments[:max_chars], Target.TOOL_ARGS),
            }
        )
    attributes: Attributes = {
        names.GEN_AI_INPUT_MESSAGES: json.dumps(inputs, ensure_ascii=False),
    }
    if parts:
        output: list[JSONObject] = [{"role": "assistant", "parts": list[JSONValue](parts)}]
        attributes[names.GEN_AI_OUTPUT_MESSAGES] = json.dumps(output, ensure_ascii=False)
    return attributes


def _choice_count(request: ParsedRequest) -> int:
    """The completions asked for: ``request.choices`` counts what is generated and billed, which
    for a legacy completion is ``best_of`` per prompt; the convention wants ``n``."""
    if request.dialect is not Dialect.OPENAI_COMPLETIONS:
        return request.choices
    n = request.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _newest_messages(dialect: Dialect, body: JSONObject) -> list[JSONObject]:
    """The messages after the model's last answer: what this turn adds to the loop."""
    if dialect is Dialect.OPENAI_COMPLETIONS:
        # Prompt strings as user messages; token-id prompts carry no text to capture.
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list):
            return []
        return [{"role": "user", "content": item} for item in prompts if isinstance(item, str)]
    key = "input" if dialect is Dialect.OPENAI_RESPONSES else "messages"
    items = body.get(key)
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return []
    objects = [item for item in items if isinstance(item, dict)]
    for index in range(len(objects) - 1, -1, -1):
        if objects[index].get("role") == "assistant" or objects[index].get("type") == (
            "function_call"
        ):
            return objects[index + 1 :]
    return objects


def _captured_message(message: JSONObject, scrubber: Scrubber, max_chars: int) -> JSONObject:
    role = message.get("role")
    if not isinstance(role, str):
        role = "tool" if message.get("type") == "function_call_output" else "user"
    target = Target.TOOL_ARGS if role == "tool" else Target.PROMPTS
    content = message.get("content", message.get("output"))
    parts: list[JSONValue] = []
    for kind, text in _texts(content):
        parts.append({"type": kind, "content": scrubber.scrub(text[:max_chars], target)})
    return {"role": role, "parts": parts}


def _texts(content: JSONValue) -> list[tuple[str, str]]:
    """(part type, text) of a message's content, whatever shape the dialect gives it."""
    if isinstance(content, str):
        return [("text", content)]
    found: list[tuple[str, str]] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                found.append(("text", part))
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind == "tool_result":
                    found.extend(
                        ("tool_call_response", text) for _, text in _texts(part.get("content"))
                    )
                elif isinstance(part.get("text"), str):
                    found.append(("text", str(part["text"])))
    elif content is not None:
        found.append(("text", json.dumps(content, ensure_ascii=False)))
    return found


def _names(values: tuple[str, ...], scrubber: Scrubber) -> list[str]:
    return [scrubber.scrub(value[:_MAX_NAME_CHARS], Target.OTHER) for value in values]


#: Event fields a11i writes itself from numbers and its own enums: nothing in them to scrub.
_EVENT_OWN_FIELDS: Final = frozenset(
    {
        "kind",
        "ts",
        "dialect",
        "decision",
        "state",
        "status",
        "streamed",
        "complete",
        "input_tokens",
        "output_tokens",
        "projected_usd",
        "cost_usd",
        "usage_source",
        "duration_ms",
        "pricing",
        "optimized",
        "tokens_saved",
    }
)


def scrub_event(event: Mapping[str, str], scrub: Callable[[str], str]) -> dict[str, str]:
    """An event of the event stream with every value that came from outside a11i (model and
    tool names, the agent's identity) scrubbed by ``scrub`` (the telemetry's cached name
    scrubber: those values repeat on every call)."""
    return {
        key: value if key in _EVENT_OWN_FIELDS else scrub(value) for key, value in event.items()
    }
