"""The decision engine: given a wallet and a projected cost, ALLOW, WARN, OPTIMIZE or BLOCK.

Pure: no clock, no storage. The wallet adapter hands in a snapshot; this module says what the
call may do and what state the wallet is in. Thresholds are percentages of the limit, measured
against what is committed (spent + reserved) once this call's projection is added, so the first
call that would cross a line is the one that is warned, optimized or blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum


class Decision(StrEnum):
    """What the guard does with a call; the value of ``x-a11i-decision``."""

    ALLOW = "allow"
    WARN = "warn"
    OPTIMIZE = "optimize"
    BLOCK = "block"


class WalletState(StrEnum):
    """The phase of a wallet, as the AgentBudget status shows it."""

    GREEN = "Green"
    YELLOW = "Yellow"
    RED = "Red"
    EXHAUSTED = "Exhausted"
    SUSPENDED = "Suspended"


class ExhaustedAction(StrEnum):
    """What happens to a call that does not fit: refused (402) or let through and marked."""

    BLOCK = "Block"
    WARN = "Warn"


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The rules of one wallet. ``limit_usd`` None means no limit (meter only)."""

    limit_usd: Decimal | None = None
    #: Percent of the limit from which calls are marked ``warn`` (wallet Yellow).
    warn_at_percent: Decimal = Decimal(75)
    #: Percent of the limit from which calls are optimized (wallet Red).
    optimize_at_percent: Decimal = Decimal(90)
    #: What to do with a call whose projection does not fit in what is left.
    when_exhausted: ExhaustedAction = ExhaustedAction.BLOCK
    #: The emergency stop: every call is refused with 403.
    suspended: bool = False

    def __post_init__(self) -> None:
        if self.limit_usd is not None and self.limit_usd < 0:
            raise ValueError("limit_usd must not be negative")
        if not Decimal(0) <= self.warn_at_percent <= self.optimize_at_percent <= Decimal(100):
            raise ValueError("thresholds must satisfy 0 <= warn_at <= optimize_at <= 100")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one call and why."""

    decision: Decision
    state: WalletState
    reason: str


def state_of(policy: BudgetPolicy, committed: Decimal) -> WalletState:
    """The wallet's phase when ``committed`` USD (spent + reserved) are taken."""
    if policy.suspended:
        return WalletState.SUSPENDED
    if policy.limit_usd is None:
        return WalletState.GREEN
    if committed >= policy.limit_usd:
        return WalletState.EXHAUSTED
    return _phase(policy, _percent(committed, policy.limit_usd))


def _phase(policy: BudgetPolicy, percent: Decimal) -> WalletState:
    """Green, Yellow or Red at ``percent`` of the limit (below it: Exhausted is checked first)."""
    if percent >= policy.optimize_at_percent:
        return WalletState.RED
    if percent >= policy.warn_at_percent:
        return WalletState.YELLOW
    return WalletState.GREEN


def decide(policy: BudgetPolicy, committed: Decimal, projected: Decimal) -> Verdict:
    """Decide one call of projected cost ``projected`` against a wallet with ``committed`` USD
    already spent or reserved. The emergency stop is not decided here: the caller checks
    ``policy.suspended`` first and answers 403."""
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
    # What state_of(policy, after) says, with the percent the reason shows computed once.
    percent = _percent(after, limit)
    if policy.suspended:
        state = WalletState.SUSPENDED
    elif after >= limit:
        state = WalletState.EXHAUSTED
    else:
        state = _phase(policy, percent)
    if state is WalletState.RED or state is WalletState.EXHAUSTED:
        return Verdict(Decision.OPTIMIZE, state, f"{percent}% of the budget committed")
    if state is WalletState.YELLOW:
        return Verdict(Decision.WARN, state, f"{percent}% of the budget committed")
    return Verdict(Decision.ALLOW, state, f"{percent}% of the budget committed")


def _percent(amount: Decimal, limit: Decimal) -> Decimal:
    if limit == 0:
        return Decimal(100)
    return (amount * 100 / limit).quantize(Decimal("0.01"))


class Period(StrEnum):
    """How often a wallet starts again from zero (``Total``: never)."""

    DAILY = "Daily"
    WEEKLY = "Weekly"
    MONTHLY = "Monthly"
    TOTAL = "Total"


def period_start(period: Period, now: datetime, origin: datetime, zone: tzinfo = UTC) -> datetime:
    """The start of the period that contains ``now``: midnight, Monday or the 1st in ``zone``
    (UTC unless the wallet says otherwise). ``origin`` is when the wallet was created, the
    start of a ``Total`` period."""
    if period is Period.TOTAL:
        return origin.astimezone(UTC)
    now = now.astimezone(zone)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAILY:
        return midnight
    if period is Period.WEEKLY:
        return midnight - timedelta(days=midnight.weekday())
    return midnight.replace(day=1)  # Monthly
