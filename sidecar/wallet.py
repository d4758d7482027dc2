"""The in-process wallet: reserve before a call, settle after it, report a snapshot.

Adapter over the pure policy: it owns the clock and the running totals of one wallet in one
process. Every method runs without awaiting in the middle, so on one event loop a reservation is
atomic. Reservations carry a lease: one that is neither settled nor released by its deadline
(a call whose task died) is released on the next access, so money is never held forever.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from sidecar.core.policy import (
    BudgetPolicy,
    Decision,
    Period,
    Verdict,
    WalletState,
    decide,
    period_start,
    state_of,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside for one call until it is settled or released."""

    id: int
    amount: Decimal
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class WalletSnapshot:
    """The wallet as ``/a11i/budget`` shows it."""

    namespace: str
    agent: str
    limit_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    period: Period
    period_start: datetime
    state: WalletState

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limit_usd is None:
            return None
        return max(self.limit_usd - self.spent_usd - self.reserved_usd, Decimal(0))

    def as_json(self) -> dict[str, str | None]:
        """Money as decimal strings, so no JSON parser rounds it through a float."""
        return {
            "namespace": self.namespace,
            "agent": self.agent,
            "limit_usd": _money(self.limit_usd),
            "spent_usd": _money(self.spent_usd),
            "reserved_usd": _money(self.reserved_usd),
            "remaining_usd": _money(self.remaining_usd),
            "period": self.period.value,
            "period_start": self.period_start.isoformat(),
            "state": self.state.value,
        }


class Wallet(Protocol):
    """What the proxy needs of a wallet; the budget issue adds SQLite and Redis backends."""

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        """Set ``projected`` aside if the policy allows the call; no reservation when it is
        refused (verdict BLOCK, state SUSPENDED for the emergency stop)."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None: ...

    async def snapshot(self) -> WalletSnapshot: ...


class LocalWallet:
    """One wallet kept in this process (a laptop, or a pod with a standalone budget)."""

    def __init__(
        self,
        policy: BudgetPolicy,
        *,
        namespace: str,
        agent: str,
        period: Period = Period.TOTAL,
        lease: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self.namespace = namespace
        self.agent = agent
        self.period = period
        self._lease = lease
        self._clock = clock
        self._origin = clock()
        self._period_start = period_start(period, self._origin, self._origin)
        self._spent = Decimal(0)
        self._open: dict[int, Reservation] = {}
        self._ids = itertools.count(1)

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        now = self._tick()
        if self.policy.suspended:
            return Verdict(Decision.BLOCK, WalletState.SUSPENDED, "the emergency stop is on"), None
        verdict = decide(self.policy, self._committed(), projected)
        if verdict.decision is Decision.BLOCK:
            return verdict, None
        reservation = Reservation(next(self._ids), projected, now + self._lease)
        self._open[reservation.id] = reservation
        return verdict, reservation

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Record what the call really cost and release the rest of its reservation. Settling
        twice, or after the lease expired, still records the spend: money spent is never lost."""
        self._open.pop(reservation.id, None)
        self._tick()
        self._spent += actual

    async def snapshot(self) -> WalletSnapshot:
        self._tick()
        committed = self._committed()
        return WalletSnapshot(
            namespace=self.namespace,
            agent=self.agent,
            limit_usd=self.policy.limit_usd,
            spent_usd=self._spent,
            reserved_usd=committed - self._spent,
            period=self.period,
            period_start=self._period_start,
            state=state_of(self.policy, committed),
        )

    def _committed(self) -> Decimal:
        return self._spent + sum((r.amount for r in self._open.values()), Decimal(0))

    def _tick(self) -> datetime:
        now = self._clock()
        start = period_start(self.period, now, self._origin)
        if start > self._period_start:
            log.info(
                "wallet %s/%s: new %s period from %s",
                self.namespace,
                self.agent,
                self.period.value,
                start.isoformat(),
            )
            self._period_start = start
            self._spent = Decimal(0)
        for expired in [r for r in self._open.values() if r.expires_at <= now]:
            log.warning(
                "wallet %s/%s: reservation %d of $%s expired unsettled; released",
                self.namespace,
                self.agent,
                expired.id,
                expired.amount,
            )
            del self._open[expired.id]
        return now


def _money(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.normalize(), "f") if value else "0"
