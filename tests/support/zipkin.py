"""A real Zipkin server for the tests, fed by the real OpenTelemetry Collector.

The server is Zipkin's executable jar from Maven Central (``tools/zipkin/fetch.sh`` fetches it
into ~/.cache/a11i, or ``A11I_ZIPKIN_JAR`` names one), run with the machine's Java 17 on a free
loopback port with in-memory storage. It serves the v2 HTTP API the tests read and the UI the
waterfall screenshot is taken of. ``CollectorToZipkin`` is the suite's collector with its
``zipkin`` exporter added to the traces pipeline, so spans travel sidecar -> OTLP -> collector ->
Zipkin, as they would in a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support.otelcol import OtelCollector
from tests.support.paths import ROOT
from tests.support.redis_server import free_port

FETCH_SCRIPT = ROOT / "tools" / "zipkin" / "fetch.sh"
JAR_ENV = "A11I_ZIPKIN_JAR"

# Loopback only: an HTTP(S)_PROXY in the environment must not see these requests.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ZipkinError(RuntimeError):
    """Zipkin could not be fetched, did not start, or did not answer as expected."""


def ensure_jar() -> Path:
    """The server's jar: ``A11I_ZIPKIN_JAR`` if set, else fetched by fetch.sh when absent."""
    override = os.environ.get(JAR_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise ZipkinError(f"{JAR_ENV}={override} is not a file")
        return path
    result = subprocess.run(
        ["bash", str(FETCH_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ZipkinError(
            f"{FETCH_SCRIPT} failed with exit status {result.returncode}:\n" + _tail(result.stderr)
        )
    return Path(result.stdout.strip().splitlines()[-1])


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class ZipkinSpan:
    """One span as Zipkin's v2 API returns it (times in microseconds)."""

    trace_id: str
    id: str
    parent_id: str
    name: str
    kind: str
    service: str
    timestamp: int
    duration: int
    tags: dict[str, str]
    annotations: list[str]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ZipkinSpan:
        return cls(
            trace_id=str(raw["traceId"]),
            id=str(raw["id"]),
            parent_id=str(raw.get("parentId", "")),
            name=str(raw.get("name", "")),
            kind=str(raw.get("kind", "")),
            service=str(raw.get("localEndpoint", {}).get("serviceName", "")),
            timestamp=int(raw.get("timestamp", 0)),
            duration=int(raw.get("duration", 0)),
            tags={str(k): str(v) for k, v in raw.get("tags", {}).items()},
            annotations=[str(a.get("value", "")) for a in raw.get("annotations", [])],
        )

    @property
    def end(self) -> int:
        return self.timestamp + self.duration


class ZipkinServer:
    """One Zipkin server process; use as a context manager, or ``start()`` and ``close()``."""

    def __init__(self, *, jar: Path | None = None) -> None:
        self._jar = jar
        self._workdir = tempfile.TemporaryDirectory(prefix="a11i-zipkin-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spans_url(self) -> str:
        """Where the collector's ``zipkin`` exporter posts spans."""
        return f"{self.url}/api/v2/spans"

    def trace_page(self, trace_id: str) -> str:
        """The UI's page of one trace: its waterfall."""
        return f"{self.url}/zipkin/traces/{trace_id}"

    @property
    def log_path(self) -> Path:
        return Path(self._workdir.name) / "zipkin.log"

    def start(self, timeout: float = 90.0) -> Self:
        """Start and wait until ``/health`` says UP (a few seconds: a Spring Boot JVM)."""
        if self.process is not None:
            raise ZipkinError("Zipkin is already running")
        java = shutil.which("java")
        if java is None:
            raise ZipkinError("Java 17+ is needed to run Zipkin (apt-get install openjdk-17-jre)")
        jar = self._jar or ensure_jar()
        command = [
            java,
            # A short-lived test server: the client compiler and a small serial heap start
            # fastest and leave the machine's cores to the tests.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xms64m",
            "-Xmx256m",
            "-jar",
            str(jar),
            f"--armeria.ports[0].port={self.port}",
            "--armeria.ports[0].ip=127.0.0.1",
            "--armeria.ports[0].protocols=http",
            "--logging.level.root=WARN",
        ]
        env = {**os.environ, "STORAGE_TYPE": "mem", "SELF_TRACING_ENABLED": "false"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise ZipkinError(
                    f"Zipkin exited with status {code} while starting:\n{self.log_tail()}"
                )
            if self._healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise ZipkinError(
            f"Zipkin was not UP at {self.url}/health within {timeout} s:\n" + self.log_tail()
        )

    def _healthy(self) -> bool:
        try:
            with _DIRECT.open(f"{self.url}/health", timeout=1.0) as response:
                return bool(json.load(response).get("status") == "UP")
        except (OSError, ValueError):
            return False

    def get(self, path: str, **query: str | int) -> Any:
        """GET a JSON document of the API (``/api/v2/...``)."""
        url = f"{self.url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        try:
            with _DIRECT.open(url, timeout=5.0) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise ZipkinError(f"GET {url}: {error.code} {error.read()[:500]!r}") from error

    def traces(self, service: str, **query: str | int) -> list[list[ZipkinSpan]]:
        """The stored traces of a service (``/api/v2/traces``), each a list of its spans."""
        raw = self.get("/api/v2/traces", serviceName=service, limit=100, **query)
        return [[ZipkinSpan.parse(span) for span in trace] for trace in raw]

    def trace(self, trace_id: str) -> list[ZipkinSpan]:
        return [ZipkinSpan.parse(span) for span in self.get(f"/api/v2/trace/{trace_id}")]

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(encoding="utf-8", errors="replace"), lines)
        except FileNotFoundError:
            return "(no log)"

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


class CollectorToZipkin(OtelCollector):
    """The suite's collector, its traces pipeline also exporting to a Zipkin server."""

    def __init__(self, zipkin: ZipkinServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zipkin = zipkin

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().config()
        config["exporters"]["zipkin"] = {"endpoint": self.zipkin.spans_url, "format": "json"}
        config["service"]["pipelines"]["traces"]["exporters"].append("zipkin")
        return config
