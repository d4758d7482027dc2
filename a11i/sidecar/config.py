"""``a11i.yaml``: the configuration file mounted from a ConfigMap (``A11I_CONFIG``).

Adapter: reads and validates the file into frozen settings; an invalid file raises
``ConfigError`` naming the file, the key and the problem, and nothing of it is applied (the
sidecar keeps what is in force). Sections: ``optimizer``, and for telemetry ``pii_rules``,
``skills``, ``context_saturation_warning_percent`` and ``capture_content``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import yaml

from a11i.core import variables as var
from a11i.core.errors import ConfigurationError
from a11i.core.optimizer import ALL_STRATEGIES, OptimizerSettings
from a11i.core.optimizer.settings import ScoreOrder
from a11i.core.scrub import BUILTIN_RULES, Rule, ScrubRuleError, rules_from_config

log = logging.getLogger(__name__)

T = TypeVar("T")

_TELEMETRY_SECTIONS = frozenset(
    {"pii_rules", "skills", "context_saturation_warning_percent", "capture_content"}
)
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
        "rag_score_order",
        "summary_block_messages",
        "summary_block_chars",
    }
)


class ConfigError(ConfigurationError):
    """``a11i.yaml`` cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    """Whether and how a call is made smaller when the wallet is Yellow or Red."""

    #: ``A11I_OPTIMIZER`` / ``optimizer.enabled``: off marks calls but forwards them unchanged.
    enabled: bool = True
    #: The strategies and their knobs (docs/optimizer.md).
    core: OptimizerSettings = field(default_factory=OptimizerSettings)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What telemetry exports and how it is tagged: the telemetry sections of ``a11i.yaml``."""

    #: ``pii_rules``: the scrubber's rules (the built-ins, changed and extended by the file).
    pii_rules: tuple[Rule, ...] = BUILTIN_RULES
    #: ``skills``: tool names tagged ``skill.name`` on spans.
    skills: frozenset[str] = frozenset()
    #: ``context_saturation_warning_percent``: a call whose prompt fills more of the context
    #: window than this is marked on its span, logged and counted.
    saturation_warning_percent: Decimal = Decimal(90)
    #: ``capture_content``: overrides ``A11I_CAPTURE_CONTENT`` when set.
    capture_content: bool | None = None


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What ``a11i.yaml`` says."""

    optimizer: Mapping[str, object] = field(default_factory=dict)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)


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
    telemetry = telemetry_config(data, source=str(path))
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
    return FileConfig(optimizer=dict(section), telemetry=telemetry)


def telemetry_config(data: Mapping[object, object], *, source: str) -> TelemetryConfig:
    """The telemetry sections of ``a11i.yaml``, validated."""
    try:
        rules = rules_from_config(data.get("pii_rules"), source=source)
    except ScrubRuleError as error:
        raise ConfigError(str(error)) from error
    skills = data.get("skills")
    if skills is None:
        skills = []
    if not isinstance(skills, list) or not all(
        isinstance(skill, str) and skill.strip() for skill in skills
    ):
        raise ConfigError(f"{source}: skills must be a list of tool names, e.g. [get_pods]")
    raw_threshold = data.get("context_saturation_warning_percent", 90)
    try:
        if isinstance(raw_threshold, bool):
            raise InvalidOperation
        threshold = Decimal(str(raw_threshold))
    except InvalidOperation:
        threshold = Decimal(-1)
    if not threshold.is_finite() or not 0 < threshold <= 100:
        raise ConfigError(
            f"{source}: context_saturation_warning_percent must be a percentage (0-100], "
            f"not {raw_threshold!r}"
        )
    capture = data.get("capture_content")
    if capture is not None and not isinstance(capture, bool):
        raise ConfigError(f"{source}: capture_content must be true or false, not {capture!r}")
    return TelemetryConfig(
        pii_rules=rules,
        skills=frozenset(skill.strip() for skill in skills),
        saturation_warning_percent=threshold,
        capture_content=capture,
    )


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
        "rag_score_order": "A11I_OPTIMIZER_RAG_SCORE_ORDER",
    }
    for key, variable in overrides.items():
        raw = env.get(variable, "").strip()
        if raw:
            values[key] = raw
    try:
        enabled = var.parse_flag(values.get("enabled", True), "enabled")
        core = OptimizerSettings(
            at_yellow=_strategies(values.get("at_yellow"), OptimizerSettings().at_yellow),
            at_red=_strategies(values.get("at_red"), OptimizerSettings().at_red),
            rag_min_score=_number(values.get("rag_min_score")),
            rag_top_k=_whole(values.get("rag_top_k")),
            keep_last_turns=_or(_whole(values.get("keep_last_turns")), 6),
            tool_result_max_chars=_or(_whole(values.get("tool_result_max_chars")), 4000),
            target_reduction=_or(_number(values.get("target_reduction")), 0.0),
            rag_score_order=_score_order(values.get("rag_score_order", "auto")),
            summary_block_messages=_or(_whole(values.get("summary_block_messages")), 8),
            summary_block_chars=_or(_whole(values.get("summary_block_chars")), 3000),
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: optimizer: {error}") from error
    return OptimizerConfig(enabled=enabled, core=core)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _strategies(value: object, default: frozenset[str]) -> frozenset[str]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(
            f"a list of strategy names is expected ({', '.join(sorted(ALL_STRATEGIES))})"
        )
    return frozenset(value)


def _score_order(value: object) -> ScoreOrder:
    if value == "auto" or value == "higher" or value == "lower":
        return value
    raise ValueError(f"rag_score_order must be auto, higher or lower, not {value!r}")


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
