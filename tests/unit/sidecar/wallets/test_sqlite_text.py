"""The embedded wallet's row text: the JSON ``json.dumps`` writes of a book, read back whole."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

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
