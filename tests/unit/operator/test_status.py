"""The pure part of the AgentBudget operator: spec parsing, ownership, status, events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from a11i.core.errors import SettingsError
from a11i.core.policy import ExhaustedAction, Period, WalletState
from a11i.core.wallets import WalletSnapshot
from a11i.operator.settings import OperatorSettings
from a11i.operator.status import (
    BudgetRef,
    InvalidBudget,
    Reason,
    budget_status,
    condition,
    is_applied,
    money,
    owner_of,
    parse_spec,
    phase_notice,
    reset_notice,
    stream_id,
    tally,
    top_agents,
)

NOW = datetime(2026, 3, 14, 12, 0, 5, tzinfo=UTC)


def snapshot(
    spent: str = "0", reserved: str = "0", state: WalletState = WalletState.GREEN, **extra: Any
) -> WalletSnapshot:
    fields: dict[str, Any] = {
        "namespace": "agents",
        "agent": "a11i-operator",
        "limit_usd": Decimal(100),
        "spent_usd": Decimal(spent),
        "reserved_usd": Decimal(reserved),
        "period": Period.MONTHLY,
        "period_start": datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
        "state": state,
        **extra,
    }
    return WalletSnapshot(**fields)


# --- spec --------------------------------------------------------------------------------------


def test_the_example_spec_becomes_a_policy() -> None:
    spec = parse_spec(
        {
            "limit": "250.00",
            "period": "Monthly",
            "timeZone": "Europe/Berlin",
            "warnAtPercent": 75,
            "optimizeAtPercent": 90,
            "whenExhausted": "Block",
            "suspend": False,
        }
    )
    assert spec.policy.limit_usd == Decimal("250.00")
    assert spec.policy.warn_at_percent == 75
    assert spec.policy.optimize_at_percent == 90
    assert spec.policy.when_exhausted is ExhaustedAction.BLOCK
    assert spec.period is Period.MONTHLY
    assert spec.zone == "Europe/Berlin"
    assert not spec.selective
    assert not spec.suspend


def test_defaults_fill_what_the_server_would() -> None:
    spec = parse_spec({"limit": "5"})
    assert (spec.period, spec.zone) == (Period.MONTHLY, "UTC")
    assert spec.policy.warn_at_percent == Decimal(75)


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"limit": "1", "timeZone": "Mars/Olympus_Mons"}, Reason.INVALID_TIME_ZONE, "IANA"),
        ({"limit": "1", "timeZone": "Europe/Nowhere"}, Reason.INVALID_TIME_ZONE, "Europe/Nowhere"),
        ({"limit": "99999999"}, Reason.INVALID_SPEC, "too large"),
        ({"limit": "1", "warnAtPercent": 95, "optimizeAtPercent": 90}, Reason.INVALID_SPEC, "warn"),
        ({"limit": "-1"}, Reason.INVALID_SPEC, "not an amount"),
        ({"limit": "lots"}, Reason.INVALID_SPEC, "not an amount"),
        ({}, Reason.INVALID_SPEC, "missing"),
    ],
    ids=[
        "unknown-zone",
        "unknown-city",
        "limit-too-large",
        "thresholds",
        "negative",
        "nan",
        "none",
    ],
)
def test_what_the_crd_cannot_check_is_refused_with_a_reason(
    spec: dict[str, Any], reason: Reason, words: str
) -> None:
    with pytest.raises(InvalidBudget) as caught:
        parse_spec(spec)
    assert caught.value.reason is reason
    assert words in caught.value.message


def test_a_selector_budget_is_per_agent() -> None:
    spec = parse_spec(
        {"limit": "40", "agentSelector": {"matchLabels": {"a": "b"}}, "perAgentLimit": "5"}
    )
    assert spec.selective
    assert spec.per_agent_limit == Decimal(5)


# --- ownership, money, conditions -------------------------------------------------------------


def test_the_oldest_namespace_wide_budget_owns_the_wallet() -> None:
    first = BudgetRef("2026-01-01T00:00:00Z", "zeta", "1")
    second = BudgetRef("2026-01-02T00:00:00Z", "alpha", "2")
    tie = BudgetRef("2026-01-01T00:00:00Z", "beta", "3")
    assert owner_of([second, first]) == first
    assert owner_of([first, tie]) == tie  # the same second: the name decides
    assert owner_of([]) is None


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0", "0"),
        ("-3", "0"),
        ("250.00", "250"),
        ("1.000000001", "1.000000001"),
        ("0.0000000001", "0"),
        ("1E+3", "1000"),
        ("0.5", "0.5"),
    ],
)
def test_money_is_a_plain_decimal_string(amount: str, text: str) -> None:
    assert money(Decimal(amount)) == text


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    old = condition("Ready", True, "WalletConfigured", "m", 1, datetime(2026, 1, 1, tzinfo=UTC))
    same = condition("Ready", True, "WalletConfigured", "m2", 2, NOW, [old])
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same["observedGeneration"] == 2
    flipped = condition("Ready", False, "Conflict", "m", 2, NOW, [old])
    assert flipped["lastTransitionTime"] == "2026-03-14T12:00:05Z"


def test_applied_means_configured_for_this_generation() -> None:
    ready = condition("Ready", True, Reason.CONFIGURED, "m", 3, NOW)
    assert is_applied({"conditions": [ready]}, 3)
    assert not is_applied({"conditions": [ready]}, 4)
    conflict = condition("Ready", False, Reason.CONFLICT, "m", 3, NOW)
    assert not is_applied({"conditions": [conflict]}, 3)
    assert not is_applied({}, 1)


# --- spend per agent, status ------------------------------------------------------------------


def test_spend_is_tallied_per_agent_of_the_namespace_only() -> None:
    events = [
        {"kind": "call", "namespace": "agents", "agent": "a", "cost_usd": "1.5"},
        {"kind": "call", "namespace": "agents", "agent": "b", "cost_usd": "2"},
        {"kind": "call", "namespace": "other", "agent": "a", "cost_usd": "100"},
        {"kind": "call", "namespace": "agents", "agent": "a", "cost_usd": "junk"},
        {"kind": "stop", "namespace": "agents", "agent": "a", "cost_usd": "9"},
        {"kind": "call", "namespace": "agents", "agent": "a", "cost_usd": "0.5"},
    ]
    totals = tally({}, events, "agents")
    assert totals == {"a": Decimal(2), "b": Decimal(2)}
    assert tally(totals, events[:1], "agents")["a"] == Decimal("3.5")
    assert top_agents(totals) == [{"agent": "a", "spent": "2"}, {"agent": "b", "spent": "2"}]
    many = {f"agent-{i:02}": Decimal(i) for i in range(15)}
    top = top_agents(many)
    assert len(top) == 10
    assert top[0] == {"agent": "agent-14", "spent": "14"}


def test_a_stream_id_starts_at_the_millisecond() -> None:
    assert stream_id(datetime(2026, 1, 1, tzinfo=UTC)) == "1767225600000-0"


def test_the_status_reports_the_wallet() -> None:
    status = budget_status(
        snapshot("80", "5", WalletState.RED),
        [{"agent": "a", "spent": "80"}],
        now=NOW,
        generation=4,
        conditions=[],
    )
    assert status == {
        "phase": "Red",
        "spent": "80",
        "reserved": "5",
        "remaining": "15",
        "periodStart": "2026-02-28T23:00:00Z",
        "topAgents": [{"agent": "a", "spent": "80"}],
        "lastSyncTime": "2026-03-14T12:00:05Z",
        "observedGeneration": 4,
        "conditions": [],
    }


# --- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "state", "expected"),
    [
        (None, WalletState.GREEN, None),
        ("Green", WalletState.GREEN, None),
        ("Yellow", WalletState.YELLOW, None),
        ("Green", WalletState.YELLOW, ("Warning", "BudgetWarning")),
        (None, WalletState.YELLOW, ("Warning", "BudgetWarning")),
        ("Yellow", WalletState.RED, ("Warning", "BudgetOptimizing")),
        ("Green", WalletState.EXHAUSTED, ("Warning", "BudgetExhausted")),
        ("Red", WalletState.SUSPENDED, ("Warning", "BudgetSuspended")),
        ("Suspended", WalletState.GREEN, ("Normal", "BudgetResumed")),
        ("Suspended", WalletState.RED, ("Warning", "BudgetResumed")),
        ("Exhausted", WalletState.GREEN, ("Normal", "BudgetGreen")),
    ],
    ids=lambda value: str(value),
)
def test_a_phase_change_is_one_event(
    previous: str | None, state: WalletState, expected: tuple[str, str] | None
) -> None:
    notice = phase_notice(previous, snapshot("76", state=state))
    if expected is None:
        assert notice is None
    else:
        assert notice is not None
        assert (notice.type, notice.reason) == expected
        assert f"-> {state.value}" in notice.message
        assert "76.0% of $100 committed" in notice.message


def test_a_new_period_is_one_event() -> None:
    current = snapshot()
    assert reset_notice(None, current) is None
    assert reset_notice("2026-02-28T23:00:00Z", current) is None
    notice = reset_notice("2026-01-31T23:00:00Z", current)
    assert notice is not None
    assert (notice.type, notice.reason) == ("Normal", "PeriodReset")
    assert "2026-02-28T23:00:00Z" in notice.message


# --- settings ----------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    settings = OperatorSettings.from_env(
        {
            "A11I_REDIS_URL": "redis://r:6379/0",
            "A11I_OPERATOR_STATUS_INTERVAL": "2.5",
            "A11I_OPERATOR_NAMESPACES": "agents, research-*,",
            "A11I_OPERATOR_PEERING": "standalone",
            "A11I_REDIS_TIMEOUT": "0.5",
        }
    )
    assert settings == OperatorSettings(
        redis_url="redis://r:6379/0",
        status_interval_s=2.5,
        namespaces=("agents", "research-*"),
        peering=None,
        redis_timeout_s=0.5,
    )
    assert not settings.clusterwide
    defaults = OperatorSettings.from_env({"A11I_REDIS_URL": "redis://r"})
    assert (defaults.peering, defaults.status_interval_s, defaults.clusterwide) == (
        "a11i",
        10.0,
        True,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "A11I_REDIS_URL is not set"),
        ({"A11I_REDIS_URL": "redis://r", "A11I_OPERATOR_STATUS_INTERVAL": "0"}, "positive"),
        ({"A11I_REDIS_URL": "redis://r", "A11I_REDIS_TIMEOUT": "soon"}, "A11I_REDIS_TIMEOUT"),
        (
            {"A11I_REDIS_URL": "redis://r", "A11I_OPERATOR_SIDECAR_REDIS_SECRET": "Bad_Name"},
            "A11I_OPERATOR_SIDECAR_REDIS_SECRET must be the name of a Secret",
        ),
    ],
    ids=["no-redis", "zero-interval", "bad-timeout", "bad-secret-name"],
)
def test_bad_settings_say_what_to_fix(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        OperatorSettings.from_env(env)


def test_the_operator_refuses_to_start_without_redis(capsys: pytest.CaptureFixture[str]) -> None:
    from a11i.operator.run import main

    assert main([], env={}) == 2
    assert "A11I_REDIS_URL is not set" in capsys.readouterr().err


def test_a11i_operator_without_redis_says_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from a11i.cli import main

    monkeypatch.delenv("A11I_REDIS_URL", raising=False)
    assert main(["operator"]) == 2
    assert "A11I_REDIS_URL" in capsys.readouterr().err


@pytest.mark.parametrize("liveness", ["8080", "0.0.0.0:8080/healthz", "ftp://x/healthz"])
def test_a_liveness_that_is_no_url_is_refused(
    liveness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from a11i.operator.run import main

    env = {"A11I_REDIS_URL": "redis://127.0.0.1:1/0", "A11I_OPERATOR_LIVENESS": liveness}
    assert main([], env=env) == 2
    assert "--liveness must be a URL" in capsys.readouterr().err
    assert main(["--liveness", liveness], env={"A11I_REDIS_URL": "redis://127.0.0.1:1/0"}) == 2
