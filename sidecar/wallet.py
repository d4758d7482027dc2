"""Wallets as the proxy sees them: the interface every backend serves, and the in-memory one.

Adapter over the pure rules of ``sidecar.core.wallets``: a backend owns the clock and the
storage, and applies those rules atomically. ``MemoryWallet`` keeps one wallet in this process
(a library user, a test); ``sidecar.sqlite_wallet`` persists it to a local file (the embedded
default) and the Redis backend shares it between sidecars.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from sidecar.core.policy import BudgetPolicy, Period, Verdict, WalletState
from sidecar.core.wallets import (
    Lease,
    WalletBook,
    advance,
    new_book,
    reserve,
    settle,
    to_usd,
    top_up,
)

log = logging.getLogger(__name__)

#: A reservation is a lease on the wallet's money (see ``sidecar.core.wallets.Lease``).
Reservation = Lease


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


def snapshot_of(book: WalletBook, namespace: str, agent: str) -> WalletSnapshot:
    return WalletSnapshot(
        namespace=namespace,
        agent=agent,
        limit_usd=book.policy.limit_usd,
        spent_usd=to_usd(book.spent),
        reserved_usd=to_usd(book.reserved),
        period=book.period,
        period_start=datetime.fromtimestamp(book.period_start, tz=UTC),
        state=book.state,
    )


class Wallet(Protocol):
    """What the proxy needs of a wallet backend."""

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        """Decide a call and hold ``projected`` USD for it; no reservation when it is refused
        (verdict BLOCK; state SUSPENDED for the emergency stop)."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Charge what the call cost and release its reservation."""
        ...

    async def snapshot(self) -> WalletSnapshot: ...

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        """The wallet as this process last read or wrote it (no I/O); None before any call."""
        ...

    async def start(self) -> None:
        """Connect and configure; called once before the first call."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...


class MemoryWallet:
    """One wallet kept in this process's memory. Every method runs without awaiting in the
    middle, so on one event loop each operation is atomic."""

    def __init__(
        self,
        policy: BudgetPolicy,
        *,
        namespace: str,
        agent: str,
        period: Period = Period.TOTAL,
        lease: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        zone: str = "UTC",
    ) -> None:
        self.namespace = namespace
        self.agent = agent
        self._lease = lease
        self._clock = clock
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-"
        self.book = new_book(policy, period, clock(), zone)

    @property
    def policy(self) -> BudgetPolicy:
        return self.book.policy

    @policy.setter
    def policy(self, policy: BudgetPolicy) -> None:
        self.book = replace(self.book, policy=policy)

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        lease_id = f"{self._prefix}{next(self._ids)}"
        seconds = self._lease.total_seconds()
        self.book, verdict, lease = reserve(self.book, lease_id, projected, self._clock(), seconds)
        return verdict, lease

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        self.book, current = settle(self.book, reservation, actual, self._clock())
        if not current:
            log.info(
                "wallet %s/%s: $%s charged to the period the call was reserved in",
                self.namespace,
                self.agent,
                actual,
            )

    async def snapshot(self) -> WalletSnapshot:
        self.book = advance(self.book, self._clock())
        return snapshot_of(self.book, self.namespace, self.agent)

    @property
    def last_snapshot(self) -> WalletSnapshot:
        return snapshot_of(self.book, self.namespace, self.agent)

    async def top_up(self, amount: Decimal) -> None:
        self.book = top_up(self.book, amount)

    async def suspend(self, on: bool) -> None:
        self.policy = replace(self.policy, suspended=on)

    async def start(self) -> None:
        """Nothing to connect: the wallet lives in this process."""

    async def close(self) -> None:
        """Nothing to release."""


#: The name the sidecar used before backends existed.
LocalWallet = MemoryWallet


def _money(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.normalize(), "f") if value else "0"
