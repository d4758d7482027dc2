"""a11i.yaml: the optimizer section, environment overrides, and errors that say what to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from a11i.core.errors import SettingsError
from a11i.sidecar.config import ConfigError, load_config, optimizer_config
from a11i.sidecar.settings import from_env


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "a11i.yaml"
    path.write_text(text)
    return path


def test_optimizer_section_and_environment_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "optimizer:\n"
        "  rag_min_score: 0.4\n"
        "  rag_top_k: 3\n"
        "  keep_last_turns: 8\n"
        "  at_yellow: [whitespace]\n"
        "skills: [get_pods]\n",
    )
    config = optimizer_config(load_config(path).optimizer, {}, source=str(path))
    assert config.enabled
    assert config.core.rag_min_score == 0.4
    assert config.core.rag_top_k == 3
    assert config.core.keep_last_turns == 8
    assert config.core.at_yellow == frozenset({"whitespace"})
    env = {"A11I_CONFIG": str(path), "A11I_OPTIMIZER_KEEP_LAST_TURNS": "2", "A11I_OPTIMIZER": "off"}
    settings = from_env(env)
    assert settings.optimizer.core.keep_last_turns == 2
    assert settings.optimizer.core.rag_top_k == 3
    assert not settings.optimizer.enabled


def test_optimizer_summary_and_score_order_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "optimizer:\n"
        "  rag_score_order: lower\n"
        "  summary_block_messages: 12\n"
        "  summary_block_chars: 5000\n",
    )
    config = optimizer_config(load_config(path).optimizer, {}, source=str(path))
    assert config.core.rag_score_order == "lower"
    assert config.core.summary_block_messages == 12
    assert config.core.summary_block_chars == 5000
    env = {"A11I_CONFIG": str(path), "A11I_OPTIMIZER_RAG_SCORE_ORDER": "higher"}
    assert from_env(env).optimizer.core.rag_score_order == "higher"
    assert optimizer_config({}, {}, source="-").core.rag_score_order == "auto"
    with pytest.raises(ConfigError, match="rag_score_order"):
        optimizer_config({"rag_score_order": "best"}, {}, source="-")
    with pytest.raises(ConfigError, match="summary_block_messages"):
        optimizer_config({"summary_block_messages": 1}, {}, source="-")


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).optimizer == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer: [1]\n", "optimizer must be a mapping"),
        ("- a\n", "top level must be a mapping"),
        ("optimiser: {}\n", "unknown sections"),
        ("optimizer: {keep_turns: 3}\n", "unknown keys"),
        ("optimizer: {keep_last_turns: 0}\n", "keep_last_turns must be at least 1"),
        ("optimizer: {keep_last_turns: 2.5}\n", "whole number"),
        ("optimizer: {rag_min_score: high}\n", "a number is expected"),
        ("optimizer: {at_red: [shrink]}\n", "unknown optimizer strategies"),
        ("optimizer: {enabled: maybe}\n", "enabled must be on or off"),
        ("optimizer: {target_reduction: 1.5}\n", "target_reduction"),
        ("optimizer: {a: [}\n", "not valid YAML"),
    ],
    ids=[
        "section-type",
        "top-level",
        "unknown-section",
        "unknown-key",
        "zero-turns",
        "fraction",
        "score-text",
        "strategy",
        "flag",
        "reduction",
        "yaml",
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    with pytest.raises(SettingsError, match=message):
        from_env({"A11I_CONFIG": str(path)})


# -- telemetry sections ------------------------------------------------------------------------
def test_telemetry_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "skills: [get_pods, ' check_logs ']\n"
        "context_saturation_warning_percent: 80\n"
        "capture_content: true\n"
        "pii_rules:\n"
        "  - name: employee_id\n"
        "    regex: 'EMP-[0-9]{6}'\n"
        "  - name: phone\n"
        "    enabled: false\n",
    )
    telemetry = load_config(path).telemetry
    assert telemetry.skills == frozenset({"get_pods", "check_logs"})
    assert telemetry.saturation_warning_percent == 80
    assert telemetry.capture_content is True
    names = [rule.name for rule in telemetry.pii_rules]
    assert "employee_id" in names
    assert "phone" not in names
    assert "email" in names


def test_no_telemetry_sections_mean_the_defaults(tmp_path: Path) -> None:
    telemetry = load_config(write(tmp_path, "optimizer: {}\n")).telemetry
    assert telemetry.skills == frozenset()
    assert telemetry.saturation_warning_percent == 90
    assert telemetry.capture_content is None
    assert {rule.name for rule in telemetry.pii_rules} >= {"email", "payment_card", "api_key"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("skills: get_pods\n", "skills must be a list of tool names"),
        ("skills: [1]\n", "skills must be a list of tool names"),
        ("context_saturation_warning_percent: 120\n", "must be a percentage (0-100]"),
        ("context_saturation_warning_percent: high\n", "must be a percentage (0-100]"),
        ("capture_content: sometimes\n", "capture_content must be true or false"),
        ("pii_rules:\n  - name: bad\n    regex: '('\n", "pii_rules[0] (bad)"),
        ("pii_rules: {}\n", "pii_rules"),
    ],
    ids=[
        "skills-scalar",
        "skills-number",
        "threshold-high",
        "threshold-text",
        "capture",
        "regex",
        "rules-mapping",
    ],
)
def test_invalid_telemetry_sections(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))
