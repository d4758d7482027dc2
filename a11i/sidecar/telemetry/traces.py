"""Traces and decision logs of the sidecar: one ``agent_turn`` span per metered call, one
``tool_result_ingest`` span per tool result it carries, one trace per agent loop, exported over
OTLP in the background.

Adapter: owns the OpenTelemetry tracer and logger providers, their OTLP exporters (gRPC or HTTP,
from the ``OTEL_*`` settings) and the scrubber every exported string passes first (attributes
are built by ``a11i.sidecar.telemetry.attributes``). Telemetry never hurts traffic: spans are
made after the
answer is on its way, buffered in a bounded queue and exported from a worker thread; an export
that fails or times out is logged (at most once a minute per signal) and counted, never retried
on the path of a call. The provider keys the sidecar holds are scrubbed from everything, always.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from a11i import __version__
from a11i.core.analysis import client_ids
from a11i.core.headers import KeyCustody
from a11i.core.loops import LoopKey, loop_key
from a11i.core.model import Dialect
from a11i.core.scrub import TIMEOUT_REDACTION, Scrubber
from a11i.sidecar.call import CallRecord
from a11i.sidecar.config import TelemetryConfig
from a11i.sidecar.settings import OtlpExport, OtlpProtocol, SidecarSettings, TelemetrySettings
from a11i.sidecar.telemetry import conventions as names
from a11i.sidecar.telemetry.attributes import (
    Attributes,
    Conversation,
    Tagging,
    conversation_of,
    decision_record,
    tool_call_events,
    tool_choice_records,
    tool_result_attributes,
    turn_attributes,
)

log = logging.getLogger(__name__)
_R = TypeVar("_R")
_V = TypeVar("_V")
#: The decision logs, also written here when they are on (pod logs carry them without OTLP).
decisions_log = logging.getLogger("a11i.decisions")

#: Agent loops remembered at most (the least recently seen is forgotten first).
MAX_LOOPS: Final = 10_000
#: Scrubbed model and tool names remembered (they repeat on every call).
_NAME_CACHE: Final = 4096
#: Tool calls (and Responses API answers) remembered at most, to link what comes back to
#: the turn that asked for it.
MAX_REMEMBERED: Final = 10_000
#: A failing export is logged at most this often per signal.
_LOG_EVERY_S: Final = 60.0


def telemetry_resource(settings: SidecarSettings, scrub: Callable[[str], str] = str) -> Resource:
    """The resource of every span, metric and log record: who the agent is. Built from the
    settings only (``Resource.create`` would read the process environment again); the agent's
    name, which comes from outside a11i (a pod name), passes ``scrub`` as model names do."""
    agent = scrub(settings.agent)
    attributes: dict[str, str] = dict(settings.telemetry.resource_attributes)
    attributes.update(
        {
            names.SERVICE_NAME: settings.telemetry.service_name,
            names.SERVICE_VERSION: __version__,
            names.SERVICE_INSTANCE_ID: f"{settings.namespace}/{agent}",
            names.K8S_NAMESPACE_NAME: settings.namespace,
            names.K8S_POD_NAME: agent,
            names.AGENT: agent,
            names.PROJECT: settings.project,
        }
    )
    return Resource(attributes)


# -- export accounting ------------------------------------------------------------------------
@dataclass
class SignalStats:
    """Exports of one signal since start (written by exporter threads, read anywhere)."""

    exported: int = 0
    failed_exports: int = 0
    _last_log: float = field(default=0.0, repr=False)

    def as_json(self) -> dict[str, int]:
        return {"exported": self.exported, "failed_exports": self.failed_exports}


@dataclass
class ExportStats:
    traces: SignalStats = field(default_factory=SignalStats)
    metrics: SignalStats = field(default_factory=SignalStats)
    logs: SignalStats = field(default_factory=SignalStats)

    def as_json(self) -> dict[str, dict[str, int]]:
        return {
            "traces": self.traces.as_json(),
            "metrics": self.metrics.as_json(),
            "logs": self.logs.as_json(),
        }


def _failed(stats: SignalStats, signal: str, endpoint: str, why: str) -> None:
    stats.failed_exports += 1
    now = time.monotonic()
    if now - stats._last_log >= _LOG_EVERY_S:
        stats._last_log = now
        log.warning(
            "OTLP export of %s to %s failed (%s); calls are unaffected, %d failed exports so far",
            signal,
            endpoint,
            why,
            stats.failed_exports,
        )


def _counted(
    stats: SignalStats,
    signal: str,
    endpoint: str,
    export: Callable[[], _R],
    success: _R,
    failure: _R,
    items: int,
) -> _R:
    """Run one export of a signal and count it: exported items, or a failure logged at most
    once a minute. An exporter that raises must never take its worker thread down."""
    try:
        result = export()
    except Exception as error:
        _failed(stats, signal, endpoint, type(error).__name__)
        return failure
    if result is success:
        stats.exported += items
    else:
        _failed(stats, signal, endpoint, "refused or unreachable")
    return result


class _CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, stats: SignalStats, endpoint: str) -> None:
        self._inner, self._stats, self._endpoint = inner, stats, endpoint

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return _counted(
            self._stats,
            "traces",
            self._endpoint,
            lambda: self._inner.export(spans),
            SpanExportResult.SUCCESS,
            SpanExportResult.FAILURE,
            len(spans),
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, stats: SignalStats, endpoint: str) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner, self._stats, self._endpoint = inner, stats, endpoint

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        # One export carries every instrument: counted as one.
        return _counted(
            self._stats,
            "metrics",
            self._endpoint,
            lambda: self._inner.export(metrics_data, timeout_millis=timeout_millis),
            MetricExportResult.SUCCESS,
            MetricExportResult.FAILURE,
            1,
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


class _CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, stats: SignalStats, endpoint: str) -> None:
        self._inner, self._stats, self._endpoint = inner, stats, endpoint

    def export(self, batch: Sequence[object]) -> LogRecordExportResult:
        return _counted(
            self._stats,
            "logs",
            self._endpoint,
            lambda: self._inner.export(batch),  # type: ignore[arg-type]
            LogRecordExportResult.SUCCESS,
            LogRecordExportResult.FAILURE,
            len(batch),
        )

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _span_exporter(export: OtlpExport) -> SpanExporter:
    if export.protocol is OtlpProtocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=export.endpoint,
            insecure=export.insecure,
            headers=export.headers,
            timeout=export.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=export.endpoint, headers=dict(export.headers), timeout=export.timeout_s
    )


def _metric_exporter(export: OtlpExport) -> MetricExporter:
    if export.protocol is OtlpProtocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=export.endpoint,
            insecure=export.insecure,
            headers=export.headers,
            timeout=export.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=export.endpoint, headers=dict(export.headers), timeout=export.timeout_s
    )


def _log_exporter(export: OtlpExport) -> LogRecordExporter:
    if export.protocol is OtlpProtocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )

        return GrpcLogExporter(
            endpoint=export.endpoint,
            insecure=export.insecure,
            headers=export.headers,
            timeout=export.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(
        endpoint=export.endpoint, headers=dict(export.headers), timeout=export.timeout_s
    )


def otlp_metric_readers(settings: TelemetrySettings, stats: ExportStats) -> list[MetricReader]:
    """The periodic OTLP reader of the metrics, when an endpoint is configured."""
    if settings.metrics is None:
        return []
    exporter = _CountingMetricExporter(
        _metric_exporter(settings.metrics), stats.metrics, settings.metrics.endpoint
    )
    interval_ms = settings.metric_interval_s * 1000
    return [
        PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=interval_ms,
            export_timeout_millis=settings.metrics.timeout_s * 1000,
        )
    ]


def _sampler(settings: TelemetrySettings) -> Sampler:
    ratio = settings.sampler_arg
    match settings.sampler:
        case "always_on":
            return ALWAYS_ON
        case "always_off":
            return ALWAYS_OFF
        case "traceidratio":
            return TraceIdRatioBased(ratio)
        case "parentbased_always_off":
            return ParentBased(ALWAYS_OFF)
        case "parentbased_traceidratio":
            return ParentBasedTraceIdRatio(ratio)
    return ParentBased(ALWAYS_ON)


# -- agent loops ------------------------------------------------------------------------------
@dataclass
class _Loop:
    context: SpanContext
    length: int
    last_seen: float
    last_end_ns: int
    turns: int = 1


class LoopTraces:
    """The trace of each live agent loop: its first turn's span context, which later turns
    join. Bounded; a loop silent for ``idle_s`` is forgotten, and its next call starts anew."""

    def __init__(self, *, idle_s: float, max_loops: int = MAX_LOOPS) -> None:
        self._idle_s = idle_s
        self._max = max_loops
        self._loops: OrderedDict[str, _Loop] = OrderedDict()

    def __len__(self) -> int:
        return len(self._loops)

    def join(self, key: LoopKey, now: float) -> _Loop | None:
        """The live loop a call continues, or None when it starts a new one."""
        loop = self._loops.get(key.key)
        if loop is None:
            return None
        restarted = not key.named and key.length <= loop.length
        if now - loop.last_seen > self._idle_s or restarted:
            del self._loops[key.key]
            return None
        self._loops.move_to_end(key.key)
        return loop

    def alias(self, key: LoopKey, alias: LoopKey) -> None:
        """Let calls under ``alias`` join the loop of ``key`` (the same ``_Loop``)."""
        loop = self._loops.get(key.key)
        if loop is not None:
            self._loops[alias.key] = loop
            while len(self._loops) > self._max:
                self._loops.popitem(last=False)

    def begin(self, key: LoopKey, context: SpanContext, now: float, end_ns: int) -> None:
        self._loops[key.key] = _Loop(context, key.length, now, end_ns)
        self._loops.move_to_end(key.key)
        while len(self._loops) > self._max:
            self._loops.popitem(last=False)


class _Bounded(OrderedDict[str, _V]):
    """A map that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


