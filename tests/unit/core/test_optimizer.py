"""The optimizer: each strategy alone, the guarantees of compaction, the providers' rules, savings.

The corpus in data/transcripts holds realistic request bodies: an SRE agent in OpenAI chat and in
Anthropic messages format (kubectl tables, logs, pretty-printed JSON, repeated ``get pods``), a
RAG agent whose tool results are scored chunks, and a coding agent with fenced code and long test
outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from anthropic.types import MessageParam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam

from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.optimizer import (
    ALL_STRATEGIES,
    COMPACT_HISTORY,
    DEDUPE,
    JSON_MINIFY,
    LOSSLESS,
    RAG_FILTER,
    TRUNCATE_TOOL_RESULTS,
    WHITESPACE,
    OptimizerSettings,
    filter_rag_text,
    minify_json_text,
    optimize,
    squeeze_whitespace,
    strategy_compact_history,
    strategy_dedupe,
    strategy_json_minify,
    strategy_rag_filter,
    strategy_truncate_tool_results,
    strategy_whitespace,
    truncate_text,
    validate_conversation,
)
from a11i.core.policy import WalletState
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.meter import load_meter
from tests.support.paths import TRANSCRIPTS

CORPUS = TRANSCRIPTS
DIALECTS = {
    "sre_openai": Dialect.OPENAI_CHAT,
    "sre_anthropic": Dialect.ANTHROPIC_MESSAGES,
    "rag_openai": Dialect.OPENAI_CHAT,
    "coding_openai": Dialect.OPENAI_CHAT,
}
RED = WalletState.RED
STEPS = (
    strategy_json_minify,
    strategy_whitespace,
    strategy_rag_filter,
    strategy_truncate_tool_results,
    strategy_compact_history,
    strategy_dedupe,
)


def load(name: str) -> JSONObject:
    value: JSONObject = json.loads((CORPUS / f"{name}.json").read_text())
    return value


def only(*names: str, **knobs: Any) -> OptimizerSettings:
    return OptimizerSettings(at_red=frozenset(names), **knobs)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return load_meter().counter


def tokens(counter: TokenCounter, dialect: Dialect, body: JSONObject) -> int:
    messages = body["messages"]
    tools = body.get("tools")
    assert isinstance(messages, list)
    assert tools is None or isinstance(tools, list)
    model = str(body["model"])
    if dialect is Dialect.OPENAI_CHAT:
        return counter.count_chat(model, messages, tools=tools).tokens
    return counter.count_anthropic(model, body.get("system"), messages, tools=tools).tokens


def saved_tokens(
    counter: TokenCounter, dialect: Dialect, before: JSONObject, after: JSONObject
) -> int:
    return tokens(counter, dialect, before) - tokens(counter, dialect, after)


def texts(value: JSONValue) -> Iterator[str]:
    """Every string content / text in a message list (for before/after comparisons)."""
    if isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in ("content", "text") and isinstance(item, str):
                yield item
            else:
                yield from texts(item)


def test_corpus_is_valid_to_start_with() -> None:
    for name, dialect in DIALECTS.items():
        body = load(name)
        assert validate_conversation(dialect, body) == [], name


# ---------------------------------------------------------------------------------------------
# 1. whitespace


CODE = "```python\ndef f(x):   \n    if x:\n\n\n\n        return  [1,  2]\n```"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("a   b\t\tc   \n\n\n\nd", "a b c\n\nd", id="runs-trailing-blank-lines"),
        pytest.param(
            "  - item   one\n    - nested", "  - item one\n    - nested", id="indent-kept"
        ),
        pytest.param(
            CODE, "```python\ndef f(x):\n    if x:\n\n        return  [1,  2]\n```", id="fence"
        ),
        pytest.param('{"a":  "two  spaces"}', '{"a":  "two  spaces"}', id="json-untouched"),
        pytest.param("single\ttab kept", "single\ttab kept", id="single-tab"),
    ],
)
def test_whitespace(before: str, after: str) -> None:
    assert squeeze_whitespace(before) == after


def test_whitespace_keeps_code_indentation_in_the_coding_transcript() -> None:
    body = load("coding_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, only(WHITESPACE))
    assert out.strategies == (WHITESPACE,)
    before = [t for t in texts(body["messages"]) if "```python" in t]
    after = [t for t in texts(out.body["messages"]) if "```python" in t]
    assert before
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        old_code = old.split("```python")[1].split("```")[0]
        new_code = new.split("```python")[1].split("```")[0]
        indents_old = [
            ln[: len(ln) - len(ln.lstrip())] for ln in old_code.splitlines() if ln.strip()
        ]
        indents_new = [
            ln[: len(ln) - len(ln.lstrip())] for ln in new_code.splitlines() if ln.strip()
        ]
        assert indents_old == indents_new
        assert [ln.rstrip() for ln in old_code.splitlines() if ln.strip()] == [
            ln for ln in new_code.splitlines() if ln.strip()
        ]


# ---------------------------------------------------------------------------------------------
# 2. JSON minification


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{\n  "a": [1, 2.5, "é"],\n  "b": {"c": null}\n}', id="object"),
        pytest.param('[\n  {"x": true}\n]', id="array"),
        pytest.param('  {"nested": {"deep": [[], {}]}}  ', id="padded"),
    ],
)
def test_json_minify_preserves_meaning(text: str) -> None:
    out = minify_json_text(text)
    assert len(out) < len(text)
    assert json.loads(out) == json.loads(text)
    assert "é" in out or "é" not in text  # ensure_ascii=False


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"a": 1, "a": 2}', id="duplicate-keys"),
        pytest.param('{"a": 1', id="invalid"),
        pytest.param('see {"a": 1} here', id="embedded"),
        pytest.param('"just a string"', id="scalar"),
    ],
)
def test_json_minify_leaves_non_containers_alone(text: str) -> None:
    assert minify_json_text(text) == text


def test_json_minify_in_a_json_fence() -> None:
    text = 'Config:\n```json\n{\n  "a": [1,\n    2]\n}\n```\nand ```python\nx = {  }\n```'
    out = minify_json_text(text)
    assert out == 'Config:\n```json\n{"a":[1,2]}\n```\nand ```python\nx = {  }\n```'


@pytest.mark.parametrize("name", list(DIALECTS))
def test_json_minify_on_the_corpus_keeps_every_json_value(name: str) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    out = optimize(dialect, body, RED, only(JSON_MINIFY))
    before, after = list(texts(body["messages"])), list(texts(out.body["messages"]))
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        try:
            value = json.loads(old)
        except ValueError:
            continue
        assert json.loads(new) == value


# ---------------------------------------------------------------------------------------------
# 3. RAG filtering

DOCS = [
    {"page_content": "a", "score": 0.2},
    {"page_content": "b", "score": 0.9},
    {"text": "c", "relevance_score": 0.5},
    {"content": "d", "score": 0.7},
    {"page_content": "e", "score": 0.95},
]


@pytest.mark.parametrize(
    ("min_score", "top_k", "kept"),
    [
        pytest.param(0.5, None, ["b", "c", "d", "e"], id="threshold"),
        pytest.param(None, 2, ["b", "e"], id="top-k-in-original-order"),
        pytest.param(0.6, 2, ["b", "e"], id="both"),
        pytest.param(0.99, None, [], id="none-survive"),
        pytest.param(None, 10, ["a", "b", "c", "d", "e"], id="nothing-to-drop"),
    ],
)
def test_rag_filter(min_score: float | None, top_k: int | None, kept: list[str]) -> None:
    def names(value: JSONValue) -> list[str]:
        assert isinstance(value, list)
        return [
            next(str(v) for k, v in doc.items() if k in ("page_content", "text", "content"))
            for doc in value
            if isinstance(doc, dict)
        ]

    out = json.loads(filter_rag_text(json.dumps(DOCS), min_score, top_k))
    assert names(out) == kept
    wrapped = json.loads(filter_rag_text(json.dumps({"results": DOCS, "q": "x"}), min_score, top_k))
    assert names(wrapped["results"]) == kept
    assert wrapped["q"] == "x"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(json.dumps([{"page_content": "a"}]), id="no-score"),
        pytest.param(json.dumps([{"score": 0.1}]), id="no-text"),
        pytest.param(json.dumps([{"page_content": "a", "score": True}]), id="bool-score"),
        pytest.param(json.dumps({"results": DOCS, "documents": DOCS}), id="ambiguous"),
        pytest.param("plain text 0.1", id="text"),
    ],
)
def test_rag_filter_ignores_other_shapes(text: str) -> None:
    assert filter_rag_text(text, 0.5, 1) == text


def test_rag_filter_on_the_rag_transcript() -> None:
    body = load("rag_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, only(RAG_FILTER, rag_min_score=0.5, rag_top_k=3))
    assert out.strategies == (RAG_FILTER,)
    for old, new in zip(body["messages"], out.body["messages"], strict=True):  # type: ignore[arg-type]
        assert isinstance(old, dict)
        assert isinstance(new, dict)
        if old.get("role") != "tool":
            assert new == old
            continue
        before, after = json.loads(str(old["content"])), json.loads(str(new["content"]))
        assert 0 < len(after) <= 3
        assert all(doc["score"] >= 0.5 for doc in after)
        assert [before.index(doc) for doc in after] == sorted(before.index(doc) for doc in after)


def test_rag_filter_is_off_without_thresholds() -> None:
    body = load("rag_openai")
    assert not optimize(Dialect.OPENAI_CHAT, body, RED, only(RAG_FILTER)).changed


# ---------------------------------------------------------------------------------------------
# 4./6. truncation and dedupe


def test_truncate_text() -> None:
    assert truncate_text("x" * 10, 10) == "x" * 10
    assert truncate_text("x" * 25, 10) == "x" * 10 + "\n[... 15 characters truncated by a11i]"


@pytest.mark.parametrize("name", ["sre_openai", "sre_anthropic"])
def test_dedupe_references_the_first_identical_result(name: str) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    out = optimize(dialect, body, RED, only(DEDUPE))
    assert out.strategies == (DEDUPE,)
    dumped = json.dumps(out.body["messages"])
    assert dumped.count("[identical to the tool result of call ") == 3  # 4x kubectl get pods
    # Every message and every pairing id is still there.
    before, after = body["messages"], out.body["messages"]
    assert isinstance(before, list)
    assert isinstance(after, list)
    assert len(before) == len(after)
    ids = ("tool_call_id", "tool_use_id", "id")
    for old, new in zip(before, after, strict=True):
        assert [v for k, v in _walk(old) if k in ids] == [v for k, v in _walk(new) if k in ids]
    assert validate_conversation(dialect, out.body) == []


def _walk(value: JSONValue) -> Iterator[tuple[str, JSONValue]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


# ---------------------------------------------------------------------------------------------
# 5. compaction


def _protected(dialect: Dialect, messages: list[JSONValue], keep: int) -> list[JSONValue]:
    first = next(m for m in messages if isinstance(m, dict) and m.get("role") == "user")
    system = [
        m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    return [*system, first, *messages[-keep:]]


@pytest.mark.parametrize("keep", [1, 2, 3, 6, 10], ids=lambda k: f"keep{k}")
@pytest.mark.parametrize("name", list(DIALECTS))
def test_compaction_keeps_system_goal_and_tail_byte_identical(name: str, keep: int) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    pristine = copy.deepcopy(body)
    out = optimize(dialect, body, RED, only(COMPACT_HISTORY, keep_last_turns=keep))
    assert body == pristine  # the input is never mutated
    before, after = body["messages"], out.body["messages"]
    assert isinstance(before, list)
    assert isinstance(after, list)
    if len(before) - keep <= 4:  # nothing (or one message) between the goal and the tail
        assert not out.changed
        return
    assert out.strategies == (COMPACT_HISTORY,)
    assert len(after) < len(before)
    for message in _protected(dialect, before, keep):
        dumped = json.dumps(message, sort_keys=True)
        assert any(json.dumps(m, sort_keys=True) == dumped for m in after)
    assert after[-keep:] == before[-keep:]
    assert out.body.get("system") == body.get("system")
    assert validate_conversation(dialect, out.body) == []
    summary = json.dumps(after)
    assert "Earlier in this conversation" in summary


def test_compaction_summary_names_the_tools() -> None:
    out = optimize(Dialect.OPENAI_CHAT, load("sre_openai"), RED, only(COMPACT_HISTORY))
    summary = next(
        str(m["content"])
        for m in out.body["messages"]  # type: ignore[union-attr]
        if isinstance(m, dict) and "Earlier in this conversation" in str(m.get("content"))
    )
    assert "kubectl_get (x" in summary
    assert "kubectl_logs (x2)" in summary
    assert "- assistant: The payments pods are in CrashLoopBackOff." in summary


@pytest.mark.parametrize("state", list(WalletState), ids=str)
@pytest.mark.parametrize("name", list(DIALECTS))
def test_every_state_gives_a_valid_conversation_and_never_mutates(
    name: str, state: WalletState
) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    pristine = copy.deepcopy(body)
    out = optimize(dialect, body, state, OptimizerSettings(rag_min_score=0.5, rag_top_k=3))
    assert body == pristine
    assert out.body is not body
    assert validate_conversation(dialect, out.body) == []
    assert out.changed == bool(out.strategies) == (out.body != body)
    if state in (WalletState.GREEN, WalletState.SUSPENDED):
        assert not out.changed
    if state is WalletState.YELLOW:
        assert set(out.strategies) <= LOSSLESS
    _sdk_accepts(dialect, out.body)


def test_red_keeps_the_tail_structure() -> None:
    body = load("sre_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings(keep_last_turns=4))
    before, after = body["messages"], out.body["messages"]
    assert isinstance(before, list)
    assert isinstance(after, list)
    for old, new in zip(before[-4:], after[-4:], strict=True):
        assert isinstance(old, dict)
        assert isinstance(new, dict)
        assert (old["role"], old.get("tool_call_id"), old.get("tool_calls")) == (
            new["role"],
            new.get("tool_call_id"),
            new.get("tool_calls"),
        )


def test_target_reduction_stops_lossy_steps_once_reached() -> None:
    body = load("sre_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings(target_reduction=0.05))
    assert set(out.strategies) <= LOSSLESS  # minify + whitespace already cut > 5 %
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings(target_reduction=0.9))
    assert COMPACT_HISTORY in out.strategies


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        pytest.param(
            Dialect.OPENAI_RESPONSES, {"model": "gpt-4o", "input": "hi   there"}, id="responses"
        ),
        pytest.param(
            Dialect.OPENAI_EMBEDDINGS, {"model": "e", "input": ["a   b"]}, id="embeddings"
        ),
        pytest.param(Dialect.OPENAI_CHAT, {"model": "gpt-4o"}, id="no-messages"),
    ],
)
def test_passthrough(dialect: Dialect, body: JSONObject) -> None:
    out = optimize(dialect, body, RED, OptimizerSettings())
    assert out == optimize(dialect, body, RED, OptimizerSettings())
    assert (out.body, out.strategies, out.changed) == (body, (), False)


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"keep_last_turns": 0}, id="keep0"),
        pytest.param({"tool_result_max_chars": 0}, id="max-chars0"),
        pytest.param({"rag_top_k": 0}, id="top-k0"),
        pytest.param({"target_reduction": 1.0}, id="target1"),
        pytest.param({"at_red": frozenset({"summarize_with_llm"})}, id="unknown"),
    ],
)
def test_settings_are_checked(knobs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each knob has its own message
        OptimizerSettings(**knobs)


# ---------------------------------------------------------------------------------------------
# The validator


@pytest.mark.parametrize(
    ("dialect", "messages", "fragment"),
    [
        pytest.param(
            Dialect.OPENAI_CHAT,
            [{"role": "tool", "tool_call_id": "a", "content": "x"}],
            "without a preceding",
            id="orphan-tool",
        ),
        pytest.param(
            Dialect.OPENAI_CHAT,
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "user", "content": "x"},
            ],
            "have no tool message",
            id="unanswered-call",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            [{"role": "assistant", "content": "x"}],
            "first message",
            id="first-not-user",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}],
            "alternate",
            id="alternation",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}],
                }
            ],
            "answers no tool_use",
            id="result-without-use",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "no result"},
            ],
            "not answered",
            id="use-without-result",
        ),
    ],
)
def test_validator_finds_violations(
    dialect: Dialect, messages: list[JSONValue], fragment: str
) -> None:
    problems = validate_conversation(dialect, {"messages": messages})
    assert any(fragment in problem for problem in problems), problems


# ---------------------------------------------------------------------------------------------
# The official SDKs' types accept the optimized bodies

_OPENAI_MESSAGES = pydantic.TypeAdapter(list[ChatCompletionMessageParam])
_ANTHROPIC_MESSAGES = pydantic.TypeAdapter(list[MessageParam])


def _sdk_accepts(dialect: Dialect, body: JSONObject) -> None:
    adapter = _OPENAI_MESSAGES if dialect is Dialect.OPENAI_CHAT else _ANTHROPIC_MESSAGES
    adapter.validate_python(body["messages"])


def test_sdk_types_reject_garbage() -> None:
    with pytest.raises(pydantic.ValidationError):
        _ANTHROPIC_MESSAGES.validate_python([{"role": "bogus", "content": "x"}])
    with pytest.raises(pydantic.ValidationError):
        _ANTHROPIC_MESSAGES.validate_python([{"role": "user", "content": 5}])
    with pytest.raises(pydantic.ValidationError):
        _OPENAI_MESSAGES.validate_python([{"role": "tool", "content": "x"}])  # no tool_call_id


# ---------------------------------------------------------------------------------------------
# Tokens saved, measured with the real counter

DESIGNED_FOR = [
    pytest.param(WHITESPACE, "coding_openai", id="whitespace-coding"),
    pytest.param(WHITESPACE, "sre_openai", id="whitespace-sre"),
    pytest.param(JSON_MINIFY, "sre_openai", id="json-sre"),
    pytest.param(JSON_MINIFY, "sre_anthropic", id="json-sre-anthropic"),
    pytest.param(JSON_MINIFY, "coding_openai", id="json-fence-coding"),
    pytest.param(DEDUPE, "sre_openai", id="dedupe-sre"),
    pytest.param(DEDUPE, "sre_anthropic", id="dedupe-sre-anthropic"),
    pytest.param(DEDUPE, "coding_openai", id="dedupe-coding"),
    pytest.param(RAG_FILTER, "rag_openai", id="rag"),
    pytest.param(TRUNCATE_TOOL_RESULTS, "sre_openai", id="truncate-sre"),
    pytest.param(TRUNCATE_TOOL_RESULTS, "sre_anthropic", id="truncate-sre-anthropic"),
    pytest.param(COMPACT_HISTORY, "sre_openai", id="compact-sre"),
    pytest.param(COMPACT_HISTORY, "sre_anthropic", id="compact-sre-anthropic"),
]


@pytest.mark.parametrize(("strategy", "name"), DESIGNED_FOR)
def test_each_strategy_saves_tokens_on_its_transcript(
    counter: TokenCounter, strategy: str, name: str
) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    out = optimize(
        dialect,
        body,
        RED,
        only(strategy, rag_min_score=0.5, rag_top_k=3, tool_result_max_chars=1500),
    )
    assert out.strategies == (strategy,)
    assert saved_tokens(counter, dialect, body, out.body) > 0


@pytest.mark.parametrize("name", ["sre_openai", "sre_anthropic"])
def test_red_saves_substantially_on_the_long_sre_loop(counter: TokenCounter, name: str) -> None:
    dialect = DIALECTS[name]
    body = load(name)
    out = optimize(dialect, body, RED, OptimizerSettings())
    assert saved_tokens(counter, dialect, body, out.body) > 0.3 * tokens(counter, dialect, body)


def test_all_strategies_are_covered_by_the_savings_test() -> None:
    assert {p.values[0] for p in DESIGNED_FOR} == ALL_STRATEGIES


# ---------------------------------------------------------------------------------------------
# Property: random valid conversations stay valid

_TEXTS = st.sampled_from(
    [
        "ok",
        "x" * 200,
        "line one   \n\n\n\nline two",
        json.dumps({"a": [1, 2, {"b": "c  d"}]}, indent=2),
        json.dumps([{"page_content": f"doc {i}", "score": i / 10} for i in range(6)], indent=2),
        "```python\nif x:\n    y = 1   \n```",
        "y" * 5000,
    ]
)


@st.composite
def chat_conversations(draw: st.DrawFn) -> list[JSONValue]:
    messages: list[JSONValue] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_TEXTS)})
    messages.append({"role": "user", "content": draw(_TEXTS)})
    for turn in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "tools", "system"]))
        if kind == "tools":
            ids = [f"call_{turn}_{i}" for i in range(draw(st.integers(1, 3)))]
            messages.append(
                {
                    "role": "assistant",
                    "content": draw(st.one_of(st.none(), _TEXTS)),
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {
                                "name": draw(st.sampled_from(["a", "b"])),
                                "arguments": "{}",
                            },
                        }
                        for i in ids
                    ],
                }
            )
            for i in ids:
                content: JSONValue = draw(_TEXTS)
                if draw(st.booleans()):
                    content = [{"type": "text", "text": str(content)}]
                messages.append({"role": "tool", "tool_call_id": i, "content": content})
        else:
            messages.append({"role": kind, "content": draw(_TEXTS)})
    return messages


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[JSONValue]:
    messages: list[JSONValue] = [{"role": "user", "content": draw(_TEXTS)}]
    pending: list[str] = []
    for turn in range(draw(st.integers(0, 16))):
        if turn % 2 == 0:  # assistant
            blocks: list[JSONValue] = []
            if draw(st.booleans()):
                blocks.append({"type": "text", "text": draw(_TEXTS)})
            pending = [f"toolu_{turn}_{i}" for i in range(draw(st.integers(0, 2)))]
            blocks += [
                {
                    "type": "tool_use",
                    "id": i,
                    "name": draw(st.sampled_from(["a", "b"])),
                    "input": {},
                }
                for i in pending
            ]
            if not blocks:
                blocks.append({"type": "text", "text": "ok"})
            messages.append({"role": "assistant", "content": draw(st.just(blocks))})
        else:
            user: list[JSONValue] = []
            for i in pending:
                content: JSONValue = draw(_TEXTS)
                if draw(st.booleans()):
                    content = [{"type": "text", "text": str(content)}]
                user.append({"type": "tool_result", "tool_use_id": i, "content": content})
            if not user or draw(st.booleans()):
                user.append({"type": "text", "text": draw(_TEXTS)})
            messages.append(
                {
                    "role": "user",
                    "content": user if draw(st.booleans()) or pending else draw(_TEXTS),
                }
            )
            pending = []
    if pending:  # the last assistant called tools: answer them
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": i, "content": "done"} for i in pending
                ],
            }
        )
    return messages


_SETTINGS = st.builds(
    OptimizerSettings,
    rag_min_score=st.one_of(st.none(), st.floats(0, 1)),
    rag_top_k=st.one_of(st.none(), st.integers(1, 4)),
    keep_last_turns=st.integers(1, 8),
    tool_result_max_chars=st.integers(1, 300),
    target_reduction=st.sampled_from([0.0, 0.2, 0.6]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dialect=st.sampled_from([Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES]),
    data=st.data(),
    optimizer=_SETTINGS,
)
def test_random_valid_conversations_stay_valid(
    dialect: Dialect, data: st.DataObject, optimizer: OptimizerSettings
) -> None:
    strategy = chat_conversations() if dialect is Dialect.OPENAI_CHAT else anthropic_conversations()
    body: JSONObject = {"model": "m", "messages": data.draw(strategy)}
    assert validate_conversation(dialect, body) == []
    pristine = copy.deepcopy(body)
    out = optimize(dialect, body, RED, optimizer)
    assert body == pristine
    assert validate_conversation(dialect, out.body) == []
    _sdk_accepts(dialect, out.body)
    messages = body["messages"]
    assert isinstance(messages, list)
    # The strategies themselves are right, not just saved by optimize's validity guard.
    for step in STEPS:
        stepped, _ = step(dialect, messages, optimizer)
        assert validate_conversation(dialect, {"messages": stepped}) == [], step.__name__
    assert body == pristine
    if COMPACT_HISTORY in out.strategies and TRUNCATE_TOOL_RESULTS not in out.strategies:
        after = out.body["messages"]
        assert isinstance(after, list)
        # Lossless steps may rewrite texts; the tail keeps its roles and ids.
        keep = optimizer.keep_last_turns
        assert [m.get("role") for m in after[-keep:] if isinstance(m, dict)] == [
            m.get("role") for m in messages[-keep:] if isinstance(m, dict)
        ]
