"""The operator's settings, from the environment, built once in ``run.main``.

Pure: reads only the mapping it is given (``os.environ`` in ``main``), never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The value of ``A11I_OPERATOR_PEERING`` that turns peering off.
STANDALONE = "standalone"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to set."""


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """Everything the operator is configured with."""

    redis_url: str
    """``A11I_REDIS_URL``: the Redis that holds the namespaces' shared wallets (required)."""
    status_interval_s: float = 10.0
    """``A11I_OPERATOR_STATUS_INTERVAL``: seconds between two reads of a wallet into a status."""
    namespaces: tuple[str, ...] = ()
    """``A11I_OPERATOR_NAMESPACES``: comma-separated namespaces (globs) to serve; empty: all."""
    peering: str | None = "a11i"
    """``A11I_OPERATOR_PEERING``: the kopf peering object (one replica reconciles at a time);
    ``standalone`` (None here) turns peering off."""
    redis_timeout_s: float = 2.0
    """``A11I_REDIS_TIMEOUT``: seconds any one Redis call may take before Redis counts as down."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """The settings from environment variables; ``SettingsError`` says what is wrong."""
        redis_url = env.get("A11I_REDIS_URL", "").strip()
        if not redis_url:
            raise SettingsError(
                "A11I_REDIS_URL is not set: the operator keeps the namespaces' wallets in the "
                "Redis the sidecars share; set it to that Redis, e.g. redis://redis.a11i:6379/0"
            )
        peering = env.get("A11I_OPERATOR_PEERING", "a11i").strip() or "a11i"
        namespaces = tuple(
            name.strip() for name in env.get("A11I_OPERATOR_NAMESPACES", "").split(",")
        )
        return cls(
            redis_url=redis_url,
            status_interval_s=_seconds(env, "A11I_OPERATOR_STATUS_INTERVAL", 10.0),
            namespaces=tuple(name for name in namespaces if name),
            peering=None if peering == STANDALONE else peering,
            redis_timeout_s=_seconds(env, "A11I_REDIS_TIMEOUT", 2.0),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value
