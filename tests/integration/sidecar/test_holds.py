"""Holds are released on every path: timeouts, hang-ups before, during and after the call,
while waiting for money, and a sidecar shut down with calls in flight."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from a11i.core.policy import BudgetPolicy
from a11i.sidecar.wallets.sqlite import SQLiteWallet
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

CHAT = {
    "model": "gpt-4o",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Is the checkout service healthy?"}],
}
HEADERS = {"Authorization": "Bearer sk-agent"}


async def held(running: RunningSidecar) -> Decimal:
    return (await running.sidecar.wallet.snapshot()).reserved_usd


async def eventually_released(running: RunningSidecar) -> None:
    for _ in range(300):
        if await held(running) == 0:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"${await held(running)} still held")


async def test_a_timeout_releases_the_hold(start_sidecar: SidecarFactory, standin: StandIn) -> None:
    running = await start_sidecar(A11I_UPSTREAM_READ_TIMEOUT="0.2", A11I_BUDGET_USD="1")
    standin.configure(delay_ms=1500)
    async with (
        aiohttp.ClientSession() as http,
        http.post(running.url + "/v1/chat/completions", json=CHAT, headers=HEADERS) as answer,
    ):
        assert answer.status == 504
    snapshot = await running.sidecar.wallet.snapshot()
    assert (snapshot.spent_usd, snapshot.reserved_usd) == (0, 0)


async def test_an_agent_hanging_up_before_the_answer_leaves_nothing_held(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="1")
    standin.configure(delay_ms=500)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(running.url + "/v1/chat/completions", json=CHAT, headers=HEADERS)
    assert await held(running) > 0  # the provider is still working on it
    await eventually_released(running)
    # The provider answered (and bills): the call is charged, not forgotten.
    assert (await running.sidecar.wallet.snapshot()).spent_usd > 0


async def test_a_waiter_whose_agent_hangs_up_leaves_the_line_and_holds_nothing(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    # $0.003 fits one call's worst case ($0.00204) at a time: the second waits for the first.
    running = await start_sidecar(A11I_BUDGET_USD="0.003")
    standin.configure(delay_ms=800)
    async with aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(
            http.post(running.url + "/v1/chat/completions", json=CHAT, headers=HEADERS)
        )
        for _ in range(100):
            if await held(running) > 0:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await http.post(running.url + "/v1/chat/completions", json=CHAT, headers=HEADERS)
        admission = running.sidecar.admission
        assert admission.waited == 1
        answer = await first
        assert answer.status == 200
        answer.release()
    await eventually_released(running)
    assert admission.waiting == 0
    assert admission.admitted_after_wait == 0  # it left instead of spending for nobody
    assert len(standin.requests) == 1


async def test_a_sidecar_shut_down_mid_stream_settles_before_it_exits(
    standin: StandIn, tmp_path: Path
) -> None:
    assert standin.url is not None
    wallet_file = tmp_path / "wallets.sqlite"
    sidecars = Sidecars()
    try:
        url = await sidecars.start(
            A11I_OPENAI_BASE=standin.url,
            A11I_WALLET_FILE=str(wallet_file),
            A11I_NAMESPACE="team-a",
            A11I_AGENT="sre-bot",
            A11I_BUDGET_USD="1",
        )
        (process,) = sidecars.processes
        standin.configure(chunk_delay_ms=100)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=HEADERS
            ) as answer,
        ):
            assert answer.status == 200
            await answer.content.readany()
            process.send_signal(signal.SIGTERM)
            body = await answer.read()
        assert b"[DONE]" in body  # the stream in flight was finished, not cut
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await sidecars.stop()
    wallet = SQLiteWallet(
        wallet_file, BudgetPolicy(limit_usd=Decimal(1)), namespace="team-a", agent="sre-bot"
    )
    await wallet.start()
    try:
        snapshot = await wallet.snapshot()
    finally:
        await wallet.close()
    assert snapshot.reserved_usd == 0
    assert snapshot.spent_usd > 0


async def test_a_failure_between_the_reservation_and_the_forward_releases_the_hold_at_once(
    start_sidecar: SidecarFactory, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call is reserved, then something of a11i's own fails before it is forwarded (here
    the answer headers a11i adds): the agent gets a 500 and the money is let go now, not when
    the lease expires minutes later; the provider was never asked."""
    running = await start_sidecar(A11I_BUDGET_USD="1")
    reserved: list[Decimal] = []

    def broken(*_args: object) -> object:
        reserved.append(running.sidecar.wallet.last_snapshot.reserved_usd)  # type: ignore[union-attr]
        raise RuntimeError("headers failed")

    monkeypatch.setattr(running.sidecar, "_a11i_headers", broken)
    async with (
        aiohttp.ClientSession() as http,
        http.post(running.url + "/v1/chat/completions", json=CHAT, headers=HEADERS) as answer,
    ):
        assert answer.status == 500
    (held_then,) = reserved
    assert held_then > 0  # reserved by then
    snapshot = await running.sidecar.wallet.snapshot()
    assert (snapshot.spent_usd, snapshot.reserved_usd) == (0, 0)
    assert standin.requests == []  # nothing forwarded
