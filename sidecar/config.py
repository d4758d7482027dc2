"""``a11i.yaml``: the configuration file mounted from a ConfigMap (``A11I_CONFIG``).

Adapter: reads and validates the file into frozen settings; an invalid file raises
``ConfigError`` naming the file, the key and the problem, and nothing of it is applied. This
version reads the ``optimizer`` section; the telemetry sections (``pii_rules``, ``skills``,
``context_saturation_warning_percent``) are accepted and reported as not used yet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from sidecar.core.optimizer import ALL_STRATEGIES, OptimizerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_TELEMETRY_SECTIONS = frozenset({"pii_rules", "skills", "context_saturation_warning_percent"})
_OPTIMIZER_KEYS = frozenset(
    {
        "enabled",
        "at_yellow",
        "at_red",
        "rag_min_score",
        "rag_top_k",
        "keep_last_turns",
        "tool_result_max_chars",
        "target_reduction",
    }
)


class ConfigError(Exception):
    """``a11i.yaml`` cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    """Whether and how a call is made smaller when the wallet is Yellow or Red."""

    #: ``A11I_OPTIMIZER`` / ``optimizer.enabled``: off marks calls but forwards them unchanged.
    enabled: bool = True
    #: The strategies and their knobs (docs/optimizer.md).
    core: OptimizerSettings = field(default_factory=OptimizerSettings)


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What ``a11i.yaml`` says (only the sections this version uses)."""

    optimizer: Mapping[str, object] = field(default_factory=dict)


def load_config(path: Path) -> FileConfig:
    """Read and validate ``a11i.yaml``."""
    try:
        data: object = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror}") from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        return FileConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    unknown = set(data) - _TELEMETRY_SECTIONS - {"optimizer"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown sections {sorted(map(str, unknown))}; known: optimizer, "
            + ", ".join(sorted(_TELEMETRY_SECTIONS))
        )
    unused = set(data) & _TELEMETRY_SECTIONS
    if unused:
        log.warning("%s: %s not used by this version of a11i", path, ", ".join(sorted(unused)))
    section = data.get("optimizer") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: optimizer must be a mapping")
    extra = set(section) - _OPTIMIZER_KEYS
    if extra:
        raise ConfigError(
            f"{path}: optimizer: unknown keys {sorted(map(str, extra))}; known: "
            + ", ".join(sorted(_OPTIMIZER_KEYS))
        )
    # Validate now, so a broken file is refused whole before anything is applied.
    optimizer_config(section, {}, source=str(path))
    return FileConfig(optimizer=dict(section))


def optimizer_config(
    section: Mapping[str, object], env: Mapping[str, str], *, source: str
) -> OptimizerConfig:
    """The optimizer settings: the file's ``optimizer`` section, each key overridden by its
    ``A11I_OPTIMIZER*`` variable when that is set."""
    values: dict[str, object] = dict(section)
    overrides = {
        "enabled": "A11I_OPTIMIZER",
        "rag_min_score": "A11I_OPTIMIZER_RAG_MIN_SCORE",
        "rag_top_k": "A11I_OPTIMIZER_RAG_TOP_K",
        "keep_last_turns": "A11I_OPTIMIZER_KEEP_LAST_TURNS",
        "tool_result_max_chars": "A11I_OPTIMIZER_TOOL_RESULT_MAX_CHARS",
    }
    for key, variable in overrides.items():
        raw = env.get(variable, "").strip()
        if raw:
            values[key] = raw
    try:
        enabled = _flag(values.get("enabled", True))
        core = OptimizerSettings(
            at_yellow=_strategies(values.get("at_yellow"), OptimizerSettings().at_yellow),
            at_red=_strategies(values.get("at_red"), OptimizerSettings().at_red),
            rag_min_score=_number(values.get("rag_min_score")),
            rag_top_k=_whole(values.get("rag_top_k")),
            keep_last_turns=_or(_whole(values.get("keep_last_turns")), 6),
            tool_result_max_chars=_or(_whole(values.get("tool_result_max_chars")), 4000),
            target_reduction=_or(_number(values.get("target_reduction")), 0.0),
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: optimizer: {error}") from error
    return OptimizerConfig(enabled=enabled, core=core)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"enabled must be on or off, not {value!r}")


def _strategies(value: object, default: frozenset[str]) -> frozenset[str]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(
            f"a list of strategy names is expected ({', '.join(sorted(ALL_STRATEGIES))})"
        )
    return frozenset(value)


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"a number is expected, not {value!r}")
    try:
        return float(str(value))
    except ValueError:
        raise ValueError(f"a number is expected, not {value!r}") from None


def _whole(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"a whole number is expected, not {value!r}")
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"a whole number is expected, not {value!r}") from None
