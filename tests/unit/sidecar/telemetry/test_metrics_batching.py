"""Measurements are added up by the sidecar and handed to the OpenTelemetry instruments in
batches: every reader still sees every call, exactly, and a sidecar nobody scrapes keeps a
bounded backlog."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from a11i.core.meter import Meter
from a11i.sidecar.meter import load_meter
from a11i.sidecar.telemetry import conventions as names
from a11i.sidecar.telemetry import metrics as metrics_module
from a11i.sidecar.telemetry.metrics import Metrics
from tests.unit.sidecar.telemetry.test_metrics_names import record, samples


@pytest.fixture(scope="module")
def meter() -> Meter:
    return load_meter()


def point_sums(reader: InMemoryMetricReader) -> dict[str, float]:
    """Each metric's value summed over its points (counters: the sum; histograms: the count)."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "count", None)
                    if value is None:
                        value = point.value  # type: ignore[union-attr]
                    found[metric.name] = found.get(metric.name, 0) + value
    return found


def test_a_scrape_sees_every_call_recorded_before_it(meter: Meter) -> None:
    metrics = Metrics(namespace="team-a", agent="bot", project="p")
    call = record(meter)
    for _ in range(7):
        metrics.record(call)
    found = samples(metrics)
    ((_, decided),) = found["a11i_budget_decisions_total"]
    assert decided == 7
    tokens = {
        labels["gen_ai_token_type"]: value
        for labels, value in found["gen_ai_client_token_usage_sum"]
    }
    assert tokens == {"input": 7000, "output": 350}
    metrics.record(call)
    ((_, decided),) = samples(metrics)["a11i_budget_decisions_total"]
    assert decided == 8


def test_a_second_reader_gets_the_same_totals_as_the_scrape(meter: Meter) -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(namespace="team-a", agent="bot", project="p", readers=[reader])
    call = record(meter)
    for _ in range(5):
        metrics.record(call)
    samples(metrics)  # the scrape hands the batch to both readers' storage
    for _ in range(3):
        metrics.record(call)
    assert call.settlement is not None
    totals = point_sums(reader)
    assert totals[names.DECISIONS] == 8
    assert totals[names.CLIENT_OPERATION_DURATION] == 8
    assert totals[names.COST_ESTIMATE] == pytest.approx(8 * float(call.settlement.cost_usd))


def test_an_unscraped_sidecar_hands_its_backlog_over_at_the_limit(
    meter: Meter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "_PENDING_LIMIT", 10)
    metrics = Metrics(namespace="team-a", agent="bot", project="p")
    call = record(meter)
    for _ in range(40):
        metrics.record(call)
        # duration + two token-usage histograms per call: never more than the limit waits
        assert len(metrics._pending.histograms) < 10 + 3
    ((_, decided),) = samples(metrics)["a11i_budget_decisions_total"]
    assert decided == 40


def test_recording_while_scrapes_run_loses_nothing(meter: Meter) -> None:
    metrics = Metrics(namespace="team-a", agent="bot", project="p")
    call = record(meter)
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            samples(metrics)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(2000):
            metrics.record(call)
    finally:
        done.set()
        scraper.join()
    found = samples(metrics)
    ((_, decided),) = found["a11i_budget_decisions_total"]
    assert decided == 2000
    ((_, count),) = found["gen_ai_client_operation_duration_seconds_count"]
    assert count == 2000
