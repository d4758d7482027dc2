"""The operator's settings, from the environment, built once in ``run.main``.

Pure: reads only the mapping it is given (``os.environ`` in ``main``), never at import time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from a11i.core import variables as var
from a11i.core.errors import SettingsError
from a11i.operator.injection import (
    MAX_MIN_OUTPUT_TOKENS,
    MAX_WAIT_S,
    AdmissionSpec,
    InjectionSettings,
    KeyCustodyRef,
    is_data_key,
)
from a11i.operator.policy_config import is_object_name
from a11i.sidecar import contract
from a11i.sidecar.redis_clients import RedisMode, RedisTarget

#: The value of ``A11I_OPERATOR_PEERING`` that turns peering off.
STANDALONE = "standalone"


class Role(StrEnum):
    """``--role``: which half of the operator a process runs."""

    ALL = "all"
    """The reconcilers, and the injection webhook when ``A11I_SIDECAR_IMAGE`` is set."""
    RECONCILER = "reconciler"
    """AgentBudgets and TelemetryPolicies; no webhook server."""
    WEBHOOK = "webhook"
    """Only the injection webhook (no Redis, no peering: every replica serves)."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The injection webhook's server and what it injects."""

    injection: InjectionSettings
    """What the sidecar is (``A11I_SIDECAR_IMAGE``, ``A11I_SIDECAR_REDIS_URL``,
    ``A11I_KEY_CUSTODY_*``, ``A11I_SIDECAR_BUDGET_*``, ``A11I_SIDECAR_OPENAI_BASE``,
    ``A11I_SIDECAR_ANTHROPIC_BASE``, ``A11I_OPERATOR_NAMESPACE``);
    ``native_sidecars`` is settled at
    start when auto."""
    port: int = 9443
    """``--webhook-port`` / ``A11I_WEBHOOK_PORT``: the HTTPS port the API server calls."""
    cert_dir: Path = Path("/etc/a11i/webhook-tls")
    """``--webhook-cert-dir`` / ``A11I_WEBHOOK_CERT_DIR``: ``tls.crt`` and ``tls.key``, re-read
    when they change (a renewed Secret or cert-manager Certificate, without a restart)."""
    native_sidecars: bool | None = None
    """``A11I_NATIVE_SIDECARS``: ``true``/``false``; ``auto`` (None here) asks the API
    server's ``/version`` at start: 1.29 or later runs the proxy as a native sidecar."""
    self_signed: bool = False
    """``--self-signed``: write a fresh CA and serving certificate into ``cert_dir`` at start
    (a laptop; in a cluster the chart or cert-manager provides them)."""


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """Everything the operator is configured with."""

    redis_url: str
    """``A11I_REDIS_URL``: the Redis that holds the namespaces' shared wallets (required by
    the reconcilers; the webhook role does without)."""
    status_interval_s: float = 10.0
    """``A11I_OPERATOR_STATUS_INTERVAL``: seconds between two reads of a wallet into a status."""
    namespaces: tuple[str, ...] = ()
    """``A11I_OPERATOR_NAMESPACES``: comma-separated namespaces (globs) to serve; empty: all."""
    peering: str | None = "a11i"
    """``A11I_OPERATOR_PEERING``: the kopf peering object (one replica reconciles at a time);
    ``standalone`` (None here) turns peering off."""
    redis_timeout_s: float = 2.0
    """``A11I_REDIS_TIMEOUT``: seconds any one Redis call may take before Redis counts as down."""
    sidecar_redis_secret: str = ""
    """``A11I_OPERATOR_SIDECAR_REDIS_SECRET``: the name of a Secret the operator keeps in every
    namespace with an AgentBudget or the ``a11i.io/inject=enabled`` label, holding its own
    ``A11I_REDIS_URL`` (password included) for the sidecars there; empty: none."""
    role: Role = Role.ALL
    """``--role``: all, reconciler or webhook."""
    redis_mode: RedisMode = RedisMode.STANDALONE
    """``A11I_REDIS_MODE``: standalone, cluster or sentinel (docs/configuration.md)."""
    redis_master: str = "mymaster"
    """``A11I_REDIS_MASTER``: with sentinel, the name the sentinels monitor the primary by."""
    redis_sentinel_password: str | None = field(default=None, repr=False)
    """``A11I_REDIS_SENTINEL_PASSWORD``: with sentinel, the sentinels' own password."""

    @property
    def redis(self) -> RedisTarget:
        """The shared Redis and how to reach it."""
        return RedisTarget(
            self.redis_url, self.redis_mode, self.redis_master, self.redis_sentinel_password
        )

    webhook: WebhookSettings | None = None
    """The injection webhook; None: this process serves none."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def reconciles(self) -> bool:
        return self.role is not Role.WEBHOOK

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        role: Role = Role.ALL,
        *,
        webhook_port: int | None = None,
        webhook_cert_dir: Path | None = None,
        self_signed: bool = False,
    ) -> OperatorSettings:
        """The settings from environment variables (and the flags that override them);
        ``SettingsError`` says what is wrong."""
        redis_url = var.text(env, "A11I_REDIS_URL")
        webhook = _webhook(env, role, webhook_port, webhook_cert_dir, self_signed)
        if not redis_url and role is not Role.WEBHOOK:
            raise SettingsError(
                "A11I_REDIS_URL is not set: the operator keeps the namespaces' wallets in the "
                "Redis the sidecars share; set it to that Redis, e.g. redis://redis.a11i:6379/0"
            )
        peering = var.text(env, "A11I_OPERATOR_PEERING", "a11i")
        redis = RedisTarget.from_env(env, redis_url or "redis://localhost")
        return cls(
            redis_url=redis_url,
            status_interval_s=var.seconds(env, "A11I_OPERATOR_STATUS_INTERVAL", 10.0),
            namespaces=var.names(env, "A11I_OPERATOR_NAMESPACES"),
            peering=None if peering == STANDALONE else peering,
            redis_timeout_s=var.seconds(env, "A11I_REDIS_TIMEOUT", 2.0),
            sidecar_redis_secret=_secret_name(env, "A11I_OPERATOR_SIDECAR_REDIS_SECRET"),
            role=role,
            webhook=webhook,
            redis_mode=redis.mode,
            redis_master=redis.master,
            redis_sentinel_password=redis.sentinel_password,
        )


def _webhook(
    env: Mapping[str, str],
    role: Role,
    port: int | None,
    cert_dir: Path | None,
    self_signed: bool,
) -> WebhookSettings | None:
    image = var.text(env, "A11I_SIDECAR_IMAGE")
    if role is Role.RECONCILER or (role is Role.ALL and not image):
        return None
    if not image:
        raise SettingsError(
            "A11I_SIDECAR_IMAGE is not set: the webhook injects that image as the a11i-proxy "
            "sidecar; set it, e.g. ghcr.io/a11i/a11i:0.1.0"
        )
    native_raw = var.text(env, "A11I_NATIVE_SIDECARS", "auto")
    # auto: native sidecars when the API server's version has them (the webhook asks it).
    native = (
        None
        if native_raw.lower() == "auto"
        else var.parse_flag(native_raw, "A11I_NATIVE_SIDECARS (or auto)")
    )
    if port is None:
        port = var.port(env, "A11I_WEBHOOK_PORT", 9443)
    if not 0 < port < 65536:
        raise SettingsError("A11I_WEBHOOK_PORT (--webhook-port) must be a TCP port (1-65535)")
    if cert_dir is None:
        cert_dir = Path(var.text(env, "A11I_WEBHOOK_CERT_DIR", "/etc/a11i/webhook-tls"))
    return WebhookSettings(
        injection=InjectionSettings(
            image=image,
            redis_url=var.text(env, "A11I_SIDECAR_REDIS_URL"),
            redis_secret=_secret_name(env, "A11I_SIDECAR_REDIS_SECRET"),
            redis_mode=var.choice(env, "A11I_REDIS_MODE", RedisMode, RedisMode.STANDALONE),
            redis_master=var.text(env, "A11I_REDIS_MASTER", "mymaster"),
            key_custody=_key_custody(env),
            admission=_admission(env),
            operator_namespace=var.text(env, "A11I_OPERATOR_NAMESPACE"),
            metrics_port=_metrics_port(env),
            openai_upstream=_upstream(env, "A11I_SIDECAR_OPENAI_BASE"),
            anthropic_upstream=_upstream(env, "A11I_SIDECAR_ANTHROPIC_BASE"),
            native_sidecars=True if native is None else native,
        ),
        port=port,
        cert_dir=cert_dir,
        native_sidecars=native,
        self_signed=self_signed,
    )


def _metrics_port(env: Mapping[str, str]) -> int:
    """``A11I_SIDECAR_METRICS_PORT``: the injected sidecars' metrics listener; ``0``: none."""
    if var.text(env, "A11I_SIDECAR_METRICS_PORT") == "0":
        return 0
    return var.port(env, "A11I_SIDECAR_METRICS_PORT", contract.DEFAULT_METRICS_PORT)


