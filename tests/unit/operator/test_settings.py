"""The webhook's settings from the operator's environment: the cluster-wide key custody."""

from __future__ import annotations

import pytest

from a11i.core.errors import SettingsError
from a11i.operator.injection import KeyCustodyRef
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
