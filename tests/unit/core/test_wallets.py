"""The wallet rules: a stateful property test over random calls, settlements, expiries, resets."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from a11i.core.policy import (
    BudgetPolicy,
    Decision,
    ExhaustedAction,
    Period,
    Verdict,
    WalletState,
    decide,
    period_start,
)
from a11i.core.wallets import (
    Reservation,
    WalletBook,
    _lease,
    _start_of,
    _with,
    advance,
    new_book,
    remaining_of,
    reserve,
    settle,
    snapshot_of,
    to_nanos,
    to_usd,
    top_up,
)

LIMIT = Decimal("1.000")
money = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.4"), places=6)


class WalletRules(RuleBasedStateMachine):
    """Calls reserve their worst case and settle at most that: the settled spend of a period
    never exceeds its limit, whatever the interleaving."""

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
        self.book = new_book(BudgetPolicy(limit_usd=LIMIT), Period.DAILY, self.now)
        self.ids = 0
        self.charged: dict[float, int] = {}
        self.settled: set[str] = set()
        #: Per period: what was charged for calls settled after their lease expired.
        self.late: dict[float, int] = {}

    @rule(target=leases, projected=money)
    def reserve_call(self, projected: Decimal) -> Reservation | None:
        self.ids += 1
        self.book, verdict, lease = reserve(self.book, str(self.ids), projected, self.now, 900)
        if lease is None:
            # Refused only when it truly does not fit in what is left.
            assert verdict.decision is Decision.BLOCK
            assert self.book.committed + to_nanos(projected) > to_nanos(LIMIT)
        else:
            assert verdict.decision is not Decision.BLOCK
            assert self.book.committed <= to_nanos(LIMIT)
        return lease

    @rule(lease=leases, share=st.integers(min_value=0, max_value=100))
    def settle_call(self, lease: Reservation | None, share: int) -> None:
        if lease is None or lease.id in self.settled:
            return
        actual = to_usd(lease.nanos) * share / 100
        start = self.book.period_start
        held = any(kept.id == lease.id for kept in self.book.leases)
        self.book, current = settle(self.book, lease, actual, self.now)
        if current and not held:
            # Settled after its lease expired (its hold already released): still charged, the
            # one documented way past the limit (docs/budget.md).
            self.late[start] = self.late.get(start, 0) + to_nanos(actual)
        self.settled.add(lease.id)
        assert current == (lease.period_start == self.book.period_start)
        if current:
            self.charged[start] = self.charged.get(start, 0) + to_nanos(actual)

    @rule(minutes=st.integers(min_value=1, max_value=600))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self.book = advance(self.book, self.now)

    @invariant()
    def spend_never_exceeds_the_limit(self) -> None:
        late = self.late.get(self.book.period_start, 0)
        assert self.book.spent <= to_nanos(LIMIT) + late
        assert self.book.committed <= to_nanos(LIMIT) + late

    @invariant()
    def spend_is_what_was_settled_in_this_period(self) -> None:
        assert self.book.spent == self.charged.get(self.book.period_start, 0)

    @invariant()
    def expired_leases_are_gone(self) -> None:
        assert all(lease.expires_at > self.now.timestamp() for lease in self.book.leases)


TestWalletRules = WalletRules.TestCase
TestWalletRules.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_money_is_rounded_up_to_the_nano_dollar() -> None:
    assert to_nanos(Decimal("0.0000000001")) == 1
    assert to_nanos(Decimal("1.5")) == 1_500_000_000
    assert to_usd(1) == Decimal("1E-9")


def test_suspended_wallet_refuses_everything() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    book = new_book(BudgetPolicy(limit_usd=None, suspended=True), Period.TOTAL, now)
    _, verdict, lease = reserve(book, "1", Decimal("0"), now, 900)
    assert (verdict.state, lease) == (WalletState.SUSPENDED, None)


def test_warn_when_exhausted_admits_and_marks() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    policy = BudgetPolicy(limit_usd=Decimal("0.01"), when_exhausted=ExhaustedAction.WARN)
    book, verdict, lease = reserve(new_book(policy, Period.TOTAL, now), "1", Decimal(1), now, 900)
    assert verdict.decision is Decision.WARN
    assert lease is not None
    assert book.state is WalletState.EXHAUSTED


def test_top_up_raises_the_limit_and_rejects_nonsense() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    book = new_book(BudgetPolicy(limit_usd=Decimal(1)), Period.TOTAL, now)
    assert top_up(book, Decimal("2.5")).policy.limit_usd == Decimal("3.5")
    with pytest.raises(ValueError, match="positive"):
        top_up(book, Decimal(0))


# -- the rules as they were written before their fast paths, held to the same results ---------


def plain_advance(book: WalletBook, now: datetime) -> WalletBook:
    origin = datetime.fromtimestamp(book.origin, tz=UTC)
    start = period_start(book.period, now, origin, ZoneInfo(book.zone)).timestamp()
    if start > book.period_start:
        book = replace(book, period_start=start, spent=0)
    stamp = now.timestamp()
    live = tuple(lease for lease in book.leases if lease.expires_at > stamp)
    if len(live) != len(book.leases):
        book = replace(book, leases=live)
    return book


def plain_reserve(
    book: WalletBook, lease_id: str, projected: Decimal, now: datetime, lease_seconds: float
) -> tuple[WalletBook, Verdict, Reservation | None]:
    book = plain_advance(book, now)
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


def plain_settle(
    book: WalletBook, lease: Reservation, actual: Decimal, now: datetime
) -> tuple[WalletBook, bool]:
    book = plain_advance(book, now)
    leases = tuple(held for held in book.leases if held.id != lease.id)
    if lease.period_start != book.period_start:
        return replace(book, leases=leases), False
    return replace(book, leases=leases, spent=book.spent + to_nanos(actual)), True


#: UTC (the fast path), a zone with daylight saving time, one whose midnight repeats, one with
#: a half-hour offset.
ZONES = ["UTC", "Europe/Paris", "America/Havana", "Asia/Kolkata"]
BASE = datetime(2026, 1, 1, tzinfo=UTC)
instants = st.integers(min_value=-400 * 86_400_000_000, max_value=400 * 86_400_000_000).map(
    lambda micros: BASE + timedelta(microseconds=micros)
)
#: Instants a few seconds either side of a UTC midnight, where periods begin.
edges = st.tuples(
    st.integers(min_value=-400, max_value=400),
    st.integers(min_value=-3_000_000, max_value=3_000_000),
).map(lambda t: BASE + timedelta(days=t[0], microseconds=t[1]))
clocks = st.one_of(instants, edges).flatmap(
    lambda now: st.sampled_from(
        [
            now,
            now.astimezone(timezone(timedelta(hours=5, minutes=30))),
            now.astimezone(ZoneInfo("Europe/Paris")),
        ]
    )
)
nanos = st.integers(min_value=0, max_value=2_000_000_000)


@st.composite
def books(draw: st.DrawFn) -> WalletBook:
    """A wallet some time into its life: its period possibly over, leases of this period and
    of older ones, some expired, ids that may repeat."""
    created = draw(instants)
    period = draw(st.sampled_from(list(Period)))
    zone = draw(st.sampled_from(ZONES))
    book = new_book(
        BudgetPolicy(
            limit_usd=draw(st.none() | st.decimals(min_value=0, max_value=3, places=9)),
            suspended=draw(st.booleans()),
        ),
        period,
        created,
        zone,
    )
    starts = [book.period_start, book.period_start - 86_400.0]
    leases = draw(
        st.lists(
            st.builds(
                Reservation,
                st.sampled_from(["a", "b", "c", "1234-7f-9"]),
                nanos,
                st.floats(min_value=-5e4, max_value=5e4).map(lambda d: created.timestamp() + d),
                st.sampled_from(starts),
            ),
            max_size=4,
        )
    )
    return replace(book, spent=draw(nanos), leases=tuple(leases))


usd_amounts = st.decimals(min_value=0, max_value=2, places=10)


@given(book=books(), now=clocks)
def test_advance_is_the_plain_rule(book: WalletBook, now: datetime) -> None:
    assert advance(book, now) == plain_advance(book, now)


@given(book=books(), now=clocks, projected=usd_amounts, seconds=st.sampled_from([0.0, 900.0]))
def test_reserve_is_the_plain_rule(
    book: WalletBook, now: datetime, projected: Decimal, seconds: float
) -> None:
    assert reserve(book, "new", projected, now, seconds) == plain_reserve(
        book, "new", projected, now, seconds
    )


@given(book=books(), now=clocks, actual=usd_amounts, which=st.integers(0, 4))
def test_settle_is_the_plain_rule(
    book: WalletBook, now: datetime, actual: Decimal, which: int
) -> None:
    lease = (*book.leases, Reservation("gone", 5, 0.0, book.period_start))[
        min(which, len(book.leases))
    ]
    assert settle(book, lease, actual, now) == plain_settle(book, lease, actual, now)


@given(
    period=st.sampled_from([Period.DAILY, Period.WEEKLY, Period.MONTHLY]),
    zone=st.sampled_from(ZONES),
    moments=st.integers(min_value=-400, max_value=400).flatmap(
        lambda day: st.lists(
            st.tuples(
                st.integers(min_value=-35, max_value=35),
                st.one_of(
                    st.just(0),
                    st.integers(min_value=-3_000_000, max_value=3_000_000),
                    st.integers(min_value=0, max_value=86_400_000_000),
                ),
            ).map(lambda t: BASE + timedelta(days=day + t[0], microseconds=t[1])),
            min_size=1,
            max_size=30,
        )
    ),
)
def test_a_remembered_period_starts_where_period_start_says(
    period: Period, zone: str, moments: list[datetime]
) -> None:
    """The UTC period _start_of remembers answers the instants inside it, in any order, and
    only those: the same start as period_start's, to the microsecond either side of its end."""
    for moment in moments:
        for now in (moment - timedelta(microseconds=1), moment):
            expected = period_start(period, now, now, ZoneInfo(zone)).timestamp()
            assert _start_of(period, zone, now) == expected