def _upstream(env: Mapping[str, str], name: str) -> str:
    """Where the injected sidecars send one provider's calls: an http(s) URL, or empty for
    the sidecar's own default (the provider's public API)."""
    if not var.text(env, name):
        return ""
    return var.url(env, name, "").rstrip("/")


def _key_custody(env: Mapping[str, str]) -> KeyCustodyRef | None:
    """The cluster-wide default Secret of provider keys: ``A11I_KEY_CUSTODY_SECRET`` and the
    keys of it that hold each provider's API key (at least one)."""
    secret = _secret_name(env, "A11I_KEY_CUSTODY_SECRET")
    keys = {
        name: var.text(env, name)
        for name in ("A11I_KEY_CUSTODY_OPENAI_KEY", "A11I_KEY_CUSTODY_ANTHROPIC_KEY")
    }
    for name, key in keys.items():
        if key and not is_data_key(key):
            raise SettingsError(
                f"{name} must be a key of the Secret's data (letters, digits, '-', '_', '.'), "
                f"not {key!r}"
            )
    if not secret:
        if any(keys.values()):
            raise SettingsError(
                "A11I_KEY_CUSTODY_OPENAI_KEY / _ANTHROPIC_KEY need A11I_KEY_CUSTODY_SECRET: the "
                "Secret (in each agent pod's namespace) that holds the provider keys"
            )
        return None
    if not any(keys.values()):
        raise SettingsError(
            "A11I_KEY_CUSTODY_SECRET needs A11I_KEY_CUSTODY_OPENAI_KEY or "
            "A11I_KEY_CUSTODY_ANTHROPIC_KEY (or both): the key of the Secret that holds each "
            "provider's API key, e.g. openai"
        )
    return KeyCustodyRef(
        secret, keys["A11I_KEY_CUSTODY_OPENAI_KEY"], keys["A11I_KEY_CUSTODY_ANTHROPIC_KEY"]
    )


