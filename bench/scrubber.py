"""Throughput of the PII scrubber on agent prompts, against the naive way of scrubbing.

Run with ``python -m bench.scrubber``. Builds prompt text from the test corpus
(tests/data/transcripts: every message text and tool-call argument, as the sidecar would
export them with content capture on) with some PII sprinkled in (an e-mail address, a phone
number, a card number, an IP address or a provider key about every 2 KiB), cut to 1 KiB, 32 KiB
and 512 KiB. For each size it times, interleaved:

- baseline: the naive scrubber, one regular expression per rule (alternations inside a rule)
  applied one after another with the standard library's ``re.sub``; cards Luhn-checked and IPv6
  candidates parsed like the real one does, no time budget, no prefilters;
- a11i: ``Scrubber.scrub`` with the built-in rules (``regex`` module, a time budget per call,
  a prefilter per rule, one pattern per literal prefix).

Prints MB/s (10^6 bytes of UTF-8 per second, median of the rounds), the time per call, the
ratio, and the redactions per call of each (a check that both did the work). Figures, never
assertions.
"""

from __future__ import annotations

import ipaddress
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator

from a11i.core.model import JSONValue
from a11i.core.scrub import Scrubber, luhn_valid
from tests.support.paths import TRANSCRIPTS

CORPUS = TRANSCRIPTS
SIZES = ((1024, "short (1 KiB)"), (32 * 1024, "medium (32 KiB)"), (512 * 1024, "long (512 KiB)"))
ROUNDS = 9
#: Text handed to each scrubber per round, whatever the size (so short texts run many calls).
BYTES_PER_ROUND = 2 * 1024 * 1024
PII = (
    "Please email jane.doe@example.com about it.",
    "The on-call phone is +1 (415) 555-2671, or 415-555-2671 after hours.",
    "Charge card 4111 1111 1111 1111 for the overage.",
    "The request came from 10.24.3.17 and 2001:db8::8a2e:370:7334.",
    "export OPENAI_API_KEY=sk-proj-Ab3dEfGh1jKlMn0pQrStUvWxAb3dEfGh1jKlMn0p",
    "curl -H 'Authorization: Bearer ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5'",
)


def corpus_texts() -> list[str]:
    """Every message text and tool-call argument of the corpus, in order."""
    texts: list[str] = []

    def walk(value: JSONValue, key: str = "") -> None:
        if isinstance(value, str):
            if key in {"content", "text", "arguments", "system"} and value.strip():
                texts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, name if isinstance(item, str) else key or name)

    for path in sorted(CORPUS.glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return texts


def prompt_text(size: int, texts: list[str]) -> str:
    """``size`` characters of corpus text, a PII sentence first and then every ~2 KiB."""
    parts: list[str] = []
    length, since_pii = 0, 2048  # a PII sentence first, so that short texts hold one too
    pii = iter_forever(PII)
    for text in iter_forever(texts):
        if since_pii >= 2048:
            sentence = next(pii)
            parts.append(sentence)
            length += len(sentence) + 1
            since_pii = 0
        parts.append(text)
        length += len(text) + 1
        since_pii += len(text) + 1
        if length >= size:
            break
    return "\n".join(parts)[:size]


def iter_forever(items: tuple[str, ...] | list[str]) -> Iterator[str]:
    while True:
        yield from items


# --------------------------------------------------------------------------- the naive baseline


def _ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return match.group()
    return "[REDACTED:ip_address]"


def _card(match: re.Match[str]) -> str:
    return "[REDACTED:payment_card]" if luhn_valid(match.group()) else match.group()


NAIVE_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{20,}|A(?:KI|SI)A[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
            r"|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
            r"|[sr]k_(?:live|test)_[0-9A-Za-z]{16,}|hf_[A-Za-z0-9]{30,})"
        ),
        "[REDACTED:api_key]",
    ),
    (re.compile(r"\beyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*"), "[REDACTED:jwt]"),
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/=-]{8,}"), r"\1[REDACTED:bearer_token]"),
    (
        re.compile(
            r"(?i)((?:api[_-]?key|token|secret|passw(?:or)?d)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
        ),
        r"\1[REDACTED:credential_assignment]",
    ),
    (
        re.compile(r"\b[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"),
        "[REDACTED:email]",
    ),
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), _card),
    (
        re.compile(
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)\s?|\b\d{3}[-.])\d{3}[-.]\d{4}\b|\+\d{8,15}\b"
        ),
        "[REDACTED:phone]",
    ),
    (re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])"), _ipv6),
    (
        re.compile(
            r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
        ),
        "[REDACTED:ip_address]",
    ),
)


def naive_scrub(text: str) -> str:
    for pattern, replacement in NAIVE_RULES:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------- timing


def per_round(scrub: Callable[[str], str], text: str) -> float:
    """Seconds per call, over one round of BYTES_PER_ROUND."""
    calls = max(1, BYTES_PER_ROUND // len(text))
    started = time.perf_counter()
    for _ in range(calls):
        scrub(text)
    return (time.perf_counter() - started) / calls


def main() -> None:
    texts = corpus_texts()
    # A budget far above any call: this measures throughput, not the fail-closed path.
    scrubber = Scrubber(time_budget_s=10.0)
    print("# PII scrubbing throughput on agent prompts (built-in rules)")
    print()
    print("| text | baseline: re.sub per rule | a11i Scrubber | speed-up | ms per call (a11i) |")
    print("|---|---|---|---|---|")
    checks = []
    for size, label in SIZES:
        text = prompt_text(size, texts)
        megabytes = len(text.encode("utf-8")) / 1e6
        naive_times, a11i_times = [], []
        for _ in range(ROUNDS):  # interleaved, so that a busy neighbour slows both alike
            naive_times.append(per_round(naive_scrub, text))
            a11i_times.append(per_round(scrubber.scrub, text))
        naive, a11i = statistics.median(naive_times), statistics.median(a11i_times)
        print(
            f"| {label} | {megabytes / naive:.1f} MB/s | {megabytes / a11i:.1f} MB/s "
            f"| {naive / a11i:.2f}x | {a11i * 1000:.3f} |"
        )
        checks.append(
            (label, naive_scrub(text).count("[REDACTED:"), scrubber.scrub(text).count("[REDACTED:"))
        )
    print()
    print(
        "redactions per call (baseline / a11i): "
        + "; ".join(f"{label}: {naive} / {ours}" for label, naive, ours in checks)
    )
    print(f"timeouts: {scrubber.stats.timeouts} (budget 10 s here; the default is 50 ms per call)")


if __name__ == "__main__":
    main()
