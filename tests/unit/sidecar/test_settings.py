"""Settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from a11i.core.errors import SettingsError
from a11i.core.policy import ExhaustedAction, Period
from a11i.sidecar.settings import OtlpProtocol, from_env


def test_defaults() -> None:
    settings = from_env({})
    assert settings.port == 11000
    assert settings.host == "127.0.0.1"
    assert settings.upstream.openai_base == "https://api.openai.com"
    assert settings.upstream.anthropic_base == "https://api.anthropic.com"
    assert settings.budget.limit_usd is None
    assert settings.period is Period.TOTAL
    assert settings.custody.openai_key is None


def test_values(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-secret\n")
    settings = from_env(
        {
            "A11I_PORT": "12000",
            "A11I_OPENAI_BASE": "http://127.0.0.1:9000/v1/",
            "A11I_BUDGET_USD": "25.50",
            "A11I_BUDGET_PERIOD": "daily",
            "A11I_BUDGET_WHEN_EXHAUSTED": "Warn",
            "A11I_OPENAI_API_KEY_FILE": str(key_file),
            "A11I_ANTHROPIC_API_KEY": "sk-ant-env",
            "A11I_NAMESPACE": "team-a",
            "A11I_AGENT": "sre-bot",
        }
    )
    assert settings.port == 12000
    assert settings.upstream.openai_base == "http://127.0.0.1:9000"
    assert settings.budget.limit_usd == Decimal("25.50")
    assert settings.budget.when_exhausted is ExhaustedAction.WARN
    assert settings.period is Period.DAILY
    assert settings.custody.openai_key == "sk-from-secret"
    assert settings.custody.anthropic_key == "sk-ant-env"
    assert (settings.namespace, settings.agent) == ("team-a", "sre-bot")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A11I_PORT": "eleven"}, "A11I_PORT must be a TCP port"),
        ({"A11I_PORT": "70000"}, "A11I_PORT must be a TCP port"),
        (
            {"A11I_OPENAI_BASE": "api.openai.com"},
            "A11I_OPENAI_BASE must be an http:// or https:// URL",
        ),
        ({"A11I_BUDGET_USD": "ten"}, "A11I_BUDGET_USD must be a decimal"),
        ({"A11I_BUDGET_USD": "-1"}, "non-negative"),
        ({"A11I_BUDGET_USD": "NaN"}, "non-negative"),
        ({"A11I_BUDGET_PERIOD": "Hourly"}, "Daily | Weekly | Monthly | Total"),
        ({"A11I_BUDGET_WARN_AT": "95", "A11I_BUDGET_OPTIMIZE_AT": "90"}, "must not be above"),
        ({"A11I_BUDGET_WARN_AT": "120"}, "percentage"),
        ({"A11I_MAX_BODY_BYTES": "0"}, "must be positive"),
        ({"A11I_UPSTREAM_READ_TIMEOUT": "-3"}, "must be a positive number of seconds"),
        ({"A11I_RATE_CARD": "/nonexistent/rates.yaml"}, "not a readable file"),
        ({"A11I_OPENAI_API_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
        ({"A11I_LOG_LEVEL": "LOUD"}, "A11I_LOG_LEVEL must be one of"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_invalid_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_env(env)


def test_budget_time_zone() -> None:
    assert from_env({"A11I_BUDGET_TIMEZONE": "America/New_York"}).timezone == "America/New_York"
    with pytest.raises(SettingsError, match="IANA time zone"):
        from_env({"A11I_BUDGET_TIMEZONE": "Mars/Olympus"})


# -- telemetry (the standard OTEL_* variables) ------------------------------------------------
def test_no_endpoint_no_export() -> None:
    telemetry = from_env({}).telemetry
    assert (telemetry.traces, telemetry.metrics, telemetry.logs) == (None, None, None)
    assert not telemetry.capture_content
    assert not telemetry.decision_logs


def test_http_endpoint_gets_a_path_per_signal() -> None:
    telemetry = from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,x-tenant=a",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:4318/custom",
            "OTEL_METRICS_EXPORTER": "none",
        }
    ).telemetry
    assert telemetry.traces is not None
    assert telemetry.logs is not None
    assert telemetry.traces.endpoint == "http://collector:4318/v1/traces"
    assert telemetry.traces.protocol is OtlpProtocol.HTTP
    assert telemetry.traces.headers == (("api-key", "s ecret"), ("x-tenant", "a"))
    assert telemetry.traces.timeout_s == 2.5
    # A signal-specific endpoint is used as it is.
    assert telemetry.logs.endpoint == "http://logs:4318/custom"
    assert telemetry.metrics is None


def test_grpc_endpoint() -> None:
    telemetry = from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "checkout-agent",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "A11I_CAPTURE_CONTENT": "true",
            "A11I_DECISION_LOGS": "on",
        }
    ).telemetry
    assert telemetry.traces is not None
    assert telemetry.traces.endpoint == "http://collector:4317"
    assert telemetry.traces.protocol is OtlpProtocol.GRPC
    assert telemetry.traces.insecure
    assert telemetry.service_name == "checkout-agent"
    assert telemetry.resource_attributes == (("deployment.environment", "prod"),)
    assert (telemetry.sampler, telemetry.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert telemetry.capture_content
    assert telemetry.decision_logs


def test_exporter_otlp_without_endpoint_uses_the_default() -> None:
    telemetry = from_env({"OTEL_TRACES_EXPORTER": "otlp"}).telemetry
    assert telemetry.traces is not None
    assert telemetry.traces.endpoint == "http://localhost:4318/v1/traces"
    assert telemetry.metrics is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER must be otlp or none"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "http/json is not supported",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "must be an http(s) URL"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_HEADERS": "secret",
            },
            "OTEL_EXPORTER_OTLP_HEADERS must be a list of key=value pairs",
        ),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER must be one of"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG must be a ratio",
        ),
        (
            {"OTEL_BSP_SCHEDULE_DELAY": "soon"},
            "OTEL_BSP_SCHEDULE_DELAY must be a positive number of milli",
        ),
        ({"A11I_CAPTURE_CONTENT": "maybe"}, "A11I_CAPTURE_CONTENT must be on or off"),
    ],
    ids=["exporter", "http-json", "endpoint", "headers", "sampler", "ratio", "delay", "capture"],
)
def test_invalid_telemetry_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        from_env(env)


def test_header_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as raised:
        from_env(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_HEADERS": "tok3n-s3cret",
            }
        )
    assert "tok3n" not in str(raised.value)