def _admission(env: Mapping[str, str]) -> AdmissionSpec:
    """The cluster-wide default of ``spec.admission``, with the bounds the CRD has; a variable
    left unset leaves that field to the sidecar's own default."""
    fit = var.text(env, "A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP")
    tokens = "A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS"
    wait = "A11I_SIDECAR_BUDGET_ADMISSION_WAIT"
    wait_raw = var.text(env, wait)
    try:
        wait_s = float(wait_raw) if wait_raw else None
    except ValueError:
        wait_s = math.nan
    if wait_s is not None and not 0 <= wait_s <= MAX_WAIT_S:
        raise SettingsError(
            f"{wait} must be seconds from 0 (never wait) to {MAX_WAIT_S:g}, not {wait_raw!r}"
        )
    return AdmissionSpec(
        var.parse_flag(fit, "A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP") if fit else None,
        (
            var.whole(env, tokens, 1, maximum=MAX_MIN_OUTPUT_TOKENS)
            if var.text(env, tokens)
            else None
        ),
        wait_s,
    )


def _secret_name(env: Mapping[str, str], name: str) -> str:
    value = var.text(env, name)
    if value and not is_object_name(value):
        raise SettingsError(f"{name} must be the name of a Secret (DNS subdomain), not {value!r}")
    return value
