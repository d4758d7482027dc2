"""Settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from sidecar.core.policy import ExhaustedAction, Period
from sidecar.settings import SettingsError, from_env


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
        ({"A11I_PORT": "eleven"}, "A11I_PORT must be a whole number"),
        ({"A11I_PORT": "70000"}, "A11I_PORT must be a TCP port"),
        ({"A11I_OPENAI_BASE": "api.openai.com"}, "A11I_OPENAI_BASE must be an http"),
        ({"A11I_BUDGET_USD": "ten"}, "A11I_BUDGET_USD must be a decimal"),
        ({"A11I_BUDGET_USD": "-1"}, "non-negative"),
        ({"A11I_BUDGET_USD": "NaN"}, "non-negative"),
        ({"A11I_BUDGET_PERIOD": "Hourly"}, "Daily | Weekly | Monthly | Total"),
        ({"A11I_BUDGET_WARN_AT": "95", "A11I_BUDGET_OPTIMIZE_AT": "90"}, "must not be above"),
        ({"A11I_BUDGET_WARN_AT": "120"}, "percentage"),
        ({"A11I_MAX_BODY_BYTES": "0"}, "must be positive"),
        ({"A11I_UPSTREAM_READ_TIMEOUT": "-3"}, "must be positive"),
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
