"""Measurements are added up by the sidecar and handed to the OpenTelemetry instruments in
batches: every reader still sees every call, exactly, and a sidecar nobody scrapes keeps a
bounded backlog."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from a11i.core.analysis import ToolResult
from a11i.core.meter import Meter
from a11i.core.model import Dialect, Usage
from a11i.core.policy import Decision, Verdict, WalletState
from a11i.sidecar.call import CallRecord, Optimization
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
        # five histogram values per call (duration, tokens by both conventions' names): never
        # as many as the limit wait
        assert metrics._pending.values < 10
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


def varied_records(meter: Meter, count: int) -> list[CallRecord]:
    """Calls of two models under two decisions, with and without tool results (one an error)
    and optimizations, durations whose float sums depend on their order (0.1 + 0.2 + 0.3), and
    one impossible duration the SDK drops (negative)."""
    base = record(meter)
    plans = [
        base.plan,
        meter.plan(
            Dialect.OPENAI_CHAT,
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": "pods?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "get_pods", "arguments": "{}"},
                            },
                            {
                                "id": "c2",
                                "type": "function",
                                "function": {"name": "get_logs", "arguments": "{}"},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "checkout 0/1"},
                    {"role": "tool", "tool_call_id": "c2", "content": "Error: timed out"},
                ],
            },
        ),
    ]
    records = []
    for index in range(count):
        plan = plans[index % 2]
        usage = Usage(
            input_tokens=plan.input.tokens + index % 13,
            output_tokens=index * 37 % 3000,
            cached_input_tokens=index % 3 * 4,
        )
        records.append(
            replace(
                base,
                plan=plan,
                verdict=Verdict(
                    Decision.ALLOW if index % 3 else Decision.WARN, WalletState.GREEN, "ok"
                ),
                settlement=meter.settle(plan, usage) if index % 11 else None,
                duration_s=-1.0 if index == 5 else (0.1, 0.2, 0.3, 7.25, 1e-3)[index % 5] * index,
                optimization=(
                    Optimization(("dedupe",), tokens_saved=index) if index % 4 == 0 else None
                ),
            )
        )
    return records


def test_the_exposition_is_the_one_of_every_value_handed_over_alone(
    meter: Meter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar's batched histograms (and summed counters) against the same instruments of
    an application's provider, which is handed each value on its own: the same Prometheus text
    to the byte (bucket counts, sums, counts, labels) after every scrape, and the same points
    (min and max too) for a second reader."""
    monkeypatch.setattr(metrics_module, "_PENDING_LIMIT", 23)  # hand-overs between scrapes too
    now = [0.0]  # one clock, read by both: the same seconds between turns

    def clock() -> float:
        return now[0]

    ours = InMemoryMetricReader()
    batched = Metrics(namespace="team-a", agent="bot", project="p", readers=[ours], clock=clock)
    registry = CollectorRegistry()
    theirs = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry), theirs],
        resource=Resource(
            {
                "service.name": "a11i-sidecar",
                names.K8S_NAMESPACE_NAME: "team-a",
                names.K8S_POD_NAME: "bot",
            }
        ),
    )
    one_by_one = Metrics(
        namespace="team-a", agent="bot", project="p", meter_provider=provider, clock=clock
    )
    for index, call in enumerate(varied_records(meter, 300)):
        now[0] = index * 1.7
        batched.record(call)
        one_by_one.record(call)
        if index % 97 == 96:
            one_by_one.flush()
            assert batched.exposition() == generate_latest(registry)
    one_by_one.flush()
    exposition = batched.exposition()
    assert exposition == generate_latest(registry)
    assert b"gen_ai_client_operation_duration_seconds_bucket{" in exposition
    assert points(ours) == points(theirs)
    provider.shutdown()
    batched.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[object, ...]]]:
    """Every metric's points without their timestamps."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[object, ...]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = sorted(
                    (
                        (
                            sorted(point.attributes.items()),
                            *(
                                (point.count, point.sum, point.bucket_counts, point.min, point.max)
                                if isinstance(point, HistogramDataPoint)
                                else (point.value,)
                            ),
                        )
                        for point in metric.data.data_points
                    ),
                    key=repr,
                )
    return found


def test_the_tool_error_rate_is_the_share_of_failures_in_the_window(meter: Meter) -> None:
    metrics = Metrics(namespace="team-a", agent="bot", project="p", tool_window=3)
    call = record(meter)

    def rate_after(*failed: bool) -> float:
        results = tuple(
            ToolResult(f"c{index}", error, 5, "get_pods") for index, error in enumerate(failed)
        )
        metrics.record(replace(call, plan=replace(call.plan, tool_results=results)))
        ((_, rate),) = samples(metrics)["ai_tool_error_rate"]
        return rate

    assert rate_after(False) == 0
    assert rate_after(True) == 1 / 2
    assert rate_after(True) == 2 / 3
    assert rate_after(False) == 2 / 3  # the first success left the window
    assert rate_after(False) == 1 / 3
    assert rate_after(True, True) == 2 / 3  # two in one call: both counted, two left
