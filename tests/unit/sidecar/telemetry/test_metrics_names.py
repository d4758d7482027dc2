"""The metrics' names under each OTEL_SEMCONV_STABILITY_OPT_IN choice, and the budget gauges, read
from the Prometheus exposition of an in-process meter provider (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from a11i.core.meter import Meter
from a11i.core.model import Dialect, Usage
from a11i.core.policy import Decision, Period, Verdict, WalletState
from a11i.core.wallets import WalletSnapshot
from a11i.sidecar.call import CallRecord
from a11i.sidecar.meter import load_meter
from a11i.sidecar.telemetry.conventions import NameSet, Semconv
from a11i.sidecar.telemetry.metrics import Metrics

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


def samples(metrics: Metrics) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def record(meter: Meter) -> CallRecord:
    plan = meter.plan(
        Dialect.ANTHROPIC_MESSAGES,
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "status?"}],
        },
    )
    usage = Usage(
        input_tokens=1000, output_tokens=50, cached_input_tokens=600, cache_write_tokens=200
    )
    return CallRecord(
        plan=plan,
        verdict=Verdict(Decision.WARN, WalletState.YELLOW, "80% of the limit reached"),
        settlement=meter.settle(plan, usage),
        status=200,
        streamed=False,
        complete=True,
        duration_s=0.2,
    )


@pytest.mark.parametrize(
    ("names", "old", "new"),
    [(NameSet.OLD, True, False), (NameSet.NEW, False, True), (NameSet.BOTH, True, True)],
    ids=["old", "new", "both"],
)
def test_token_metrics_under_each_choice(
    meter: Meter, names: NameSet, old: bool, new: bool
) -> None:
    metrics = Metrics(namespace="team-a", agent="bot", project="p", semconv=Semconv(names))
    metrics.record(record(meter))
    found = samples(metrics)
    assert ("gen_ai_client_token_usage_count" in found) is old
    for name, value in (
        ("gen_ai_client_inference_usage_input_tokens_total", 1000),
        ("gen_ai_client_inference_usage_output_tokens_total", 50),
        ("gen_ai_client_inference_usage_cache_read_input_tokens_total", 600),
        ("gen_ai_client_inference_usage_cache_write_input_tokens_total", 200),
    ):
        assert (name in found) is new, name
        if new:
            ((labels, counted),) = found[name]
            assert counted == value
            assert labels["gen_ai_token_modality"] == "unknown"
    ((labels, _),) = found["gen_ai_client_operation_duration_seconds_count"]
    assert ("gen_ai_system" in labels) is old
    assert ("gen_ai_provider_name" in labels) is new
    # The mission's names whatever the choice.
    assert sum(v for _, v in found["ai_token_usage_counter_total"]) == 1050
    ((labels, decided),) = found["a11i_budget_decisions_total"]
    assert (labels["a11i_decision"], decided) == ("warn", 1)


def snapshot(wallet: str, spent: str, limit: str | None = "10") -> WalletSnapshot:
    return WalletSnapshot(
        namespace=wallet,
        agent="bot",
        limit_usd=Decimal(limit) if limit is not None else None,
        spent_usd=Decimal(spent),
        reserved_usd=Decimal("0.5"),
        period=Period.DAILY,
        period_start=datetime(2026, 12, 6, tzinfo=UTC),
        state=WalletState.GREEN,
    )


def test_budget_gauges_per_wallet() -> None:
    metrics = Metrics(namespace="team-a", agent="bot", project="p")
    assert "a11i_budget_limit_USD" not in samples(metrics)  # nothing observed yet
    metrics.observe_wallets([snapshot("team-a", "1"), snapshot("team-a/bot", "1", None)], 0.0)
    metrics.observe_wallets([snapshot("team-a", "4"), snapshot("team-a/bot", "2", None)], 60.0)
    found = samples(metrics)

    def by_wallet(name: str) -> dict[str, float]:
        return {labels["a11i_wallet"]: value for labels, value in found.get(name, [])}

    assert by_wallet("a11i_budget_limit_USD") == {"team-a": 10}
    assert by_wallet("a11i_budget_spent_USD") == {"team-a": 4, "team-a/bot": 2}
    assert by_wallet("a11i_budget_reserved_USD") == {"team-a": 0.5, "team-a/bot": 0.5}
    assert by_wallet("a11i_budget_remaining_USD") == {"team-a": 5.5}
    # 3 USD a minute with 5.5 left: 110 s. The agent's wallet has no limit: never runs out.
    assert by_wallet("a11i_budget_time_to_exhaustion_seconds") == {"team-a": pytest.approx(110.0)}
