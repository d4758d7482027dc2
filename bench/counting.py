"""Cost of counting an agent loop's history: cold, and warm with one new message.

Run with ``make bench`` (or ``python -m bench.counting``). Builds a chat history of about
128k tokens (an SRE agent's tool calls and long tool outputs), then times:

- baseline: tiktoken encoding the same text once, with no chat accounting (the floor);
- cold: a fresh counter counting the whole history;
- warm: the same counter counting the history plus one new message, as the next turn of the
  loop does; only the new message should be tokenized;

each with both tokenizers (``A11I_TOKENIZER``: tiktoken, the baseline, and the compact
``a11i_bpe`` when installed), interleaved, with the time to build each encoding and what its
vocabulary holds. Figures, never assertions.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from a11i.core.model import JSONValue
from a11i.core.tokens.counter import TokenCounter
from a11i.core.tokens.encoding import Encodings, chunked_count
from a11i.sidecar.encodings import Tokenizer, load_encodings, resolve_tokenizer

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


def figures(encodings: Encodings, messages: list[JSONValue], text: str) -> dict[str, list[float]]:
    encoder = encodings.get("o200k_base")
    assert encoder is not None
    baseline = timed(lambda: encoder.encode_ordinary(text), 5)
    cold = timed(lambda: TokenCounter(encodings).count_chat(MODEL, messages), 5)
    warm_counter = TokenCounter(encodings)
    warm_counter.count_chat(MODEL, messages)
    warm = []
    for i in range(50):
        turn = [*messages, {"role": "user", "content": f"Any news on attempt {i}?"}]
        started = time.perf_counter()
        warm_counter.count_chat(MODEL, turn)
        warm.append(time.perf_counter() - started)
    # One piece of 65,536 spaces (the longest a chunk may be): the merge must not be quadratic.
    run = " " * 65_536 + "x"
    spaces = timed(lambda: chunked_count(encoder, run), 3)
    return {"encode": baseline, "cold": cold, "warm": warm, "spaces": spaces}


def main() -> None:
    tokenizers = [Tokenizer.TIKTOKEN]
    if resolve_tokenizer(Tokenizer.AUTO) is Tokenizer.COMPACT:
        tokenizers.append(Tokenizer.COMPACT)
    loaded: dict[Tokenizer, Encodings] = {}
    build: dict[Tokenizer, float] = {}
    for tokenizer in tokenizers:
        started = time.perf_counter()
        loaded[tokenizer] = load_encodings(tokenizer=tokenizer)
        build[tokenizer] = time.perf_counter() - started
        if loaded[tokenizer].missing:
            raise SystemExit(
                f"missing encodings {loaded[tokenizer].missing}: run `make encodings` first"
            )
    builder = TokenCounter(loaded[Tokenizer.TIKTOKEN])
    messages = history(128_000, builder)
    total = builder.count_chat(MODEL, messages).tokens
    text = "\n".join(json.dumps(m) for m in messages)
    samples: dict[Tokenizer, dict[str, list[float]]] = {t: {} for t in tokenizers}
    for _ in range(3):  # interleaved rounds: the machine's noise falls on both alike
        for tokenizer in tokenizers:
            for what, values in figures(loaded[tokenizer], messages, text).items():
                samples[tokenizer].setdefault(what, []).extend(values)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.2f} ms"

    print(f"# counting a {total:,}-token chat history ({len(messages)} messages, {MODEL})")
    print()
    print(
        "| tokenizer | build both encodings | encode the text, no accounting | cold: whole "
        "history | warm: history + 1 new message | 65,536 spaces in one piece |"
    )
    print("|---|---|---|---|---|---|")
    for tokenizer in tokenizers:
        row = samples[tokenizer]
        print(
            f"| {tokenizer} | {build[tokenizer] * 1000:.0f} ms | {ms(row['encode'])} | "
            f"{ms(row['cold'])} | {ms(row['warm'])} | {ms(row['spaces'])} |"
        )
    if Tokenizer.COMPACT in samples:
        print()
        for what in ("encode", "cold", "warm", "spaces"):
            ratio = statistics.median(samples[Tokenizer.COMPACT][what]) / statistics.median(
                samples[Tokenizer.TIKTOKEN][what]
            )
            print(f"compact / tiktoken, {what}: {ratio:.2f}x")
        for name in ("cl100k_base", "o200k_base"):
            encoder = loaded[Tokenizer.COMPACT].get(name)
            held = getattr(encoder, "heap_bytes", 0) / 2**20
            print(f"compact {name}: vocabulary and table {held:.1f} MiB")


if __name__ == "__main__":
    main()