@given(book=books())
def test_the_remaining_budget_is_the_snapshots(book: WalletBook) -> None:
    remaining = snapshot_of(book, "team-a", "sre-bot").remaining_usd
    assert remaining_of(book) == remaining
    assert str(remaining_of(book)) == str(remaining)


@given(
    book=books(),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), usd_amounts | st.just(Decimal(0))),
            st.tuples(st.just("settle"), st.integers(0, 4), usd_amounts),
            st.tuples(st.just("time"), st.integers(0, 2 * 86_400_000_000)),
        ),
        max_size=20,
    ),
)
def test_a_run_of_calls_is_the_plain_rules(book: WalletBook, steps: list[tuple]) -> None:
    """Reserves and settles one after the other on the book the last one left, as the wallet
    makes them: the same books, verdicts and leases as the plain rules (the verdict decide
    remembers, the books and leases made without their __init__)."""
    now = datetime.fromtimestamp(book.origin, tz=UTC)
    plain = book
    for number, step in enumerate(steps):
        if step[0] == "reserve":
            done = reserve(book, str(number), step[1], now, 900.0)
            assert done == plain_reserve(plain, str(number), step[1], now, 900.0)
            book = plain = done[0]
        elif step[0] == "settle":
            held = (*book.leases, Reservation("gone", 5, 0.0, book.period_start))
            lease = held[min(step[1], len(held) - 1)]
            settled = settle(book, lease, step[2], now)
            assert settled == plain_settle(plain, lease, step[2], now)
            book = plain = settled[0]
        else:
            now += timedelta(microseconds=step[1])


