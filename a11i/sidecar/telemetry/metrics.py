"""The sidecar's metrics: OpenTelemetry instruments, created once, fed by every call record.

Adapter: owns a ``MeterProvider`` whose Prometheus reader serves ``/a11i/metrics`` from a
registry of this sidecar's own, and whose optional second reader exports the same instruments
over OTLP (``a11i.sidecar.telemetry.traces.otlp_metric_readers``). Recording never raises into
the traffic:
the proxy calls it as an observer, and observers' failures are logged and swallowed. Model and
tool names pass the PII scrubber (``scrub``) before they become attributes.

A call's measurements are added up here (``_Pending``: plain dicts keyed by streams, an
instrument under one attribute set, built once per dialect, model and decision) and handed to
the OpenTelemetry instruments in one batch when a reader collects (a scrape, an OTLP export),
when ``_PENDING_LIMIT`` histogram values wait, or at shutdown: one measurement per stream,
histograms included. This sidecar's own provider aggregates its histograms with
``_BatchedHistogram``, which takes a stream's values in one measurement and adds them one by
one, so every point a reader collects (bucket counts, sum, min, max) is the one of each value
recorded alone. The SDK's per-measurement path (attributes cleaned, hashed and copied per
reader, a lock, a dataclass) cost ~50 us per call; an application's provider (library mode)
is still handed each histogram value alone.

The wallets are observed, not counted here: the proxy hands their snapshots to
``observe_wallets`` before a scrape (and on a timer for OTLP), and the budget gauges report the
last ones, with the time to exhaustion at the burn rate between them (``BurnRate``).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from opentelemetry import metrics as metrics_api
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation, _Gauge
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.aggregation import (
    _Aggregation,
    _ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics._internal.exemplar import ExemplarReservoirBuilder
from opentelemetry.sdk.metrics._internal.instrument import _Instrument
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import Attributes as OtelAttributes
from prometheus_client import CollectorRegistry, generate_latest

from a11i.core.analysis import ToolOutcome
from a11i.core.model import Dialect
from a11i.core.policy import Decision
from a11i.core.wallets import WalletSnapshot
from a11i.sidecar.call import CallRecord
from a11i.sidecar.telemetry import conventions as names

if TYPE_CHECKING:
    from a11i.sidecar.telemetry.traces import ExportStats

#: The burn rate is measured over the spend of at most this many seconds.
BURN_WINDOW_S: Final = 900.0
#: A modality a proxy cannot tell apart from the usage it reads.
_MODALITY_UNKNOWN: Final = "unknown"
#: Histogram values kept before they are handed to the instruments without waiting for a reader
#: (bounds the memory of a sidecar nobody scrapes).
_PENDING_LIMIT: Final = 2048

Attributes = dict[str, str]


_I = TypeVar("_I", Counter, _Gauge, Histogram)


class _Stream(Generic[_I]):
    """One instrument under one attribute set: where a measurement goes. One object per
    distinct pair (cached in ``Metrics._streams``), so the pending measurements are keyed by it
    with an identity hash."""

    __slots__ = ("attributes", "instrument")

    def __init__(self, instrument: _I, attributes: Attributes) -> None:
        self.instrument: _I = instrument
        self.attributes = attributes


class _Values(float):
    """The values of one histogram stream since the last hand-over, as one measurement: a float
    (the last value, which the SDK checks as it checks any) carrying them all, which
    ``_BatchedHistogram`` adds one by one."""

    __slots__ = ("values",)

    values: list[float]


class _BatchedHistogram(_ExplicitBucketHistogramAggregation):
    """The SDK's explicit-bucket histogram, which also takes a ``_Values`` at once: each value
    is added to the sum in turn and counted in its bucket, min and max kept, exactly as that many
    ``aggregate`` calls would (the point a reader collects is the same, to the bit); only the
    SDK's work per measurement (attributes cleaned, hashed and copied per reader, a lock and a
    dataclass) is done once for them all."""

    def aggregate(self, measurement: Measurement, should_sample_exemplar: bool = True) -> None:
        batch = measurement.value
        if not isinstance(batch, _Values):
            super().aggregate(measurement, should_sample_exemplar)
            return
        values = batch.values
        boundaries = self._boundaries
        with self._lock:
            # (The SDK's annotations know these fields only by their first values.)
            counts: list[int] = self._value or self._get_empty_bucket_counts()
            total: float = self._sum
            for value in values:
                total += value
                counts[bisect_left(boundaries, value)] += 1
            self._value = counts  # type: ignore[assignment]
            self._sum = total  # type: ignore[assignment]
            if self._record_min_max:
                self._min = min(self._min, *values)
                self._max = max(self._max, *values)
        if should_sample_exemplar:
            for value in values:
                self._sample_exemplar(replace(measurement, value=value), True)


class _BatchedHistogramAggregation(ExplicitBucketHistogramAggregation):
    """``ExplicitBucketHistogramAggregation`` (the views' buckets) made of ``_BatchedHistogram``:
    what this sidecar's own provider uses for its histograms."""

    def _create_aggregation(
        self,
        instrument: _Instrument,
        attributes: OtelAttributes,
        reservoir_factory: Callable[[type[_Aggregation[Any]]], ExemplarReservoirBuilder],
        start_time_unix_nano: int,
    ) -> _Aggregation[Any]:
        return _BatchedHistogram(
            attributes,
            # A histogram instrument is synchronous: its measurements are deltas.
            AggregationTemporality.DELTA,
            start_time_unix_nano,
            reservoir_factory(_ExplicitBucketHistogramAggregation),
            self._boundaries,
            self._record_min_max,
        )


class _Pending:
    """Measurements not yet handed to the instruments: counter sums and gauge values by stream,
    histogram values by stream in the order they came."""

    __slots__ = ("gauges", "histograms", "sums", "values")

    def __init__(self) -> None:
        self.sums: dict[_Stream[Counter], float] = {}
        self.gauges: dict[_Stream[_Gauge], float] = {}
        self.histograms: dict[_Stream[Histogram], list[float]] = {}
        #: Histogram values waiting (bounded by ``_PENDING_LIMIT``).
        self.values = 0

    def add(self, stream: _Stream[Counter], value: float) -> None:
        known = self.sums.get(stream)
        self.sums[stream] = value if known is None else known + value

    def set(self, stream: _Stream[_Gauge], value: float) -> None:
        self.gauges[stream] = value

    def record(self, stream: _Stream[Histogram], value: float) -> None:
        known = self.histograms.get(stream)
        if known is None:
            self.histograms[stream] = [value]
        else:
            known.append(value)
        self.values += 1

    def apply(self, batched: bool) -> None:
        """``batched``: the histograms aggregate ``_Values`` (this sidecar's own provider); an
        application's provider is handed each value."""
        for summed, total in self.sums.items():
            summed.instrument.add(total, summed.attributes)
        for gauged, value in self.gauges.items():
            gauged.instrument.set(value, gauged.attributes)
        for stream, values in self.histograms.items():
            histogram = stream.instrument
            if batched and all(0 <= value < math.inf for value in values):
                batch = _Values(values[-1])
                batch.values = values
                histogram.record(batch, stream.attributes)
            else:  # one by one: the SDK warns of (and drops) a negative or infinite value
                for value in values:
                    histogram.record(value, stream.attributes)


@dataclass(frozen=True, slots=True)
class _Seen:
    at: float
    spent: Decimal


class BurnRate:
    """How fast one wallet is spent: its spend observed over the last ``window_s`` seconds.
    Pure bookkeeping over the snapshots it is given, with the clock passed in."""

    def __init__(self, window_s: float = BURN_WINDOW_S) -> None:
        self._window_s = window_s
        self._seen: deque[_Seen] = deque()

    def observe(self, spent: Decimal, now: float) -> None:
        if self._seen and spent < self._seen[-1].spent:
            self._seen.clear()  # a new period began: the old spend says nothing about it
        self._seen.append(_Seen(now, spent))
        while len(self._seen) > 2 and now - self._seen[1].at >= self._window_s:
            self._seen.popleft()

    def usd_per_second(self) -> float | None:
        """The spend per second between the oldest and the newest snapshot in the window;
        None until two snapshots a moment apart are known."""
        if len(self._seen) < 2:
            return None
        first, last = self._seen[0], self._seen[-1]
        elapsed = last.at - first.at
        if elapsed <= 0:
            return None
        return float(last.spent - first.spent) / elapsed

    def seconds_left(self, remaining: Decimal | None) -> float | None:
        """Seconds until ``remaining`` is spent at this rate; None while nothing burns or the
        wallet has no limit."""
        rate = self.usd_per_second()
        if remaining is None or rate is None or rate <= 0:
            return None
        return float(remaining) / rate


@dataclass(frozen=True, slots=True)
class _Series:
    """The streams one kind of call (dialect, model label, decision) feeds; the semantic
    conventions' names not in force have none."""

    decisions: _Stream[Counter]
    saturation: _Stream[_Gauge]
    duration: _Stream[Histogram]
    saved: _Stream[Counter]
    cost: _Stream[Counter]
    #: ``a11i.token.usage`` by type: prompt, completion.
    tokens: tuple[_Stream[Counter], ...]
    #: ``gen_ai.client.token.usage`` (old names) by type: input, output.
    usage: tuple[_Stream[Histogram], ...]
    #: ``gen_ai.client.inference.*`` (new names): input, output, cache read, cache write.
    inference: tuple[_Stream[Counter], ...]
    #: ``gen_ai.client.inference.operation.*`` (new names): input, output.
    operation_tokens: tuple[_Stream[Histogram], ...]


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
        semconv: names.Semconv | None = None,
        max_label_values: int = 64,
        meter_provider: metrics_api.MeterProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``meter_provider``: the application's own (library mode), used instead of one of
        this sidecar's: its readers and exporters get the instruments, ``exposition`` is then
        empty, and ``shutdown`` leaves it running. ``clock``: the seconds between turns
        (loop velocity) are read from it."""
        self.registry = CollectorRegistry()
        # Model and tool names come from request bodies: an agent (or a bug) writing a new
        # name per call would grow the series without end (10,000 names made a 40 MB scrape).
        self._models = _Labels(max_label_values)
        self._tools = _Labels(max_label_values)
        self._scrub = scrub
        self._clock = clock
        self._export_stats = export_stats
        self._semconv = semconv or names.Semconv()
        self._wallet_lock = threading.Lock()
        self._wallets: dict[str, WalletSnapshot] = {}
        self._burn: dict[str, BurnRate] = {}
        self._provider: metrics_api.MeterProvider = meter_provider or MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self.registry), *readers],
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
                    aggregation=_BatchedHistogramAggregation(names.TOKEN_USAGE_BUCKETS),
                ),
                View(
                    instrument_name=names.CLIENT_OPERATION_DURATION,
                    aggregation=_BatchedHistogramAggregation(names.DURATION_BUCKETS),
                ),
                *(
                    View(
                        instrument_name=name,
                        aggregation=_BatchedHistogramAggregation(names.TOKEN_USAGE_BUCKETS),
                    )
                    for name in (
                        names.INFERENCE_OPERATION_INPUT_TOKENS,
                        names.INFERENCE_OPERATION_OUTPUT_TOKENS,
                    )
                ),
            ],
        )
        self._owned = meter_provider is None
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
        # The buckets twice: as views of this sidecar's provider, and as advice an application's
        # provider (library mode) follows unless its own views say otherwise.
        self._usage = meter.create_histogram(
            names.CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per call",
            explicit_bucket_boundaries_advisory=names.TOKEN_USAGE_BUCKETS,
        )
        self._inference = {
            name: meter.create_counter(name, unit="{token}", description=description)
            for name, description in (
                (names.INFERENCE_INPUT_TOKENS, "Input tokens, cached ones included"),
                (names.INFERENCE_OUTPUT_TOKENS, "Output tokens"),
                (names.INFERENCE_CACHE_READ_TOKENS, "Input tokens read from the provider cache"),
                (names.INFERENCE_CACHE_WRITE_TOKENS, "Input tokens written to the provider cache"),
            )
        }
        self._operation_tokens = {
            name: meter.create_histogram(
                name,
                unit="{token}",
                description=description,
                explicit_bucket_boundaries_advisory=names.TOKEN_USAGE_BUCKETS,
            )
            for name, description in (
                (names.INFERENCE_OPERATION_INPUT_TOKENS, "Input tokens per call"),
                (names.INFERENCE_OPERATION_OUTPUT_TOKENS, "Output tokens per call"),
            )
        }
        self._decisions = meter.create_counter(
            names.DECISIONS,
            unit="{call}",
            description="Metered calls by the guard's decision (allow, warn, optimize, block)",
        )
        for name, description, field_of in (
            (names.BUDGET_LIMIT, "The wallet's limit this period", _limit),
            (names.BUDGET_SPENT, "Settled spend this period", _spent),
            (names.BUDGET_RESERVED, "Held by calls in flight", _reserved),
            (names.BUDGET_REMAINING, "What is left to spend this period", _remaining),
        ):
            meter.create_observable_gauge(
                name,
                callbacks=[self._wallet_gauge(field_of)],
                unit="USD",
                description=description,
            )
        meter.create_observable_gauge(
            names.BUDGET_EXHAUSTION,
            callbacks=[self._exhaustion],
            unit="s",
            description="Seconds until the wallet is empty at the burn rate of the last minutes",
        )
        self._duration = meter.create_histogram(
            names.CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of each call",
            explicit_bucket_boundaries_advisory=names.DURATION_BUCKETS,
        )
        meter.create_observable_counter(
            names.TELEMETRY_EXPORT_FAILURES,
            callbacks=[self._export_failures],
            unit="{export}",
            description="OTLP exports that failed or timed out, by signal (calls are unaffected)",
        )
        self._tool_results: deque[bool] = deque(maxlen=tool_window)
        #: The failed ones among them (counted as they come, not summed per call).
        self._tool_failures = 0
        self._last_turn: float | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = _Pending()
        self._attribute_sets: dict[tuple[tuple[str, str], ...], Attributes] = {}
        self._streams: dict[tuple[object, tuple[tuple[str, str], ...]], _Stream[Any]] = {}
        # Built once per kind of call and per tool result (label values are bounded by
        # ``_Labels``, so these are too): a call's measurements are then dict updates.
        self._series: dict[tuple[Dialect, str, Decision], _Series] = {}
        self._tool_series: dict[tuple[str, ToolOutcome], _Stream[Counter]] = {}
        self._velocity_stream = self._stream(self._velocity, ())
        self._tool_errors_stream = self._stream(self._tool_errors, ())

    def record(self, record: CallRecord) -> None:
        plan = record.plan
        request = plan.request
        model = self._models.of(self._scrub(request.model))
        key = (request.dialect, model, record.verdict.decision)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._series_of(*key)
        tools = [
            (self._tool_stream(result.name, result.outcome), result.is_error)
            for result in plan.tool_results
        ]
        settled = record.settlement
        now = self._clock()
        with self._lock:
            pending = self._pending
            pending.add(series.decisions, 1)
            if self._last_turn is not None:
                pending.set(self._velocity_stream, now - self._last_turn)
            self._last_turn = now
            # Not by decision: a gauge keeps each attribute set's last value, and a stale 95%
            # under an old decision would keep the Dementia Curve (and its alert) up.
            pending.set(series.saturation, float(plan.saturation_percent))
            if tools:
                window = self._tool_results
                for _, failed in tools:
                    if len(window) == window.maxlen:
                        self._tool_failures -= window[0]  # leaves the window
                    window.append(failed)
                    self._tool_failures += failed
                pending.set(self._tool_errors_stream, self._tool_failures / len(window))
                for outcome, _ in tools:
                    pending.add(outcome, 1)
            if record.optimization is not None:
                pending.add(series.saved, record.optimization.tokens_saved)
            pending.record(series.duration, record.duration_s)
            if settled is not None:
                usage = settled.usage
                pending.add(series.cost, float(settled.cost_usd))
                counts = (usage.input_tokens, usage.output_tokens)
                for counter, count in zip(series.tokens, counts, strict=True):
                    pending.add(counter, count)
                for histogram, count in zip(series.usage, counts, strict=False):
                    pending.record(histogram, count)
                for counter, count in zip(
                    series.inference,
                    (*counts, usage.cached_input_tokens, usage.cache_write_tokens),
                    strict=False,
                ):
                    pending.add(counter, count)
                for histogram, count in zip(series.operation_tokens, counts, strict=False):
                    pending.record(histogram, count)
            full = pending.values >= _PENDING_LIMIT
        if full:
            self.flush()

    def _series_of(self, dialect: Dialect, model: str, decision: Decision) -> _Series:
        """The streams of the calls of one dialect, model (label) and decision."""
        by_call = (
            (names.GEN_AI_OPERATION_NAME, names.OPERATION[dialect]),
            *self._semconv.provider(dialect.provider.value).items(),
            (names.GEN_AI_REQUEST_MODEL, model),
            (names.DECISION, decision.value),
        )
        old, new = self._semconv.old, self._semconv.new
        return _Series(
            decisions=self._stream(self._decisions, ((names.DECISION, decision.value),)),
            saturation=self._stream(self._saturation, ((names.GEN_AI_REQUEST_MODEL, model),)),
            duration=self._stream(self._duration, by_call),
            saved=self._stream(self._saved, by_call),
            cost=self._stream(self._cost, by_call),
            tokens=tuple(
                self._stream(self._tokens, (*by_call, (names.TOKEN_TYPE, mission)))
                for mission in ("prompt", "completion")
            ),
            usage=tuple(
                self._stream(self._usage, (*by_call, (names.GEN_AI_TOKEN_TYPE, convention)))
                for convention in (("input", "output") if old else ())
            ),
            inference=tuple(
                self._stream(
                    self._inference[name],
                    (*by_call, (names.GEN_AI_TOKEN_MODALITY, _MODALITY_UNKNOWN)),
                )
                for name in (
                    (
                        names.INFERENCE_INPUT_TOKENS,
                        names.INFERENCE_OUTPUT_TOKENS,
                        names.INFERENCE_CACHE_READ_TOKENS,
                        names.INFERENCE_CACHE_WRITE_TOKENS,
                    )
                    if new
                    else ()
                )
            ),
            operation_tokens=tuple(
                self._stream(self._operation_tokens[name], by_call)
                for name in (
                    (
                        names.INFERENCE_OPERATION_INPUT_TOKENS,
                        names.INFERENCE_OPERATION_OUTPUT_TOKENS,
                    )
                    if new
                    else ()
                )
            ),
        )

    def _tool_stream(self, name: str, outcome: ToolOutcome) -> _Stream[Counter]:
        tool = self._tools.of(self._scrub(name))
        stream = self._tool_series.get((tool, outcome))
        if stream is None:
            stream = self._tool_series[(tool, outcome)] = self._stream(
                self._tool_outcomes,
                ((names.GEN_AI_TOOL_NAME, tool), (names.TOOL_OUTCOME, outcome.value)),
            )
        return stream

    def _stream(self, instrument: _I, pairs: tuple[tuple[str, str], ...]) -> _Stream[_I]:
        """The one stream of ``instrument`` under the base attributes with ``pairs``: calls of
        two series that share a set (every model's calls of one decision) add to one sum, and
        a gauge's last value is the last call's."""
        stream = self._streams.get((instrument, pairs))
        if stream is None:
            stream = self._streams[(instrument, pairs)] = _Stream(
                instrument, self._attributes(pairs)
            )
        return stream

    def _attributes(self, pairs: tuple[tuple[str, str], ...]) -> Attributes:
        """The base attributes with ``pairs``, one dict per distinct set."""
        cached = self._attribute_sets.get(pairs)
        if cached is None:
            cached = self._attribute_sets[pairs] = {**self._base, **dict(pairs)}
        return cached

    def flush(self) -> None:
        """Hand the pending measurements to the instruments (before a reader collects: every
        observable callback calls this first, so scrapes and OTLP exports see every call)."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, _Pending()
            pending.apply(batched=self._owned)

    # -- wallets ---------------------------------------------------------------------------
    def observe_wallets(self, snapshots: Iterable[WalletSnapshot], now: float) -> None:
        """The wallets as they are now (``now``: ``time.monotonic()``), for the budget gauges.
        Called on the loop; the gauges are read from the scrape or the OTLP reader's thread."""
        with self._wallet_lock:
            for snapshot in snapshots:
                self._wallets[snapshot.namespace] = snapshot
                self._burn.setdefault(snapshot.namespace, BurnRate()).observe(
                    snapshot.spent_usd, now
                )

    def _wallet_gauge(
        self, field_of: Callable[[WalletSnapshot], Decimal | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            self.flush()
            with self._wallet_lock:
                wallets = list(self._wallets.values())
            return [
                Observation(float(value), {**self._base, names.WALLET: snapshot.namespace})
                for snapshot in wallets
                if (value := field_of(snapshot)) is not None
            ]

        return observe

    def _exhaustion(self, _options: CallbackOptions) -> Iterable[Observation]:
        self.flush()
        with self._wallet_lock:
            pairs = [
                (key, self._burn[key].seconds_left(snapshot.remaining_usd))
                for key, snapshot in self._wallets.items()
            ]
        return [
            Observation(seconds, {**self._base, names.WALLET: key})
            for key, seconds in pairs
            if seconds is not None
        ]

    def _export_failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        self.flush()
        stats = self._export_stats
        if stats is None:
            return []
        return [
            Observation(stats.traces.failed_exports, {names.SIGNAL: "traces"}),
            Observation(stats.metrics.failed_exports, {names.SIGNAL: "metrics"}),
            Observation(stats.logs.failed_exports, {names.SIGNAL: "logs"}),
        ]

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every instrument (empty when the instruments
        belong to an application's provider)."""
        if not self._owned:
            return b""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.flush()
        if self._owned:
            assert isinstance(self._provider, MeterProvider)
            self._provider.shutdown()


def _limit(snapshot: WalletSnapshot) -> Decimal | None:
    return snapshot.limit_usd


def _spent(snapshot: WalletSnapshot) -> Decimal | None:
    return snapshot.spent_usd


def _reserved(snapshot: WalletSnapshot) -> Decimal | None:
    return snapshot.reserved_usd


def _remaining(snapshot: WalletSnapshot) -> Decimal | None:
    return snapshot.remaining_usd


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
