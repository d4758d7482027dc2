"""Admission that waits for held money instead of refusing: calls in arrival order.

A call is refused when its projection does not fit beside what is spent and what the calls in
flight hold. When the money is only *held* (spent + this call would fit the limit once the holds
are released) a refusal is premature: those calls settle at a fraction of their holds. Such a
call waits, bounded (``A11I_BUDGET_ADMISSION_WAIT``), for settlements, then is admitted or refused.

Waiters are served in arrival order: a new call does not go ahead of one already waiting (it
queues behind it), so a stream of small calls cannot starve a large one. With a Redis wallet the
line is the wallet's own, in Redis, shared by every sidecar of the namespace (tickets decided in
the same script as the reservation, ``RedisWallet.reserve_in_line``); with the embedded wallets
it is this process's. Settlements of this sidecar wake the waiters at once; those of other
sidecars are seen by polling (``poll_s``). A waiter that is cancelled (its agent hung up)
leaves the line, and a reservation that landed while it was being cancelled is released, so
nothing is held.

Adapter: owns no money rules (those are the wallet's) and no I/O of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Protocol, TypeVar, runtime_checkable

from a11i.core.policy import Decision, Verdict, WalletState
from a11i.core.wallets import Reservation
from a11i.sidecar.wallets.base import Wallet

log = logging.getLogger(__name__)

#: A reservation attempt's result: (verdict, reservation) or (verdict, reservation, waiting).
_Attempt = TypeVar(
    "_Attempt",
    tuple[Verdict, Reservation | None],
    tuple[Verdict, Reservation | None, bool],
)


@runtime_checkable
class LineWallet(Protocol):
    """A wallet that keeps the waiting line itself, for every process that shares it."""

    async def reserve_in_line(
        self, projected: Decimal, ticket: str, deadline: float, *, join: bool
    ) -> tuple[Verdict, Reservation | None, bool]: ...

    async def leave_line(self, ticket: str) -> None: ...


@runtime_checkable
class NowWallet(Protocol):
    """A wallet that can often reserve at once, without awaiting (the embedded SQLite file
    when no other process holds it)."""

    def reserve_now(self, projected: Decimal) -> tuple[Verdict, Reservation | None] | None:
        """The reservation made at once, or None when the caller must ``reserve``."""
        ...


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
        # Which kind of wallet, decided once (a protocol isinstance check costs microseconds).
        self._line_wallet = wallet if isinstance(wallet, LineWallet) else None
        self._now_wallet = wallet if isinstance(wallet, NowWallet) else None
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._clock = clock
        self._line: deque[asyncio.Event] = deque()
        self._released = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()
        #: Waiters in a line the wallet keeps (Redis), for ``waiting``.
        self._waiting = 0
        #: Calls that waited, and of those, the ones admitted in the end.
        self.waited = 0
        self.admitted_after_wait = 0

    @property
    def waiting(self) -> int:
        return len(self._line) + self._waiting

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
        if self._line_wallet is not None and self.wait_s > 0:
            return await self._reserve_in_shared_line(self._line_wallet, projected, gone)
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
            my_turn = await self._until(turn.wait(), deadline)
            if not my_turn and not gone():
                # Out of time before its turn: one last try, as a call that did not wait.
                verdict, reservation = await self._reserve(projected)
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

    async def _reserve_in_shared_line(
        self, wallet: LineWallet, projected: Decimal, gone: Callable[[], bool]
    ) -> tuple[Verdict, Reservation | None, float]:
        """The line kept by the wallet: a ticket taken on the first refusal for held money,
        served in arrival order across every sidecar."""
        started = self._clock()
        deadline = started + self.wait_s
        ticket = uuid.uuid4().hex
        wall_deadline = time.time() + self.wait_s
        verdict, reservation, waiting = await self._shielded(
            wallet.reserve_in_line(projected, ticket, wall_deadline, join=True)
        )
        if reservation is not None or not waiting:
            return verdict, reservation, 0.0
        self.waited += 1
        self._waiting += 1
        try:
            while waiting and self._clock() < deadline and not gone():
                await self._until(self._released.wait(), min(deadline, self._clock() + self.poll_s))
                if gone():
                    break
                verdict, reservation, waiting = await self._shielded(
                    wallet.reserve_in_line(projected, ticket, wall_deadline, join=True)
                )
                if reservation is not None:
                    self.admitted_after_wait += 1
                    return verdict, reservation, self._clock() - started
            if gone():
                verdict = verdict_gone()
            return verdict, None, self._clock() - started
        finally:
            self._waiting -= 1
            if reservation is None:
                self._in_background(wallet.leave_line(ticket))

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
        if self._now_wallet is not None:
            # Made without awaiting: no cancellation can separate it from its caller, so no
            # shielded task (and its turns of the event loop) is needed.
            made = self._now_wallet.reserve_now(projected)
            if made is not None:
                return made
        return await self._shielded(self.wallet.reserve(projected))

    async def _shielded(self, attempt: Coroutine[object, object, _Attempt]) -> _Attempt:
        """A reservation attempt (its result holds the reservation second), released if the
        caller is cancelled while it lands: a hung-up agent must not hold money until the
        lease expires."""
        task = asyncio.ensure_future(attempt)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_if_reserved)
            raise

    def _release_if_reserved(self, task: asyncio.Future[_Attempt]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        reservation = task.result()[1]
        if reservation is not None:
            self._in_background(self.wallet.settle(reservation, Decimal(0)))

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` on its own, kept until it ends (``close`` waits for it)."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def close(self) -> None:
        """Let releases of cancelled waiters finish."""
        if self._cleanups:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._cleanups, return_exceptions=True)
