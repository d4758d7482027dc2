"""Wallet accounting: reserve, settle, expire leases, start new periods. The rules, pure.

Pure: no clock (``now`` is handed in), no storage. Every backend applies exactly these rules —
the embedded one by calling these functions, the Redis one in a Lua script that a property test
holds to the same results. Money is stored as integer nano-dollars (``to_nanos`` rounds a cost
up, so rounding never under-charges); the public API speaks ``Decimal`` USD.

The invariants:
- a call is admitted only if ``spent + reserved + projected <= limit`` (or the wallet's action
  when exhausted is Warn), so concurrent calls can never all pass one stale check;
- a reservation belongs to the period in which it was made: settling it after a reset charges
  that period, never the new one;
- money spent is never lost: a settlement whose lease already expired is still charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from a11i.core.model import usd
from a11i.core.policy import (
    BudgetPolicy,
    Decision,
    Period,
    Verdict,
    WalletState,
    decide,
    period_start,
    state_of,
)

NANOS_PER_USD = 1_000_000_000


def to_nanos(usd: Decimal) -> int:
    """USD to integer nano-dollars, rounded up: a fraction of a nano-dollar is charged whole."""
    return math.ceil(usd * NANOS_PER_USD)


def to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside for one call until it is settled, or until ``expires_at``."""

    id: str
    nanos: int
    #: Unix seconds after which the lease is released unsettled (its call's sidecar died).
    expires_at: float
    #: The period the call belongs to (unix seconds of the period's start).
    period_start: float


@dataclass(frozen=True, slots=True)
class WalletBook:
    """The whole state of one wallet."""

    policy: BudgetPolicy
    period: Period
    #: Unix seconds of the current period's start.
    period_start: float
    #: When the wallet was created: the start of a Total period.
    origin: float
    spent: int = 0
    leases: tuple[Reservation, ...] = ()
    #: IANA name of the time zone whose midnights start the periods.
    zone: str = "UTC"

    @property
    def reserved(self) -> int:
        return sum(lease.nanos for lease in self.leases if lease.period_start == self.period_start)

    @property
    def committed(self) -> int:
        return self.spent + self.reserved

    @property
    def state(self) -> WalletState:
        return state_of(self.policy, to_usd(self.committed))


def new_book(policy: BudgetPolicy, period: Period, now: datetime, zone: str = "UTC") -> WalletBook:
    start = period_start(period, now, now, ZoneInfo(zone)).timestamp()
    return WalletBook(
        policy=policy, period=period, period_start=start, origin=now.timestamp(), zone=zone
    )


def advance(book: WalletBook, now: datetime) -> WalletBook:
    """Start a new period if ``now`` is past the boundary, and release expired leases."""
    origin = datetime.fromtimestamp(book.origin, tz=UTC)
    start = period_start(book.period, now, origin, ZoneInfo(book.zone)).timestamp()
    if start > book.period_start:
        book = replace(book, period_start=start, spent=0)
    stamp = now.timestamp()
    live = tuple(lease for lease in book.leases if lease.expires_at > stamp)
    if len(live) != len(book.leases):
        book = replace(book, leases=live)
    return book


def reserve(
    book: WalletBook, lease_id: str, projected: Decimal, now: datetime, lease_seconds: float
) -> tuple[WalletBook, Verdict, Reservation | None]:
    """Decide a call of ``projected`` USD and, unless it is refused, hold that money."""
    book = advance(book, now)
    if book.policy.suspended:
        return (
            book,
            Verdict(Decision.BLOCK, WalletState.SUSPENDED, "the emergency stop is on"),
            None,
        )
    amount = to_nanos(projected)
    verdict = decide(book.policy, to_usd(book.committed), to_usd(amount))
    if verdict.decision is Decision.BLOCK:
        return book, verdict, None
    lease = Reservation(lease_id, amount, now.timestamp() + lease_seconds, book.period_start)
    return replace(book, leases=(*book.leases, lease)), verdict, lease


def settle(
    book: WalletBook, lease: Reservation, actual: Decimal, now: datetime
) -> tuple[WalletBook, bool]:
    """Charge ``actual`` USD for the call of ``lease`` and release the lease. Returns whether the
    charge went to the current period (False: the call belongs to a period already over)."""
    book = advance(book, now)
    leases = tuple(held for held in book.leases if held.id != lease.id)
    if lease.period_start != book.period_start:
        return replace(book, leases=leases), False
    return replace(book, leases=leases, spent=book.spent + to_nanos(actual)), True


def top_up(book: WalletBook, amount: Decimal) -> WalletBook:
    """Raise the limit by ``amount`` USD (a wallet without a limit stays without one)."""
    if amount <= 0:
        raise ValueError("a top-up must be a positive amount")
    limit = book.policy.limit_usd
    if limit is None:
        return book
    return replace(book, policy=replace(book.policy, limit_usd=limit + amount))


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


def _money(value: Decimal | None) -> str | None:
    return None if value is None else usd(value)
