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

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from a11i.core.model import usd
from a11i.core.policy import (
    BudgetPolicy,
    Decision,
    Period,
    Verdict,
    WalletState,
    admitted,
    decide,
    period_start,
    state_of,
)

NANOS_PER_USD = 1_000_000_000
#: Below this many nano-dollars (10^18 USD) an amount has at most 27 significant digits as a
#: Decimal, so ``to_usd`` is exact and so is the sum of two such amounts (within the default
#: context's 28 digits).
_EXACT_NANOS = 10**27
_ZERO = Decimal(0)
#: NANOS_PER_USD as the Decimal that multiplying or dividing by the int converts it to.
_NANOS_PER_USD = Decimal(NANOS_PER_USD)


def to_nanos(usd: Decimal) -> int:
    """USD to integer nano-dollars, rounded up: a fraction of a nano-dollar is charged whole."""
    return math.ceil(usd * _NANOS_PER_USD)


def to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / _NANOS_PER_USD


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
        start = self.period_start
        return sum([lease.nanos for lease in self.leases if lease.period_start == start])

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
    return _advanced(book, now, now.timestamp())


def _advanced(book: WalletBook, now: datetime, stamp: float) -> WalletBook:
    """``advance`` with ``now.timestamp()`` already known (a reserve needs it for its lease)."""
    period = book.period
    if period is Period.TOTAL:
        start = _total_start(book.origin)
    else:
        start = _start_of(period, book.zone, now)
    if start > book.period_start:
        book = replace(book, period_start=start, spent=0)
    leases = book.leases
    if leases:
        live = [lease for lease in leases if lease.expires_at > stamp]
        if len(live) != len(leases):
            book = _with(book, book.spent, tuple(live))
    return book


@lru_cache(maxsize=256)
def _total_start(origin: float) -> float:
    """The start of a Total period, through the datetime of the stored origin as ever (to the
    microsecond): it depends on the origin alone, so each wallet's is computed once."""
    moment = datetime.fromtimestamp(origin, tz=UTC)
    return period_start(Period.TOTAL, moment, moment).timestamp()


#: The UTC period ``_start_of`` computed last: its kind, its first instant, the first instant
#: of the next one, and its start as ``advance`` stores it. One tuple, replaced whole.
_utc_period: tuple[Period, datetime, datetime, float] | None = None


def _start_of(period: Period, zone: str, now: datetime) -> float:
    """``period_start(period, now, ..., ZoneInfo(zone)).timestamp()`` for a period that is not
    Total (those ignore the origin). UTC has no daylight saving time, so there a period is the
    plain interval from its midnight to the next period's: remembered, a ``now`` of the sidecar's
    clock inside it (a datetime in ``UTC``, compared field by field) needs no conversion."""
    global _utc_period
    known = _utc_period
    if (
        known is not None
        and zone == "UTC"
        and known[0] is period
        and now.tzinfo is UTC
        and known[1] <= now < known[2]
    ):
        return known[3]
    start = period_start(period, now, now, ZoneInfo(zone))
    stamp = start.timestamp()
    if zone == "UTC":
        with contextlib.suppress(OverflowError):  # the last period before the year 10000
            begins = start.astimezone(UTC)
            if period is Period.DAILY:
                ends = begins + timedelta(days=1)
            elif period is Period.WEEKLY:
                ends = begins + timedelta(days=7)
            else:  # Monthly
                ends = (begins.replace(day=28) + timedelta(days=4)).replace(day=1)
            _utc_period = (period, begins, ends, stamp)
    return stamp


# A reserve and a settle each make one new book, and a reserve one lease, on the path of every
# call. A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` by
# name; the slots' own descriptors set them directly (a book in 0.43 µs here against 1.1 µs).
# Neither class has a ``__post_init__`` to skip, and a field added to one but not here is left
# unset, which the tests that compare the books these make with ``replace``'s would show.
_new = object.__new__


def _setter(cls: type, field: str) -> Callable[[object, object], None]:
    """The ``__set__`` of the slot that holds ``field`` (frozen only through ``__setattr__``)."""
    setter: Callable[[object, object], None] = vars(cls)[field].__set__
    return setter


