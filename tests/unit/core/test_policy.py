"""The decision engine and the wallet's phases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from a11i.core.policy import (
    BudgetPolicy,
    Decision,
    ExhaustedAction,
    Period,
    Verdict,
    WalletState,
    admitted,
    decide,
    period_start,
    state_of,
)

TEN = BudgetPolicy(limit_usd=Decimal(10))


@pytest.mark.parametrize(
    ("committed", "projected", "decision", "state"),
    [
        ("0", "1", Decision.ALLOW, WalletState.GREEN),
        ("7", "0.49", Decision.ALLOW, WalletState.GREEN),
        ("7", "0.5", Decision.WARN, WalletState.YELLOW),
        ("8.9", "0.1", Decision.OPTIMIZE, WalletState.RED),
        ("9", "1", Decision.OPTIMIZE, WalletState.EXHAUSTED),
        ("9", "1.01", Decision.BLOCK, WalletState.RED),
        ("10", "0.000001", Decision.BLOCK, WalletState.EXHAUSTED),
        ("0", "10.01", Decision.BLOCK, WalletState.GREEN),
    ],
    ids=[
        "green",
        "just-below-warn",
        "warn",
        "optimize",
        "exactly-fits",
        "over",
        "exhausted",
        "single-call-too-big",
    ],
)
def test_decide(committed: str, projected: str, decision: Decision, state: WalletState) -> None:
    verdict = decide(TEN, Decimal(committed), Decimal(projected))
    assert verdict.decision is decision
    assert verdict.state is state
    assert verdict.reason


def test_block_reason_names_the_money() -> None:
    verdict = decide(TEN, Decimal("9.5"), Decimal("1"))
    assert "$1" in verdict.reason
    assert "$0.5" in verdict.reason
    assert "$10" in verdict.reason


def test_when_exhausted_warn_lets_the_call_through() -> None:
    policy = BudgetPolicy(limit_usd=Decimal(1), when_exhausted=ExhaustedAction.WARN)
    verdict = decide(policy, Decimal(1), Decimal(1))
    assert verdict.decision is Decision.WARN
    assert verdict.state is WalletState.EXHAUSTED


def test_no_limit_always_allows() -> None:
    verdict = decide(BudgetPolicy(), Decimal(10**9), Decimal(10**9))
    assert verdict.decision is Decision.ALLOW


def test_suspended_state() -> None:
    assert state_of(BudgetPolicy(limit_usd=Decimal(1), suspended=True), Decimal(0)) is (
        WalletState.SUSPENDED
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit_usd": Decimal(-1)},
        {"warn_at_percent": Decimal(95), "optimize_at_percent": Decimal(90)},
        {"optimize_at_percent": Decimal(101)},
    ],
    ids=["negative-limit", "warn-above-optimize", "over-100"],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Decimal]) -> None:
    with pytest.raises(ValueError, match="must"):
        BudgetPolicy(**kwargs)  # type: ignore[arg-type]


NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("period", "start"),
    [
        (Period.DAILY, datetime(2026, 11, 25, tzinfo=UTC)),
        (Period.WEEKLY, datetime(2026, 11, 23, tzinfo=UTC)),
        (Period.MONTHLY, datetime(2026, 11, 1, tzinfo=UTC)),
        (Period.TOTAL, datetime(2026, 1, 1, tzinfo=UTC)),
    ],
    ids=lambda v: str(v),
)
def test_period_start(period: Period, start: datetime) -> None:
    assert period_start(period, NOW, datetime(2026, 1, 1, tzinfo=UTC)) == start


money = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False)


@given(limit=money, committed=money, projected=money)
def test_an_allowed_call_always_fits(
    limit: Decimal, committed: Decimal, projected: Decimal
) -> None:
    verdict = decide(BudgetPolicy(limit_usd=limit), committed, projected)
    if verdict.decision is not Decision.BLOCK:
        assert committed + projected <= limit
    else:
        assert committed + projected > limit


def test_period_start_in_a_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on the 25th is already the 26th in Berlin (UTC+1 in November).
    now = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    start = period_start(Period.DAILY, now, now, berlin)
    assert start == datetime(2026, 11, 26, tzinfo=berlin)
    assert start.astimezone(UTC) == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


percent = st.decimals(min_value=0, max_value=100, places=2, allow_nan=False)


@given(
    limit=money,
    committed=money,
    projected=money,
    thresholds=st.tuples(percent, percent).map(sorted),
    warn_when_exhausted=st.booleans(),
    suspended=st.booleans(),
)
def test_decide_states_what_state_of_says(
    limit: Decimal,
    committed: Decimal,
    projected: Decimal,
    thresholds: list[Decimal],
    warn_when_exhausted: bool,
    suspended: bool,
) -> None:
    """decide works out the state of an admitted call from the percent its reason shows, not
    through state_of (which computes that percent again): the same state, the same reason."""
    policy = BudgetPolicy(
        limit_usd=limit,
        warn_at_percent=thresholds[0],
        optimize_at_percent=thresholds[1],
        when_exhausted=ExhaustedAction.WARN if warn_when_exhausted else ExhaustedAction.BLOCK,
        suspended=suspended,
    )
    verdict = decide(policy, committed, projected)
    after = committed + projected
    if after <= limit:
        assert verdict.state is state_of(policy, after)
        shown = Decimal(0 if limit == 0 else after * 100 / limit).quantize(Decimal("0.01"))
        assert verdict.reason == f"{Decimal(100) if limit == 0 else shown}% of the budget committed"


# -- decide as it was written before its fast path, held to the same results ------------------


def plain_decide(policy: BudgetPolicy, committed: Decimal, projected: Decimal) -> Verdict:
    after = committed + projected
    if policy.limit_usd is None:
        return Verdict(Decision.ALLOW, WalletState.GREEN, "no budget limit")
    limit = policy.limit_usd
    if after > limit:
        remaining = max(limit - committed, Decimal(0))
        reason = f"projected cost ${projected} exceeds the ${remaining} left of the ${limit} budget"
        if policy.when_exhausted is ExhaustedAction.WARN:
            return Verdict(Decision.WARN, WalletState.EXHAUSTED, reason)
        return Verdict(Decision.BLOCK, state_of(policy, committed), reason)
    state = state_of(policy, after)
    percent = Decimal(100) if limit == 0 else (after * 100 / limit).quantize(Decimal("0.01"))
    reason = f"{percent}% of the budget committed"
    if state in (WalletState.RED, WalletState.EXHAUSTED):
        return Verdict(Decision.OPTIMIZE, state, reason)
    if state is WalletState.YELLOW:
        return Verdict(Decision.WARN, state, reason)
    return Verdict(Decision.ALLOW, state, reason)


policies = st.builds(
    BudgetPolicy,
    limit_usd=st.none()
    | st.sampled_from([Decimal(0), Decimal("0.5"), Decimal(10), Decimal("1E+3")]),
    warn_at_percent=st.sampled_from([Decimal(0), Decimal(75), Decimal("50.5")]),
    optimize_at_percent=st.sampled_from([Decimal(90), Decimal(100)]),
    when_exhausted=st.sampled_from(list(ExhaustedAction)),
    suspended=st.booleans(),
)
#: Amounts a few hundredths of a percent apart (consecutive calls that commit the same percent),
#: and negative ones, whose percent may be a negative zero (written "-0.00").
amounts = st.decimals(min_value=-1, max_value=12, places=9) | st.sampled_from(
    [Decimal(0), Decimal("-0"), Decimal("-0.000000001"), Decimal("0.000000001"), Decimal("0E+2")]
)


@given(
    policies=st.lists(policies, min_size=1, max_size=3),
    calls=st.lists(st.tuples(st.integers(0, 2), amounts, amounts), min_size=1, max_size=30),
)
@example(  # "0.00" then "-0.00": equal, but not the same reason
    policies=[TEN],
    calls=[(0, Decimal(0), Decimal(0)), (0, Decimal("-0.000000001"), Decimal(0))],
)
@example(  # 100.00% (exhausted) after 100.00% that is not
    policies=[TEN],
    calls=[(0, Decimal("9.99999"), Decimal(0)), (0, Decimal(10), Decimal(0))],
)
def test_decide_is_the_plain_rule(
    policies: list[BudgetPolicy], calls: list[tuple[int, Decimal, Decimal]]
) -> None:
    """decide, and admitted for a call that fits, give the verdict the plain rule gives, call
    after call (the verdict admitted remembers is given again only where it is the same)."""
    for which, committed, projected in calls:
        policy = policies[which % len(policies)]
        expected = plain_decide(policy, committed, projected)
        assert decide(policy, committed, projected) == expected
        limit = policy.limit_usd
        if limit is None or committed + projected <= limit:
            assert admitted(policy, committed + projected) == expected
