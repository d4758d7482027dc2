"""A real Prometheus for the tests: Debian's ``prometheus`` on a free loopback port.

Installs nothing: it finds ``prometheus`` and ``promtool`` (Debian package ``prometheus``) and
says how to install them when they are missing. The server scrapes the given ``host:port``
targets at ``/a11i/metrics`` every second and evaluates the given rule files every second, so a
rate has its two samples within a few seconds.

The HTTP API calls are async on purpose: the sidecars it scrapes serve from the test's own event
loop, and a blocking wait would stall the very scrapes it waits for.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BufferedWriter
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

import aiohttp

from tests.support.redis_server import free_port

#: Where Debian's package puts the binaries; PATH is searched after.
_DEBIAN_BIN = Path("/usr/bin")


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or answered a query with an error."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant query's result (a scalar result has no labels)."""

    labels: Mapping[str, str]
    value: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


class Alert(TypedDict):
    """An alert as ``/api/v1/alerts`` lists it (pending or firing)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    activeAt: str
    value: str


class Rule(TypedDict, total=False):
    """A recording or alerting rule as ``/api/v1/rules`` lists it."""

    name: str
    query: str
    type: str
    health: str
    lastError: str
    state: str
    duration: float
    labels: dict[str, str]
    annotations: dict[str, str]
    alerts: list[Alert]


class RuleGroup(TypedDict):
    name: str
    file: str
    interval: float
    rules: list[Rule]


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``, or an error that says how to install it."""
    debian = _DEBIAN_BIN / name
    if debian.is_file():
        return str(debian)
    found = shutil.which(name)
    if found is None:
        raise PrometheusError(
            f"{name} is not installed: apt-get install --no-install-recommends prometheus"
        )
    return found


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args``; the caller checks ``returncode`` and reads the output."""
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class PrometheusServer:
    """One ``prometheus`` process with a temporary TSDB, scraping ``targets``.

    Use as ``async with PrometheusServer([...]) as prometheus:`` or call ``start``/``stop``.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        metrics_path: str = "/a11i/metrics",
        job: str = "a11i-sidecar",
        interval_s: float = 1.0,
    ) -> None:
        self.binary = binary("prometheus")
        self.targets = list(targets)
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.metrics_path = metrics_path
        self.job = job
        self.interval_s = interval_s
        self.port = free_port()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._log: BufferedWriter | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, object]:
        """The configuration file's content (JSON is YAML, so it is written as JSON)."""
        interval = f"{round(self.interval_s * 1000)}ms"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until ``/-/ready`` answers 200."""
        if self._process is not None:
            raise PrometheusError("prometheus is already running")
        self._dir = tempfile.TemporaryDirectory(prefix="a11i-prometheus-")
        root = Path(self._dir.name)
        config = root / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))
        # Its output goes to a file, not a pipe: nobody has to drain it, and a failure can quote it.
        self._log = (root / "prometheus.log").open("wb")
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._http = aiohttp.ClientSession(
            base_url=self.url, timeout=aiohttp.ClientTimeout(total=10)
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                code = self._process.returncode
                log = self.log()
                await self.stop()
                raise PrometheusError(f"prometheus exited with {code}:\n{log}")
            try:
                async with self._http.get("/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        log = self.log()
        await self.stop()
        raise PrometheusError(f"prometheus was not ready within {timeout_s}s:\n{log}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then remove the TSDB; safe to call twice."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()
        directory, self._dir = self._dir, None
        if directory is not None:
            directory.cleanup()

    async def __aenter__(self) -> PrometheusServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def log(self) -> str:
        """What prometheus has written so far (for failure messages)."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def query(self, expr: str, *, at: float | None = None) -> list[Sample]:
        """Evaluate ``expr`` as an instant query (now, or at the Unix time ``at``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        data = await self._api("/api/v1/query", params)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [Sample(labels=item["metric"], value=float(item["value"][1])) for item in result]
        if kind == "scalar":
            return [Sample(labels={}, value=float(result[1]))]
        raise PrometheusError(f"{expr!r} is a {kind}, not an instant vector or a scalar")

    async def wait_for(
        self,
        expr: str,
        timeout_s: float = 30.0,
        *,
        accept: Callable[[list[Sample]], bool] = bool,
    ) -> list[Sample]:
        """The first result of ``expr`` that ``accept`` takes (by default: a non-empty one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = await self.query(expr)
            if accept(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} still gives {result} after {timeout_s}s")
            await asyncio.sleep(self.interval_s / 4)

    async def alerts(self) -> list[Alert]:
        """The pending and firing alerts."""
        data = await self._api("/api/v1/alerts")
        alerts: list[Alert] = data["alerts"]
        return alerts

    async def rules(self) -> list[RuleGroup]:
        """The loaded rule groups, with each rule's health and last error."""
        data = await self._api("/api/v1/rules")
        groups: list[RuleGroup] = data["groups"]
        return groups

    async def targets_up(self) -> list[str]:
        """The scrape URLs of the targets whose last scrape succeeded."""
        data = await self._api("/api/v1/targets", {"state": "active"})
        return [target["scrapeUrl"] for target in data["activeTargets"] if target["health"] == "up"]

    async def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        if self._http is None:
            raise PrometheusError("prometheus is not running")
        async with self._http.get(path, params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise PrometheusError(
                f"{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]