_set_policy = _setter(WalletBook, "policy")
_set_period = _setter(WalletBook, "period")
_set_period_start = _setter(WalletBook, "period_start")
_set_origin = _setter(WalletBook, "origin")
_set_spent = _setter(WalletBook, "spent")
_set_leases = _setter(WalletBook, "leases")
_set_zone = _setter(WalletBook, "zone")
_set_id = _setter(Reservation, "id")
_set_nanos = _setter(Reservation, "nanos")
_set_expires_at = _setter(Reservation, "expires_at")
_set_lease_start = _setter(Reservation, "period_start")


def _with(book: WalletBook, spent: int, leases: tuple[Reservation, ...]) -> WalletBook:
    """``replace(book, spent=spent, leases=leases)``, without ``replace``'s walk over the
    fields nor ``__init__``'s ``object.__setattr__`` per field."""
    new: WalletBook = _new(WalletBook)
    _set_policy(new, book.policy)
    _set_period(new, book.period)
    _set_period_start(new, book.period_start)
    _set_origin(new, book.origin)
    _set_spent(new, spent)
    _set_leases(new, leases)
    _set_zone(new, book.zone)
    return new


def _lease(lease_id: str, nanos: int, expires_at: float, period_start: float) -> Reservation:
    """``Reservation(lease_id, nanos, expires_at, period_start)``, its slots set directly."""
    new: Reservation = _new(Reservation)
    _set_id(new, lease_id)
    _set_nanos(new, nanos)
    _set_expires_at(new, expires_at)
    _set_lease_start(new, period_start)
    return new


#: What a suspended wallet answers every call (frozen: one serves them all).
_STOPPED = Verdict(Decision.BLOCK, WalletState.SUSPENDED, "the emergency stop is on")


def reserve(
    book: WalletBook, lease_id: str, projected: Decimal, now: datetime, lease_seconds: float
) -> tuple[WalletBook, Verdict, Reservation | None]:
    """Decide a call of ``projected`` USD and, unless it is refused, hold that money."""
    stamp = now.timestamp()
    book = _advanced(book, now, stamp)
    policy = book.policy
    if policy.suspended:
        return book, _STOPPED, None
    amount = to_nanos(projected)
    committed = book.committed
    after = committed + amount
    limit = policy.limit_usd
    if limit is None:
        verdict = admitted(policy, _ZERO)  # no limit: every call is allowed, whatever it adds
    elif (
        committed >= 0
        and amount >= 0
        and after < _EXACT_NANOS
        and (after_usd := to_usd(after)) <= limit
    ):
        # The call fits: its verdict depends on committed + projected alone, which one exact
        # division gives (the sum decide would make of two, to the same value).
        verdict = admitted(policy, after_usd)
    else:
        verdict = decide(policy, to_usd(committed), to_usd(amount))
        if verdict.decision is Decision.BLOCK:
            return book, verdict, None
    lease = _lease(lease_id, amount, stamp + lease_seconds, book.period_start)
    return _with(book, book.spent, (*book.leases, lease)), verdict, lease


def settle(
    book: WalletBook, lease: Reservation, actual: Decimal, now: datetime
) -> tuple[WalletBook, bool]:
    """Charge ``actual`` USD for the call of ``lease`` and release the lease. Returns whether the
    charge went to the current period (False: the call belongs to a period already over)."""
    book = _advanced(book, now, now.timestamp())
    settled = lease.id
    leases = tuple([held for held in book.leases if held.id != settled])
    if lease.period_start != book.period_start:
        return _with(book, book.spent, leases), False
    return _with(book, book.spent + to_nanos(actual), leases), True


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


def remaining_of(book: WalletBook) -> Decimal | None:
    """``snapshot_of(book, ...).remaining_usd``, the same Decimal, without the rest of the
    snapshot (its datetime, its state): what the ``x-a11i-budget-remaining-usd`` header of
    every call shows."""
    limit = book.policy.limit_usd
    if limit is None:
        return None
    left = limit - to_usd(book.spent)
    reserved = book.reserved
    if reserved:
        # Nothing reserved (between calls): to_usd(0) is Decimal("0"), and taking it from a
        # difference whose exponent to_usd's makes at most 0 changes neither value nor text.
        left -= to_usd(reserved)
    return max(left, _ZERO)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else usd(value)
