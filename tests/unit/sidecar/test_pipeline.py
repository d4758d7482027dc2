"""The pipeline's transport-agnostic pieces: error answers and the relay's lifecycle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import replace

import pytest

from a11i.core.errors import A11iError, BudgetExceeded, EmergencyStop, InternalError
from a11i.core.model import Dialect
from a11i.sidecar import pipeline as pipeline_module
from a11i.sidecar.app import wallet_for
from a11i.sidecar.meter import load_meter
from a11i.sidecar.pipeline import H_DECISION, Relay, error_answer
from a11i.sidecar.proxy import Sidecar
from a11i.sidecar.settings import from_env
from tests.unit.sidecar.telemetry.test_metrics_names import record


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


async def test_records_reach_the_observers_in_order_in_bursts_and_alone_and_stop_drains_them() -> (
    None
):
    """The telemetry thread gathers the records of calls that keep ending (``_GATHER_S``) and
    waits to be woken when none come: every record is observed once, in order, either way, and
    stopping observes those still handed over."""
    meter = load_meter()
    settings = from_env({"A11I_WALLET_FILE": ":memory:"})
    sidecar = Sidecar(settings, meter, wallet_for(settings))
    seen: list[float] = []
    sidecar.observers = [lambda record: seen.append(record.duration_s)]
    call = record(meter)
    sent = 0
    for burst, apart in ((1, 0.0), (40, 0.0), (20, pipeline_module._GATHER_S / 4), (1, 0.0)):
        for _ in range(burst):  # at once, or a trickle the thread finds as it gathers
            sidecar._emit(replace(call, duration_s=float(sent)))
            sent += 1
            await asyncio.sleep(apart)
        await asyncio.sleep(3 * pipeline_module._GATHER_S)  # the thread idle again
    for _ in range(25):  # still being gathered when the sidecar stops
        sidecar._emit(replace(call, duration_s=float(sent)))
        sent += 1
    await asyncio.get_running_loop().run_in_executor(None, sidecar._stop_observing)
    assert seen == [float(index) for index in range(sent)]
