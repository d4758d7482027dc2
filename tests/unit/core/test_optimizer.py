"""The optimizer: each strategy alone, the guarantees of compaction, the providers' rules, savings.

The corpus in data/transcripts holds realistic request bodies: an SRE agent in OpenAI chat and in
Anthropic messages format (kubectl tables, logs, pretty-printed JSON, repeated ``get pods``), a
RAG agent whose tool results are scored chunks, and a coding agent with fenced code and long test
outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from anthropic.types import MessageParam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam

from a11i.core.model import Dialect, JSONObject, JSONValue, Usage
from a11i.core.optimizer import (
    ALL_STRATEGIES,
    COMPACT_HISTORY,
    DEDUPE,
    JSON_MINIFY,
    LOSSLESS,
    RAG_FILTER,
    TRUNCATE_TOOL_RESULTS,
    WHITESPACE,
    CacheContext,
    CacheMemory,
    CachePrices,
    CacheState,
    OptimizerSettings,
    cached_tokens_after,
    check_rewrite,
    estimated_cost,
    filter_rag_text,
    has_breakpoints,
    minify_json_text,
    net_saving,
    optimize,
    prefix_prints,
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
from a11i.core.optimizer.history import SUMMARY_HEADER
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
        pytest.param("a   b\t\tc   \n\n\n\nd", "a   b\t\tc\n\nd", id="trailing-blank-lines"),
        pytest.param(
            "  - item   one\n    - nested", "  - item   one\n    - nested", id="inner-runs-kept"
        ),
        pytest.param(CODE, CODE, id="fence-untouched"),
        pytest.param("line one  \nline two", "line one  \nline two", id="markdown-hard-break"),
        pytest.param("NAME    READY\npod-1   1/1  ", "NAME    READY\npod-1   1/1", id="table"),
        pytest.param('{"a":  "two  spaces"}', '{"a":  "two  spaces"}', id="json-untouched"),
        pytest.param("single\ttab kept", "single\ttab kept", id="single-tab"),
    ],
)
def test_whitespace(before: str, after: str) -> None:
    assert squeeze_whitespace(before) == after


def test_whitespace_keeps_code_indentation_in_the_coding_transcript() -> None:
    body = load("coding_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, only(WHITESPACE))
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
        assert old_code == new_code  # code is never touched, not even trailing blanks


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
        pytest.param('{"a": 1e400}', id="overflowing-float"),
        pytest.param('{"pi": 3.141592653589793238}', id="float-precision"),
        pytest.param('{"a": 1E5,\n "b": 2}', id="exponent-spelling"),
        pytest.param('{"a": NaN, "b": 1}', id="nan"),
        pytest.param('{"a": -0, "b":  1}', id="negative-zero"),
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
        if old.get("role") != "tool" or old is body["messages"][-1]:  # type: ignore[index]
            assert new == old  # the retrieval the agent just made is never filtered
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
    if not out.changed:  # less than one whole block between the goal and the tail
        assert len(before) - keep - 3 < OptimizerSettings().summary_block_messages
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
    assert SUMMARY_HEADER in summary


def test_compaction_summary_names_the_tools() -> None:
    out = optimize(Dialect.OPENAI_CHAT, load("sre_openai"), RED, only(COMPACT_HISTORY))
    summary = next(
        str(m["content"])
        for m in out.body["messages"]  # type: ignore[union-attr]
        if isinstance(m, dict) and SUMMARY_HEADER in str(m.get("content"))
    )
    assert "- kubectl_get(" in summary
    assert "- kubectl_logs(" in summary
    assert "- The payments pods are in CrashLoopBackOff." in summary


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
    after_all = out.body["messages"]
    assert isinstance(after_all, list)
    assert after_all[-1] == messages[-1]  # the latest message is never rewritten
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


# ---------------------------------------------------------------------------------------------
# Issue 17: each way the optimizer broke an agent, reproduced


def _thinking(turn: int) -> JSONObject:
    return {"type": "thinking", "thinking": f"plan {turn}", "signature": f"sig-{turn}=="}


def _tool_loop(rounds: int, *, real_user_at: frozenset[int] = frozenset()) -> JSONObject:
    """A Claude-Code-like loop with extended thinking: one goal, ``rounds`` tool rounds; the
    first assistant message of each user turn opens with a signed thinking block."""
    messages: list[JSONValue] = [{"role": "user", "content": "Fix the failing test in src/app.py"}]
    opens_turn = True
    for turn in range(rounds):
        content: list[JSONValue] = [_thinking(turn)] if opens_turn else []
        content += [
            {"type": "text", "text": f"Step {turn}: reading a file."},
            {
                "type": "tool_use",
                "id": f"toolu_{turn}",
                "name": "Read",
                "input": {"path": f"src/m{turn}.py"},
            },
        ]
        messages.append({"role": "assistant", "content": content})
        result: list[JSONValue] = [
            {
                "type": "tool_result",
                "tool_use_id": f"toolu_{turn}",
                "content": f"    {turn}\tline   {turn}\n" * 40,
            }
        ]
        opens_turn = turn in real_user_at
        if opens_turn:
            result.append({"type": "text", "text": f"Correction {turn}: use pytest -x"})
        messages.append({"role": "user", "content": result})
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 20000,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "messages": messages,
    }


def test_the_validator_knows_the_thinking_rule() -> None:
    body = _tool_loop(4)
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, body) == []
    messages = copy.deepcopy(body["messages"])
    assert isinstance(messages, list)
    # What compaction used to do: a text block in the tool results makes that message a user
    # turn, and the next assistant message (no thinking block) opens the loop.
    messages[2]["content"].append({"type": "text", "text": "[a11i] summary"})  # type: ignore[index, union-attr]
    problems = validate_conversation(Dialect.ANTHROPIC_MESSAGES, {**body, "messages": messages})
    assert any("must start with a thinking block" in p for p in problems), problems
    # Without thinking the same structure is valid.
    plain = {k: v for k, v in body.items() if k != "thinking"}
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, {**plain, "messages": messages}) == []


@pytest.mark.parametrize("rounds", [6, 12, 30], ids=lambda r: f"rounds{r}")
@pytest.mark.parametrize(
    "real_user_at",
    [frozenset(), frozenset({3}), frozenset({2, 9, 20})],
    ids=["one-turn", "turn3", "turns"],
)
def test_compaction_in_a_thinking_tool_loop_keeps_the_loop_valid(
    rounds: int, real_user_at: frozenset[int]
) -> None:
    body = _tool_loop(rounds, real_user_at=real_user_at)
    out = optimize(
        Dialect.ANTHROPIC_MESSAGES,
        body,
        RED,
        OptimizerSettings(keep_last_turns=2, summary_block_messages=4),
    )
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, out.body) == []
    assert check_rewrite(Dialect.ANTHROPIC_MESSAGES, body, out.body) == []
    if rounds >= 12 and not real_user_at:
        assert COMPACT_HISTORY in out.strategies


def test_a_rewrite_that_changes_a_thinking_block_is_refused() -> None:
    body = _tool_loop(3)
    changed = copy.deepcopy(body)
    changed["messages"][1]["content"][0]["thinking"] = "edited"  # type: ignore[index]
    problems = check_rewrite(Dialect.ANTHROPIC_MESSAGES, body, changed)
    assert any("thinking block" in p for p in problems)


def test_cache_breakpoints_and_their_prefix_stay_byte_identical() -> None:
    body = _tool_loop(14)
    messages = copy.deepcopy(body["messages"])
    assert isinstance(messages, list)
    messages[10]["content"][0]["cache_control"] = {"type": "ephemeral"}  # type: ignore[index]
    body = {**body, "messages": messages}
    out = optimize(
        Dialect.ANTHROPIC_MESSAGES,
        body,
        RED,
        OptimizerSettings(keep_last_turns=2, summary_block_messages=4),
    )
    after = out.body["messages"]
    assert isinstance(after, list)
    assert after[:11] == messages[:11]
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, out.body) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "    13\t        with open(path) as f:\n    14\t            return  f.read()",
            id="read-output",
        ),
        pytest.param(
            "@@ -1,3 +1,3 @@\n     def f():\n-        return  1\n+        return  2\n \n", id="diff"
        ),
        pytest.param("src/app.py:12:    x  =  1\nsrc/app.py:13:        y = 2", id="grep-n"),
        pytest.param("name\tready\tage\npod-1\t1/1\t3d   ", id="tsv"),
        pytest.param("key: |\n  line one   \n  line  two\n", id="yaml-block"),
        pytest.param("first line  \nsecond line\n\n\n\nthird", id="markdown"),
    ],
)
@pytest.mark.parametrize("dialect", [Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES], ids=str)
def test_lossless_never_touches_tool_results(dialect: Dialect, text: str) -> None:
    if dialect is Dialect.OPENAI_CHAT:
        messages: list[JSONValue] = [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "Read", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": text},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "next"},
        ]
    else:
        messages = [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": text}],
            },
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "next"},
        ]
    body: JSONObject = {"model": "m", "messages": messages}
    out = optimize(dialect, body, WalletState.YELLOW, OptimizerSettings())
    assert out.body["messages"] == messages


def test_the_latest_message_is_never_rewritten() -> None:
    pretty = 'Pretty-print this exactly:\n```json\n{\n  "a": 1\n}\n```\n\n\n\nthanks   '
    body: JSONObject = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi   \n\n\n\nthere"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": pretty},
        ],
    }
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings())
    after = out.body["messages"]
    assert isinstance(after, list)
    assert after[-1] == {"role": "user", "content": pretty}
    assert after[0] == {"role": "user", "content": "hi\n\nthere"}  # older prose still squeezed


def test_the_current_tool_exchange_is_never_rewritten() -> None:
    docs = json.dumps([{"page_content": f"doc {i}", "score": i / 10} for i in range(6)], indent=2)
    body: JSONObject = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "search"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": docs},
        ],
    }
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings(rag_top_k=1))
    assert not out.changed  # not minified, not filtered: the agent just retrieved it


def test_json_minify_keeps_numbers_as_written() -> None:
    text = '{\n  "small": 1.5e-07,\n  "pi": 3.25,\n  "big": 12345678901234567890\n}'
    out = minify_json_text(text)
    assert out == '{"small":1.5e-07,"pi":3.25,"big":12345678901234567890}'


def test_fence_scanning_is_linear() -> None:
    # 2 MB of unclosed ```json openers took quadratic time with the old pattern (33 s at
    # 200 KB); a line scan does it in one pass. The per-test timeout is the guard.
    text = "```json\n{\n" * 200_000
    assert minify_json_text(text) == text
    closed = '```json\n{\n  "a": 1\n}\n```\n' * 20_000
    assert minify_json_text(closed) == '```json\n{"a":1}\n```\n' * 20_000


def test_a_lone_surrogate_is_text_like_any_other() -> None:
    body: JSONObject = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "deploy   \n\n\n\nplease"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Deploy \ud83d"},
        ],
    }
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings())
    assert out.changed
    after = out.body["messages"]
    assert isinstance(after, list)
    assert after[-1] == {"role": "user", "content": "Deploy \ud83d"}


def _fact_loop() -> tuple[JSONObject, list[str]]:
    """An SRE loop whose facts (the user's corrections, request ids, pod names, file paths in
    tool inputs, error lines) must survive compaction."""
    facts: list[str] = []
    messages: list[JSONValue] = [
        {"role": "system", "content": "You are an SRE agent."},
        {"role": "user", "content": "Checkout returns 502s. Find out why."},
    ]
    for turn in range(30):
        call = f"call_{turn}"
        path = f"/etc/app/conf.d/svc{turn}.yaml"
        pod = f"payments-5c6b7d8f{turn % 10}-q{turn}x"
        request = f"req_{turn:04d}ab{turn}"
        messages.append(
            {
                "role": "assistant",
                "content": f"Checking {turn}.",
                "tool_calls": [
                    {
                        "id": call,
                        "type": "function",
                        "function": {"name": "read_file", "arguments": json.dumps({"path": path})},
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call,
                "content": f"ERROR upstream timeout in {pod} request_id={request}\n"
                + "ok line\n" * 60,
            }
        )
        facts += [path, pod, request]
        if turn % 7 == 3:
            correction = (
                f"Correction {turn}: ignore the staging cluster, only prod-eu-{turn} matters."
            )
            messages.append({"role": "user", "content": correction})
            facts.append(correction)
    messages.append({"role": "user", "content": "What is the root cause?"})
    return {"model": "gpt-4o", "messages": messages}, facts


def test_the_summary_keeps_the_facts_an_agent_needs() -> None:
    body, facts = _fact_loop()
    out = optimize(Dialect.OPENAI_CHAT, body, RED, only(COMPACT_HISTORY, keep_last_turns=4))
    assert out.strategies == (COMPACT_HISTORY,)
    sent = json.dumps(out.body["messages"], ensure_ascii=False)
    assert len(sent) < 0.6 * len(json.dumps(body["messages"], ensure_ascii=False))
    kept = [fact for fact in facts if fact in sent]
    assert kept == facts
    # Stable across turns: one more exchange leaves the summary of the earlier blocks as it was.
    messages = body["messages"]
    assert isinstance(messages, list)
    later = {
        **body,
        "messages": [
            *messages,
            {"role": "assistant", "content": "Pool."},
            {"role": "user", "content": "Fix it"},
        ],
    }
    again = optimize(Dialect.OPENAI_CHAT, later, RED, only(COMPACT_HISTORY, keep_last_turns=4))
    first = next(m for m in out.body["messages"] if SUMMARY_HEADER in str(m.get("content")))  # type: ignore[union-attr]
    second = next(m for m in again.body["messages"] if SUMMARY_HEADER in str(m.get("content")))  # type: ignore[union-attr]
    assert str(second["content"]).startswith(str(first["content"]))  # type: ignore[index]


def test_rag_filter_reads_distances_as_lower_is_better() -> None:
    docs = [{"text": t, "distance": d} for t, d in (("near", 0.1), ("far", 0.9), ("mid", 0.4))]
    kept = json.loads(filter_rag_text(json.dumps(docs), 0.5, None))
    assert [d["text"] for d in kept] == ["near", "mid"]
    top = json.loads(filter_rag_text(json.dumps(docs), None, 1))
    assert [d["text"] for d in top] == ["near"]
    forced = json.loads(filter_rag_text(json.dumps(docs), None, 1, "higher"))
    assert [d["text"] for d in forced] == ["far"]


def test_dedupe_names_no_message_number() -> None:
    long = "the same long explanation " * 10
    body: JSONObject = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": long},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": long},
            {"role": "user", "content": "ok"},
        ],
    }
    out = optimize(Dialect.OPENAI_CHAT, body, RED, only(DEDUPE))
    reference = out.body["messages"][3]["content"]  # type: ignore[index]
    assert "message 1" not in str(reference)
    assert 'earlier assistant message that begins "the same long explanation' in str(reference)


def test_responses_items_are_validated() -> None:
    ok: JSONObject = {
        "input": [
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "x"},
        ]
    }
    assert validate_conversation(Dialect.OPENAI_RESPONSES, ok) == []
    orphan: JSONObject = {
        "input": [{"type": "function_call_output", "call_id": "b", "output": "x"}]
    }
    assert validate_conversation(Dialect.OPENAI_RESPONSES, orphan)
    assert (
        validate_conversation(Dialect.OPENAI_RESPONSES, {**orphan, "previous_response_id": "r"})
        == []
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=st.integers(1, 30),
    real_user_at=st.frozensets(st.integers(0, 30), max_size=4),
    optimizer=_SETTINGS,
    block=st.integers(2, 10),
)
def test_random_thinking_tool_loops_stay_valid(
    rounds: int, real_user_at: frozenset[int], optimizer: OptimizerSettings, block: int
) -> None:
    body = _tool_loop(rounds, real_user_at=real_user_at)
    optimizer = dataclasses.replace(optimizer, summary_block_messages=block)
    pristine = copy.deepcopy(body)
    out = optimize(Dialect.ANTHROPIC_MESSAGES, body, RED, optimizer)
    assert body == pristine
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, out.body) == []
    assert check_rewrite(Dialect.ANTHROPIC_MESSAGES, body, out.body) == []
    _sdk_accepts(Dialect.ANTHROPIC_MESSAGES, out.body)
    before, after = body["messages"], out.body["messages"]
    assert isinstance(before, list)
    assert isinstance(after, list)
    assert after[-2:] == before[-2:]  # the current tool exchange, byte for byte


# ---------------------------------------------------------------------------------------------
# Money net of the prompt cache

# Anthropic-like prices: a cache read is a tenth of the input price, a write 1.25 times it.
PRICES = CachePrices(Decimal("3e-6"), Decimal("3e-7"), Decimal("3.75e-6"))


def _context(body: JSONObject, state: CacheState | None, dialect: Dialect) -> CacheContext:
    prints = prefix_prints(dialect, body)
    # ~4 characters per token: the proxy passes the exact ratio of the request.
    return CacheContext(PRICES, state, 0.25 if prints.chars[-1] else 0.0)


def test_prefix_prints_share_the_common_prefix_only() -> None:
    body = load("sre_openai")
    messages = body["messages"]
    assert isinstance(messages, list)
    longer = {**body, "messages": [*messages, {"role": "user", "content": "more"}]}
    edited = {**body, "messages": [messages[0], messages[1], {"role": "user", "content": "x"}]}
    a, b, c = (prefix_prints(Dialect.OPENAI_CHAT, x) for x in (body, longer, edited))
    assert b.hashes[: len(a.hashes)] == a.hashes
    assert c.hashes[:3] == a.hashes[:3]
    assert c.hashes[3] != a.hashes[3]
    assert a.key == b.key == c.key


def test_nothing_cached_means_every_token_saved_is_money_saved() -> None:
    body = load("sre_openai")
    out = optimize(Dialect.OPENAI_CHAT, body, RED, OptimizerSettings())
    context = _context(body, None, Dialect.OPENAI_CHAT)
    before = prefix_prints(Dialect.OPENAI_CHAT, body)
    after = prefix_prints(Dialect.OPENAI_CHAT, out.body)
    expected = (before.chars[-1] - after.chars[-1]) * Decimal("0.25") * PRICES.input
    assert net_saving(context, before, after) == pytest.approx(expected, rel=Decimal("0.01"))


@pytest.mark.parametrize("state", [WalletState.YELLOW, RED], ids=str)
def test_a_fully_cached_history_is_not_rewritten_when_that_costs_more(state: WalletState) -> None:
    # The +420% of issue 17: the previous call sent this history unchanged and the provider
    # cached all of it; rewriting an early message makes everything after it full price.
    body = load("sre_openai")
    prints = prefix_prints(Dialect.OPENAI_CHAT, body)
    cached = CacheState(prints, cached_tokens=10**6)
    settings_ = OptimizerSettings(at_red=LOSSLESS)
    blind = optimize(Dialect.OPENAI_CHAT, body, state, settings_)
    assert blind.changed  # tokens would be saved ...
    aware = optimize(
        Dialect.OPENAI_CHAT, body, state, settings_, _context(body, cached, Dialect.OPENAI_CHAT)
    )
    assert not aware.changed  # ... but money would not
    assert aware.usd_saved == 0


def test_a_stable_summary_saves_money_on_the_next_turn() -> None:
    body, _ = _fact_loop()
    first = optimize(Dialect.OPENAI_CHAT, body, RED, only(COMPACT_HISTORY, keep_last_turns=4))
    assert first.compacted
    # The provider cached what was sent; the agent sends its full history again, longer.
    state = CacheState(prefix_prints(Dialect.OPENAI_CHAT, first.body), cached_tokens=10**6)
    messages = body["messages"]
    assert isinstance(messages, list)
    later: JSONObject = {
        **body,
        "messages": [
            *messages,
            {"role": "assistant", "content": "The pool is exhausted."},
            {"role": "user", "content": "Fix it"},
        ],
    }
    context = _context(later, state, Dialect.OPENAI_CHAT)
    second = optimize(
        Dialect.OPENAI_CHAT, later, RED, only(COMPACT_HISTORY, keep_last_turns=4), context
    )
    assert second.compacted
    assert second.usd_saved is not None
    assert second.usd_saved > 0
    # Forwarding the agent's request unchanged would now cost more than the cached summary.
    unchanged = prefix_prints(Dialect.OPENAI_CHAT, later)
    compacted = prefix_prints(Dialect.OPENAI_CHAT, second.body)
    assert estimated_cost(context, unchanged) > estimated_cost(context, compacted)


def test_cached_tokens_after_a_call() -> None:
    usage = Usage(
        input_tokens=5000, output_tokens=10, cached_input_tokens=4000, cache_write_tokens=900
    )
    assert cached_tokens_after(Dialect.ANTHROPIC_MESSAGES, usage) == 4900
    assert cached_tokens_after(Dialect.OPENAI_CHAT, usage) == 4992  # whole 128-token steps
    assert cached_tokens_after(Dialect.OPENAI_CHAT, Usage(input_tokens=1000, output_tokens=1)) == 0


def test_cache_memory_is_bounded_and_keyed_by_conversation() -> None:
    memory = CacheMemory(capacity=2)
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": f"goal {i}"}]} for i in range(3)
    ]
    prints = [prefix_prints(Dialect.OPENAI_CHAT, b) for b in bodies]
    for p in prints:
        memory.observe(p, 100)
    assert len(memory) == 2
    assert memory.state(prints[0]) is None  # the least recently used went
    state = memory.state(prints[2])
    assert state is not None
    assert state.cached_tokens == 100


def test_breakpoints_are_found_wherever_they_are() -> None:
    assert not has_breakpoints({"messages": [{"role": "user", "content": "x"}]})
    assert has_breakpoints({"system": [{"type": "text", "text": "s", "cache_control": {}}]})
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    assert has_breakpoints({"messages": [{"role": "user", "content": [marked]}]})


_FACT_PATTERNS = (
    re.compile(r"request_id=(\w+)"),
    re.compile(r"\b[a-z]+-[0-9a-f]{8,10}-[a-z0-9]{5}\b"),
    re.compile(r"(?:/[\w.-]+)+\.\w+"),
)


@pytest.mark.parametrize("name", ["sre_openai", "sre_anthropic"])
def test_red_keeps_every_id_of_the_sre_loop(name: str) -> None:
    # Issue 17 counted request ids 26 -> 1 and pod names 79 -> 4 after compaction.
    dialect = DIALECTS[name]
    body = load(name)
    original = json.dumps(body["messages"], ensure_ascii=False)
    facts = {
        m.group(1) if m.groups() else m.group(0)
        for pattern in _FACT_PATTERNS
        for m in pattern.finditer(original)
    }
    assert len(facts) > 50
    out = optimize(dialect, body, RED, OptimizerSettings(keep_last_turns=4))
    assert out.compacted
    sent = json.dumps(out.body["messages"], ensure_ascii=False)
    assert len(sent) < len(original) / 2
    assert sorted(f for f in facts if f not in sent) == []


def test_a_claude_code_request_is_left_alone_before_its_breakpoint() -> None:
    body = load("coding_anthropic_thinking")
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, body) == []
    # Claude Code marks the newest message: everything before it is the provider's cache.
    assert not optimize(Dialect.ANTHROPIC_MESSAGES, body, RED, OptimizerSettings()).changed
    messages = body["messages"]
    assert isinstance(messages, list)
    unmarked = json.loads(re.sub(r', "cache_control": \{[^}]*\}', "", json.dumps(messages)))
    plain = {**body, "messages": unmarked}
    out = optimize(Dialect.ANTHROPIC_MESSAGES, plain, RED, OptimizerSettings())
    assert out.compacted
    assert validate_conversation(Dialect.ANTHROPIC_MESSAGES, out.body) == []
    assert check_rewrite(Dialect.ANTHROPIC_MESSAGES, plain, out.body) == []
    sent = json.dumps(out.body["messages"])
    for correction in ("Don't touch tests/test_orders.py", "Use the pool timeout from config.py"):
        assert correction in sent
