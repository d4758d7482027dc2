"""The pure part of the AgentBudget operator: spec in, policy out; snapshot in, status out.

No kopf, no Redis, no clock: the handlers in ``a11i.operator.budgets`` read the object, the wallet
and the time, call these functions once, and apply what they return (a Redis write, a status
patch, a Kubernetes Event). Everything here is unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from a11i.core.policy import BudgetPolicy, ExhaustedAction, Period, WalletState
from a11i.core.wallets import WalletSnapshot

#: The most top spenders a status lists (the CRD's maxItems).
TOP_AGENTS = 10
#: A Redis wallet counts nano-dollars in Lua doubles: exact below 2**53 of them.
MAX_LIMIT_USD = Decimal(2**53) / 10**9
_NANO = Decimal("0.000000001")


class Reason(StrEnum):
    """Reasons of the ``Ready`` condition (CamelCase, as metav1.Condition wants them)."""

    CONFIGURED = "WalletConfigured"
    CONFLICT = "Conflict"
    INVALID_TIME_ZONE = "InvalidTimeZone"
    INVALID_SPEC = "InvalidSpec"
    WALLET_UNAVAILABLE = "WalletUnavailable"
    PER_AGENT = "AppliedBySidecars"


class InvalidBudget(ValueError):
    """A spec the CRD accepted but the operator cannot apply; ``reason`` goes to the condition."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """An AgentBudget's spec, parsed and checked."""

    policy: BudgetPolicy
    period: Period
    zone: str
    #: The spec has an agentSelector: a per-agent budget, not the namespace's wallet.
    selective: bool
    per_agent_limit: Decimal | None
    suspend: bool


