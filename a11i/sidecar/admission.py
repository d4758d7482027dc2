"""Admission that waits for held money instead of refusing: calls in arrival order.

A call is refused when its projection does not fit beside what is spent and what the calls in
flight hold. When the money is only *held* (spent + this call would fit the limit once the holds
are released) a refusal is premature: those calls settle at a fraction of their holds. Such a
call waits, bounded (``A11I_BUDGET_ADMISSION_WAIT``), for settlements, then is admitted or refused.

Waiters are served in arrival order: a new call does not go ahead of one already waiting (it
queues behind it), so a stream of small calls cannot starve a large one. Settlements of this
sidecar wake the head of the queue at once; those of other sidecars sharing a Redis wallet are
seen by polling (``poll_s``). A waiter that is cancelled (its agent hung up) leaves the queue,
and a reservation that landed while it was being cancelled is released, so nothing is held.

Adapter: owns no money rules (those are the wallet's) and no I/O of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal

from a11i.core.policy import Decision, Verdict, WalletState
from a11i.core.wallets import Reservation
from a11i.sidecar.wallets.base import Wallet

log = logging.getLogger(__name__)


def verdict_gone() -> Verdict:
    """The verdict of a waiter whose agent hung up."""
    return Verdict(Decision.BLOCK, WalletState.EXHAUSTED, "the agent hung up while waiting")


class AdmissionQueue:
    """The wallet's ``reserve``, waiting in line while the money is only held."""

    def __init__(
        self,
        wallet: Wallet,
        *,
        wait_s: float,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wallet = wallet
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._clock = clock
        self._line: deque[asyncio.Event] = deque()
        self._released = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()
        #: Calls that waited, and of those, the ones admitted in the end.
        self.waited = 0
        self.admitted_after_wait = 0

    @property
    def waiting(self) -> int:
        return len(self._line)

    def released(self) -> None:
        """Money was released in this process (a settlement): wake the head of the line."""
        self._released.set()
        self._released = asyncio.Event()

    async def reserve(
        self, projected: Decimal, gone: Callable[[], bool] = lambda: False
    ) -> tuple[Verdict, Reservation | None, float]:
        """The verdict and reservation for ``projected``, and the seconds spent waiting.
        ``gone`` says whether the agent hung up: a waiter whose agent is gone leaves the line
        without reserving (nothing would read the answer)."""
        if not self._line:
            verdict, reservation = await self._reserve(projected)
            if reservation is not None or not self._worth_waiting(verdict, projected):
                return verdict, reservation, 0.0
        started = self._clock()
        deadline = started + self.wait_s
        turn = asyncio.Event()
        self._line.append(turn)
        if self._line[0] is turn:
            turn.set()
        self.waited += 1
        try:
            if not await self._until(turn.wait(), deadline) or gone():
                verdict, reservation = (
                    (verdict_gone(), None) if gone() else await self._reserve(projected)
                )
                return verdict, reservation, self._clock() - started
            while True:
                if gone():
                    return verdict_gone(), None, self._clock() - started
                verdict, reservation = await self._reserve(projected)
                waited = self._clock() - started
                if reservation is not None:
                    self.admitted_after_wait += 1
                    return verdict, reservation, waited
                if not self._worth_waiting(verdict, projected) or self._clock() >= deadline:
                    return verdict, reservation, waited
                await self._until(self._released.wait(), min(deadline, self._clock() + self.poll_s))
        finally:
            self._line.remove(turn)
            if self._line:
                self._line[0].set()

    def _worth_waiting(self, verdict: Verdict, projected: Decimal) -> bool:
        """Refused only because of what calls in flight hold: it fits beside what is spent."""
        if self.wait_s <= 0 or verdict.decision is not Decision.BLOCK:
            return False
        if verdict.state is WalletState.SUSPENDED:
            return False
        snapshot = self.wallet.last_snapshot
        if snapshot is None or snapshot.limit_usd is None:
            return False
        return snapshot.reserved_usd > 0 and snapshot.spent_usd + projected <= snapshot.limit_usd

    async def _until(self, awaitable: object, deadline: float) -> bool:
        """Wait for ``awaitable`` (a coroutine) until ``deadline``; whether it finished."""
        assert asyncio.iscoroutine(awaitable)
        timeout = max(deadline - self._clock(), 0.0)
        try:
            async with asyncio.timeout(timeout):
                await awaitable
        except TimeoutError:
            return False
        return True

    async def _reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        """``wallet.reserve``, whose reservation is released if the caller is cancelled while
        it lands (a hung-up agent must not hold money until the lease expires)."""
        task = asyncio.ensure_future(self.wallet.reserve(projected))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_if_reserved)
            raise

    def _release_if_reserved(
        self, task: asyncio.Future[tuple[Verdict, Reservation | None]]
    ) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        _verdict, reservation = task.result()
        if reservation is None:
            return
        cleanup = asyncio.ensure_future(self.wallet.settle(reservation, Decimal(0)))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def close(self) -> None:
        """Let releases of cancelled waiters finish."""
        if self._cleanups:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._cleanups, return_exceptions=True)
