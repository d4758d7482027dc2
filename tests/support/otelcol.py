"""A real OpenTelemetry Collector for the tests, and what it received, parsed.

The binary is ``otelcol-a11i``, built from the Go module proxy by ``tools/otelcol/build.sh`` (or
named by ``A11I_OTELCOL``). Each instance listens for OTLP over gRPC and HTTP on free loopback
ports and writes every signal as OTLP JSON to its own file, which the readers here flatten into
typed records. It can be paused (SIGSTOP) to play a collector that stops answering, and stopped
and started again on the same ports. No fakes, and nothing here talks to the sidecar.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

from tests.support.paths import ROOT

BUILD_SCRIPT = ROOT / "tools" / "otelcol" / "build.sh"
BINARY_ENV = "A11I_OTELCOL"

AttributeValue: TypeAlias = (
    str | bool | int | float | bytes | list["AttributeValue"] | dict[str, "AttributeValue"] | None
)
Attributes: TypeAlias = dict[str, AttributeValue]
T = TypeVar("T")


class OtelCollectorError(RuntimeError):
    """The collector could not be built, did not start, or did not receive what was awaited."""


class _PortTaken(OtelCollectorError):
    pass


# -- the binary ---------------------------------------------------------------------------------


def binary_path() -> Path:
    """Where the collector binary is (``A11I_OTELCOL``) or will be once built; builds nothing."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--path"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip())


def is_built() -> bool:
    """Whether starting a collector will not have to build it first (minutes, cold)."""
    return os.access(binary_path(), os.X_OK)


def ensure_binary() -> Path:
    """The collector binary: ``A11I_OTELCOL`` if set, else built by build.sh when absent."""
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise OtelCollectorError(f"{BINARY_ENV}={override} is not an executable file")
        return path
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise OtelCollectorError(
            f"{BUILD_SCRIPT} failed with exit status {result.returncode}:\n"
            + _tail(result.stderr, 60)
        )
    return Path(result.stdout.strip().splitlines()[-1])


# -- what the collector received ----------------------------------------------------------------


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: Attributes
    time_unix_nano: int


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: Attributes


