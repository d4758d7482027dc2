"""What the optimizer saves, in tokens and in dollars net of the prompt cache, and what it costs.

Run with ``python -m bench.optimizer``. Prints markdown tables:

- tokens saved (%) by each strategy alone, and by all of them at Red, on each transcript of the
  test corpus (tests/data/transcripts), counted with the real token counter;
- an agent loop replayed call by call (history growing one exchange per call) against a
  provider that caches what it was sent (OpenAI: the whole prompt; Anthropic: up to the last
  ``cache_control`` breakpoint, which Claude Code moves to the newest message each call). The
  wallet is Green for the first calls (forwarded unchanged, cached), then Yellow or Red. For
  each strategy, tokens and dollars of the first optimized call and of the steady state (mean
  over the later calls), against forwarding unchanged in the same run: "blind" is the old rule
  (forward when tokens are saved), "net" the proxy's rule (forward when money is saved net of
  the cache, from the reported cache of the previous call);
- the facts kept by compaction: request ids, pod names, file paths and the user's words of the
  original history found in what is forwarded at Red;
- time per optimization of a ~128k-token history, built by repeating the SRE transcript's
  tool-call turns (with fresh call ids), for the Yellow (lossless) and Red (all) defaults.

Figures, never assertions.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import time
from dataclasses import dataclass
from decimal import Decimal

from a11i.core.meter import Meter
from a11i.core.model import Dialect, JSONObject, JSONValue
from a11i.core.optimizer import (
    ALL_STRATEGIES,
    LOSSLESS,
    CacheContext,
    CachePrices,
    CacheState,
    OptimizerSettings,
    Prints,
    estimated_cost,
    has_breakpoints,
    optimize,
    prefix_prints,
)
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


# ---------------------------------------------------------------------------------------------
# A loop replayed against a caching provider


@dataclass
class Provider:
    """What the provider caches: the prefix of the last request, up to ``tokens``."""

    prints: Prints | None = None
    tokens: int = 0


def loop_calls(name: str, rounds: int) -> list[JSONObject]:
    """The requests of an agent loop: the transcript's history grown one exchange per call
    (the SRE loop repeated with fresh ids until ``rounds`` exchanges), Claude Code's moving
    breakpoint on the newest message."""
    body: JSONObject = json.loads((CORPUS / f"{name}.json").read_text())
    messages = body["messages"]
    assert isinstance(messages, list)
    clean = _without_breakpoints(messages)
    dialect = dialect_of(name)
    start = next(i for i, m in enumerate(clean) if isinstance(m, dict) and m["role"] == "user")
    turns = clean[start + 1 :]
    history = list(clean[: start + 1])
    repeat = 0
    while sum(1 for m in history if _ends_exchange(dialect, history, m)) < rounds:
        for message in _fresh_ids(copy.deepcopy(turns), repeat):
            history.append(message)
        repeat += 1
    calls: list[JSONObject] = []
    for index in range(len(history)):
        if not _ends_exchange(dialect, history, history[index]):
            continue
        prefix = copy.deepcopy(history[: index + 1])
        if name.startswith("coding_anthropic"):
            last = prefix[-1]
            assert isinstance(last, dict)
            content = last["content"]
            if isinstance(content, list) and content and isinstance(content[-1], dict):
                content[-1]["cache_control"] = {"type": "ephemeral"}
        calls.append({**body, "messages": prefix})
        if len(calls) == rounds:
            break
    return calls


def _ends_exchange(dialect: Dialect, history: list[JSONValue], message: JSONValue) -> bool:
    index = next(i for i, m in enumerate(history) if m is message)
    if not isinstance(message, dict) or message.get("role") not in ("user", "tool"):
        return False
    after = history[index + 1] if index + 1 < len(history) else None
    if dialect is Dialect.OPENAI_CHAT and isinstance(after, dict) and after["role"] == "tool":
        return False
    return index > 0


def _without_breakpoints(messages: list[JSONValue]) -> list[JSONValue]:
    text = json.dumps(messages)
    value: list[JSONValue] = json.loads(re.sub(r', "cache_control": \{[^}]*\}', "", text))
    return value


def _fresh_ids(messages: list[JSONValue], repeat: int) -> list[JSONValue]:
    if repeat == 0:
        return messages
    text = json.dumps(messages)
    text = re.sub(r'"(call_[\w]+|toolu_[\w]+)"', lambda m: f'"{m.group(1)}_r{repeat}"', text)
    text = re.sub(
        r'"signature": "([^"]*)"', lambda m: f'"signature": "{m.group(1)}r{repeat}"', text
    )
    value: list[JSONValue] = json.loads(text)
    return value


def true_cost(
    meter: Meter, dialect: Dialect, body: JSONObject, tokens: int, provider: Provider
) -> Decimal:
    """The input cost of ``body`` at the provider: the shared cached prefix (counted exactly) at
    the read price, the rest at the input price, or the write price under breakpoints."""
    price = meter.plan(dialect, body, 1).price.price
    prints = prefix_prints(dialect, body)
    cached = 0
    if provider.prints is not None:
        shared = 0
        for mine, theirs in zip(prints.hashes, provider.prints.hashes, strict=False):
            if mine != theirs:
                break
            shared += 1
        if shared:
            messages = body["messages"]
            assert isinstance(messages, list)
            head = {**body, "messages": messages[: shared - 1]}
            cached = min(count(meter.counter, dialect, head), provider.tokens, tokens)
    writes = dialect is Dialect.ANTHROPIC_MESSAGES and has_breakpoints(body)
    fresh_price = price.cache_write_price if writes else price.input_per_token
    return cached * price.cached_input_price + (tokens - cached) * fresh_price


def cached_after(dialect: Dialect, body: JSONObject, tokens: int) -> int:
    if dialect is Dialect.OPENAI_CHAT:
        return tokens // 128 * 128 if tokens >= 1024 else 0
    return tokens if has_breakpoints(body) else 0


def forwarded(
    meter: Meter,
    dialect: Dialect,
    body: JSONObject,
    state: WalletState,
    settings: OptimizerSettings,
    provider: Provider,
    net: bool,
) -> JSONObject:
    """What the proxy forwards: the blind rule (tokens saved) or the net one (money saved)."""
    plan = meter.plan(dialect, body, 1)
    price = plan.price.price
    prints = prefix_prints(dialect, body)
    cached = CacheState(provider.prints, provider.tokens) if provider.prints is not None else None
    prices = CachePrices(price.input_per_token, price.cached_input_price, price.cache_write_price)
    writes = dialect is Dialect.ANTHROPIC_MESSAGES and has_breakpoints(body)
    context = CacheContext(prices, cached, plan.input.tokens / prints.chars[-1], writes)
    result = optimize(dialect, body, state, settings, context if net else None)
    if not result.changed:
        return body
    smaller = meter.plan(dialect, result.body, 1).input.tokens
    if smaller >= plan.input.tokens:
        return body
    if net:
        after = prefix_prints(dialect, result.body)
        exact = CacheContext(prices, cached, smaller / after.chars[-1], writes)
        if estimated_cost(context, prints) - estimated_cost(exact, after) <= 0:
            return body
    return result.body


def replay(
    meter: Meter,
    name: str,
    calls: list[JSONObject],
    green: int,
    state: WalletState,
    settings: OptimizerSettings | None,
    net: bool,
) -> list[tuple[int, Decimal]]:
    """(tokens, USD) of each call after the first ``green`` ones (forwarded unchanged)."""
    dialect = dialect_of(name)
    provider = Provider()
    out: list[tuple[int, Decimal]] = []
    for index, body in enumerate(calls):
        sent = body
        if index >= green and settings is not None:
            sent = forwarded(meter, dialect, body, state, settings, provider, net)
        tokens = count(meter.counter, dialect, sent)
        cost = true_cost(meter, dialect, sent, tokens, provider)
        provider = Provider(prefix_prints(dialect, sent), cached_after(dialect, sent, tokens))
        if index >= green:
            out.append((tokens, cost))
    return out


def _pct(base: float, value: float) -> str:
    return f"{100 * (base - value) / base:+.1f}%" if base else "-"


def loop_table(meter: Meter) -> None:
    print()
    print("# an agent loop against a caching provider: saved vs forwarding unchanged")
    print()
    print(
        "Green for the first 8 calls (forwarded unchanged, cached), then Yellow or Red for 32 "
        "more. Positive: saved; negative: the call cost more than forwarding it unchanged."
    )
    print()
    print(
        "| transcript | state | strategies | rule | tokens, 1st call | $, 1st call "
        "| tokens, steady | $, steady |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    green, rounds = 8, 40
    for name in ("coding_anthropic_thinking", "sre_openai", "sre_anthropic"):
        calls = loop_calls(name, rounds)
        base = replay(meter, name, calls, green, WalletState.GREEN, None, net=False)
        cases: list[tuple[WalletState, str, frozenset[str]]] = [
            (WalletState.YELLOW, "lossless", LOSSLESS),
            *((WalletState.RED, s, frozenset({s})) for s in STRATEGIES if s != "rag_filter"),
            (WalletState.RED, "all", ALL_STRATEGIES),
        ]
        for state, label, chosen in cases:
            for net in (False, True):
                settings = OptimizerSettings(at_yellow=chosen, at_red=chosen)
                got = replay(meter, name, calls, green, state, settings, net)
                steady_base = statistics.fmean(float(c) for _, c in base[1:])
                steady = statistics.fmean(float(c) for _, c in got[1:])
                steady_tokens_base = statistics.fmean(t for t, _ in base[1:])
                steady_tokens = statistics.fmean(t for t, _ in got[1:])
                first_usd = _pct(float(base[0][1]), float(got[0][1]))
                print(
                    f"| {name} | {state} | {label} | {'net' if net else 'blind'} "
                    f"| {_pct(base[0][0], got[0][0])} | {first_usd} "
                    f"| {_pct(steady_tokens_base, steady_tokens)} | {_pct(steady_base, steady)} |"
                )


_FACTS = (
    re.compile(r"request_id=(\w+)"),
    re.compile(r"\b[a-z]+-[0-9a-f]{8,10}-[a-z0-9]{5}\b"),
    re.compile(r"(?:/[\w.-]+)+\.\w+"),
)


def facts_table(meter: Meter) -> None:
    print()
    print("# facts kept by compaction at Red (request ids, pod names, paths, the user's words)")
    print()
    print("| transcript | facts in the history | kept in what is forwarded | rate |")
    print("|---|---:|---:|---:|")
    for name in ("sre_openai", "sre_anthropic", "coding_anthropic_thinking"):
        dialect = dialect_of(name)
        body: JSONObject = json.loads((CORPUS / f"{name}.json").read_text())
        messages = body["messages"]
        assert isinstance(messages, list)
        if name.startswith("coding_anthropic"):
            body = {**body, "messages": _without_breakpoints(messages)}
        original = json.dumps(body["messages"], ensure_ascii=False)
        facts: set[str] = set()
        for pattern in _FACTS:
            facts.update(
                m.group(1) if m.groups() else m.group(0) for m in pattern.finditer(original)
            )
        history = body["messages"]
        assert isinstance(history, list)
        for message in history:
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                facts.add(content)
            elif isinstance(content, list):
                facts.update(
                    str(block["text"])
                    for block in content
                    if isinstance(block, dict) and block.get("type") == "text"
                )
        settings = OptimizerSettings(keep_last_turns=4)
        out = optimize(dialect, body, WalletState.RED, settings).body
        sent = json.dumps(out["messages"], ensure_ascii=False)
        kept = sum(1 for fact in facts if fact in sent)
        print(f"| {name} | {len(facts)} | {kept} | {100 * kept / max(len(facts), 1):.1f}% |")


def pathological_table() -> None:
    """Inputs that took seconds on the event loop before (issue 17 item 6)."""
    grep = "\n".join(
        f"src/pkg/module_{i % 50}.py:{i}:        result = compute(item_{i}, timeout=30)"
        for i in range(1600)
    )
    openers = "```json\n{\n" * 20_000
    cases = {
        f"grep -n output in a tool result ({len(grep) // 1024} KB)": grep,
        f"unclosed ```json fences in a user message ({len(openers) // 1024} KB)": openers,
    }
    print()
    print("# time per optimization of texts that were slow before")
    print()
    print("| input | state | median |")
    print("|---|---|---:|")
    for label, text in cases.items():
        body: JSONObject = {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "find the uses"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "grep", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": text},
                {"role": "assistant", "content": text if "fences" in label else "Found them."},
                {"role": "user", "content": "now fix them"},
            ],
        }
        for state in (WalletState.YELLOW, WalletState.RED):
            samples = []
            for _ in range(7):
                started = time.perf_counter()
                optimize(Dialect.OPENAI_CHAT, body, state, OptimizerSettings())
                samples.append(time.perf_counter() - started)
            print(f"| {label} | {state} | {statistics.median(samples) * 1000:.1f} ms |")


def main() -> None:
    meter = load_meter()
    counter = meter.counter
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

    loop_table(meter)
    facts_table(meter)
    pathological_table()

    body = long_history(counter, 128_000)
    before = count(counter, Dialect.OPENAI_CHAT, body)
    messages = body["messages"]
    assert isinstance(messages, list)
    print()
    print(f"# time per optimization of a {before:,}-token history ({len(messages)} messages)")
    print()
    # The baseline, same run: what the proxy pays anyway to parse and re-serialise the body.
    raw = json.dumps(body)
    rounds = []
    for _ in range(15):
        started = time.perf_counter()
        json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
        rounds.append(time.perf_counter() - started)
    baseline = statistics.median(rounds)
    print(f"baseline: one JSON parse + re-serialisation of the body, {baseline * 1000:.1f} ms")
    print()
    print("| state | strategies applied | tokens after | median | p90 | x baseline |")
    print("|---|---|---:|---:|---:|---:|")
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
            f"| {samples[int(len(samples) * 0.9)] * 1000:.1f} ms "
            f"| {statistics.median(samples) / baseline:.1f} |"
        )


if __name__ == "__main__":
    main()
