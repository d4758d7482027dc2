"""The pure part of the TelemetryPolicy reconciler: spec + referenced data → generated data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from a11i.operator.policy_config import (
    CONFIG_MAP_NAME,
    ENV_CONFIG_MAP_NAME,
    HEADERS_SECRET_NAME,
    ObjectRef,
    PolicyConfigError,
    PolicySpec,
    Reason,
    content_hash,
    parse_spec,
    sidecar_config,
)
from a11i.sidecar.config import load_config
from a11i.sidecar.settings import OtlpProtocol, telemetry_from_env
from tests.support.paths import ROOT

EXAMPLES = ROOT / "examples"


def _example(name: str) -> dict[str, object]:
    loaded = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _example_config_maps() -> dict[str, dict[str, str]]:
    maps: dict[str, dict[str, str]] = {}
    for name in ("pii-rules-configmap.yaml", "rate-card-configmap.yaml"):
        document = _example(name)
        metadata, data = document["metadata"], document["data"]
        assert isinstance(metadata, dict)
        assert isinstance(data, dict)
        maps[metadata["name"]] = data
    return maps


SECRETS: Mapping[str, Mapping[str, bytes]] = {"otlp-headers": {"api-key": b"s3cr3t, =x"}}


def test_the_example_policy_becomes_the_sidecar_configuration(tmp_path: Path) -> None:
    spec = _example("telemetrypolicy.yaml")["spec"]
    assert isinstance(spec, dict)
    config = sidecar_config(
        parse_spec(spec), _example_config_maps(), SECRETS, policy="agents/default"
    )

    assert set(config.config) == {"a11i.yaml", "rate-card.yaml"}
    assert config.config["rate-card.yaml"] == _example_config_maps()["rate-card"]["rate-card.yaml"]
    path = tmp_path / "a11i.yaml"
    path.write_text(config.config["a11i.yaml"], encoding="utf-8")
    telemetry = load_config(path).telemetry
    assert telemetry.skills == {"get_pods", "check_logs", "restart_server", "query_metrics"}
    assert telemetry.saturation_warning_percent == 85
    assert telemetry.capture_content is False
    names = [rule.name for rule in telemetry.pii_rules]
    assert "employee_id" in names
    assert "ticket_url" in names
    assert "ip_address" not in names

    assert config.env == {
        "A11I_CONFIG": "/etc/a11i/a11i.yaml",
        "A11I_RATE_CARD": "/etc/a11i/rate-card.yaml",
        "A11I_CAPTURE_CONTENT": "false",
        "A11I_DECISION_LOGS": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
    }
    assert config.headers == {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t%2C%20%3Dx"}
    # The sidecar reads back exactly what the Secret holds.
    settings = telemetry_from_env({**config.env, **config.headers})
    assert settings.traces is not None
    assert settings.traces.headers == (("api-key", "s3cr3t, =x"),)
    assert settings.traces.endpoint == "http://otel-collector.monitoring:4318/v1/traces"
    assert settings.traces.timeout_s == 10.0
    assert settings.sampler == "parentbased_traceidratio"
    assert settings.sampler_arg == 0.25
    assert settings.decision_logs is True
    assert set(config.hashes) == {CONFIG_MAP_NAME, ENV_CONFIG_MAP_NAME, HEADERS_SECRET_NAME}
    assert config.hashes[CONFIG_MAP_NAME] == content_hash(config.config)


def test_an_empty_policy_exports_nothing_and_keeps_the_defaults(tmp_path: Path) -> None:
    config = sidecar_config(parse_spec({}), {}, {})
    assert set(config.config) == {"a11i.yaml"}
    assert config.headers is None
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config.env
    assert "A11I_RATE_CARD" not in config.env
    assert telemetry_from_env(config.env).traces is None
    path = tmp_path / "a11i.yaml"
    path.write_text(config.config["a11i.yaml"], encoding="utf-8")
    assert load_config(path).telemetry.saturation_warning_percent == 90
    assert parse_spec(None) == PolicySpec()


def test_grpc_and_capture_and_a_bare_list_of_rules() -> None:
    spec = parse_spec(
        {
            "otlp": {"endpoint": "https://collector:4317", "protocol": "grpc", "timeoutSeconds": 3},
            "captureContent": True,
            "piiRulesRef": {"name": "rules"},
        }
    )
    rules = "- name: badge\n  regex: 'B-[0-9]{4}'\n"
    config = sidecar_config(spec, {"rules": {"pii_rules.yaml": rules}}, {})
    settings = telemetry_from_env(config.env)
    assert settings.traces is not None
    assert settings.traces.protocol is OtlpProtocol.GRPC
    assert settings.traces.timeout_s == 3.0
    assert settings.capture_content is True
    document = yaml.safe_load(config.config["a11i.yaml"])
    assert document["capture_content"] is True
    assert document["pii_rules"] == [{"name": "badge", "regex": "B-[0-9]{4}"}]


@pytest.mark.parametrize(
    ("key", "text", "generated"),
    [
        pytest.param(
            "rate-card.yaml",
            'models:\n  m: {input_per_mtok: "1", output_per_mtok: "2", context_window: 8000}\n',
            "rate-card.yaml", id="ours-yaml",
        ),
        pytest.param(
            "prices.json",
            '{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,'
            ' "litellm_provider": "openai", "mode": "chat"}}',
            "rate-card.json", id="litellm-json-by-suffix",
        ),
        pytest.param(
            "prices",
            '{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,'
            ' "litellm_provider": "openai", "mode": "chat"}}',
            "rate-card.json", id="litellm-json-by-content",
        ),
    ],
)  # fmt: skip
def test_the_rate_card_is_copied_verbatim_under_a_name_the_sidecar_parses_right(
    key: str, text: str, generated: str
) -> None:
    spec = parse_spec({"rateCardRef": {"name": "card", "key": key}})
    config = sidecar_config(spec, {"card": {key: text}}, {})
    assert config.config[generated] == text
    assert config.env["A11I_RATE_CARD"] == f"/etc/a11i/{generated}"


def test_references_name_what_the_operator_reads() -> None:
    spec = parse_spec(_example("telemetrypolicy.yaml")["spec"])  # type: ignore[arg-type]
    assert spec.references == (
        ObjectRef("ConfigMap", "pii-rules", "pii_rules.yaml"),
        ObjectRef("ConfigMap", "rate-card", "rate-card.yaml"),
        ObjectRef("Secret", "otlp-headers"),
    )


def test_the_hash_changes_with_the_content_only() -> None:
    spec = parse_spec({"piiRulesRef": {"name": "r"}})
    one = sidecar_config(spec, {"r": {"pii_rules.yaml": "- {name: a, regex: 'A+'}"}}, {})
    same = sidecar_config(spec, {"r": {"pii_rules.yaml": "- {name: a, regex: 'A+'}"}}, {})
    other = sidecar_config(spec, {"r": {"pii_rules.yaml": "- {name: a, regex: 'B+'}"}}, {})
    assert one.hashes == same.hashes
    assert one.hashes[CONFIG_MAP_NAME] != other.hashes[CONFIG_MAP_NAME]
    assert one.hashes[ENV_CONFIG_MAP_NAME] == other.hashes[ENV_CONFIG_MAP_NAME]


PII = {"piiRulesRef": {"name": "pii-rules"}}
CARD = {"rateCardRef": {"name": "rate-card"}}
HEADERS = {"otlp": {"endpoint": "http://c:4318", "headersSecretRef": {"name": "otlp-headers"}}}


@pytest.mark.parametrize(
    ("spec", "config_maps", "secrets", "reason", "message"),
    [
        pytest.param(
            PII, {}, {}, Reason.CONFIG_MAP_MISSING,
            "ConfigMap pii-rules does not exist in this namespace; create it with the key "
            "pii_rules.yaml, or fix the reference",
            id="pii-configmap-missing",
        ),
        pytest.param(
            CARD, {}, {}, Reason.CONFIG_MAP_MISSING,
            "ConfigMap rate-card does not exist in this namespace; create it with the key "
            "rate-card.yaml, or fix the reference",
            id="rate-card-configmap-missing",
        ),
        pytest.param(
            PII, {"pii-rules": {"rules.yaml": ""}}, {}, Reason.KEY_MISSING,
            "ConfigMap pii-rules has no key pii_rules.yaml (its keys: rules.yaml); add it, or "
            "set the reference's key to the one that holds the content",
            id="pii-key-missing",
        ),
        pytest.param(
            CARD, {"rate-card": {}}, {}, Reason.KEY_MISSING,
            "ConfigMap rate-card has no key rate-card.yaml (its keys: none); add it, or set the "
            "reference's key to the one that holds the content",
            id="rate-card-key-missing",
        ),
        pytest.param(
            PII, {"pii-rules": {"pii_rules.yaml": "- name: x\n  regex: '[a-'\n"}}, {},
            Reason.INVALID_PII_RULES,
            "ConfigMap pii-rules key pii_rules.yaml: pii_rules[0] (x): regex does not compile: "
            "unterminated character set at position 3",
            id="pii-regex-does-not-compile",
        ),
        pytest.param(
            PII, {"pii-rules": {"pii_rules.yaml": "pii_rules:\n  - name: x\n    regex: 'a*'\n"}},
            {}, Reason.INVALID_PII_RULES,
            "ConfigMap pii-rules key pii_rules.yaml: pii_rules[0] (x): regex matches the empty "
            "string (it would match between every two characters); use + instead of *, or make "
            "a part required",
            id="pii-regex-matches-empty",
        ),
        pytest.param(
            PII, {"pii-rules": {"pii_rules.yaml": "rules: []\n"}}, {}, Reason.INVALID_PII_RULES,
            "ConfigMap pii-rules key pii_rules.yaml: unexpected keys ['rules']: expected a list "
            "of rules, or a mapping with only pii_rules: [...]",
            id="pii-wrong-top-level-key",
        ),
        pytest.param(
            PII, {"pii-rules": {"pii_rules.yaml": "pii_rules: [\n"}}, {}, Reason.INVALID_PII_RULES,
            "ConfigMap pii-rules key pii_rules.yaml: not valid YAML:",
            id="pii-not-yaml",
        ),
        pytest.param(
            PII, {"pii-rules": {"pii_rules.yaml": "just text"}}, {}, Reason.INVALID_PII_RULES,
            "ConfigMap pii-rules key pii_rules.yaml: pii_rules: must be a list of rules "
            "(name, regex, ...), not a string",
            id="pii-not-a-list",
        ),
        pytest.param(
            CARD, {"rate-card": {"rate-card.yaml": "models:\n  m: {input_per_mtok: x}\n"}}, {},
            Reason.INVALID_RATE_CARD,
            "rate card ConfigMap rate-card key rate-card.yaml: models.m",
            id="rate-card-bad-price",
        ),
        pytest.param(
            CARD, {"rate-card": {"rate-card.yaml": "hello: world\n"}}, {},
            Reason.INVALID_RATE_CARD,
            "rate card ConfigMap rate-card key rate-card.yaml: not a rate card: expected a11i's "
            "shape (top-level 'models' and/or 'fallback') or LiteLLM's",
            id="rate-card-not-a-card",
        ),
        pytest.param(
            CARD, {"rate-card": {"rate-card.yaml": "{"}}, {}, Reason.INVALID_RATE_CARD,
            "rate card ConfigMap rate-card key rate-card.yaml: invalid YAML at line",
            id="rate-card-not-yaml",
        ),
        pytest.param(
            HEADERS, {}, {}, Reason.SECRET_MISSING,
            "Secret otlp-headers does not exist in this namespace; create it (each data key "
            "becomes an OTLP request header), or fix spec.otlp.headersSecretRef",
            id="secret-missing",
        ),
        pytest.param(
            HEADERS, {}, {"otlp-headers": {}}, Reason.INVALID_SECRET,
            "Secret otlp-headers has no data: each data key should be an OTLP header name and "
            "its value the header's value",
            id="secret-empty",
        ),
        pytest.param(
            HEADERS, {}, {"otlp-headers": {"api-key": b"abc\n"}}, Reason.INVALID_SECRET,
            "Secret otlp-headers key api-key: the value holds a control character (a trailing "
            "newline from `echo`?); header values must be one line: use `echo -n` or "
            "--from-literal",
            id="secret-newline",
        ),
        pytest.param(
            HEADERS, {}, {"otlp-headers": {"api-key": b"\xff\xfe"}}, Reason.INVALID_SECRET,
            "Secret otlp-headers key api-key: the value is not UTF-8 text, so it cannot be an "
            "HTTP header value",
            id="secret-not-utf8",
        ),
    ],
)  # fmt: skip
def test_what_is_wrong_is_reported_with_a_reason_and_a_fix(
    spec: dict[str, object],
    config_maps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, bytes]],
    reason: Reason,
    message: str,
) -> None:
    with pytest.raises(PolicyConfigError) as caught:
        sidecar_config(parse_spec(spec), config_maps, secrets)
    assert caught.value.reason is reason
    assert caught.value.message.startswith(message)
    assert str(caught.value) == caught.value.message


def test_a_secret_value_never_appears_in_a_message() -> None:
    with pytest.raises(PolicyConfigError) as caught:
        sidecar_config(parse_spec(HEADERS), {}, {"otlp-headers": {"k": b"hunter2\r\n"}})
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"limit": "1"}, "spec has unknown fields ['limit']; known:",
                     id="unknown-field"),
        pytest.param(
            {"otlp": {"endpoint": "collector:4317"}},
            "spec.otlp.endpoint must be an http:// or https:// URL with a host, such as "
            "http://otel-collector.monitoring:4318, not 'collector:4317'",
            id="endpoint-not-a-url",
        ),
        pytest.param({"otlp": {}}, "spec.otlp.endpoint must be an http:// or https:// URL",
                     id="endpoint-missing"),
        pytest.param(
            {"otlp": {"endpoint": "http://c", "protocol": "udp"}},
            "spec.otlp.protocol must be grpc or http, not 'udp'", id="protocol",
        ),
        pytest.param(
            {"otlp": {"endpoint": "http://c", "timeoutSeconds": 0}},
            "spec.otlp.timeoutSeconds must be a whole number from 1 to 60, not 0", id="timeout",
        ),
        pytest.param(
            {"otlp": {"endpoint": "http://c", "headersSecretRef": {"name": "OTLP_Headers"}}},
            "spec.otlp.headersSecretRef.name must be the name of a Secret in this namespace, "
            "not 'OTLP_Headers'",
            id="secret-name",
        ),
        pytest.param(
            {"sampling": {"ratio": "1.5"}},
            "spec.sampling.ratio must be a quoted decimal string from \"0\" to \"1.0\", such as "
            "\"0.25\", not '1.5'",
            id="ratio-above-one",
        ),
        pytest.param(
            {"sampling": {"ratio": 0.5}}, "spec.sampling.ratio must be a quoted decimal string",
            id="ratio-unquoted",
        ),
        pytest.param({"captureContent": "yes"},
                     "spec.captureContent must be true or false, not 'yes'", id="capture-not-bool"),
        pytest.param({"decisionLogs": 1}, "spec.decisionLogs must be true or false, not 1",
                     id="decision-logs-not-bool"),
        pytest.param(
            {"piiRulesRef": {"key": "x"}},
            "spec.piiRulesRef.name must be the name of a ConfigMap in this namespace, not None",
            id="pii-ref-without-name",
        ),
        pytest.param(
            {"rateCardRef": {"name": "card", "key": "a/b"}},
            "spec.rateCardRef.key must be a ConfigMap key (letters, digits, '-', '_', '.'), "
            "not 'a/b'",
            id="rate-card-key",
        ),
        pytest.param(
            {"skills": ["get_pods", ""]},
            "spec.skills must be a list of tool names of 1 to 128 characters, e.g. [get_pods]",
            id="skill-empty",
        ),
        pytest.param({"skills": ["a", "a"]}, "spec.skills must not name a tool twice",
                     id="skill-twice"),
        pytest.param(
            {"contextSaturationWarningPercent": 0},
            "spec.contextSaturationWarningPercent must be a whole number from 1 to 100, not 0",
            id="saturation-zero",
        ),
        pytest.param({"otlp": "http://c"}, "spec.otlp must be an object, not str",
                     id="otlp-not-object"),
    ],
)  # fmt: skip
def test_an_invalid_spec_is_refused_with_what_to_fix(spec: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyConfigError) as caught:
        parse_spec(spec)
    assert caught.value.reason is Reason.INVALID_SPEC
    assert caught.value.message.startswith(message)