huge = st.integers(min_value=0, max_value=10**31)


@given(
    spent=huge,
    held=st.lists(huge, max_size=2),
    limit=st.decimals(min_value=0, max_value=Decimal("1E+23"), places=0) | money,
    projected=st.decimals(min_value=0, max_value=Decimal("1E+23"), places=9),
)
@example(  # fits by half a micro-dollar, but decide's sum of two rounded amounts is over
    spent=10**30 + 1500,
    held=[],
    limit=Decimal("1000000000000000000000.0000025"),
    projected=Decimal("0.000000501"),
)
def test_reserve_is_the_plain_rule_past_decimal_precision(
    spent: int, held: list[int], limit: Decimal, projected: Decimal
) -> None:
    """Amounts of more than 28 digits, where a Decimal sum is rounded: reserve decides them as
    decide does, not from its exact sum in nano-dollars."""
    now = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    book = replace(
        new_book(BudgetPolicy(limit_usd=limit), Period.TOTAL, now),
        spent=spent,
        leases=tuple(Reservation(f"h{n}", nanos, 1e12, 0.0) for n, nanos in enumerate(held)),
    )
    book = replace(
        book, leases=tuple(replace(x, period_start=book.period_start) for x in book.leases)
    )
    assert reserve(book, "new", projected, now, 900.0) == plain_reserve(
        book, "new", projected, now, 900.0
    )


@given(book=books(), spent=nanos, which=st.integers(0, 4))
def test_books_and_leases_made_directly_are_whole(book: WalletBook, spent: int, which: int) -> None:
    """The book and lease constructors without __init__ set every field (a field added to
    WalletBook or Reservation and not to them would be missing here)."""
    assert _with(book, spent, book.leases[:which]) == replace(
        book, spent=spent, leases=book.leases[:which]
    )
    made = _lease("id", spent, 1.5, book.period_start)
    assert made == Reservation("id", spent, 1.5, book.period_start)
    assert [getattr(made, f.name) for f in fields(Reservation)] == [
        "id",
        spent,
        1.5,
        book.period_start,
    ]


@pytest.mark.parametrize("limit", ["1E+3", "0.50", "0", "7"])
@pytest.mark.parametrize("spent", [0, 1, 500_000_000, 7_000_000_000, 9_000_000_000])
@pytest.mark.parametrize("reserved", [0, 500_000_000, 1_000_000_001])
def test_the_remaining_budget_of_round_amounts_is_the_snapshots(
    limit: str, spent: int, reserved: int
) -> None:
    """The same Decimal as the snapshot's, to its last zero, where the amounts' texts have
    fewer places than the nano-dollar's and where nothing is reserved (between calls)."""
    book = new_book(BudgetPolicy(limit_usd=Decimal(limit)), Period.TOTAL, BASE)
    held = (Reservation("a", reserved, book.origin + 900, book.period_start),) if reserved else ()
    book = replace(book, spent=spent, leases=held)
    remaining = snapshot_of(book, "team-a", "sre-bot").remaining_usd
    assert str(remaining_of(book)) == str(remaining)
