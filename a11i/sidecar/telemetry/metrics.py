"""The sidecar's metrics: OpenTelemetry instruments, created once, fed by every call record.

Adapter: owns a ``MeterProvider`` whose Prometheus reader serves ``/a11i/metrics`` from a
registry of this sidecar's own, and whose optional second reader exports the same instruments
over OTLP (``a11i.sidecar.telemetry.traces.otlp_metric_readers``). Recording never raises into
the traffic:
the proxy calls it as an observer, and observers' failures are logged and swallowed. Model and
tool names pass the PII scrubber (``scrub``) before they become attributes.

A call's measurements are added up here (``_Pending``: plain dicts keyed by attribute sets
cached per model and decision) and handed to the OpenTelemetry instruments in one batch when a
reader collects (a scrape, an OTLP export), when ``_PENDING_LIMIT`` measurements wait, or at
shutdown. The SDK's per-measurement path (attributes frozen and hashed, locks, exemplar checks)
cost ~100 us per call; the sums and last values it is handed are the same.

The wallets are observed, not counted here: the proxy hands their snapshots to
``observe_wallets`` before a scrape (and on a timer for OTLP), and the budget gauges report the
last ones, with the time to exhaustion at the burn rate between them (``BurnRate``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from opentelemetry import metrics as metrics_api
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation, _Gauge
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from a11i.core.model import Usage
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


class _Pending:
    """Measurements not yet handed to the instruments: counter sums and gauge values by
    (instrument, attribute set), histogram values in order. Keys hold the attribute dicts
    themselves by identity (``Metrics._attributes`` caches one per set), so adding is a dict
    update."""

    __slots__ = ("gauges", "histograms", "sums")

    def __init__(self) -> None:
        self.sums: dict[tuple[Counter, int], tuple[float, Attributes]] = {}
        self.gauges: dict[tuple[_Gauge, int], tuple[float, Attributes]] = {}
        self.histograms: list[tuple[Histogram, float, Attributes]] = []

    def add(self, counter: Counter, value: float, attributes: Attributes) -> None:
        key = (counter, id(attributes))
        known = self.sums.get(key)
        self.sums[key] = (value if known is None else known[0] + value, attributes)

    def set(self, gauge: _Gauge, value: float, attributes: Attributes) -> None:
        self.gauges[(gauge, id(attributes))] = (value, attributes)

    def record(self, histogram: Histogram, value: float, attributes: Attributes) -> None:
        self.histograms.append((histogram, value, attributes))

    def apply(self) -> None:
        for (counter, _), (total, attributes) in self.sums.items():
            counter.add(total, attributes)
        for (gauge, _), (value, attributes) in self.gauges.items():
            gauge.set(value, attributes)
        for histogram, value, attributes in self.histograms:
            histogram.record(value, attributes)


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
    ) -> None:
        """``meter_provider``: the application's own (library mode), used instead of one of
        this sidecar's: its readers and exporters get the instruments, ``exposition`` is then
        empty, and ``shutdown`` leaves it running."""
        self.registry = CollectorRegistry()
        # Model and tool names come from request bodies: an agent (or a bug) writing a new
        # name per call would grow the series without end (10,000 names made a 40 MB scrape).
        self._models = _Labels(max_label_values)
        self._tools = _Labels(max_label_values)
        self._scrub = scrub
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
                    aggregation=ExplicitBucketHistogramAggregation(names.TOKEN_USAGE_BUCKETS),
                ),
                View(
                    instrument_name=names.CLIENT_OPERATION_DURATION,
                    aggregation=ExplicitBucketHistogramAggregation(names.DURATION_BUCKETS),
                ),
                *(
                    View(
                        instrument_name=name,
                        aggregation=ExplicitBucketHistogramAggregation(names.TOKEN_USAGE_BUCKETS),
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
        self._last_turn: float | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = _Pending()
        self._attribute_sets: dict[tuple[tuple[str, str], ...], Attributes] = {}

    def record(self, record: CallRecord) -> None:
        request = record.plan.request
        decision = record.verdict.decision.value
        model = self._models.of(self._scrub(request.model))
        operation = names.OPERATION[request.dialect]
        provider = tuple(self._semconv.provider(request.dialect.provider.value).items())
        by_call = (
            (names.GEN_AI_OPERATION_NAME, operation),
            *provider,
            (names.GEN_AI_REQUEST_MODEL, model),
            (names.DECISION, decision),
        )
        attributes = self._attributes(by_call)
        now = time.monotonic()
        with self._lock:
            pending = self._pending
            pending.add(self._decisions, 1, self._attributes(((names.DECISION, decision),)))
            if self._last_turn is not None:
                pending.set(self._velocity, now - self._last_turn, self._base)
            self._last_turn = now
            # Not by decision: a gauge keeps each attribute set's last value, and a stale 95%
            # under an old decision would keep the Dementia Curve (and its alert) up.
            pending.set(
                self._saturation,
                float(record.plan.saturation_percent),
                self._attributes(((names.GEN_AI_REQUEST_MODEL, model),)),
            )
            if record.plan.tool_results:
                self._tool_results.extend(result.is_error for result in record.plan.tool_results)
                failed = sum(self._tool_results)
                pending.set(self._tool_errors, failed / len(self._tool_results), self._base)
                for result in record.plan.tool_results:
                    tool = self._tools.of(self._scrub(result.name))
                    pending.add(
                        self._tool_outcomes,
                        1,
                        self._attributes(
                            (
                                (names.GEN_AI_TOOL_NAME, tool),
                                (names.TOOL_OUTCOME, result.outcome.value),
                            )
                        ),
                    )
            if record.optimization is not None:
                pending.add(self._saved, record.optimization.tokens_saved, attributes)
            pending.record(self._duration, record.duration_s, attributes)
            settled = record.settlement
            if settled is not None:
                self._record_usage(pending, by_call, attributes, settled.cost_usd, settled.usage)
            full = len(pending.histograms) >= _PENDING_LIMIT
        if full:
            self.flush()

    def _record_usage(
        self,
        pending: _Pending,
        by_call: tuple[tuple[str, str], ...],
        attributes: Attributes,
        cost_usd: Decimal,
        usage: Usage,
    ) -> None:
        pending.add(self._cost, float(cost_usd), attributes)
        for mission, convention, count in (
            ("prompt", "input", usage.input_tokens),
            ("completion", "output", usage.output_tokens),
        ):
            pending.add(
                self._tokens, count, self._attributes((*by_call, (names.TOKEN_TYPE, mission)))
            )
            if self._semconv.old:
                pending.record(
                    self._usage,
                    count,
                    self._attributes((*by_call, (names.GEN_AI_TOKEN_TYPE, convention))),
                )
        if self._semconv.new:
            by_modality = self._attributes(
                (*by_call, (names.GEN_AI_TOKEN_MODALITY, _MODALITY_UNKNOWN))
            )
            for name, count in (
                (names.INFERENCE_INPUT_TOKENS, usage.input_tokens),
                (names.INFERENCE_OUTPUT_TOKENS, usage.output_tokens),
                (names.INFERENCE_CACHE_READ_TOKENS, usage.cached_input_tokens),
                (names.INFERENCE_CACHE_WRITE_TOKENS, usage.cache_write_tokens),
            ):
                pending.add(self._inference[name], count, by_modality)
            pending.record(
                self._operation_tokens[names.INFERENCE_OPERATION_INPUT_TOKENS],
                usage.input_tokens,
                attributes,
            )
            pending.record(
                self._operation_tokens[names.INFERENCE_OPERATION_OUTPUT_TOKENS],
                usage.output_tokens,
                attributes,
            )

    def _attributes(self, pairs: tuple[tuple[str, str], ...]) -> Attributes:
        """The base attributes with ``pairs``, one dict per distinct set (label values are
        bounded by ``_Labels``, so the cache is too): the pending sums are keyed by it."""
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
            pending.apply()

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
