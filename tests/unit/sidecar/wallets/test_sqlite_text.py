"""The embedded wallet's row text: the JSON ``json.dumps`` writes of a book, read back whole."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from a11i.core.policy import BudgetPolicy, ExhaustedAction, Period
from a11i.core.wallets import Reservation, WalletBook
from a11i.sidecar.wallets.sqlite import _BookWriter, dump_book, load_book

BOOK = WalletBook(
    policy=BudgetPolicy(limit_usd=Decimal("12.50")),
    period=Period.DAILY,
    period_start=1795392000.0,
    origin=1795391234.123457,
    spent=1_234_567_891,
    leases=(
        Reservation("4242-7f3a-1", 12_300_000, 1795393134.5, 1795392000.0),
        Reservation('odd "id" \\ é', 1, 1795393999.000001, 1795305600.0),
    ),
    zone="Europe/Paris",
)


def plain_json(book: WalletBook) -> str:
    """The text as ``json.dumps`` writes it, field by field."""
    policy = book.policy
    return json.dumps(
        {
            "limit_usd": None if policy.limit_usd is None else str(policy.limit_usd),
            "warn_at": str(policy.warn_at_percent),
            "optimize_at": str(policy.optimize_at_percent),
            "when_exhausted": policy.when_exhausted.value,
            "suspended": policy.suspended,
            "period": book.period.value,
            "period_start": book.period_start,
            "origin": book.origin,
            "spent_nanos": book.spent,
            "zone": book.zone,
            "leases": [[x.id, x.nanos, x.expires_at, x.period_start] for x in book.leases],
        },
        separators=(",", ":"),
    )


@pytest.mark.parametrize(
    "book",
    [
        BOOK,
        replace(BOOK, leases=()),
        replace(BOOK, policy=BudgetPolicy(), period=Period.TOTAL, zone="UTC"),
        replace(
            BOOK,
            policy=BudgetPolicy(
                limit_usd=Decimal("1E+3"),
                warn_at_percent=Decimal("50.5"),
                optimize_at_percent=Decimal("99"),
                when_exhausted=ExhaustedAction.WARN,
                suspended=True,
            ),
        ),
    ],
    ids=["leases", "no-leases", "no-limit", "every-policy-field"],
)
def test_the_text_is_the_json_of_the_book_and_reads_back_whole(book: WalletBook) -> None:
    text = dump_book(book)
    assert text == plain_json(book)
    assert load_book(text) == book


def test_one_writer_follows_the_policy_period_and_zone_as_they_change() -> None:
    writer = _BookWriter()
    books = [
        BOOK,
        replace(BOOK, spent=7, leases=BOOK.leases[:1]),
        replace(BOOK, policy=replace(BOOK.policy, suspended=True)),
        replace(BOOK, policy=replace(BOOK.policy, limit_usd=Decimal("14.50"))),
        replace(BOOK, period=Period.MONTHLY),
        replace(BOOK, zone="UTC"),
        BOOK,
    ]
    for book in books:
        assert writer.dump(book) == plain_json(book)


ids = st.sampled_from(["4242-7f3a-1", "4242-7f3a-2", 'odd "id" \\ é'])
times = st.floats(min_value=-2e9, max_value=4e9, allow_nan=False) | st.just(-0.0)
edits = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), ids, st.integers(0, 10**12), times),
        st.tuples(st.just("reserve-in"), ids, times),
        st.tuples(st.just("renew"), st.booleans()),
        st.tuples(st.just("settle"), st.integers(0, 5), st.integers(0, 10**9)),
        st.tuples(st.just("period"), times),
        st.tuples(st.just("origin"), times),
        st.tuples(st.just("policy"), st.booleans()),
    ),
    max_size=25,
)


@given(edits=edits)
@example(edits=[("period", -0.0), ("period", 0.0), ("origin", 0.0), ("origin", -0.0)])
@example(edits=[("period", -0.0), ("reserve-in", "a", 0.0), ("reserve", "b", 1, 2.0)])
@example(edits=[("reserve", "a", 1, 0.0), ("renew", True)])
def test_one_writer_follows_the_leases_and_times_as_they_change(edits: list[tuple]) -> None:
    """The writer remembers the text of each lease and of the period's start and origin while
    they are the same objects: a book made from the last one (a lease added or settled, a
    lease id held twice, a new time equal to the old one, 0.0 after -0.0, a lease whose
    period's start equals the book's but is written otherwise) is written as json.dumps
    writes it."""
    writer = _BookWriter()
    book = BOOK
    for edit in edits:
        if edit[0] == "reserve":
            lease = Reservation(edit[1], edit[2], edit[3], book.period_start)
            book = replace(book, leases=(*book.leases, lease))
        elif edit[0] == "reserve-in":  # a lease of another period (or of an equal float)
            book = replace(book, leases=(*book.leases, Reservation(edit[1], 5, 1.0, edit[2])))
        elif edit[0] == "renew":  # equal leases, as other objects (a book read again)
            leases = tuple(
                replace(lease, expires_at=_flip(lease.expires_at)) for lease in book.leases
            )
            added = (Reservation("4242-7f3a-9", 1, 2.0, 3.0),) if edit[1] else ()
            book = replace(book, leases=leases + added)
        elif edit[0] == "settle":
            kept = tuple(lease for n, lease in enumerate(book.leases) if n != edit[1])
            book = replace(book, leases=kept, spent=book.spent + edit[2])
        elif edit[0] == "period":
            book = replace(book, period_start=edit[1])
        elif edit[0] == "origin":
            book = replace(book, origin=edit[1])
        else:
            book = replace(book, policy=replace(book.policy, suspended=edit[1]))
        text = writer.dump(book)
        assert text == plain_json(book)
        assert load_book(text) == book


def _flip(moment: float) -> float:
    """The same time, 0.0 as -0.0 and -0.0 as 0.0: equal, written otherwise."""
    return -moment if moment == 0 else moment
