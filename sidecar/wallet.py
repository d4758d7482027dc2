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

from sidecar.core.model import usd
from sidecar.core.policy import BudgetPolicy, Decision, Period, Verdict, WalletState
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
    return None if value is None else usd(value)


_SEVERITY = {Decision.ALLOW: 0, Decision.WARN: 1, Decision.OPTIMIZE: 2, Decision.BLOCK: 3}
_STATE_SEVERITY = {
    WalletState.GREEN: 0,
    WalletState.YELLOW: 1,
    WalletState.RED: 2,
    WalletState.EXHAUSTED: 3,
    WalletState.SUSPENDED: 4,
}


class NestedWallet:
    """An agent's own wallet inside its namespace's: a call must fit both, and is charged to
    both. The agent's is reserved first; if the namespace then refuses, the agent's
    reservation is released at once. The stricter decision of the two is the call's."""

    def __init__(self, namespace_wallet: Wallet, agent_wallet: Wallet) -> None:
        self.namespace_wallet = namespace_wallet
        self.agent_wallet = agent_wallet
        self._agent_leases: dict[str, Lease] = {}

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        agent_verdict, agent_lease = await self.agent_wallet.reserve(projected)
        if agent_lease is None:
            return agent_verdict, None
        verdict, lease = await self.namespace_wallet.reserve(projected)
        if lease is None:
            await self.agent_wallet.settle(agent_lease, Decimal(0))
            return verdict, None
        self._agent_leases[lease.id] = agent_lease
        return _stricter(verdict, agent_verdict), lease

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        agent_lease = self._agent_leases.pop(reservation.id, None)
        await self.namespace_wallet.settle(reservation, actual)
        if agent_lease is not None:
            await self.agent_wallet.settle(agent_lease, actual)

    async def snapshot(self) -> WalletSnapshot:
        return await self.namespace_wallet.snapshot()

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        """The namespace's wallet, with what is left of the tighter of the two."""
        outer = self.namespace_wallet.last_snapshot
        inner = self.agent_wallet.last_snapshot
        if outer is None or inner is None or inner.remaining_usd is None:
            return outer
        if outer.remaining_usd is not None and outer.remaining_usd <= inner.remaining_usd:
            return outer
        return inner

    async def start(self) -> None:
        await self.namespace_wallet.start()
        await self.agent_wallet.start()

    async def close(self) -> None:
        await self.agent_wallet.close()
        await self.namespace_wallet.close()


def _stricter(first: Verdict, second: Verdict) -> Verdict:
    if _SEVERITY[second.decision] > _SEVERITY[first.decision]:
        return second
    if _SEVERITY[second.decision] == _SEVERITY[first.decision] and (
        _STATE_SEVERITY[second.state] > _STATE_SEVERITY[first.state]
    ):
        return second
    return first
