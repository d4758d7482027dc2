"""Cost of counting an agent loop's history: cold, and warm with one new message.

Run with ``make bench`` (or ``python -m bench.counting``). Builds a chat history of about
128k tokens (an SRE agent's tool calls and long tool outputs), then times:

- baseline: tiktoken encoding the same text once, with no chat accounting (the floor);
- cold: a fresh counter counting the whole history;
- warm: the same counter counting the history plus one new message, as the next turn of the
  loop does; only the new message should be tokenized.

Figures, never assertions.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from a11i.core.model import JSONValue
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.encodings import load_encodings

MODEL = "gpt-4o"


def history(target_tokens: int, counter: TokenCounter) -> list[JSONValue]:
    messages: list[JSONValue] = [
        {"role": "system", "content": "You are an SRE agent. Use the tools to find root causes."},
        {"role": "user", "content": "The checkout service is failing. Investigate and fix it."},
    ]
    turn = 0
    while counter.count_chat(MODEL, messages).tokens < target_tokens:
        turn += 1
        call_id = f"call_{turn}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": "check_logs",
                            "arguments": json.dumps({"pod": f"checkout-{turn}", "tail": 200}),
                        },
                    }
                ],
            }
        )
        log_lines = "\n".join(
            f"2026-11-23T09:{turn % 60:02d}:{i % 60:02d}Z ERROR checkout-{turn} "
            f"upstream payments-{i} timed out after {1000 + i} ms (attempt {i % 5})"
            for i in range(60)
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": log_lines})
    return messages


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    encodings = load_encodings()
    if encodings.missing:
        raise SystemExit(f"missing encodings {encodings.missing}: run `make encodings` first")
    builder = TokenCounter(encodings)
    messages = history(128_000, builder)
    total = builder.count_chat(MODEL, messages).tokens
    encoder = encodings.get("o200k_base")
    assert encoder is not None
    text = "\n".join(json.dumps(m) for m in messages)

    baseline = timed(lambda: encoder.encode_ordinary(text), 5)
    cold = timed(lambda: TokenCounter(encodings).count_chat(MODEL, messages), 5)
    warm_counter = TokenCounter(encodings)
    warm_counter.count_chat(MODEL, messages)
    new_turns: list[list[JSONValue]] = [
        [*messages, {"role": "user", "content": f"Any news on attempt {i}?"}] for i in range(50)
    ]
    before = warm_counter.cache_stats()
    warm = []
    for turn in new_turns:
        started = time.perf_counter()
        warm_counter.count_chat(MODEL, turn)
        warm.append(time.perf_counter() - started)
    after = warm_counter.cache_stats()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.2f} ms"

    print(f"# counting a {total:,}-token chat history ({len(messages)} messages, {MODEL})")
    print()
    print("| what | median |")
    print("|---|---|")
    print(f"| baseline: tiktoken encode of the text, no accounting | {ms(baseline)} |")
    print(f"| cold: fresh counter, whole history | {ms(cold)} |")
    print(f"| warm: history + 1 new message (next turn) | {ms(warm)} |")
    print()
    print(
        f"warm/cold ratio: {statistics.median(warm) / statistics.median(cold):.3f}; "
        f"cold/baseline: {statistics.median(cold) / statistics.median(baseline):.2f}x"
    )
    print(
        f"cache over the warm turns: {after.hits - before.hits} hits, "
        f"{after.misses - before.misses} misses (the new messages only)"
    )


if __name__ == "__main__":
    main()
