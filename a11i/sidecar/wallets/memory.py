"""One wallet kept in this process's memory: a library user, a test, ``A11I_WALLET_FILE=:memory:``.

Adapter over the pure rules of ``a11i.core.wallets``; it owns the clock and nothing else.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from a11i.core.policy import BudgetPolicy, Period, Verdict
from a11i.core.wallets import (
    Reservation,
    WalletSnapshot,
    advance,
    new_book,
    remaining_of,
    reserve,
    settle,
    snapshot_of,
    top_up,
)

log = logging.getLogger(__name__)


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

    @property
    def last_remaining_usd(self) -> Decimal | None:
        return remaining_of(self.book)

    async def top_up(self, amount: Decimal) -> None:
        self.book = top_up(self.book, amount)

    async def suspend(self, on: bool) -> None:
        self.policy = replace(self.policy, suspended=on)

    def store(self) -> dict[str, str | int | bool]:
        return {"kind": "memory"}

    async def start(self) -> None:
        """Nothing to connect: the wallet lives in this process."""

    async def close(self) -> None:
        """Nothing to release."""
