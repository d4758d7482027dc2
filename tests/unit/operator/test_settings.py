"""The webhook's settings from the operator's environment: the cluster-wide key custody and
admission defaults."""

from __future__ import annotations

import pytest

from a11i.core.errors import SettingsError
from a11i.operator.injection import AdmissionSpec, KeyCustodyRef
from a11i.operator.settings import OperatorSettings, Role

WEBHOOK = {"A11I_SIDECAR_IMAGE": "a11i:test"}


def custody_of(env: dict[str, str]) -> KeyCustodyRef | None:
    settings = OperatorSettings.from_env({**WEBHOOK, **env}, Role.WEBHOOK)
    assert settings.webhook is not None
    return settings.webhook.injection.key_custody


def test_key_custody_default_from_the_environment() -> None:
    assert custody_of({}) is None
    assert custody_of(
        {
            "A11I_KEY_CUSTODY_SECRET": "a11i-provider-keys",
            "A11I_KEY_CUSTODY_OPENAI_KEY": "openai",
            "A11I_KEY_CUSTODY_ANTHROPIC_KEY": "anthropic.key",
        }
    ) == KeyCustodyRef("a11i-provider-keys", "openai", "anthropic.key")
    assert custody_of(
        {"A11I_KEY_CUSTODY_SECRET": "keys", "A11I_KEY_CUSTODY_ANTHROPIC_KEY": "a"}
    ) == KeyCustodyRef("keys", "", "a")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"A11I_KEY_CUSTODY_SECRET": "keys"}, "needs A11I_KEY_CUSTODY_OPENAI_KEY or"),
        ({"A11I_KEY_CUSTODY_OPENAI_KEY": "openai"}, "need A11I_KEY_CUSTODY_SECRET"),
        (
            {"A11I_KEY_CUSTODY_SECRET": "Keys!", "A11I_KEY_CUSTODY_OPENAI_KEY": "openai"},
            "A11I_KEY_CUSTODY_SECRET must be the name of a Secret",
        ),
        (
            {"A11I_KEY_CUSTODY_SECRET": "keys", "A11I_KEY_CUSTODY_OPENAI_KEY": "open ai"},
            "A11I_KEY_CUSTODY_OPENAI_KEY must be a key of the Secret's data",
        ),
    ],
    ids=["secret-without-key", "key-without-secret", "bad-secret-name", "bad-key"],
)
def test_bad_key_custody_says_what_to_fix(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        OperatorSettings.from_env({**WEBHOOK, **env}, Role.WEBHOOK)


def admission_of(env: dict[str, str]) -> AdmissionSpec:
    settings = OperatorSettings.from_env({**WEBHOOK, **env}, Role.WEBHOOK)
    assert settings.webhook is not None
    return settings.webhook.injection.admission


def test_the_admission_default_from_the_environment() -> None:
    """The chart's injection.admission: unset leaves each field to the sidecar's own default."""
    assert admission_of({}) == AdmissionSpec()
    assert admission_of(
        {
            "A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP": "false",
            "A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS": "2048",
            "A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "0",
        }
    ) == AdmissionSpec(False, 2048, 0.0)
    assert admission_of({"A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "2.5"}) == AdmissionSpec(wait_s=2.5)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP": "strict"}, "must be on or off"),
        ({"A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS": "0"}, "must be positive"),
        ({"A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS": "1000001"}, "at most 1000000"),
        ({"A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "61"}, "from 0 .never wait. to 60"),
        ({"A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "-1"}, "from 0 .never wait. to 60"),
        ({"A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "soon"}, "from 0 .never wait. to 60"),
    ],
    ids=[
        "fit-word",
        "tokens-zero",
        "tokens-too-many",
        "wait-too-long",
        "wait-negative",
        "wait-word",
    ],
)
def test_a_bad_admission_default_says_what_to_fix(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        OperatorSettings.from_env({**WEBHOOK, **env}, Role.WEBHOOK)


def test_the_sidecars_upstreams_from_the_environment() -> None:
    settings = OperatorSettings.from_env(
        {
            **WEBHOOK,
            "A11I_SIDECAR_OPENAI_BASE": "http://vllm.models.svc:8000/v1/",
            "A11I_SIDECAR_ANTHROPIC_BASE": "https://egress.corp.example",
        },
        Role.WEBHOOK,
    )
    assert settings.webhook is not None
    injection = settings.webhook.injection
    assert injection.openai_upstream == "http://vllm.models.svc:8000/v1"
    assert injection.anthropic_upstream == "https://egress.corp.example"


def test_the_upstreams_default_to_the_sidecars_own() -> None:
    settings = OperatorSettings.from_env(WEBHOOK, Role.WEBHOOK)
    assert settings.webhook is not None
    assert settings.webhook.injection.openai_upstream == ""
    assert settings.webhook.injection.anthropic_upstream == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("A11I_SIDECAR_OPENAI_BASE", "vllm.models.svc:8000"),
        ("A11I_SIDECAR_ANTHROPIC_BASE", "ftp://egress.corp.example"),
        ("A11I_SIDECAR_OPENAI_BASE", "http://"),
    ],
    ids=["no-scheme", "wrong-scheme", "no-host"],
)
def test_a_bad_upstream_says_what_to_fix(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be an http:// or https:// URL"):
        OperatorSettings.from_env({**WEBHOOK, name: value}, Role.WEBHOOK)
