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
        return _UNLIMITED
    limit = policy.limit_usd
    if after > limit:
        remaining = max(limit - committed, Decimal(0))
        reason = f"projected cost ${projected} exceeds the ${remaining} left of the ${limit} budget"
        if policy.when_exhausted is ExhaustedAction.WARN:
            return Verdict(Decision.WARN, WalletState.EXHAUSTED, reason)
        return Verdict(Decision.BLOCK, state_of(policy, committed), reason)
    return admitted(policy, after)


#: The verdict of every call to a wallet without a limit (frozen: one serves them all).
_UNLIMITED = Verdict(Decision.ALLOW, WalletState.GREEN, "no budget limit")

#: The last verdict ``admitted`` made: the policy, the percent its reason shows, whether that
#: call exhausted the wallet, and the verdict. One tuple, replaced whole.
_last_admitted: tuple[BudgetPolicy, Decimal, bool, Verdict] | None = None


def admitted(policy: BudgetPolicy, after: Decimal) -> Verdict:
    """``decide``'s verdict for a call that fits: ``after`` (committed + projected) is at most
    the limit. It depends on the value of ``after`` alone, so the wallet, which knows that sum
    exactly in nano-dollars, hands it in without making the two Decimals ``decide`` adds.

    The state is what ``state_of(policy, after)`` says, from the percent the reason shows
    computed once. Consecutive calls mostly commit the same percent of the budget (it moves by
    0.01 points), and a verdict is frozen: the last one is given again while the policy, the
    percent and exhaustion are the same (a negative zero percent, whose text differs, aside)."""
    global _last_admitted
    limit = policy.limit_usd
    if limit is None:
        return _UNLIMITED
    percent = _percent(after, limit)
    exhausted = after >= limit
    known = _last_admitted
    unsigned = not percent.is_signed()
    if (
        known is not None
        and known[0] is policy
        and known[2] is exhausted
        and unsigned
        and known[1] == percent
    ):
        return known[3]
    if policy.suspended:
        state = WalletState.SUSPENDED
    elif exhausted:
        state = WalletState.EXHAUSTED
    else:
        state = _phase(policy, percent)
    reason = f"{percent}% of the budget committed"
    if state is WalletState.RED or state is WalletState.EXHAUSTED:
        verdict = Verdict(Decision.OPTIMIZE, state, reason)
    elif state is WalletState.YELLOW:
        verdict = Verdict(Decision.WARN, state, reason)
    else:
        verdict = Verdict(Decision.ALLOW, state, reason)
    if unsigned:
        _last_admitted = (policy, percent, exhausted, verdict)
    return verdict


_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")


def _percent(amount: Decimal, limit: Decimal) -> Decimal:
    if limit == 0:
        return _HUNDRED
    return (amount * 100 / limit).quantize(_CENT)


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
