"""The in-process wallet: reserve, settle, leases and period resets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from a11i.core.policy import BudgetPolicy, Decision, Period, WalletState
from a11i.core.wallets import snapshot_of, to_nanos
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.nested import NestedWallet


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def wallet(
    limit: str = "1", period: Period = Period.TOTAL, clock: Clock | None = None
) -> MemoryWallet:
    return MemoryWallet(
        BudgetPolicy(limit_usd=Decimal(limit)),
        namespace="team-a",
        agent="sre-bot",
        period=period,
        clock=clock or Clock(),
    )


async def test_reserve_then_settle_records_actual_cost() -> None:
    w = wallet()
    verdict, reservation = await w.reserve(Decimal("0.4"))
    assert verdict.decision is Decision.ALLOW
    assert reservation is not None
    snap = await w.snapshot()
    assert (snap.spent_usd, snap.reserved_usd, snap.remaining_usd) == (
        Decimal(0),
        Decimal("0.4"),
        Decimal("0.6"),
    )
    await w.settle(reservation, Decimal("0.1"))
    snap = await w.snapshot()
    assert (snap.spent_usd, snap.reserved_usd, snap.remaining_usd) == (
        Decimal("0.1"),
        Decimal(0),
        Decimal("0.9"),
    )


async def test_reservations_count_against_concurrent_calls() -> None:
    w = wallet()
    first = await w.reserve(Decimal("0.6"))
    second = await w.reserve(Decimal("0.6"))
    assert first[1] is not None
    assert second[0].decision is Decision.BLOCK
    assert second[1] is None


async def test_expired_reservation_is_released() -> None:
    clock = Clock()
    w = wallet(clock=clock)
    _, held = await w.reserve(Decimal("0.9"))
    assert held is not None
    clock.now += timedelta(minutes=16)
    verdict, _ = await w.reserve(Decimal("0.9"))
    assert verdict.decision is not Decision.BLOCK
    # A late settlement of the expired reservation is still recorded: spend is never lost.
    await w.settle(held, Decimal("0.05"))
    assert (await w.snapshot()).spent_usd == Decimal("0.05")


async def test_daily_period_resets_spend() -> None:
    clock = Clock()
    w = wallet(period=Period.DAILY, clock=clock)
    _, r = await w.reserve(Decimal("1"))
    assert r is not None
    await w.settle(r, Decimal("1"))
    assert (await w.snapshot()).state is WalletState.EXHAUSTED
    clock.now += timedelta(hours=2)  # past midnight UTC
    snap = await w.snapshot()
    assert snap.spent_usd == 0
    assert snap.state is WalletState.GREEN
    assert snap.period_start == datetime(2026, 11, 24, tzinfo=UTC)


async def test_snapshot_json_keeps_money_as_strings() -> None:
    w = wallet("2.50")
    _, r = await w.reserve(Decimal("0.000125"))
    assert r is not None
    await w.settle(r, Decimal("0.000125"))
    body = (await w.snapshot()).as_json()
    assert body["limit_usd"] == "2.5"
    assert body["spent_usd"] == "0.000125"
    assert body["remaining_usd"] == "2.499875"
    assert body["state"] == "Green"
    assert body["period"] == "Total"
    assert body["namespace"] == "team-a"


async def test_periods_follow_the_wallets_time_zone() -> None:
    clock = Clock()  # 23:00 UTC: midnight in Berlin
    w = MemoryWallet(
        BudgetPolicy(limit_usd=Decimal(1)),
        namespace="team-a",
        agent="a",
        period=Period.DAILY,
        clock=clock,
        zone="Europe/Berlin",
    )
    assert (await w.snapshot()).period_start == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


async def test_nested_wallet_needs_room_in_both() -> None:
    namespace = wallet("1.00")
    agent = MemoryWallet(
        BudgetPolicy(limit_usd=Decimal("0.30")), namespace="team-a/bot", agent="bot"
    )
    nested = NestedWallet(namespace, agent)
    verdict, first = await nested.reserve(Decimal("0.25"))
    assert first is not None
    assert verdict.decision is Decision.WARN  # 83% of the agent's own limit
    refused, second = await nested.reserve(Decimal("0.10"))
    assert second is None
    assert refused.decision is Decision.BLOCK
    # The namespace never held money for the refused call.
    assert (await namespace.snapshot()).reserved_usd == Decimal("0.25")
    await nested.settle(first, Decimal("0.05"))
    assert (await namespace.snapshot()).spent_usd == Decimal("0.05")
    assert (await agent.snapshot()).spent_usd == Decimal("0.05")
    assert (await agent.snapshot()).reserved_usd == 0
    # The namespace refusing releases the agent's reservation at once.
    await namespace.suspend(True)
    stopped, none = await nested.reserve(Decimal("0.01"))
    assert (stopped.state, none) == (WalletState.SUSPENDED, None)
    assert (await agent.snapshot()).reserved_usd == 0


class Seen:
    """A wallet as this process last saw it: its snapshot, None before its first call."""

    def __init__(self, limit: str | None, spent: str | None) -> None:
        if spent is None:
            self.last_snapshot = None
        else:
            book = MemoryWallet(
                BudgetPolicy(limit_usd=None if limit is None else Decimal(limit)),
                namespace="team-a",
                agent="sre-bot",
            ).book
            self.last_snapshot = snapshot_of(replace(book, spent=to_nanos(Decimal(spent))), "", "")

    @property
    def last_remaining_usd(self) -> Decimal | None:
        return None if self.last_snapshot is None else self.last_snapshot.remaining_usd


#: Not used yet, no limit, and limits with more or less left (0.7, 0.4, nothing).
SEEN = [(None, None), (None, "0.5"), ("1", "0.3"), ("1", "0.6"), ("0.5", "0.1"), ("1", "2")]


@pytest.mark.parametrize("outer", SEEN, ids=str)
@pytest.mark.parametrize("inner", SEEN, ids=str)
def test_nested_remaining_is_its_snapshots(
    outer: tuple[str | None, str | None], inner: tuple[str | None, str | None]
) -> None:
    """The remaining-budget header's figure without the snapshot: the same as last_snapshot's,
    whichever wallet is tighter, unlimited or not used yet."""
    nested = NestedWallet(Seen(*outer), Seen(*inner))  # type: ignore[arg-type]
    snapshot = nested.last_snapshot
    assert nested.last_remaining_usd == (None if snapshot is None else snapshot.remaining_usd)
