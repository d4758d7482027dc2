"""Sidecar settings: built once, in ``main``, from the environment and files, then frozen.

Nothing reads the environment at import time. Every setting is documented here and in
docs/configuration.md; an invalid value stops the sidecar at start with a message naming the
variable, rather than running with a guess.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from a11i.core import variables as var
from a11i.core.errors import SettingsError
from a11i.core.headers import KeyCustody
from a11i.core.model import Provider
from a11i.core.policy import BudgetPolicy, ExhaustedAction, Period
from a11i.sidecar import contract
from a11i.sidecar.config import (
    ConfigError,
    FileConfig,
    OptimizerConfig,
    TelemetryConfig,
    load_config,
    optimizer_config,
)
from a11i.sidecar.encodings import Tokenizer
from a11i.sidecar.redis_clients import RedisMode, sentinel_addresses


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where the providers are and how long to wait for them."""

    #: ``A11I_OPENAI_BASE``: base URL of the OpenAI-compatible API (without ``/v1``).
    openai_base: str = "https://api.openai.com"
    #: ``A11I_ANTHROPIC_BASE``: base URL of the Anthropic API.
    anthropic_base: str = "https://api.anthropic.com"
    #: ``A11I_UPSTREAM_CONNECT_TIMEOUT``: seconds to open a connection (502 after).
    connect_timeout_s: float = 10.0
    #: ``A11I_UPSTREAM_READ_TIMEOUT``: longest silence from the provider, in seconds, before the
    #: call is answered 504 (non-streaming: the time to the whole answer).
    read_timeout_s: float = 600.0


class OtlpProtocol(StrEnum):
    """``OTEL_EXPORTER_OTLP_PROTOCOL``: the OTLP transports a11i speaks."""

    GRPC = "grpc"
    HTTP = "http/protobuf"


