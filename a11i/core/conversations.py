"""Anthropic input counts learned from the provider: per conversation, and per model.

Anthropic publishes no tokenizer, so a11i's local count of a Messages request is an estimate
(``cl100k_base`` x 1.2, a11i.core.tokens.anthropic), typically off by 10-25%. But an agent loop
re-sends its whole conversation every turn, and the provider reports each turn's exact input:

- **Per conversation.** Once turn *t* was reported, turn *t+1* (the same system prompt, tools
  and messages, plus the answer and what the agent added) is counted as turn *t*'s reported
  input plus the estimate of only the added messages. The error is then a few percent of the
  new messages, not of the whole history.
- **Per model.** Each reported count also calibrates the local estimate of that model: the ratio
  of reported to estimated tokens (an exponential moving average, bounded) scales the estimate of
  what is new, and of a conversation seen for the first time.

Pure (no I/O); thread-safe (a lock around a bounded LRU map), since counting runs on a worker
thread for large bodies. The counts stay estimates (``x-a11i-token-count: estimate``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final

from a11i.core.tokens.counter import AnthropicParts

#: Conversation prefixes remembered (an entry is ~100 bytes).
DEFAULT_CAPACITY: Final = 4096
#: Weight of the newest observation in a model's calibration.
ALPHA: Final = 0.2
#: The calibration ratio is kept within these bounds, so one odd report cannot swing it far.
RATIO_BOUNDS: Final = (0.5, 2.0)
#: An added part smaller than this many estimated tokens is too noisy to calibrate from.
MIN_CALIBRATION_TOKENS: Final = 200
#: How many recent relative errors the error distribution keeps.
ERROR_WINDOW: Final = 1000


@dataclass(frozen=True, slots=True)
class Estimate:
    """An Anthropic request's input estimate and how it was made."""

    tokens: int
    #: The local estimate alone (before calibration), for calibrating from the report.
    local: int
    #: Messages covered by a reported earlier turn (0: none).
    reported_messages: int
    #: The part of ``tokens`` the provider had reported (0: none).
    reported_tokens: int
    #: The local estimate of the rest: what was added since that report (or everything).
    added_local: int
    #: Key of this request's whole conversation, under which its report is remembered.
    key: bytes | None


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """How far the estimates were from what the provider reported (relative, in percent)."""

    calls: int
    mean_abs_percent: float
    p50_abs_percent: float
    p95_abs_percent: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "mean_abs_error_percent": round(self.mean_abs_percent, 2),
            "p50_abs_error_percent": round(self.p50_abs_percent, 2),
            "p95_abs_error_percent": round(self.p95_abs_percent, 2),
        }


class ConversationLedger:
    """What the provider reported per conversation prefix, and the per-model calibration."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = max(capacity, 0)
        self._reported: OrderedDict[bytes, int] = OrderedDict()
        self._ratios: dict[str, float] = {}
        self._errors: deque[float] = deque(maxlen=ERROR_WINDOW)
        self._lock = threading.Lock()

    def estimate(self, model: str, parts: AnthropicParts) -> Estimate:
        """The input estimate of a request: from the longest earlier turn of its conversation
        the provider reported, plus the calibrated estimate of what was added since."""
        ratio = self.ratio(model)
        key = parts.prefixes[-1] if parts.prefixes else None
        with self._lock:
            # Longest reported prefix shorter than the whole (the whole is this very request:
            # a retry of a reported turn starts from its own report too).
            for index in range(len(parts.prefixes) - 1, -1, -1):
                reported = self._reported.get(parts.prefixes[index])
                if reported is not None:
                    self._reported.move_to_end(parts.prefixes[index])
                    break
            else:
                index, reported = -1, None
        if reported is None:
            return Estimate(
                tokens=_scaled(parts.count.tokens, ratio),
                local=parts.count.tokens,
                reported_messages=0,
                reported_tokens=0,
                added_local=parts.count.tokens,
                key=key,
            )
        added = sum(parts.per_message[index + 1 :])
        return Estimate(
            tokens=reported + _scaled(added, ratio),
            local=parts.count.tokens,
            reported_messages=index + 1,
            reported_tokens=reported,
            added_local=added,
            key=key,
        )

    def record(self, model: str, estimate: Estimate, reported: int) -> None:
        """The provider reported ``reported`` input tokens for a request estimated as
        ``estimate``: remembered for the conversation's next turn, and calibrating the model."""
        if reported <= 0:
            return
        with self._lock:
            if estimate.key is not None and self._capacity:
                self._reported[estimate.key] = reported
                self._reported.move_to_end(estimate.key)
                while len(self._reported) > self._capacity:
                    self._reported.popitem(last=False)
            if estimate.tokens > 0:
                self._errors.append(abs(estimate.tokens - reported) * 100.0 / reported)
            new_part = reported - estimate.reported_tokens
            if estimate.added_local >= MIN_CALIBRATION_TOKENS and new_part > 0:
                observed = min(
                    max(new_part / estimate.added_local, RATIO_BOUNDS[0]), RATIO_BOUNDS[1]
                )
                previous = self._ratios.get(model)
                self._ratios[model] = (
                    observed if previous is None else (1 - ALPHA) * previous + ALPHA * observed
                )

    def ratio(self, model: str) -> float:
        """The model's calibration: reported / local estimate (1.0 until a report was seen)."""
        with self._lock:
            return self._ratios.get(model, 1.0)

    def errors(self) -> ErrorStats:
        """The distribution of the recent estimates' errors against the reports."""
        with self._lock:
            values = sorted(self._errors)
        if not values:
            return ErrorStats(0, 0.0, 0.0, 0.0)
        return ErrorStats(
            calls=len(values),
            mean_abs_percent=sum(values) / len(values),
            p50_abs_percent=_percentile(values, 0.50),
            p95_abs_percent=_percentile(values, 0.95),
        )


def _scaled(tokens: int, ratio: float) -> int:
    return math.ceil(tokens * ratio)


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]
