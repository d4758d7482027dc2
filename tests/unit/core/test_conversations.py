"""Anthropic estimates that start from what the provider reported for the conversation."""

from __future__ import annotations

import math

import pytest

from a11i.core.conversations import RATIO_BOUNDS, ConversationLedger
from a11i.core.model import JSONValue
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar.meter import load_meter

MODEL = "claude-sonnet-4-5"
SYSTEM = "You are an SRE agent. " * 60


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return load_meter().counter


def turn(n: int) -> list[JSONValue]:
    """A conversation of ``n`` user turns with answers in between."""
    messages: list[JSONValue] = []
    for i in range(n):
        if i:
            messages.append({"role": "assistant", "content": f"Pod shop-{i} restarted {i} times."})
        messages.append({"role": "user", "content": f"Why did shop-{i} restart? Look at the logs."})
    return messages


def test_a_later_turn_starts_from_the_reported_count(counter: TokenCounter) -> None:
    ledger = ConversationLedger()
    first = counter.anthropic_parts(MODEL, SYSTEM, turn(1))
    estimate = ledger.estimate(MODEL, first)
    assert estimate.tokens == first.count.tokens  # nothing learned yet
    assert estimate.reported_messages == 0
    # The provider counts 10% fewer tokens than the local estimate.
    reported = round(first.count.tokens * 0.9)
    ledger.record(MODEL, estimate, reported)
    assert ledger.ratio(MODEL) == pytest.approx(0.9, abs=0.01)

    second = counter.anthropic_parts(MODEL, SYSTEM, turn(2))
    again = ledger.estimate(MODEL, second)
    assert again.reported_messages == 1
    assert again.reported_tokens == reported
    added = sum(second.per_message[1:])
    assert again.tokens == reported + math.ceil(added * ledger.ratio(MODEL))
    # Same history, another system prompt: another conversation.
    other = counter.anthropic_parts(MODEL, SYSTEM + "x", turn(2))
    assert ledger.estimate(MODEL, other).reported_messages == 0


def test_the_longest_reported_prefix_wins_and_a_retry_is_its_own_report(
    counter: TokenCounter,
) -> None:
    ledger = ConversationLedger()
    for n in (1, 2, 3):
        parts = counter.anthropic_parts(MODEL, SYSTEM, turn(n))
        ledger.record(MODEL, ledger.estimate(MODEL, parts), 1000 * n)
    later = ledger.estimate(MODEL, counter.anthropic_parts(MODEL, SYSTEM, turn(4)))
    assert later.reported_messages == 5  # turn(3) holds 5 messages
    assert later.reported_tokens == 3000
    retry = ledger.estimate(MODEL, counter.anthropic_parts(MODEL, SYSTEM, turn(3)))
    assert retry.tokens == 3000


def test_calibration_is_bounded_and_errors_are_reported(counter: TokenCounter) -> None:
    ledger = ConversationLedger()
    parts = counter.anthropic_parts(MODEL, SYSTEM, turn(1))
    estimate = ledger.estimate(MODEL, parts)
    ledger.record(MODEL, estimate, parts.count.tokens * 100)  # an absurd report
    assert ledger.ratio(MODEL) == RATIO_BOUNDS[1]
    stats = ledger.errors()
    assert stats.calls == 1
    assert stats.p95_abs_percent == pytest.approx(99.0, abs=0.1)
    assert ledger.ratio("claude-haiku-4-5") == 1.0  # per model