class Signal(StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


@dataclass(frozen=True, slots=True)
class OtlpExport:
    """Where and how one signal is exported over OTLP (the standard ``OTEL_EXPORTER_OTLP_*``
    variables, signal-specific ones first)."""

    #: gRPC: ``scheme://host:port``; HTTP: the full URL of the signal (``.../v1/traces``).
    endpoint: str
    protocol: OtlpProtocol = OtlpProtocol.HTTP
    #: ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_HEADERS``: ``key=value,...`` (URL-encoded values).
    #: Often a credential of the collector: never logged.
    headers: tuple[tuple[str, str], ...] = ()
    #: ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_TIMEOUT`` (milliseconds in the variable).
    timeout_s: float = 10.0
    #: gRPC without TLS (an ``http://`` endpoint or ``OTEL_EXPORTER_OTLP_INSECURE=true``).
    insecure: bool = False


#: OTel's samplers by their ``OTEL_TRACES_SAMPLER`` names.
SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Traces, metrics and decision logs: what is exported, where, and what it may contain."""

    #: OTLP export of spans; None: spans are not exported (``OTEL_TRACES_EXPORTER=none``, or
    #: no endpoint set).
    traces: OtlpExport | None = None
    #: OTLP export of metrics (``/a11i/metrics`` serves them in any case).
    metrics: OtlpExport | None = None
    #: OTLP export of the decision logs (only when ``decision_logs`` is on).
    logs: OtlpExport | None = None
    #: ``OTEL_SERVICE_NAME``.
    service_name: str = "a11i-sidecar"
    #: ``OTEL_RESOURCE_ATTRIBUTES``: ``key=value,...`` added to the resource.
    resource_attributes: tuple[tuple[str, str], ...] = ()
    #: ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``; a loop's turns share the
    #: decision of its first turn (parent-based).
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    #: ``OTEL_BSP_SCHEDULE_DELAY`` (ms): how long spans wait in the buffer before export.
    span_schedule_delay_s: float = 5.0
    #: ``OTEL_BSP_MAX_QUEUE_SIZE``: spans buffered at most; more are dropped, never waited for.
    span_queue_size: int = 2048
    #: ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``.
    span_batch_size: int = 512
    #: ``OTEL_METRIC_EXPORT_INTERVAL`` (ms).
    metric_interval_s: float = 60.0
    #: ``A11I_CAPTURE_CONTENT``: export prompt and completion text (scrubbed); off by default.
    #: ``capture_content`` in a11i.yaml overrides it.
    capture_content: bool = False
    #: ``A11I_CAPTURE_MAX_CHARS``: captured text per message is cut to this many characters.
    capture_max_chars: int = 16384
    #: ``A11I_DECISION_LOGS``: structured log records of the guard's decisions and the tools
    #: the model chose (exported over OTLP when an endpoint is set, and logged); off by default.
    decision_logs: bool = False
    #: ``A11I_LOOP_IDLE_TIMEOUT``: seconds of silence after which an agent loop's next call
    #: starts a new trace.
    loop_idle_s: float = 1800.0
    #: ``OTEL_SEMCONV_STABILITY_OPT_IN``: the GenAI names emitted where the conventions
    #: renamed them (old, new or both; read by ``a11i.sidecar.telemetry.conventions.Semconv``,
    #: docs/telemetry.md).
    semconv_opt_in: str = ""
    #: ``A11I_METRICS_PORT``: a second listener serving ``/a11i/metrics`` and
    #: ``/a11i/healthz`` only (nothing on it can spend), for a cluster's Prometheus (the proxy
    #: itself listens on loopback); unset: none.
    metrics_port: int | None = None
    #: ``A11I_METRICS_HOST``: its address; all of the pod's by default.
    metrics_host: str = "0.0.0.0"


_METHODS: Final = frozenset({"*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """What may pass the guard without being metered (docs/security.md)."""

    #: ``A11I_ALLOW_UNMETERED``: ``METHOD /path-glob`` patterns, comma separated, forwarded
    #: unmetered even while the sidecar holds the provider key (e.g. ``GET /v1/files*``).
    #: Whoever sets this accepts that such calls spend outside the budget.
    allow_unmetered: tuple[str, ...] = ()
    #: ``A11I_AZURE_DEPLOYMENTS``: ``deployment=model`` pairs: the model an Azure OpenAI
    #: deployment serves, for pricing (a deployment not listed is priced as a model of its name).
    azure_deployments: tuple[tuple[str, str], ...] = ()

    def deployment_model(self, deployment: str) -> str:
        for name, model in self.azure_deployments:
            if name == deployment:
                return model
        return deployment


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """How a call that does not fit the wallet as asked may still be admitted (docs/budget.md)."""

    #: ``A11I_BUDGET_FIT_OUTPUT_CAP``: when a call's worst case does not fit but a useful answer
    #: does, lower its forwarded output cap to what is left (``x-a11i-output-cap``) instead of
    #: refusing it; off: strict, such a call is refused with 402.
    fit_output_cap: bool = True
    #: ``A11I_BUDGET_MIN_OUTPUT_TOKENS``: the smallest cap worth forwarding; a call that can
    #: afford less (and asked for more) is refused. A call asking for less needs all of it.
    min_output_tokens: int = 1024
    #: ``A11I_BUDGET_ADMISSION_WAIT``: seconds a call that fits beside what is spent, but not
    #: beside what calls in flight hold, waits for them to settle (in arrival order) before it
    #: is capped or refused; 0: never wait.
    wait_s: float = 5.0


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Everything ``a11i sidecar`` needs, resolved."""

    #: ``A11I_HOST``: the address to listen on; loopback, since the agent shares the pod.
    host: str = "127.0.0.1"
    #: ``A11I_PORT``: the port to listen on.
    port: int = 11000
    #: ``A11I_MAX_BODY_BYTES``: larger request bodies are answered 413.
    max_body_bytes: int = 20 * 1024 * 1024
    #: ``A11I_BODY_READ_TIMEOUT``: seconds an agent may take to send a request body (408 after).
    body_read_timeout_s: float = 30.0
    #: ``A11I_FAST_PATH``: metered calls are served by the sidecar's own HTTP/1.1 fast path
    #: (``a11i.sidecar.fastpath``), everything else by aiohttp; ``false`` serves all with aiohttp.
    fast_path: bool = True
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    #: ``A11I_OPENAI_API_KEY[_FILE]``, ``A11I_ANTHROPIC_API_KEY[_FILE]``: keys held by the sidecar.
    custody: KeyCustody = field(default_factory=KeyCustody)
    #: ``A11I_BUDGET_FIT_OUTPUT_CAP``, ``A11I_BUDGET_MIN_OUTPUT_TOKENS``.
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    #: ``A11I_ALLOW_UNMETERED``, ``A11I_AZURE_DEPLOYMENTS``: what passes the guard unmetered.
    guard: GuardSettings = field(default_factory=GuardSettings)
    #: The files the held keys come from (``A11I_*_API_KEY_FILE``), re-read when they change (a
    #: rotated Secret, ``a11i.sidecar.keys``).
    key_files: tuple[tuple[Provider, Path], ...] = ()
    #: ``A11I_NAMESPACE``: whose wallet (downward API in a pod).
    namespace: str = "default"
    #: ``A11I_AGENT``: whose spend (the pod name in a pod; the host name elsewhere).
    agent: str = "agent"
    #: ``A11I_PROJECT``: the project the agent's spend is reported under (the pod's
    #: ``a11i.io/project`` label in a pod); default: the namespace.
    project: str = "default"
    #: ``A11I_BUDGET_USD`` and ``A11I_BUDGET_*``: the standalone budget when no AgentBudget
    #: applies.
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    #: ``A11I_AGENT_BUDGET_USD``: this agent's own limit inside the namespace's wallet (same
    #: period and thresholds); None: the agent shares the namespace's wallet only.
    agent_budget: BudgetPolicy | None = None
    #: ``A11I_BUDGET_PERIOD``: Daily | Weekly | Monthly | Total.
    period: Period = Period.TOTAL
    #: ``A11I_BUDGET_TIMEZONE``: IANA time zone whose midnights start the periods.
    timezone: str = "UTC"
    #: ``A11I_CONFIG``: path of a11i.yaml (skills, saturation threshold, PII rules).
    config_path: Path | None = None
    #: ``A11I_RATE_CARD``: path of a rate card (our YAML or LiteLLM's JSON) over the built-in one.
    rate_card_path: Path | None = None
    #: ``A11I_RELOAD_INTERVAL``: seconds between checks of the mounted files for changes (a
    #: ConfigMap update swaps them in place); a change is applied without a restart.
    reload_interval_s: float = 10.0
    #: ``A11I_ENCODINGS_DIR``: folder of the tiktoken encoding files (else the packaged ones).
    encodings_dir: Path | None = None
    #: ``A11I_TOKENIZER``: ``auto`` (``compact`` when the a11i_bpe extension is installed, as in
    #: the image), ``compact`` (refuse to start without it) or ``tiktoken``. The same tokens;
    #: ``compact`` holds 5 MiB for o200k_base where tiktoken holds 41.5 MiB.
    tokenizer: Tokenizer = Tokenizer.AUTO
    #: ``A11I_WALLET_FILE``: the embedded wallet's SQLite file (``:memory:``: not persisted).
    #: Default ``$XDG_STATE_HOME/a11i/wallets.sqlite``.
    wallet_file: str | None = None
    #: ``A11I_REDIS_URL``: the shared wallet, events and emergency stop (absent: embedded).
    redis_url: str | None = None
    #: ``A11I_REDIS_MODE``: ``standalone`` (one server), ``cluster`` (the URL names any node of
    #: a Redis Cluster) or ``sentinel`` (the URL names the sentinels, comma-separated).
    redis_mode: RedisMode = RedisMode.STANDALONE
    #: ``A11I_REDIS_MASTER``: with ``sentinel``, the name the sentinels monitor the primary by.
    redis_master: str = "mymaster"
    #: ``A11I_REDIS_SENTINEL_PASSWORD``: with ``sentinel``, the sentinels' own password (the
    #: primary's is in the URL); unset when the sentinels ask none.
    redis_sentinel_password: str | None = None
    #: ``A11I_REDIS_TIMEOUT``: seconds any one Redis call may take before it counts as failed.
    redis_timeout_s: float = 0.25
    #: ``A11I_REDIS_FAILURE``: ``open`` (calls go on, accounted locally and reconciled when Redis
    #: is back) or ``closed`` (calls are refused while Redis is unreachable).
    redis_fail_open: bool = True
    #: ``A11I_REDIS_REFRESH``: seconds between the sidecar's reads of its wallet and the stops
    #: while the stop channel is subscribed (a stop is told at once; this only refreshes the
    #: budget figures); unsubscribed, it reads every half second. Each read is Redis work that
    #: grows with the number of sidecars, not with their calls.
    redis_refresh_s: float = 10.0
    #: The optimizer: ``optimizer`` in a11i.yaml, overridden by ``A11I_OPTIMIZER*``.
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    #: The telemetry sections of a11i.yaml (PII rules, skills, saturation threshold).
    telemetry_config: TelemetryConfig = field(default_factory=TelemetryConfig)
    #: The ``A11I_OPTIMIZER*`` variables, applied again over a reloaded a11i.yaml.
    optimizer_env: tuple[tuple[str, str], ...] = ()
    #: ``A11I_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    #: Traces, metrics over OTLP, decision logs (``OTEL_*``, ``A11I_CAPTURE_*``).
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)