@dataclass(frozen=True)
class Span:
    """One span, with its resource and instrumentation scope folded in."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: Attributes
    events: list[SpanEvent]
    status_code: int
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    resource: Attributes
    scope: str
    scope_version: str
    links: list[SpanLink] = field(default_factory=list)


@dataclass(frozen=True)
class MetricPoint:
    """One data point of one metric. ``value`` is set for sums and gauges; ``count``, ``sum``
    and the buckets for histograms (``sum`` and ``count`` also for summaries)."""

    name: str
    unit: str
    description: str
    kind: str
    attributes: Attributes
    resource: Attributes
    scope: str
    scope_version: str
    time_unix_nano: int
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    is_monotonic: bool | None = None
    aggregation_temporality: int | None = None


@dataclass(frozen=True)
class LogRecord:
    body: AttributeValue
    attributes: Attributes
    severity_number: int
    severity_text: str
    event_name: str
    trace_id: str
    span_id: str
    time_unix_nano: int
    resource: Attributes
    scope: str
    scope_version: str


# OTLP JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) is parsed here and
# nowhere else: 64-bit integers arrive as strings, ids as hex, and absent fields mean defaults.
Json: TypeAlias = dict[str, Any]


def decode_value(value: Json) -> AttributeValue:
    """An OTLP ``AnyValue`` as the plain Python value."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return _double(value["doubleValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return [decode_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return decode_attributes(value["kvlistValue"].get("values", []))
    return None


def decode_attributes(pairs: Sequence[Json]) -> Attributes:
    return {pair["key"]: decode_value(pair.get("value", {})) for pair in pairs}


def _double(raw: float | int | str) -> float:
    # Non-finite doubles are strings ("NaN", "Infinity") in OTLP JSON.
    return float(raw)


def _scopes(line: Json, resource_key: str, scope_key: str) -> Iterator[tuple[Json, Json, Json]]:
    for resource_block in line.get(resource_key, []):
        for scope_block in resource_block.get(scope_key, []):
            yield resource_block, scope_block, scope_block.get("scope", {})


def parse_spans(line: Json) -> list[Span]:
    spans: list[Span] = []
    for resource_block, scope_block, scope in _scopes(line, "resourceSpans", "scopeSpans"):
        resource = decode_attributes(resource_block.get("resource", {}).get("attributes", []))
        for span in scope_block.get("spans", []):
            status = span.get("status", {})
            spans.append(
                Span(
                    name=span.get("name", ""),
                    trace_id=span.get("traceId", ""),
                    span_id=span.get("spanId", ""),
                    parent_span_id=span.get("parentSpanId", ""),
                    kind=int(span.get("kind", 0)),
                    attributes=decode_attributes(span.get("attributes", [])),
                    events=[
                        SpanEvent(
                            name=event.get("name", ""),
                            attributes=decode_attributes(event.get("attributes", [])),
                            time_unix_nano=int(event.get("timeUnixNano", 0)),
                        )
                        for event in span.get("events", [])
                    ],
                    status_code=int(status.get("code", 0)),
                    status_message=status.get("message", ""),
                    start_time_unix_nano=int(span.get("startTimeUnixNano", 0)),
                    end_time_unix_nano=int(span.get("endTimeUnixNano", 0)),
                    resource=resource,
                    scope=scope.get("name", ""),
                    scope_version=scope.get("version", ""),
                    links=[
                        SpanLink(
                            trace_id=link.get("traceId", ""),
                            span_id=link.get("spanId", ""),
                            attributes=decode_attributes(link.get("attributes", [])),
                        )
                        for link in span.get("links", [])
                    ],
                )
            )
    return spans


_METRIC_KINDS = ("sum", "gauge", "histogram", "exponentialHistogram", "summary")


def parse_metrics(line: Json) -> list[MetricPoint]:
    points: list[MetricPoint] = []
    for resource_block, scope_block, scope in _scopes(line, "resourceMetrics", "scopeMetrics"):
        resource = decode_attributes(resource_block.get("resource", {}).get("attributes", []))
        for metric in scope_block.get("metrics", []):
            kind = next((k for k in _METRIC_KINDS if k in metric), "")
            data: Json = metric.get(kind, {})
            temporality = data.get("aggregationTemporality")
            for point in data.get("dataPoints", []):
                value: int | float | None = None
                if "asInt" in point:
                    value = int(point["asInt"])
                elif "asDouble" in point:
                    value = _double(point["asDouble"])
                points.append(
                    MetricPoint(
                        name=metric.get("name", ""),
                        unit=metric.get("unit", ""),
                        description=metric.get("description", ""),
                        kind=kind,
                        attributes=decode_attributes(point.get("attributes", [])),
                        resource=resource,
                        scope=scope.get("name", ""),
                        scope_version=scope.get("version", ""),
                        time_unix_nano=int(point.get("timeUnixNano", 0)),
                        value=value,
                        count=int(point["count"]) if "count" in point else None,
                        sum=_double(point["sum"]) if "sum" in point else None,
                        min=_double(point["min"]) if "min" in point else None,
                        max=_double(point["max"]) if "max" in point else None,
                        bucket_counts=[int(c) for c in point.get("bucketCounts", [])],
                        explicit_bounds=[_double(b) for b in point.get("explicitBounds", [])],
                        is_monotonic=data.get("isMonotonic", False) if kind == "sum" else None,
                        aggregation_temporality=(
                            int(temporality) if temporality is not None else None
                        ),
                    )
                )
    return points


def parse_logs(line: Json) -> list[LogRecord]:
    records: list[LogRecord] = []
    for resource_block, scope_block, scope in _scopes(line, "resourceLogs", "scopeLogs"):
        resource = decode_attributes(resource_block.get("resource", {}).get("attributes", []))
        for record in scope_block.get("logRecords", []):
            records.append(
                LogRecord(
                    body=decode_value(record.get("body", {})),
                    attributes=decode_attributes(record.get("attributes", [])),
                    severity_number=int(record.get("severityNumber", 0)),
                    severity_text=record.get("severityText", ""),
                    event_name=record.get("eventName", ""),
                    trace_id=record.get("traceId", ""),
                    span_id=record.get("spanId", ""),
                    time_unix_nano=int(record.get("timeUnixNano", 0)),
                    resource=resource,
                    scope=scope.get("name", ""),
                    scope_version=scope.get("version", ""),
                )
            )
    return records


def read_jsonl(path: Path) -> list[Json]:
    """The complete lines of a file the exporter may be writing to at this moment: a last line
    without its newline is still being flushed and is left for the next read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]


# -- the process --------------------------------------------------------------------------------

_SIGNALS = ("traces", "metrics", "logs")


def _free_ports(count: int) -> list[int]:
    # Held open together so that the ports differ from each other.
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


# Loopback only: an HTTP(S)_PROXY in the environment must not see the health probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class OtelCollector:
    """One ``otelcol-a11i`` process; use as a context manager, or ``start()`` and ``close()``.

    Each signal lands in ``<workdir>/<signal>.jsonl``, appended across restarts. The files stay
    until ``close()`` (or for good, when the caller passed its own ``workdir``).
    """

    def __init__(
        self, *, binary: Path | None = None, workdir: Path | None = None, host: str = "127.0.0.1"
    ) -> None:
        self._binary = binary
        # The OTLP receivers' address: loopback, or one that pods reach (a test node's host side).
        self.host = host
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="a11i-otelcol-")
            workdir = Path(self._owned_dir.name)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.grpc_port, self.http_port, self.health_port = _free_ports(3)
        self.process: subprocess.Popen[bytes] | None = None
        self._paused = False
        # Once it has served, a restart keeps the ports: clients hold on to the endpoints.
        self._ports_fixed = False

    # Endpoints, in the forms the OTLP exporters take (OTEL_EXPORTER_OTLP_ENDPOINT).
    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        """The collector's own log (stderr); the debug exporter adds a line per batch."""
        return self.workdir / "otelcol.log"

    def signal_path(self, signal_name: str) -> Path:
        return self.workdir / f"{signal_name}.jsonl"

    def config(self) -> Json:
        """The collector configuration, as the collector reads it (JSON is YAML)."""
        files = {
            f"file/{name}": {
                "path": str(self.signal_path(name)),
                "format": "json",
                "append": True,
                # The default is 1 s; tests poll, and each of them would wait for it.
                "flush_interval": "100ms",
            }
            for name in _SIGNALS
        }
        return {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"{self.host}:{self.grpc_port}"},
                        "http": {"endpoint": f"{self.host}:{self.http_port}"},
                    }
                }
            },
            "exporters": {**files, "debug": {"verbosity": "basic"}},
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{self.health_port}"}},
            "service": {
                "extensions": ["health_check"],
                "pipelines": {
                    name: {"receivers": ["otlp"], "exporters": [f"file/{name}", "debug"]}
                    for name in _SIGNALS
                },
                # The collector's own metrics would serve on :8888, shared by every instance.
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
            },
        }

    def start(self, timeout: float = 30.0) -> Self:
        """Start (again, on the same ports) and wait until the health check answers 200."""
        if self.process is not None:
            raise OtelCollectorError("the collector is already running")
        binary = self._binary or ensure_binary()
        self._binary = binary
        for attempt in range(3):
            try:
                self._start(binary, timeout)
            except _PortTaken:
                # Another process took a port between choosing it and binding it.
                if self._ports_fixed or attempt == 2:
                    raise
                self.grpc_port, self.http_port, self.health_port = _free_ports(3)
                continue
            self._ports_fixed = True
            break
        return self

    def _start(self, binary: Path, timeout: float) -> None:
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        # A file, not a pipe: nobody drains a pipe while tests run, and a full one blocks.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), f"--config=file:{self.config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                message = (
                    f"the collector exited with status {code} while starting:\n{self.log_tail()}"
                )
                with self.log_path.open("rb") as log:
                    log.seek(log_start)
                    if b"address already in use" in log.read():
                        raise _PortTaken(message)
                raise OtelCollectorError(message)
            if self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise OtelCollectorError(
            f"the collector was not healthy at {self.health_url} within {timeout} s:\n"
            + self.log_tail()
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the exporters flush their files on the way out), SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        if self._paused:
            # A stopped process would only act on SIGTERM once continued.
            process.send_signal(signal.SIGCONT)
            self._paused = False
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as with an overloaded collector.
        Returns once every thread of the process is stopped (a signal is delivered
        asynchronously: a request sent right after ``send_signal`` could still be answered)."""
        process = self._running()
        process.send_signal(signal.SIGSTOP)
        self._paused = True
        tasks = Path(f"/proc/{process.pid}/task")
        for _ in range(500):
            states = []
            for task in tasks.iterdir():
                with contextlib.suppress(OSError):
                    # The state is the field after the parenthesised command name.
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.01)
        raise RuntimeError(f"the collector (pid {process.pid}) did not stop on SIGSTOP")

    def resume(self) -> None:
        self._running().send_signal(signal.SIGCONT)
        self._paused = False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(encoding="utf-8", errors="replace"), lines)
        except FileNotFoundError:
            return "(no log)"

    # Readers: everything received so far, in arrival order.
    def spans(self) -> list[Span]:
        return [s for line in read_jsonl(self.signal_path("traces")) for s in parse_spans(line)]

    def metrics(self) -> list[MetricPoint]:
        return [p for line in read_jsonl(self.signal_path("metrics")) for p in parse_metrics(line)]

    def logs(self) -> list[LogRecord]:
        return [r for line in read_jsonl(self.signal_path("logs")) for r in parse_logs(line)]

    def wait_for(
        self,
        reader: Callable[[], Sequence[T]],
        predicate: Callable[[T], bool] = lambda _: True,
        *,
        count: int = 1,
        timeout: float = 15.0,
    ) -> list[T]:
        """The items ``reader`` returns that match ``predicate``, once there are ``count``.

        Blocks the thread: from a coroutine whose event loop serves what is being exported (a
        sidecar in the same loop), use ``wait_for_async``.
        """
        deadline = time.monotonic() + timeout
        while True:
            matched = [item for item in reader() if predicate(item)]
            if len(matched) >= count or time.monotonic() >= deadline:
                return self._enough(matched, reader, count, timeout)
            time.sleep(0.05)

    async def wait_for_async(
        self,
        reader: Callable[[], Sequence[T]],
        predicate: Callable[[T], bool] = lambda _: True,
        *,
        count: int = 1,
        # A deadline of its own rather than asyncio.timeout: on expiry it says what did arrive.
        timeout: float = 15.0,  # noqa: ASYNC109
    ) -> list[T]:
        """``wait_for`` that sleeps on the event loop between reads (the reads are small)."""
        deadline = time.monotonic() + timeout
        while True:
            matched = [item for item in reader() if predicate(item)]
            if len(matched) >= count or time.monotonic() >= deadline:
                return self._enough(matched, reader, count, timeout)
            await asyncio.sleep(0.05)

    def _enough(
        self, matched: list[T], reader: Callable[[], Sequence[T]], count: int, timeout: float
    ) -> list[T]:
        if len(matched) >= count:
            return matched
        seen = reader()
        names = sorted({str(getattr(item, "name", item)) for item in seen})
        raise OtelCollectorError(
            f"{len(matched)} of {count} awaited items after {timeout} s; "
            f"{len(seen)} received in all, named {names[:30]}\ncollector log:\n{self.log_tail(20)}"
        )

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise OtelCollectorError("the collector is not running")
        return self.process

    def _healthy(self) -> bool:
        try:
            with _DIRECT.open(self.health_url, timeout=0.5) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False
