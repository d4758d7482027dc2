"""The sidecar's metrics: OpenTelemetry instruments, created once, fed by every call record.

Adapter: owns a ``MeterProvider`` whose Prometheus reader serves ``/a11i/metrics`` from a
registry of this sidecar's own, and whose optional second reader exports the same instruments
over OTLP (``a11i.sidecar.telemetry.traces.otlp_metric_readers``). Recording never raises into
the traffic:
the proxy calls it as an observer, and observers' failures are logged and swallowed. Model and
tool names pass the PII scrubber (``scrub``) before they become attributes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from a11i.sidecar.call import CallRecord
from a11i.sidecar.telemetry import conventions as names

if TYPE_CHECKING:
    from a11i.sidecar.telemetry.traces import ExportStats


class Metrics:
    """The instruments of one sidecar and the state behind its gauges."""

    def __init__(
        self,
        *,
        namespace: str,
        agent: str,
        project: str,
        resource: Resource | None = None,
        readers: Sequence[MetricReader] = (),
        scrub: Callable[[str], str] = str,
        export_stats: ExportStats | None = None,
        tool_window: int = 100,
        max_label_values: int = 64,
    ) -> None:
        self.registry = CollectorRegistry()
        # Model and tool names come from request bodies: an agent (or a bug) writing a new
        # name per call would grow the series without end (10,000 names made a 40 MB scrape).
        self._models = _Labels(max_label_values)
        self._tools = _Labels(max_label_values)
        reader = PrometheusMetricReader(registry=self.registry)
        self._scrub = scrub
        self._export_stats = export_stats
        self._provider = MeterProvider(
            metric_readers=[reader, *readers],
            resource=resource
            or Resource(
                {
                    "service.name": "a11i-sidecar",
                    names.K8S_NAMESPACE_NAME: namespace,
                    names.K8S_POD_NAME: agent,
                }
            ),
            views=[
                View(
                    instrument_name=names.CLIENT_TOKEN_USAGE,
                    aggregation=ExplicitBucketHistogramAggregation(names.TOKEN_USAGE_BUCKETS),
                ),
                View(
                    instrument_name=names.CLIENT_OPERATION_DURATION,
                    aggregation=ExplicitBucketHistogramAggregation(names.DURATION_BUCKETS),
                ),
            ],
        )
        meter = self._provider.get_meter("a11i.sidecar")
        self._base = {
            names.K8S_NAMESPACE_NAME: namespace,
            names.AGENT: agent,
            names.PROJECT: project,
        }
        self._tokens = meter.create_counter(
            names.TOKEN_USAGE, unit="{token}", description="Tokens of metered calls"
        )
        self._cost = meter.create_counter(
            names.COST_ESTIMATE, unit="USD", description="Settled cost of metered calls"
        )
        self._saturation = meter.create_gauge(
            names.CONTEXT_SATURATION,
            unit="%",
            description="Input tokens of the last call as a share of the model's context window",
        )
        self._tool_errors = meter.create_gauge(
            names.TOOL_ERROR_RATE,
            unit="1",
            description="Share of failed tool results among the last ones the agent sent back",
        )
        self._tool_outcomes = meter.create_counter(
            names.TOOL_RESULTS,
            unit="{result}",
            description="Tool results the agent sent back, by outcome (success, error, timeout)",
        )
        self._velocity = meter.create_gauge(
            names.LOOP_VELOCITY, unit="s", description="Seconds between the agent's last turns"
        )
        self._saved = meter.create_counter(
            names.OPTIMIZER_TOKENS_SAVED,
            unit="{token}",
            description="Input tokens the optimizer removed from calls",
        )
        self._usage = meter.create_histogram(
            names.CLIENT_TOKEN_USAGE, unit="{token}", description="Tokens used per call"
        )
        self._duration = meter.create_histogram(
            names.CLIENT_OPERATION_DURATION, unit="s", description="Duration of each call"
        )
        meter.create_observable_counter(
            names.TELEMETRY_EXPORT_FAILURES,
            callbacks=[self._export_failures],
            unit="{export}",
            description="OTLP exports that failed or timed out, by signal (calls are unaffected)",
        )
        self._tool_results: deque[bool] = deque(maxlen=tool_window)
        self._last_turn: float | None = None

    def record(self, record: CallRecord) -> None:
        request = record.plan.request
        attributes = {
            **self._base,
            names.GEN_AI_OPERATION_NAME: names.OPERATION[request.dialect],
            names.GEN_AI_PROVIDER_NAME: request.dialect.provider.value,
            names.GEN_AI_REQUEST_MODEL: self._models.of(self._scrub(request.model)),
            names.DECISION: record.verdict.decision.value,
        }
        now = time.monotonic()
        if self._last_turn is not None:
            self._velocity.set(now - self._last_turn, self._base)
        self._last_turn = now
        # Not by decision: a gauge keeps each attribute set's last value, and a stale 95% under
        # an old decision would keep the Dementia Curve (and its alert) up.
        self._saturation.set(
            float(record.plan.saturation_percent),
            {**self._base, names.GEN_AI_REQUEST_MODEL: attributes[names.GEN_AI_REQUEST_MODEL]},
        )
        if record.plan.tool_results:
            self._tool_results.extend(result.is_error for result in record.plan.tool_results)
            failed = sum(self._tool_results)
            self._tool_errors.set(failed / len(self._tool_results), self._base)
            for result in record.plan.tool_results:
                self._tool_outcomes.add(
                    1,
                    {
                        **self._base,
                        names.GEN_AI_TOOL_NAME: self._tools.of(self._scrub(result.name)),
                        names.TOOL_OUTCOME: result.outcome.value,
                    },
                )
        if record.optimization is not None:
            self._saved.add(record.optimization.tokens_saved, attributes)
        self._duration.record(record.duration_s, attributes)
        settled = record.settlement
        if settled is None:
            return
        self._cost.add(float(settled.cost_usd), attributes)
        for mission, convention, count in (
            ("prompt", "input", settled.usage.input_tokens),
            ("completion", "output", settled.usage.output_tokens),
        ):
            self._tokens.add(count, {**attributes, names.TOKEN_TYPE: mission})
            self._usage.record(count, {**attributes, names.GEN_AI_TOKEN_TYPE: convention})

    def _export_failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        stats = self._export_stats
        if stats is None:
            return []
        return [
            Observation(stats.traces.failed_exports, {names.SIGNAL: "traces"}),
            Observation(stats.metrics.failed_exports, {names.SIGNAL: "metrics"}),
            Observation(stats.logs.failed_exports, {names.SIGNAL: "logs"}),
        ]

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every instrument."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self._provider.shutdown()


#: The label value of every name beyond a metric's first ``max_label_values``.
OTHER_LABEL: Final = "other"


class _Labels:
    """The first ``limit`` distinct values of a label, and ``other`` for any later one."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def of(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER_LABEL
        self._seen.add(value)
        return value