def from_env(env: Mapping[str, str]) -> SidecarSettings:
    """Build the settings from environment variables (``os.environ`` in ``main``)."""
    upstream = UpstreamSettings(
        openai_base=_base_url(env, contract.OPENAI_BASE, "https://api.openai.com"),
        anthropic_base=_base_url(env, contract.ANTHROPIC_BASE, "https://api.anthropic.com"),
        connect_timeout_s=var.seconds(env, "A11I_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        read_timeout_s=var.seconds(env, "A11I_UPSTREAM_READ_TIMEOUT", 600.0),
    )
    limit = env.get("A11I_BUDGET_USD", "").strip()
    warn_at = var.percent(env, "A11I_BUDGET_WARN_AT", Decimal(75))
    optimize_at = var.percent(env, "A11I_BUDGET_OPTIMIZE_AT", Decimal(90))
    if warn_at > optimize_at:
        raise SettingsError("A11I_BUDGET_WARN_AT must not be above A11I_BUDGET_OPTIMIZE_AT")
    budget = BudgetPolicy(
        limit_usd=var.money(limit, "A11I_BUDGET_USD") if limit else None,
        warn_at_percent=warn_at,
        optimize_at_percent=optimize_at,
        when_exhausted=var.choice(
            env, "A11I_BUDGET_WHEN_EXHAUSTED", ExhaustedAction, ExhaustedAction.BLOCK
        ),
    )
    agent_limit = env.get(contract.AGENT_BUDGET_USD, "").strip()
    agent_budget = (
        replace(budget, limit_usd=var.money(agent_limit, contract.AGENT_BUDGET_USD))
        if agent_limit
        else None
    )
    config_path = _path(env, contract.CONFIG)
    namespace = env.get(contract.NAMESPACE) or env.get("POD_NAMESPACE") or "default"
    optimizer, telemetry_config = _file_config(env, config_path)
    port = var.port(env, contract.PORT, contract.DEFAULT_PORT)
    telemetry = telemetry_from_env(env)
    if telemetry.metrics_port == port:
        raise SettingsError(
            f"A11I_METRICS_PORT must differ from A11I_PORT ({port}): the metrics listener is "
            "a second one"
        )
    return SidecarSettings(
        host=env.get("A11I_HOST", "127.0.0.1"),
        port=port,
        max_body_bytes=var.whole(env, "A11I_MAX_BODY_BYTES", 20 * 1024 * 1024),
        body_read_timeout_s=var.seconds(env, "A11I_BODY_READ_TIMEOUT", 30.0),
        fast_path=var.flag(env, "A11I_FAST_PATH", default=True),
        upstream=upstream,
        custody=KeyCustody(
            openai_key=_secret(env, "A11I_OPENAI_API_KEY"),
            anthropic_key=_secret(env, "A11I_ANTHROPIC_API_KEY"),
        ),
        admission=AdmissionSettings(
            fit_output_cap=var.flag(env, "A11I_BUDGET_FIT_OUTPUT_CAP", default=True),
            min_output_tokens=var.whole(env, "A11I_BUDGET_MIN_OUTPUT_TOKENS", 1024),
            wait_s=_seconds_or_zero(env, "A11I_BUDGET_ADMISSION_WAIT", 5.0),
        ),
        guard=GuardSettings(
            allow_unmetered=_unmetered_patterns(env, contract.ALLOW_UNMETERED),
            azure_deployments=_pairs(env, "A11I_AZURE_DEPLOYMENTS"),
        ),
        key_files=tuple(
            (provider, Path(env[variable].strip()))
            for provider, variable in (
                (Provider.OPENAI, contract.OPENAI_API_KEY_FILE),
                (Provider.ANTHROPIC, contract.ANTHROPIC_API_KEY_FILE),
            )
            if env.get(variable, "").strip()
        ),
        namespace=namespace,
        project=env.get(contract.PROJECT, "").strip() or namespace,
        agent=env.get(contract.AGENT) or env.get("POD_NAME") or socket.gethostname(),
        budget=budget,
        agent_budget=agent_budget,
        period=var.choice(env, "A11I_BUDGET_PERIOD", Period, Period.TOTAL),
        timezone=_timezone(env),
        config_path=config_path,
        rate_card_path=_path(env, contract.RATE_CARD),
        reload_interval_s=var.seconds(env, "A11I_RELOAD_INTERVAL", 10.0),
        encodings_dir=_path(env, "A11I_ENCODINGS_DIR", must_exist=False),
        tokenizer=var.choice(env, "A11I_TOKENIZER", Tokenizer, Tokenizer.AUTO),
        wallet_file=env.get(contract.WALLET_FILE, "").strip() or None,
        redis_url=_redis_url(env),
        redis_mode=_redis_mode(env),
        redis_master=var.text(env, "A11I_REDIS_MASTER", "mymaster"),
        redis_sentinel_password=env.get("A11I_REDIS_SENTINEL_PASSWORD") or None,
        redis_timeout_s=var.seconds(env, "A11I_REDIS_TIMEOUT", 0.25),
        redis_fail_open=var.one_of(env, "A11I_REDIS_FAILURE", ("OPEN", "CLOSED"), "OPEN") == "OPEN",
        redis_refresh_s=var.seconds(env, "A11I_REDIS_REFRESH", 10.0),
        optimizer=optimizer,
        telemetry_config=telemetry_config,
        optimizer_env=tuple(
            (name, value) for name, value in env.items() if name.startswith("A11I_OPTIMIZER")
        ),
        log_level=var.one_of(env, "A11I_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        telemetry=telemetry,
    )


def telemetry_from_env(env: Mapping[str, str]) -> TelemetrySettings:
    """The telemetry settings from the standard ``OTEL_*`` variables and ``A11I_CAPTURE_*``,
    ``A11I_DECISION_LOGS``, ``A11I_LOOP_IDLE_TIMEOUT``."""
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise SettingsError(
            f"OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, not {sampler!r}"
        )
    sampler_arg = 1.0
    raw_arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if raw_arg and sampler.endswith("traceidratio"):
        try:
            sampler_arg = float(raw_arg)
        except ValueError:
            sampler_arg = -1.0
        if not 0.0 <= sampler_arg <= 1.0:
            raise SettingsError(
                f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, not {raw_arg!r}"
            )
    return TelemetrySettings(
        traces=_otlp(env, Signal.TRACES),
        metrics=_otlp(env, Signal.METRICS),
        logs=_otlp(env, Signal.LOGS),
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or "a11i-sidecar",
        resource_attributes=_pairs(env, "OTEL_RESOURCE_ATTRIBUTES"),
        sampler=sampler,
        sampler_arg=sampler_arg,
        span_schedule_delay_s=var.milliseconds(env, "OTEL_BSP_SCHEDULE_DELAY", 5000),
        span_queue_size=var.whole(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        span_batch_size=var.whole(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        metric_interval_s=var.milliseconds(env, "OTEL_METRIC_EXPORT_INTERVAL", 60000),
        capture_content=var.flag(env, contract.CAPTURE_CONTENT, default=False),
        capture_max_chars=var.whole(env, "A11I_CAPTURE_MAX_CHARS", 16384),
        decision_logs=var.flag(env, contract.DECISION_LOGS, default=False),
        loop_idle_s=var.seconds(env, "A11I_LOOP_IDLE_TIMEOUT", 1800.0),
        semconv_opt_in=env.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""),
        metrics_port=var.port(env, contract.METRICS_PORT, 0) or None,
        metrics_host=env.get("A11I_METRICS_HOST", "").strip() or "0.0.0.0",
    )


def _otlp(env: Mapping[str, str], signal: Signal) -> OtlpExport | None:
    """One signal's OTLP export. Exported when ``OTEL_<SIGNAL>_EXPORTER`` is ``otlp``, or when
    it is unset and an endpoint is: unlike the SDK's default, no endpoint means no export, so a
    laptop without a collector is not flooded with connection errors."""
    upper = signal.value.upper()
    exporter_var = f"OTEL_{upper}_EXPORTER"
    exporter = env.get(exporter_var, "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise SettingsError(f"{exporter_var} must be otlp or none, not {exporter!r}")
    specific = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "").strip()
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if exporter == "none" or (not exporter and not specific and not general):
        return None
    protocol_var = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
    raw_protocol = (
        env.get(protocol_var, "").strip() or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
    )
    protocol = OtlpProtocol.HTTP
    if raw_protocol:
        try:
            protocol = OtlpProtocol(raw_protocol.lower())
        except ValueError:
            raise SettingsError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {raw_protocol!r}"
                + (" (http/json is not supported)" if raw_protocol.lower() == "http/json" else "")
            ) from None
    if specific:
        endpoint, variable = specific, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"
    elif general:
        endpoint, variable = general, "OTEL_EXPORTER_OTLP_ENDPOINT"
        if protocol is OtlpProtocol.HTTP:
            # The general endpoint is a base: each signal has its own path under it.
            endpoint = endpoint.rstrip("/") + f"/v1/{signal.value}"
    else:
        endpoint, variable = (
            ("http://localhost:4317", "")
            if protocol is OtlpProtocol.GRPC
            else (f"http://localhost:4318/v1/{signal.value}", "")
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(
            f"{variable} must be an http(s) URL such as http://otel-collector:4318, "
            f"not {endpoint!r}"
        )
    headers = _pairs(env, f"OTEL_EXPORTER_OTLP_{upper}_HEADERS") or _pairs(
        env, "OTEL_EXPORTER_OTLP_HEADERS"
    )
    timeout_var = f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT"
    if not env.get(timeout_var, "").strip():
        timeout_var = "OTEL_EXPORTER_OTLP_TIMEOUT"
    insecure_var = f"OTEL_EXPORTER_OTLP_{upper}_INSECURE"
    if not env.get(insecure_var, "").strip():
        insecure_var = "OTEL_EXPORTER_OTLP_INSECURE"
    return OtlpExport(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        timeout_s=var.milliseconds(env, timeout_var, 10000),
        insecure=var.flag(env, insecure_var, default=parts.scheme == "http"),
    )


def _seconds_or_zero(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, where 0 turns the behaviour off."""
    if env.get(name, "").strip() in ("0", "0.0"):
        return 0.0
    return var.seconds(env, name, default)


def _unmetered_patterns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """``METHOD /glob`` patterns, comma separated; a malformed one stops the sidecar (exit 2)
    rather than silently opening or closing a door."""
    patterns: list[str] = []
    for entry in var.names(env, name):
        method, _, glob = entry.partition(" ")
        glob = glob.strip()
        if method.upper() not in _METHODS or not glob.startswith("/"):
            raise SettingsError(
                f"{name} entries must be 'METHOD /path-glob' (METHOD one of "
                f"{', '.join(sorted(_METHODS))}), not {entry!r}"
            )
        patterns.append(f"{method.upper()} {glob}")
    return tuple(patterns)


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key2=value2`` with URL-encoded values (the W3C Baggage shape the OTel
    specification uses for headers and resource attributes)."""
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The value may be a credential: name the variable, never echo its content.
            raise SettingsError(f"{name} must be a list of key=value pairs separated by commas")
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return tuple(pairs)


def _file_config(
    env: Mapping[str, str], config_path: Path | None
) -> tuple[OptimizerConfig, TelemetryConfig]:
    """What a11i.yaml says, read once at start (a broken file stops the sidecar here; once it
    runs, a broken reload keeps what is in force)."""
    try:
        file = load_config(config_path) if config_path is not None else FileConfig()
        optimizer = optimizer_config(file.optimizer, env, source=str(config_path or "environment"))
    except ConfigError as error:
        raise SettingsError(str(error)) from error
    return optimizer, file.telemetry


def _timezone(env: Mapping[str, str]) -> str:
    name = env.get("A11I_BUDGET_TIMEZONE", "").strip() or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"A11I_BUDGET_TIMEZONE must be an IANA time zone such as Europe/Berlin, not {name!r}"
        ) from None
    return name


def _redis_url(env: Mapping[str, str]) -> str | None:
    if not var.text(env, contract.REDIS_URL):
        return None
    url = var.url(env, contract.REDIS_URL, "", schemes=("redis", "rediss", "unix"))
    if _redis_mode(env) is RedisMode.SENTINEL:
        sentinel_addresses(url)  # names at least one sentinel, each host:port
    return url


def _redis_mode(env: Mapping[str, str]) -> RedisMode:
    return var.choice(env, "A11I_REDIS_MODE", RedisMode, RedisMode.STANDALONE)


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    # The metered paths carry /v1 themselves; accept a base given with it, as SDKs take it.
    value = var.url(env, name, default).rstrip("/")
    return value[: -len("/v1")] if value.endswith("/v1") else value


def _path(env: Mapping[str, str], name: str, *, must_exist: bool = True) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if must_exist and not path.is_file():
        raise SettingsError(f"{name} names {raw!r}, which is not a readable file")
    return path


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A key from ``NAME`` or from the file named by ``NAME_FILE`` (a mounted Secret)."""
    value = env.get(name, "").strip()
    file_name = env.get(f"{name}_FILE", "").strip()
    if file_name:
        value = read_key_file(Path(file_name), f"{name}_FILE")
    return value or None


def read_key_file(path: Path, variable: str) -> str:
    """A held key from its file; an unreadable or empty file is a ``SettingsError`` (a key
    file that holds nothing must not turn custody off and let the agent's own key through)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(
            f"{variable} names {str(path)!r}, which cannot be read: {reason}"
        ) from exc
    if not value:
        raise SettingsError(f"{variable} names {str(path)!r}, which is empty: put the key in it")
    return value
