"""The pipeline's transport-agnostic pieces: error answers and the relay's lifecycle."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import pytest

from a11i.core.errors import A11iError, BudgetExceeded, EmergencyStop, InternalError
from a11i.core.model import Dialect
from a11i.sidecar.pipeline import H_DECISION, Relay, error_answer


@pytest.mark.parametrize(
    ("dialect", "error", "status", "body"),
    [
        pytest.param(
            Dialect.OPENAI_CHAT,
            BudgetExceeded("over"),
            402,
            {
                "error": {
                    "message": "over",
                    "type": "budget_exceeded",
                    "param": None,
                    "code": "budget_exceeded",
                }
            },
            id="openai-budget",
        ),
        pytest.param(
            Dialect.ANTHROPIC_MESSAGES,
            EmergencyStop("stopped"),
            403,
            {"type": "error", "error": {"type": "emergency_stop", "message": "stopped"}},
            id="anthropic-stop",
        ),
    ],
)
def test_a_refusal_is_the_dialects_error_with_the_block_decision(
    dialect: Dialect, error: A11iError, status: int, body: object
) -> None:
    answer = error_answer(dialect, error)
    assert answer.status == status
    assert json.loads(answer.body) == body
    assert (H_DECISION, "block") in answer.headers
    assert answer.stream is None


def test_an_internal_error_is_no_block_decision() -> None:
    answer = error_answer(None, InternalError("broken"))
    assert answer.status == 500
    assert all(name != H_DECISION for name, _ in answer.headers)


class Ends:
    """How a relay's stream ended: the generator's own end, or the abandon hook."""

    def __init__(self) -> None:
        self.finished = 0
        self.abandoned = 0

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            yield b"one"
            yield b"two"
        finally:
            self.finished += 1

    async def abandon(self) -> None:
        self.abandoned += 1


async def test_a_relay_read_to_the_end_ends_once() -> None:
    ends = Ends()
    relay = Relay(ends.chunks(), ends.abandon)
    assert [chunk async for chunk in relay] == [b"one", b"two"]
    await relay.aclose()
    await relay.aclose()
    assert (ends.finished, ends.abandoned) == (1, 0)


async def test_a_relay_closed_part_way_runs_the_generators_end() -> None:
    ends = Ends()
    relay = Relay(ends.chunks(), ends.abandon)
    assert await relay.__anext__() == b"one"
    await relay.aclose()
    assert (ends.finished, ends.abandoned) == (1, 0)


async def test_a_relay_never_read_is_abandoned_once() -> None:
    ends = Ends()
    relay = Relay(ends.chunks(), ends.abandon)
    await relay.aclose()
    await relay.aclose()
    assert (ends.finished, ends.abandoned) == (0, 1)