def parse_spec(spec: Mapping[str, Any]) -> BudgetSpec:
    """The spec as the server stored it (defaults filled in); ``InvalidBudget`` says what the
    CRD could not check: whether the time zone exists, and whether Redis can hold the limit."""
    zone = str(spec.get("timeZone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidBudget(
            Reason.INVALID_TIME_ZONE,
            f"timeZone {zone!r} is not a known IANA time zone: use a name from the tz database "
            "such as UTC, Europe/Berlin or America/New_York",
        ) from exc
    limit = _amount(spec.get("limit"), "limit")
    if limit is None:
        raise InvalidBudget(Reason.INVALID_SPEC, "spec.limit is missing")
    if limit >= MAX_LIMIT_USD:
        raise InvalidBudget(
            Reason.INVALID_SPEC,
            f"limit ${limit} is too large for a shared wallet: it must stay below "
            f"${MAX_LIMIT_USD.quantize(Decimal('0.01'), rounding=ROUND_DOWN)}",
        )
    try:
        policy = BudgetPolicy(
            limit_usd=limit,
            warn_at_percent=Decimal(int(spec.get("warnAtPercent", 75))),
            optimize_at_percent=Decimal(int(spec.get("optimizeAtPercent", 90))),
            when_exhausted=ExhaustedAction(str(spec.get("whenExhausted", "Block"))),
        )
        period = Period(str(spec.get("period", "Monthly")))
    except (TypeError, ValueError) as exc:
        raise InvalidBudget(Reason.INVALID_SPEC, f"the spec cannot be applied: {exc}") from exc
    return BudgetSpec(
        policy=policy,
        period=period,
        zone=zone,
        selective=spec.get("agentSelector") is not None,
        per_agent_limit=_amount(spec.get("perAgentLimit"), "perAgentLimit"),
        suspend=bool(spec.get("suspend", False)),
    )


def _amount(value: object, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidBudget(Reason.INVALID_SPEC, f"{field} {value!r} is not an amount") from exc
    if not amount.is_finite() or amount < 0:
        raise InvalidBudget(Reason.INVALID_SPEC, f"{field} {value!r} is not an amount")
    return amount


# --- ownership of the namespace's wallet -------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class BudgetRef:
    """A namespace-wide AgentBudget, ordered oldest first (the name breaks a tie)."""

    created: str
    name: str
    uid: str


def owner_of(budgets: Iterable[BudgetRef]) -> BudgetRef | None:
    """The namespace-wide AgentBudget that owns the namespace's wallet: the oldest."""
    return min(budgets, default=None)


# --- money, times and conditions ---------------------------------------------------------------


def money(amount: Decimal) -> str:
    """USD as the status writes it: a decimal string of at most 9 decimals, no exponent, no
    trailing zeros, never negative (``"0"``, ``"250"``, ``"1.000000001"``)."""
    if amount <= 0:
        return "0"
    text = format(amount.quantize(_NANO, rounding=ROUND_DOWN), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A metav1.Condition; ``lastTransitionTime`` moves only when the status changes."""
    status = "True" if ok else "False"
    since = timestamp(now)
    for old in previous:
        if old.get("type") == type_ and old.get("status") == status:
            since = str(old.get("lastTransitionTime") or since)
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def is_applied(status: Mapping[str, Any], generation: int) -> bool:
    """Whether the status says this generation of the spec is already in the wallet."""
    for item in status.get("conditions") or ():
        if item.get("type") == "Ready":
            return bool(
                item.get("status") == "True"
                and item.get("reason") == Reason.CONFIGURED
                and item.get("observedGeneration") == generation
            )
    return False


# --- spend per agent ---------------------------------------------------------------------------


def tally(
    totals: Mapping[str, Decimal], events: Iterable[Mapping[str, str]], namespace: str
) -> dict[str, Decimal]:
    """Add the cost of this namespace's call events
    (``a11i.sidecar.telemetry.events.call_event``) to ``totals`` per agent; events of other
    namespaces and malformed costs are skipped."""
    result = dict(totals)
    for event in events:
        if event.get("kind", "call") != "call" or event.get("namespace") != namespace:
            continue
        try:
            cost = Decimal(event.get("cost_usd", "0"))
        except InvalidOperation:
            continue
        if not cost.is_finite() or cost <= 0:
            continue
        agent = event.get("agent") or "unknown"
        result[agent] = result.get(agent, Decimal(0)) + cost
    return result


def top_agents(totals: Mapping[str, Decimal], limit: int = TOP_AGENTS) -> list[dict[str, str]]:
    """The agents that spent most, highest first (the name breaks a tie)."""
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [{"agent": agent[:253], "spent": money(spent)} for agent, spent in ranked[:limit]]


def stream_id(moment: datetime) -> str:
    """The first Redis stream id at or after ``moment`` (ids are milliseconds-sequence)."""
    return f"{int(moment.timestamp() * 1000)}-0"


# --- the status and the events -----------------------------------------------------------------


def budget_status(
    snapshot: WalletSnapshot,
    top: list[dict[str, str]],
    *,
    now: datetime,
    generation: int,
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    """The status of a namespace-wide AgentBudget from its wallet."""
    remaining = snapshot.remaining_usd
    return {
        "phase": snapshot.state.value,
        "spent": money(snapshot.spent_usd),
        "reserved": money(snapshot.reserved_usd),
        "remaining": money(remaining if remaining is not None else Decimal(0)),
        "periodStart": timestamp(snapshot.period_start),
        "topAgents": top,
        "lastSyncTime": timestamp(now),
        "observedGeneration": generation,
        "conditions": conditions,
    }


@dataclass(frozen=True, slots=True)
class Notice:
    """A Kubernetes Event to post on the AgentBudget."""

    type: str  # Normal | Warning
    reason: str
    message: str


_PHASE_NOTICES: dict[WalletState, tuple[str, str, str]] = {
    WalletState.YELLOW: ("Warning", "BudgetWarning", "calls are marked x-a11i-decision: warn"),
    WalletState.RED: ("Warning", "BudgetOptimizing", "calls are optimized before they are sent"),
    WalletState.EXHAUSTED: (
        "Warning",
        "BudgetExhausted",
        "calls that do not fit are handled as whenExhausted says",
    ),
    WalletState.SUSPENDED: (
        "Warning",
        "BudgetSuspended",
        "the emergency stop is on: every call is refused with 403",
    ),
    WalletState.GREEN: ("Normal", "BudgetGreen", "calls are allowed"),
}


def phase_notice(previous: str | None, snapshot: WalletSnapshot) -> Notice | None:
    """The Event for a change of phase; None when the phase did not change, or when a brand-new
    status starts Green (nothing happened worth telling)."""
    current = snapshot.state
    if previous == current.value or (previous is None and current is WalletState.GREEN):
        return None
    kind, reason, effect = _PHASE_NOTICES[current]
    if previous == WalletState.SUSPENDED.value and current is not WalletState.SUSPENDED:
        reason = "BudgetResumed"
    committed = snapshot.spent_usd + snapshot.reserved_usd
    limit = snapshot.limit_usd
    share = ""
    if limit is not None and limit > 0:
        percent = (committed * 100 / limit).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
        share = f" ({percent}% of ${money(limit)} committed)"
    message = f"phase {previous or 'none'} -> {current.value}{share}: {effect}"
    return Notice(kind, reason, message)


def reset_notice(previous_start: str | None, snapshot: WalletSnapshot) -> Notice | None:
    """The Event for a new period: the wallet's period start moved past the one in the status."""
    current = timestamp(snapshot.period_start)
    if previous_start is None or previous_start >= current:
        return None
    return Notice(
        "Normal",
        "PeriodReset",
        f"a new {snapshot.period.value.lower()} period started at {current} "
        f"(the previous one started at {previous_start}); spend starts again from zero",
    )