# -- the telemetry of one sidecar -------------------------------------------------------------
class Telemetry:
    """Spans and decision logs of one sidecar, and the scrubber in force."""

    def __init__(
        self,
        settings: SidecarSettings,
        config: TelemetryConfig,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        """``tracer_provider``: the application's own (library mode), used instead of one
        a11i would make from the OTLP settings; the application exports and shuts it down."""
        self.settings = settings.telemetry
        self.stats = ExportStats()
        #: The held keys scrubbed from everything: those at start and every rotated one since.
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._name_cache: OrderedDict[str, str] = OrderedDict()
        #: The telemetry thread's (spans, logs, metrics, events written apart from a settle).
        self.scrubber = Scrubber(config.pii_rules)
        #: The event loop's (an event that rides in its Redis settle): a scrubber's per-call
        #: state (its budget, its pending counts) is not shared between threads.
        self._loop_scrubber = Scrubber(config.pii_rules)
        self._log_scrubber = Scrubber(config.pii_rules)
        self.hold_keys(settings.custody)
        # The resource's attributes (the agent's name among them) pass the scrubber too.
        self.resource = telemetry_resource(settings, self.scrubber.scrub)
        self.tagging = self._tagging(config)
        self._loops = LoopTraces(idle_s=self.settings.loop_idle_s)
        #: Tool call id -> the ``agent_turn`` whose answer asked for the tool.
        self._tool_requests: _Bounded[SpanContext] = _Bounded(MAX_REMEMBERED)
        #: Responses API answer id -> the conversation (and loop) it belongs to.
        self._responses: _Bounded[Conversation] = _Bounded(MAX_REMEMBERED)
        self._propagator = TraceContextTextMapPropagator()
        self._tracer_provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        traces = self.settings.traces
        if tracer_provider is not None:
            self._tracer = tracer_provider.get_tracer(names.SCOPE, __version__)
        elif traces is not None:
            self._tracer_provider = TracerProvider(
                resource=self.resource, sampler=_sampler(self.settings)
            )
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    _CountingSpanExporter(
                        _span_exporter(traces), self.stats.traces, traces.endpoint
                    ),
                    max_queue_size=self.settings.span_queue_size,
                    schedule_delay_millis=self.settings.span_schedule_delay_s * 1000,
                    max_export_batch_size=min(
                        self.settings.span_batch_size, self.settings.span_queue_size
                    ),
                    export_timeout_millis=traces.timeout_s * 1000,
                )
            )
            self._tracer = self._tracer_provider.get_tracer(names.SCOPE, __version__)
        self._logger_provider: LoggerProvider | None = None
        logs = self.settings.logs
        if self.settings.decision_logs and logs is not None:
            self._logger_provider = LoggerProvider(resource=self.resource)
            self._logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(
                    _CountingLogExporter(_log_exporter(logs), self.stats.logs, logs.endpoint),
                    schedule_delay_millis=self.settings.span_schedule_delay_s * 1000,
                    export_timeout_millis=logs.timeout_s * 1000,
                )
            )
        self._logger = (
            self._logger_provider.get_logger(names.SCOPE, __version__)
            if self._logger_provider is not None
            else None
        )

    def _tagging(self, config: TelemetryConfig) -> Tagging:
        capture = self.settings.capture_content
        if config.capture_content is not None:
            capture = config.capture_content
        return Tagging(
            skills=config.skills,
            saturation_warning_percent=config.saturation_warning_percent,
            capture_content=capture,
            capture_max_chars=self.settings.capture_max_chars,
            semconv=names.Semconv.from_opt_in(self.settings.semconv_opt_in),
        )

    def apply(self, config: TelemetryConfig) -> str:
        """Put a reloaded ``a11i.yaml``'s telemetry sections in force (on the loop)."""
        scrubber = Scrubber(config.pii_rules, secrets=self._secrets)
        scrubber.stats = self.scrubber.stats  # counted since start, across reloads
        loop_scrubber = Scrubber(config.pii_rules, secrets=self._secrets)
        loop_scrubber.stats = self._loop_scrubber.stats
        log_scrubber = Scrubber(config.pii_rules, secrets=self._secrets)
        with self._lock:
            self.scrubber = scrubber
            self._loop_scrubber = loop_scrubber
            self._log_scrubber = log_scrubber
            self.tagging = self._tagging(config)
            self._name_cache.clear()
        return f"{len(config.pii_rules)} PII rules, {len(config.skills)} skills"

    def hold_keys(self, custody: KeyCustody) -> None:
        """Scrub the keys ``custody`` holds from now on, with every key held before: after a
        rotation, a line about a call made with the old key may still come. On the loop."""
        keys = [key for key in (custody.openai_key, custody.anthropic_key) if key]
        with self._lock:
            self._secrets = tuple(dict.fromkeys((*self._secrets, *keys)))
            self.scrubber.add_secrets(keys)
            self._loop_scrubber.add_secrets(keys)
            self._log_scrubber.add_secrets(keys)
            # A cached name was scrubbed without the new keys.
            self._name_cache.clear()

    def scrub_stats(self) -> dict[str, object]:
        stats, loop = self.scrubber.stats, self._loop_scrubber.stats
        return {
            "replacements": dict(stats.scrubbed + loop.scrubbed),
            "timeouts": stats.timeouts + loop.timeouts,
        }

    def scrub_name(self, value: str, *, on_loop: bool = False) -> str:
        """A model or tool name, scrubbed (cached: names repeat on every call). On the
        telemetry thread, or on the event loop with ``on_loop``."""
        cached = self._name_cache.get(value)
        if cached is not None:
            return cached
        scrubber = self._loop_scrubber if on_loop else self.scrubber
        scrubbed = scrubber.scrub(value[:256])
        if scrubbed == TIMEOUT_REDACTION:
            return scrubbed  # out of the call's budget: scrubbed afresh next time
        self._name_cache[value] = scrubbed
        while len(self._name_cache) > _NAME_CACHE:
            self._name_cache.popitem(last=False)
        return scrubbed

    def scrub_value(self, value: str) -> str:
        """A short value that repeats (agent, model, tool names of an event) scrubbed through the
        cache; a long one scrubbed whole, uncached. On the telemetry thread."""
        if len(value) > 256:
            return self.scrubber.scrub(value)
        return self.scrub_name(value)

    def scrub_value_on_loop(self, value: str) -> str:
        """``scrub_value`` on the event loop, with the loop's own scrubber."""
        if len(value) > 256:
            return self._loop_scrubber.scrub(value)
        return self.scrub_name(value, on_loop=True)

    def scrub_log(self, text: str) -> str:
        """A log line, scrubbed: logs come from any thread (exporters log from theirs), so
        they have a scrubber of their own, used under the lock."""
        with self._lock:
            return self._log_scrubber.scrub(text)

    # -- the observer --------------------------------------------------------------------
    def record(self, record: CallRecord) -> None:
        """Make the spans and decision logs of one call (after its answer is on its way)."""
        scrubber, tagging = self.scrubber, self.tagging
        turn_context: Context | None = None
        if self._tracer is not None:
            turn_context = self._spans(self._tracer, record, scrubber, tagging)
        if self.settings.decision_logs:
            self._decision_logs(record, scrubber, tagging, turn_context)

    def _spans(
        self, tracer: trace.Tracer, record: CallRecord, scrubber: Scrubber, tagging: Tagging
    ) -> Context:
        origin = record.origin
        start_ns = origin.started_ns or time.time_ns()
        end_ns = start_ns + int(record.duration_s * 1e9)
        now = time.monotonic()
        parent: Context | None = None
        loop: _Loop | None = None
        key: LoopKey | None = None
        if origin.traceparent:
            carrier = {"traceparent": origin.traceparent}
            if origin.tracestate:
                carrier["tracestate"] = origin.tracestate
            extracted = self._propagator.extract(carrier)
            if trace.get_current_span(extracted).get_span_context().is_valid:
                parent = extracted
        conversation = self._conversation(record)
        if parent is None:
            key = loop_key(record.plan.request, conversation.id if conversation else None)
            if key is not None:
                loop = self._loops.join(key, now)
                if loop is not None:
                    parent = trace.set_span_in_context(NonRecordingSpan(loop.context))
        turn = loop.turns + 1 if loop is not None else 1 if key is not None else None
        attributes = turn_attributes(
            record, scrubber, tagging, loop_turn=turn, conversation=conversation
        )
        span = tracer.start_span(
            names.SPAN_AGENT_TURN,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_ns,
        )
        if attributes.get(names.SATURATION_WARNING):
            span.add_event(
                names.EVENT_SATURATION_WARNING,
                {
                    names.CONTEXT_SATURATION_ATTR: float(record.plan.saturation_percent),
                    "a11i.context.threshold_percent": float(tagging.saturation_warning_percent),
                },
                timestamp=start_ns,
            )
        for event in tool_call_events(record, scrubber, tagging):
            span.add_event(names.EVENT_TOOL_CALL, event, timestamp=end_ns)
        if record.error_type is not None or record.status >= 400:
            span.set_status(Status(StatusCode.ERROR, record.error_type or str(record.status)))
        turn_context = trace.set_span_in_context(span)
        # The agent ran the tools between the model's last answer and this call.
        ingest_start = loop.last_end_ns if loop is not None else start_ns
        ingest_start = min(ingest_start, start_ns)
        for result in record.plan.tool_results:
            requested = self._tool_requests.pop(result.tool_call_id, None)
            links = (
                [Link(requested, {names.TOOL_REQUESTED_BY: names.SPAN_AGENT_TURN})]
                if requested is not None
                else None
            )
            child = tracer.start_span(
                names.SPAN_TOOL_RESULT_INGEST,
                context=turn_context,
                kind=SpanKind.INTERNAL,
                attributes=tool_result_attributes(result, scrubber, tagging),
                links=links,
                start_time=ingest_start,
            )
            if result.outcome.value != "success":
                child.set_status(Status(StatusCode.ERROR, result.outcome.value))
            child.end(end_time=start_ns)
        span.end(end_time=end_ns)
        requester = span.get_span_context()
        for call in record.tool_calls:
            if call.id:
                self._tool_requests.remember(call.id, requester)
        if key is not None:
            if loop is None:
                self._loops.begin(key, span.get_span_context(), now, end_ns)
            else:
                loop.turns += 1
                loop.length = key.length
                loop.last_seen = now
                loop.last_end_ns = end_ns
        answer = record.response.id
        if answer and record.plan.request.dialect is Dialect.OPENAI_RESPONSES:
            # The next turn of a Responses API chain may name only this answer (its
            # previous_response_id): remember which conversation, and loop, it continues.
            if conversation is None and key is not None:
                conversation = Conversation(answer, "openai-previous-response")
                self._loops.alias(key, LoopKey(f"session:{answer}", key.length, named=True))
            if conversation is not None:
                self._responses.remember(answer, conversation)
        return turn_context

    def _conversation(self, record: CallRecord) -> Conversation | None:
        """The call's conversation: what it says itself, else the conversation of the answer
        its ``previous_response_id`` continues."""
        conversation = conversation_of(record)
        if conversation is not None:
            return conversation
        previous = client_ids(record.plan.request).previous_response
        if previous is None:
            return None
        known = self._responses.get(previous)
        return known if known is not None else Conversation(previous, "openai-previous-response")

    def _decision_logs(
        self,
        record: CallRecord,
        scrubber: Scrubber,
        tagging: Tagging,
        context: Context | None,
    ) -> None:
        entries = [
            decision_record(record, scrubber),
            *tool_choice_records(record, scrubber, tagging),
        ]
        to_pod_log = decisions_log.isEnabledFor(logging.INFO)
        for message, attributes in entries:
            if to_pod_log:  # (the JSON is made only for a line that is written)
                decisions_log.info(
                    "%s %s", message, json.dumps(_loggable(attributes), sort_keys=True)
                )
            if self._logger is not None:
                warn = record.verdict.decision.value in ("block", "warn", "optimize")
                self._logger.emit(
                    timestamp=record.origin.started_ns or time.time_ns(),
                    context=context,
                    severity_number=SeverityNumber.WARN if warn else SeverityNumber.INFO,
                    severity_text="WARN" if warn else "INFO",
                    body=message,
                    attributes=attributes,
                    event_name=str(attributes[names.LOG_EVENT]),
                )

    def shutdown(self) -> None:
        """Flush what is buffered (bounded by the export timeout) and stop the exporters."""
        for provider in (self._tracer_provider, self._logger_provider):
            if provider is not None:
                provider.shutdown()


def _loggable(attributes: Attributes) -> dict[str, object]:
    return {
        key: list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        for key, value in attributes.items()
    }


class ScrubbingFilter(logging.Filter):
    """Scrubs every log record's message before a handler writes it (installed by the CLI on
    the handlers of ``a11i sidecar``)."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self._scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not lose the line
            return True
        record.msg, record.args = self._scrub(message), None
        return True
