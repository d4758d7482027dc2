"""Span attributes and log records of a call: pure, no exporter, no network."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from a11i.core.analysis import ResponseFacts, ToolCall
from a11i.core.meter import Meter
from a11i.core.model import Dialect, JSONObject, JSONValue, Usage
from a11i.core.policy import Decision, Verdict, WalletState
from a11i.core.scrub import Scrubber, rules_from_config
from a11i.sidecar.call import CallOrigin, CallRecord, Optimization
from a11i.sidecar.meter import load_meter
from a11i.sidecar.telemetry.attributes import (
    Conversation,
    Tagging,
    captured_content,
    conversation_of,
    decision_record,
    scrub_event,
    tool_call_events,
    tool_choice_records,
    tool_result_attributes,
    turn_attributes,
)
from a11i.sidecar.telemetry.conventions import NameSet, Semconv
from a11i.sidecar.telemetry.events import call_event

SCRUBBER = Scrubber(secrets=["sk-proj-HELDKEYheldkey0123456789"])
ALLOW = Verdict(Decision.ALLOW, WalletState.GREEN, "within budget")

BODY: JSONObject = {
    "model": "gpt-4o",
    "temperature": 0.2,
    "max_tokens": 300,
    "tools": [
        {"type": "function", "function": {"name": "get_pods", "parameters": {}}},
        {"type": "function", "function": {"name": "check_logs", "parameters": {}}},
    ],
    "messages": [
        {"role": "system", "content": "You are the SRE agent."},
        {"role": "user", "content": "Mail jane.doe@example.com when checkout is back."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_pods", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Error: request timed out"},
    ],
}


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


def record_of(meter: Meter, body: JSONObject = BODY, **changes: object) -> CallRecord:
    plan = meter.plan(Dialect.OPENAI_CHAT, body)
    settlement = meter.settle(plan, Usage(input_tokens=120, output_tokens=30))
    record = CallRecord(
        plan=plan,
        verdict=ALLOW,
        settlement=settlement,
        status=200,
        streamed=False,
        complete=True,
        duration_s=0.25,
        tool_calls=(
            ToolCall("c2", "check_logs", '{"pod": "checkout-7d9", "mail": "ops@example.com"}'),
        ),
        origin=CallOrigin(started_ns=1, session="run-7"),
        output_text="I will check the logs of checkout-7d9 for ops@example.com.",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def test_turn_attributes_follow_the_conventions(meter: Meter) -> None:
    record = record_of(meter)
    attributes = turn_attributes(
        record, SCRUBBER, Tagging(skills=frozenset({"check_logs"})), loop_turn=3
    )
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.request.max_tokens"] == 300
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.usage.input_tokens"] == 120
    assert attributes["gen_ai.usage.output_tokens"] == 30
    assert attributes["gen_ai.conversation.id"] == "run-7"
    assert attributes["a11i.loop.turn"] == 3
    assert attributes["a11i.decision"] == "allow"
    assert attributes["a11i.wallet.state"] == "Green"
    assert attributes["a11i.cost.settled_usd"] == float(record.settlement.cost_usd)  # type: ignore[union-attr]
    assert attributes["a11i.usage.source"] == "provider"
    assert attributes["a11i.tools.offered"] == ["get_pods", "check_logs"]
    assert attributes["a11i.tools.called"] == ["check_logs"]
    assert attributes["skill.name"] == "check_logs"
    assert attributes["a11i.tool_results"] == 1
    assert "error.type" not in attributes
    # Content is not captured unless asked for.
    assert "gen_ai.input.messages" not in attributes
    assert "a11i.context.saturation_warning" not in attributes


def test_no_skill_when_the_tool_is_not_in_the_list(meter: Meter) -> None:
    attributes = turn_attributes(record_of(meter), SCRUBBER, Tagging(skills=frozenset({"x"})))
    assert "skill.name" not in attributes


def test_saturation_warning_above_the_threshold(meter: Meter) -> None:
    record = record_of(meter)
    below = Tagging(saturation_warning_percent=record.plan.saturation_percent)
    above = Tagging(saturation_warning_percent=record.plan.saturation_percent - Decimal("0.05"))
    assert "a11i.context.saturation_warning" not in turn_attributes(record, SCRUBBER, below)
    assert turn_attributes(record, SCRUBBER, above)["a11i.context.saturation_warning"] is True


def test_a_refused_call(meter: Meter) -> None:
    record = record_of(
        meter,
        verdict=Verdict(Decision.BLOCK, WalletState.EXHAUSTED, "limit 1.00 USD reached"),
        settlement=None,
        status=402,
        complete=False,
        tool_calls=(),
        error_type="budget_exceeded",
    )
    attributes = turn_attributes(record, SCRUBBER, Tagging())
    assert attributes["error.type"] == "budget_exceeded"
    assert attributes["http.response.status_code"] == 402
    assert "gen_ai.usage.input_tokens" not in attributes
    message, log = decision_record(record, SCRUBBER)
    assert message == "block gpt-4o: limit 1.00 USD reached"
    assert log["a11i.decision"] == "block"
    assert log["event.name"] == "a11i.decision"
    # The log alone explains the refusal.
    assert log["a11i.decision.reason"] == "limit 1.00 USD reached"
    assert log["a11i.wallet.state"] == "Exhausted"
    assert log["error.type"] == "budget_exceeded"


def test_optimized_call(meter: Meter) -> None:
    record = record_of(meter, optimization=Optimization(("dedupe", "whitespace"), 42))
    attributes = turn_attributes(record, SCRUBBER, Tagging())
    assert attributes["a11i.optimizer.strategy"] == ["dedupe", "whitespace"]
    assert attributes["a11i.optimizer.tokens_saved"] == 42
    assert "gen_ai.conversation.compacted" not in attributes  # only ever true
    assert "a11i.optimizer.usd_saved" not in attributes


def test_compacted_call_says_so_with_its_net_saving(meter: Meter) -> None:
    optimization = Optimization(("compact_history",), 900, Decimal("0.0125"), compacted=True)
    attributes = turn_attributes(record_of(meter, optimization=optimization), SCRUBBER, Tagging())
    assert attributes["gen_ai.conversation.compacted"] is True
    assert attributes["a11i.optimizer.usd_saved"] == 0.0125


def test_tool_result_attributes(meter: Meter) -> None:
    (result,) = record_of(meter).plan.tool_results
    attributes = tool_result_attributes(result, SCRUBBER, Tagging(skills=frozenset({"get_pods"})))
    assert attributes == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_pods",
        "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.type": "function",
        "a11i.tool.outcome": "timeout",
        "a11i.tool_result.chars": len("Error: request timed out"),
        "skill.name": "get_pods",
        "error.type": "timeout",
    }


def test_captured_content_is_scrubbed_and_cut(meter: Meter) -> None:
    record = record_of(meter)
    attributes = turn_attributes(record, SCRUBBER, Tagging(capture_content=True))
    inputs = json.loads(str(attributes["gen_ai.input.messages"]))
    # Only what this turn added: the tool result after the model's last answer.
    assert inputs == [
        {"role": "tool", "parts": [{"type": "text", "content": "Error: request timed out"}]}
    ]
    output = json.loads(str(attributes["gen_ai.output.messages"]))
    text, call = output[0]["parts"]
    assert text["content"] == "I will check the logs of checkout-7d9 for [REDACTED:email]."
    assert call["name"] == "check_logs"
    assert "ops@example.com" not in call["arguments"]
    short = captured_content(record, SCRUBBER, max_chars=6)
    assert json.loads(str(short["gen_ai.output.messages"]))[0]["parts"][0]["content"] == "I will"


def test_the_first_turn_captures_system_and_user(meter: Meter) -> None:
    body: JSONObject = {**BODY, "messages": BODY["messages"][:2]}  # type: ignore[index]
    attributes = captured_content(record_of(meter, body), SCRUBBER, 1000)
    inputs = json.loads(str(attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in inputs] == ["system", "user"]
    assert inputs[1]["parts"][0]["content"] == "Mail [REDACTED:email] when checkout is back."


@pytest.mark.parametrize(
    ("prompt", "n", "best_of", "choice_count", "captured"),
    [
        ("Mail jane.doe@example.com", None, None, None, ["Mail [REDACTED:email]"]),
        (["first", "second"], 2, 5, 2, ["first", "second"]),
        ([[15339, 1917]], 3, None, 3, []),
    ],
    ids=["string", "strings-best-of", "token-ids"],
)
def test_a_legacy_completion(
    meter: Meter,
    prompt: JSONValue,
    n: int | None,
    best_of: int | None,
    choice_count: int | None,
    captured: list[str],
) -> None:
    body: JSONObject = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt}
    if n is not None:
        body["n"] = n
    if best_of is not None:
        body["best_of"] = best_of
    plan = meter.plan(Dialect.OPENAI_COMPLETIONS, body)
    record = replace(record_of(meter), plan=plan, tool_calls=(), output_text="Done.")
    attributes = turn_attributes(record, SCRUBBER, Tagging(capture_content=True))
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.max_tokens"] == 16
    # The convention's choice count is n, not the best_of answers that are billed.
    assert attributes.get("gen_ai.request.choice.count") == choice_count
    inputs = json.loads(str(attributes["gen_ai.input.messages"]))
    assert [m["parts"][0]["content"] for m in inputs] == captured
    assert all(m["role"] == "user" for m in inputs)
    output = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": "Done."}]}]


def test_custom_rules_apply_to_their_targets(meter: Meter) -> None:
    rules = rules_from_config(
        [{"name": "pod", "regex": "checkout-[0-9a-z]+", "applies_to": ["completions"]}],
        source="a11i.yaml",
    )
    scrubber = Scrubber(rules)
    attributes = captured_content(record_of(meter), scrubber, 1000)
    output = json.loads(str(attributes["gen_ai.output.messages"]))
    assert "checkout-7d9" not in output[0]["parts"][0]["content"]
    # Tool arguments are not the rule's target: the pod name stays there.
    assert "checkout-7d9" in output[0]["parts"][1]["arguments"]


def test_tool_choice_logs(meter: Meter) -> None:
    records = tool_choice_records(
        record_of(meter), SCRUBBER, Tagging(skills=frozenset({"check_logs"}))
    )
    ((message, attributes),) = records
    assert message == "model chose tool check_logs"
    assert attributes["skill.name"] == "check_logs"
    assert "gen_ai.tool.call.arguments" not in attributes
    ((_, captured),) = tool_choice_records(
        record_of(meter), SCRUBBER, Tagging(capture_content=True)
    )
    assert "[REDACTED:email]" in str(captured["gen_ai.tool.call.arguments"])


def test_held_keys_never_leave(meter: Meter) -> None:
    body: JSONObject = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "my key is sk-proj-HELDKEYheldkey0123456789"}],
    }
    attributes = captured_content(record_of(meter, body), SCRUBBER, 1000)
    assert "HELDKEY" not in str(attributes)


def test_events_are_scrubbed() -> None:
    event = scrub_event(
        {"model": "ft:gpt-4o:jane.doe@example.com", "cost_usd": "0.1"}, SCRUBBER.scrub
    )
    assert event == {"model": "ft:gpt-4o:[REDACTED:email]", "cost_usd": "0.1"}


# -- tools described and tagged


@pytest.mark.parametrize(
    ("skills", "tagged"),
    [
        pytest.param(frozenset(), "check_logs", id="no-list-every-tool-is-a-skill"),
        pytest.param(frozenset({"check_logs"}), "check_logs", id="listed"),
        pytest.param(frozenset({"restart_server"}), None, id="not-listed"),
    ],
)
def test_skills_by_default_and_restricted_by_a_list(
    meter: Meter, skills: frozenset[str], tagged: str | None
) -> None:
    record = record_of(meter)
    tagging = Tagging(skills=skills)
    assert turn_attributes(record, SCRUBBER, tagging).get("skill.name") == tagged
    ((event),) = tool_call_events(record, SCRUBBER, tagging)
    assert event.get("skill.name") == tagged
    (result,) = record.plan.tool_results  # get_pods
    ingest = tool_result_attributes(result, SCRUBBER, tagging)
    assert ingest.get("skill.name") == ("get_pods" if not skills else None)


def test_tool_call_events_follow_the_conventions(meter: Meter) -> None:
    (event,) = tool_call_events(record_of(meter), SCRUBBER, Tagging())
    assert event == {
        "gen_ai.tool.name": "check_logs",
        "gen_ai.tool.call.id": "c2",
        "gen_ai.tool.type": "function",
        "skill.name": "check_logs",
    }
    (captured,) = tool_call_events(record_of(meter), SCRUBBER, Tagging(capture_content=True))
    assert "[REDACTED:email]" in str(captured["gen_ai.tool.call.arguments"])


@pytest.mark.parametrize(
    ("content", "outcome"),
    [
        ("NAME READY\napi-0 1/1", "success"),
        ("Error: connection refused", "error"),
        ("Error: request timed out after 30s", "timeout"),
        ("ValidationError: 1 validation error for Args\npod\n  Field required", "invalid"),
        ("Error: invalid arguments: 'replicas' must be an integer", "invalid"),
        ('{"error": "JSONDecodeError: Expecting value: line 1 column 1"}', "invalid"),
        ("TypeError: get_pods() got an unexpected keyword argument 'ns'", "invalid"),
    ],
    ids=["success", "error-output", "timeout", "pydantic", "invalid-args", "json", "kwarg"],
)
def test_tool_errors_are_classified(meter: Meter, content: str, outcome: str) -> None:
    messages = [*BODY["messages"][:3], {"role": "tool", "tool_call_id": "c1", "content": content}]  # type: ignore[index]
    body: JSONObject = {**BODY, "messages": messages}
    (result,) = record_of(meter, body).plan.tool_results
    attributes = tool_result_attributes(result, SCRUBBER, Tagging())
    assert attributes["a11i.tool.outcome"] == outcome
    assert attributes.get("error.type") == (None if outcome == "success" else outcome)


# -- old and new names


@pytest.mark.parametrize(
    ("opt_in", "names"),
    [
        (None, NameSet.BOTH),
        ("", NameSet.BOTH),
        ("http,gen_ai_latest_experimental", NameSet.NEW),
        ("gen_ai_latest_experimental/dup", NameSet.BOTH),
        ("gen_ai_latest_experimental, gen_ai_latest_experimental/dup", NameSet.BOTH),
        ("gen_ai_v1.36", NameSet.OLD),
        ("database", NameSet.BOTH),
    ],
    ids=["unset", "empty", "latest", "dup", "latest-and-dup", "old", "other-category"],
)
def test_stability_opt_in(opt_in: str | None, names: NameSet) -> None:
    assert Semconv.from_opt_in(opt_in).names is names


@pytest.mark.parametrize(
    ("names", "present", "absent"),
    [
        (NameSet.NEW, {"gen_ai.provider.name"}, {"gen_ai.system"}),
        (NameSet.OLD, {"gen_ai.system"}, {"gen_ai.provider.name"}),
        (NameSet.BOTH, {"gen_ai.system", "gen_ai.provider.name"}, set()),
    ],
    ids=["new", "old", "both"],
)
def test_provider_name_under_each_choice(
    meter: Meter, names: NameSet, present: set[str], absent: set[str]
) -> None:
    attributes = turn_attributes(record_of(meter), SCRUBBER, Tagging(semconv=Semconv(names)))
    assert present <= set(attributes)
    assert not absent & set(attributes)
    assert all(attributes[key] == "openai" for key in present)


def test_response_usage_and_ids(meter: Meter) -> None:
    plan = meter.plan(Dialect.OPENAI_CHAT, BODY)
    usage = Usage(input_tokens=120, output_tokens=30, cached_input_tokens=64, cache_write_tokens=8)
    record = record_of(
        meter,
        settlement=meter.settle(plan, usage),
        response=ResponseFacts("chatcmpl-9", "gpt-4o-2024-08-06", ("tool_calls",)),
        origin=CallOrigin(started_ns=1, request_id="req-42"),
    )
    attributes = turn_attributes(record, SCRUBBER, Tagging())
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 64
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 8
    assert attributes["gen_ai.response.id"] == "chatcmpl-9"
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert attributes["http.request.header.x-request-id"] == ["req-42"]
    assert "gen_ai.conversation.id" not in attributes


# -- the agents' own ids

CLAUDE_BODY: JSONObject = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "metadata": {"user_id": "user_0784b2_account_261d5434-c8c2_session_b4e5aaaa-9a3e-47c4"},
    "messages": [{"role": "user", "content": "Fix the flaky test."}],
}


@pytest.mark.parametrize(
    ("dialect", "body", "origin", "expected"),
    [
        pytest.param(
            Dialect.OPENAI_CHAT,
            BODY,
            CallOrigin(session="run-7", client_session="cc-1"),
            Conversation("run-7", "a11i"),
            id="a11i-session-wins",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            CLAUDE_BODY,
            CallOrigin(client_session="cc-header"),
            Conversation("cc-header", "claude-code"),
            id="claude-code-header",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            CLAUDE_BODY,
            CallOrigin(),
            Conversation("b4e5aaaa-9a3e-47c4", "claude-code"),
            id="claude-code-metadata",
        ),
        pytest.param(
            Dialect.OPENAI_RESPONSES,
            {"model": "gpt-4o", "input": "hi", "conversation": {"id": "conv_5j66"}},
            CallOrigin(),
            Conversation("conv_5j66", "openai-conversation"),
            id="responses-conversation",
        ),
        pytest.param(
            Dialect.OPENAI_RESPONSES,
            {"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"},
            CallOrigin(),
            None,
            id="previous-response-joined-by-telemetry",
        ),
        pytest.param(Dialect.OPENAI_CHAT, BODY, CallOrigin(), None, id="none"),
    ],
)
def test_conversation_ids(
    meter: Meter,
    dialect: Dialect,
    body: JSONObject,
    origin: CallOrigin,
    expected: Conversation | None,
) -> None:
    record = replace(record_of(meter), plan=meter.plan(dialect, body), origin=origin)
    assert conversation_of(record) == expected
    attributes = turn_attributes(record, SCRUBBER, Tagging())
    if expected is None:
        assert "gen_ai.conversation.id" not in attributes
    else:
        assert attributes["gen_ai.conversation.id"] == expected.id
        assert attributes["a11i.conversation.source"] == expected.source


def test_how_the_cost_was_computed_is_on_the_span_the_log_and_the_event(meter: Meter) -> None:
    body: JSONObject = {
        "model": "gpt-5.4",
        "service_tier": "priority",
        "messages": [{"role": "user", "content": "hi"}],
    }
    plan = meter.plan(Dialect.OPENAI_CHAT, body)
    usage = Usage(300_000, 10, cached_input_tokens=100_000, service_tier="priority")
    record = replace(record_of(meter), plan=plan, settlement=meter.settle(plan, usage))
    assert record.settlement is not None
    charge = record.settlement.charge
    assert charge is not None
    span = turn_attributes(record, SCRUBBER, Tagging())
    assert span["a11i.cost.service_tier"] == charge.service_tier == "priority"
    assert span["a11i.cost.long_context_above_tokens"] == 272_000
    assert span["a11i.cost.breakdown"] == charge.describe()
    assert str(span["a11i.cost.breakdown"]).startswith(
        "priority, prompt above 272000; input 200000 x "
    )
    _, log = decision_record(record, SCRUBBER)
    assert log["a11i.cost.breakdown"] == charge.describe()
    assert log["a11i.usage.source"] == "provider"
    event = call_event(record, "team-a", "sre-bot")
    assert event["cost_basis"] == charge.describe()


def test_a_call_that_waited_says_how_long(meter: Meter) -> None:
    record = record_of(meter, admission_wait_s=0.1234)
    _, log = decision_record(record, SCRUBBER)
    assert log["a11i.admission.wait_ms"] == 123.4
    assert turn_attributes(record, SCRUBBER, Tagging())["a11i.admission.wait_ms"] == 123.4
    _, direct = decision_record(record_of(meter), SCRUBBER)
    assert "a11i.admission.wait_ms" not in direct
