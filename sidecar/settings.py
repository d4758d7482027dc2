"""Sidecar settings: built once, in ``main``, from the environment and files, then frozen.

Nothing reads the environment at import time. Every setting is documented here and in
docs/configuration.md; an invalid value stops the sidecar at start with a message naming the
variable, rather than running with a guess.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.config import ConfigError, OptimizerConfig, load_config, optimizer_config
from sidecar.core.headers import KeyCustody
from sidecar.core.policy import BudgetPolicy, ExhaustedAction, Period

E = TypeVar("E", Period, ExhaustedAction)


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable and the fix."""


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


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Everything ``a11i sidecar`` needs, resolved."""

    #: ``A11I_HOST``: the address to listen on; loopback, since the agent shares the pod.
    host: str = "127.0.0.1"
    #: ``A11I_PORT``: the port to listen on.
    port: int = 11000
    #: ``A11I_MAX_BODY_BYTES``: larger request bodies are answered 413.
    max_body_bytes: int = 20 * 1024 * 1024
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    #: ``A11I_OPENAI_API_KEY[_FILE]``, ``A11I_ANTHROPIC_API_KEY[_FILE]``: keys held by the sidecar.
    custody: KeyCustody = field(default_factory=KeyCustody)
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
    #: ``A11I_WALLET_FILE``: the embedded wallet's SQLite file (``:memory:``: not persisted).
    #: Default ``$XDG_STATE_HOME/a11i/wallets.sqlite``.
    wallet_file: str | None = None
    #: ``A11I_REDIS_URL``: the shared wallet, events and emergency stop (absent: embedded).
    redis_url: str | None = None
    #: ``A11I_REDIS_TIMEOUT``: seconds any one Redis call may take before it counts as failed.
    redis_timeout_s: float = 0.25
    #: ``A11I_REDIS_FAILURE``: ``open`` (calls go on, accounted locally and reconciled when Redis
    #: is back) or ``closed`` (calls are refused while Redis is unreachable).
    redis_fail_open: bool = True
    #: The optimizer: ``optimizer`` in a11i.yaml, overridden by ``A11I_OPTIMIZER*``.
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    #: The ``A11I_OPTIMIZER*`` variables, applied again over a reloaded a11i.yaml.
    optimizer_env: tuple[tuple[str, str], ...] = ()
    #: ``A11I_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"


def from_env(env: Mapping[str, str]) -> SidecarSettings:
    """Build the settings from environment variables (``os.environ`` in ``main``)."""
    upstream = UpstreamSettings(
        openai_base=_base_url(env, "A11I_OPENAI_BASE", "https://api.openai.com"),
        anthropic_base=_base_url(env, "A11I_ANTHROPIC_BASE", "https://api.anthropic.com"),
        connect_timeout_s=_positive_float(env, "A11I_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        read_timeout_s=_positive_float(env, "A11I_UPSTREAM_READ_TIMEOUT", 600.0),
    )
    limit = env.get("A11I_BUDGET_USD", "").strip()
    warn_at = _percent(env, "A11I_BUDGET_WARN_AT", Decimal(75))
    optimize_at = _percent(env, "A11I_BUDGET_OPTIMIZE_AT", Decimal(90))
    if warn_at > optimize_at:
        raise SettingsError("A11I_BUDGET_WARN_AT must not be above A11I_BUDGET_OPTIMIZE_AT")
    budget = BudgetPolicy(
        limit_usd=_money(limit, "A11I_BUDGET_USD") if limit else None,
        warn_at_percent=warn_at,
        optimize_at_percent=optimize_at,
        when_exhausted=_choice(
            env, "A11I_BUDGET_WHEN_EXHAUSTED", ExhaustedAction, ExhaustedAction.BLOCK
        ),
    )
    agent_limit = env.get("A11I_AGENT_BUDGET_USD", "").strip()
    agent_budget = (
        replace(budget, limit_usd=_money(agent_limit, "A11I_AGENT_BUDGET_USD"))
        if agent_limit
        else None
    )
    config_path = _path(env, "A11I_CONFIG")
    namespace = env.get("A11I_NAMESPACE") or env.get("POD_NAMESPACE") or "default"
    return SidecarSettings(
        host=env.get("A11I_HOST", "127.0.0.1"),
        port=_port(env),
        max_body_bytes=_positive_int(env, "A11I_MAX_BODY_BYTES", 20 * 1024 * 1024),
        upstream=upstream,
        custody=KeyCustody(
            openai_key=_secret(env, "A11I_OPENAI_API_KEY"),
            anthropic_key=_secret(env, "A11I_ANTHROPIC_API_KEY"),
        ),
        namespace=namespace,
        project=env.get("A11I_PROJECT", "").strip() or namespace,
        agent=env.get("A11I_AGENT") or env.get("POD_NAME") or socket.gethostname(),
        budget=budget,
        agent_budget=agent_budget,
        period=_choice(env, "A11I_BUDGET_PERIOD", Period, Period.TOTAL),
        timezone=_timezone(env),
        config_path=config_path,
        rate_card_path=_path(env, "A11I_RATE_CARD"),
        reload_interval_s=_positive_float(env, "A11I_RELOAD_INTERVAL", 10.0),
        encodings_dir=_path(env, "A11I_ENCODINGS_DIR", must_exist=False),
        wallet_file=env.get("A11I_WALLET_FILE", "").strip() or None,
        redis_url=_redis_url(env),
        redis_timeout_s=_positive_float(env, "A11I_REDIS_TIMEOUT", 0.25),
        redis_fail_open=_choice_str(env, "A11I_REDIS_FAILURE", ("OPEN", "CLOSED"), "OPEN")
        == "OPEN",
        optimizer=_optimizer(env, config_path),
        optimizer_env=tuple(
            (name, value) for name, value in env.items() if name.startswith("A11I_OPTIMIZER")
        ),
        log_level=_choice_str(env, "A11I_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
    )


def _optimizer(env: Mapping[str, str], config_path: Path | None) -> OptimizerConfig:
    try:
        section = load_config(config_path).optimizer if config_path is not None else {}
        return optimizer_config(section, env, source=str(config_path or "environment"))
    except ConfigError as error:
        raise SettingsError(str(error)) from error


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
    value = env.get("A11I_REDIS_URL", "").strip()
    if not value:
        return None
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"A11I_REDIS_URL must be a redis://, rediss:// or unix:// URL, not {value!r}"
        )
    return value


def _port(env: Mapping[str, str]) -> int:
    port = _positive_int(env, "A11I_PORT", 11000)
    if port > 65535:
        raise SettingsError(f"A11I_PORT must be a TCP port (1-65535), not {port}")
    return port


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http(s) URL such as {default}, not {value!r}")
    # The metered paths carry /v1 themselves; accept a base given with it, as SDKs take it.
    value = value.rstrip("/")
    return value[: -len("/v1")] if value.endswith("/v1") else value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be positive, not {value}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be positive, not {raw}")
    return value


def _money(raw: str, name: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(
            f"{name} must be a decimal amount of USD such as 25.00, not {raw!r}"
        ) from None
    if not value.is_finite() or value < 0:
        raise SettingsError(f"{name} must be a non-negative amount of USD, not {raw!r}")
    return value


def _percent(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = _money(raw, name)
    if value > 100:
        raise SettingsError(f"{name} is a percentage of the limit (0-100), not {raw}")
    return value


def _choice(env: Mapping[str, str], name: str, kind: type[E], default: E) -> E:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    for member in kind:
        if member.value.lower() == raw.lower():
            return member
    allowed = " | ".join(member.value for member in kind)
    raise SettingsError(f"{name} must be one of {allowed}, not {raw!r}")


def _choice_str(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().upper()
    if not raw:
        return default
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
    return raw


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
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"{name}_FILE names {file_name!r}, which cannot be read: {exc.strerror}"
            ) from exc
    return value or None
