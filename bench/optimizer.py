"""What the optimizer saves and what it costs.

Run with ``python -m bench.optimizer``. Prints two markdown tables:

- tokens saved (%) by each strategy alone, and by all of them at Red, on each transcript of the
  test corpus (tests/data/transcripts), counted with the real token counter;
- time per optimization of a ~128k-token history, built by repeating the SRE transcript's
  tool-call turns (with fresh call ids), for the Yellow (lossless) and Red (all) defaults.

Figures, never assertions.
"""

from __future__ import annotations

import copy
import json
import statistics
import time

from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.optimizer import ALL_STRATEGIES, OptimizerSettings, optimize
from a11i.core.policy import WalletState
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.meter import load_meter
from tests.support.paths import TRANSCRIPTS

CORPUS = TRANSCRIPTS
STRATEGIES = (
    "json_minify",
    "whitespace",
    "dedupe",
    "rag_filter",
    "truncate_tool_results",
    "compact_history",
)
RAG_MIN_SCORE = 0.5
RAG_TOP_K = 3


def dialect_of(name: str) -> Dialect:
    return Dialect.ANTHROPIC_MESSAGES if "anthropic" in name else Dialect.OPENAI_CHAT


def count(counter: TokenCounter, dialect: Dialect, body: JSONObject) -> int:
    messages = body["messages"]
    tools = body.get("tools")
    assert isinstance(messages, list)
    assert tools is None or isinstance(tools, list)
    if dialect is Dialect.OPENAI_CHAT:
        return counter.count_chat(str(body["model"]), messages, tools=tools).tokens
    return counter.count_anthropic(
        str(body["model"]), body.get("system"), messages, tools=tools
    ).tokens


def long_history(counter: TokenCounter, target: int) -> JSONObject:
    """The SRE transcript's turns repeated (fresh call ids) until ~``target`` tokens."""
    body: JSONObject = json.loads((CORPUS / "sre_openai.json").read_text())
    messages = body["messages"]
    assert isinstance(messages, list)
    head, turns, tail = messages[:2], messages[2:-2], messages[-2:]
    history: list[JSONValue] = list(head)
    round_ = 0
    while count(counter, Dialect.OPENAI_CHAT, {**body, "messages": history}) < target:
        round_ += 1
        for message in copy.deepcopy(turns):
            assert isinstance(message, dict)
            if isinstance(message.get("tool_call_id"), str):
                message["tool_call_id"] = f"{message['tool_call_id']}_{round_}"
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    assert isinstance(call, dict)
                    call["id"] = f"{call['id']}_{round_}"
            history.append(message)
    return {**body, "messages": [*history, *tail]}


def main() -> None:
    counter = load_meter().counter
    names = sorted(path.stem for path in CORPUS.glob("*.json"))
    print("# tokens saved by each strategy alone (and all at Red)")
    print()
    print(
        f"settings: defaults plus rag_min_score={RAG_MIN_SCORE}, rag_top_k={RAG_TOP_K} "
        "(rag_filter is off without them)"
    )
    print()
    print("| transcript | tokens | " + " | ".join(STRATEGIES) + " | all at Red |")
    print("|---|---:|" + "---:|" * (len(STRATEGIES) + 1))
    for name in names:
        dialect = dialect_of(name)
        body: JSONObject = json.loads((CORPUS / f"{name}.json").read_text())
        before = count(counter, dialect, body)
        cells = []
        for strategy in (*STRATEGIES, "all"):
            chosen = ALL_STRATEGIES if strategy == "all" else frozenset({strategy})
            settings = OptimizerSettings(
                at_red=chosen, rag_min_score=RAG_MIN_SCORE, rag_top_k=RAG_TOP_K
            )
            after = count(counter, dialect, optimize(dialect, body, WalletState.RED, settings).body)
            cells.append(f"{100 * (before - after) / before:.1f}%")
        print(f"| {name} | {before:,} | " + " | ".join(cells) + " |")

    body = long_history(counter, 128_000)
    before = count(counter, Dialect.OPENAI_CHAT, body)
    messages = body["messages"]
    assert isinstance(messages, list)
    print()
    print(f"# time per optimization of a {before:,}-token history ({len(messages)} messages)")
    print()
    print("| state | strategies applied | tokens after | median | p90 |")
    print("|---|---|---:|---:|---:|")
    for state in (WalletState.YELLOW, WalletState.RED):
        samples = []
        result = None
        for _ in range(15):
            started = time.perf_counter()
            result = optimize(Dialect.OPENAI_CHAT, body, state, OptimizerSettings())
            samples.append(time.perf_counter() - started)
        assert result is not None
        after = count(counter, Dialect.OPENAI_CHAT, result.body)
        samples.sort()
        print(
            f"| {state} | {', '.join(result.strategies)} | {after:,} "
            f"| {statistics.median(samples) * 1000:.1f} ms "
            f"| {samples[int(len(samples) * 0.9)] * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    main()
