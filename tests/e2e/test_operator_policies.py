"""TelemetryPolicy end to end: the real kube-apiserver, controller-manager and the operator's
policy handlers as a process. From the examples to the generated sidecar configuration, live
updates of a referenced ConfigMap, refusals that keep the last good configuration, and
garbage collection through ownerReferences."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from a11i.operator.policy_config import (
    CONFIG_MAP_NAME,
    ENV_CONFIG_MAP_NAME,
    HEADERS_SECRET_NAME,
)
from a11i.sidecar.config import load_config
from tests.e2e.crds import a11i_crds
from tests.e2e.policy_operator import PolicyOperator, policy_operator
from tests.support.cluster import ROOT

pytestmark = pytest.mark.e2e

__all__ = ["a11i_crds", "policy_operator"]

EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = (
    "otlp-headers-secret.yaml",
    "pii-rules-configmap.yaml",
    "rate-card-configmap.yaml",
    "telemetrypolicy.yaml",
)


def _apply(operator: PolicyOperator, namespace: str, *files: Path, manifest: str = "") -> None:
    args = ["apply", "-n", namespace]
    for file in files:
        args += ["-f", str(file)]
    if manifest:
        args += ["-f", "-"]
    operator.plane.kubectl(*args, input=manifest or None, check=True)


def _ready(operator: PolicyOperator, namespace: str, name: str) -> dict[str, object] | None:
    """The Ready condition once it is there (any status)."""
    policy = operator.get("telemetrypolicy", namespace, name)
    status = policy.get("status") if policy else None
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if condition.get("type") == "Ready":
            assert isinstance(condition, dict)
            return condition
    return None


def _wait_ready(
    operator: PolicyOperator, namespace: str, name: str, status: str, reason: str | None = None
) -> dict[str, object]:
    def probe() -> dict[str, object] | None:
        condition = _ready(operator, namespace, name)
        if condition is None or condition.get("status") != status:
            return None
        if reason is not None and condition.get("reason") != reason:
            return None
        return condition

    return operator.wait_for(f"Ready={status} {reason or ''} on {namespace}/{name}", probe)


def _data(operator: PolicyOperator, kind: str, namespace: str, name: str) -> dict[str, str]:
    found = operator.get(kind, namespace, name)
    assert found is not None, f"{kind} {name} was not generated:\n{operator.log()}"
    data = found.get("data")
    assert isinstance(data, dict)
    return data


def _pii_configmap(rules: str, name: str = "pii-rules") -> str:
    indented = "".join(f"    {line}\n" for line in rules.splitlines())
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        f"data:\n  pii_rules.yaml: |\n{indented}"
    )


def test_the_examples_generate_the_sidecar_configuration(
    policy_operator: PolicyOperator, namespace: str, tmp_path: Path
) -> None:
    _apply(policy_operator, namespace, *(EXAMPLES / name for name in EXAMPLE_FILES))
    condition = _wait_ready(policy_operator, namespace, "default", "True")
    assert condition["reason"] == "Generated"

    policy = policy_operator.get("telemetrypolicy", namespace, "default")
    assert policy is not None
    status = policy["status"]
    assert isinstance(status, dict)
    assert status["configMapName"] == CONFIG_MAP_NAME
    assert status["observedGeneration"] == 1
    assert status["lastSyncTime"]

    config = _data(policy_operator, "configmap", namespace, CONFIG_MAP_NAME)
    assert set(config) == {"a11i.yaml", "rate-card.yaml"}
    card = yaml.safe_load((EXAMPLES / "rate-card-configmap.yaml").read_text(encoding="utf-8"))
    assert config["rate-card.yaml"] == card["data"]["rate-card.yaml"]
    path = tmp_path / "a11i.yaml"
    path.write_text(config["a11i.yaml"], encoding="utf-8")
    telemetry = load_config(path).telemetry
    assert telemetry.skills == {"get_pods", "check_logs", "restart_server", "query_metrics"}
    assert {"employee_id", "ticket_url"} <= {rule.name for rule in telemetry.pii_rules}

    env = _data(policy_operator, "configmap", namespace, ENV_CONFIG_MAP_NAME)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["A11I_RATE_CARD"] == "/etc/a11i/rate-card.yaml"
    headers = _data(policy_operator, "secret", namespace, HEADERS_SECRET_NAME)
    assert base64.b64decode(headers["OTEL_EXPORTER_OTLP_HEADERS"]) == (
        b"api-key=REPLACE-WITH-YOUR-OTLP-BACKEND-KEY"
    )

    generated = policy_operator.get("configmap", namespace, CONFIG_MAP_NAME)
    assert generated is not None
    metadata = generated["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["labels"] == {
        "app.kubernetes.io/managed-by": "a11i",
        "a11i.io/policy": "default",
    }
    assert metadata["annotations"]["a11i.io/content-hash"]
    [owner] = metadata["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "TelemetryPolicy", "default", policy["metadata"]["uid"],  # type: ignore[index]
    )  # fmt: skip


def test_a_pii_rules_edit_reaches_the_generated_config_and_a_broken_one_is_refused(
    policy_operator: PolicyOperator, namespace: str
) -> None:
    _apply(policy_operator, namespace, *(EXAMPLES / name for name in EXAMPLE_FILES))
    _wait_ready(policy_operator, namespace, "default", "True")

    _apply(
        policy_operator, namespace, manifest=_pii_configmap("- name: badge\n  regex: 'B-[0-9]{4}'")
    )

    def badge_rule() -> str | None:
        text = _data(policy_operator, "configmap", namespace, CONFIG_MAP_NAME)["a11i.yaml"]
        return text if "name: badge" in text else None

    good = policy_operator.wait_for("the edited PII rules in a11i.yaml", badge_rule, timeout=10)
    assert "employee_id" not in good

    _apply(policy_operator, namespace, manifest=_pii_configmap("- name: broken\n  regex: '[a-'"))
    condition = _wait_ready(policy_operator, namespace, "default", "False", "InvalidPIIRules")
    message = str(condition["message"])
    assert (
        "ConfigMap pii-rules key pii_rules.yaml: pii_rules[0] (broken): regex does not compile"
        in message
    )
    assert message.endswith("The sidecars keep the configuration last generated.")
    assert _data(policy_operator, "configmap", namespace, CONFIG_MAP_NAME)["a11i.yaml"] == good

    # Fixed again: Ready again, with the new rules.
    _apply(policy_operator, namespace, manifest=_pii_configmap("- name: fixed\n  regex: 'F+'"))
    _wait_ready(policy_operator, namespace, "default", "True")
    assert (
        "name: fixed"
        in _data(policy_operator, "configmap", namespace, CONFIG_MAP_NAME)["a11i.yaml"]
    )


def test_a_missing_configmap_is_reported_until_it_appears(
    policy_operator: PolicyOperator, namespace: str
) -> None:
    policy = (
        "apiVersion: a11i.io/v1alpha1\nkind: TelemetryPolicy\nmetadata:\n  name: late\n"
        "spec:\n  piiRulesRef:\n    name: later-rules\n"
    )
    _apply(policy_operator, namespace, manifest=policy)
    condition = _wait_ready(policy_operator, namespace, "late", "False", "ConfigMapMissing")
    assert str(condition["message"]).startswith(
        "ConfigMap later-rules does not exist in this namespace; create it with the key "
        "pii_rules.yaml, or fix the reference."
    )
    assert policy_operator.get("configmap", namespace, CONFIG_MAP_NAME) is None

    rules = _pii_configmap("- name: badge\n  regex: 'B-[0-9]{4}'", name="later-rules")
    _apply(policy_operator, namespace, manifest=rules)
    _wait_ready(policy_operator, namespace, "late", "True")
    assert (
        "name: badge"
        in _data(policy_operator, "configmap", namespace, CONFIG_MAP_NAME)["a11i.yaml"]
    )


def test_deleting_the_policy_removes_what_it_generated(
    policy_operator: PolicyOperator, namespace: str
) -> None:
    _apply(policy_operator, namespace, *(EXAMPLES / name for name in EXAMPLE_FILES))
    _wait_ready(policy_operator, namespace, "default", "True")
    policy_operator.plane.kubectl("delete", "telemetrypolicy", "default", "-n", namespace,
                                  "--wait=true", "--timeout=30s", check=True)  # fmt: skip

    def all_gone() -> bool:
        return all(
            policy_operator.get(kind, namespace, name) is None
            for kind, name in (
                ("configmap", CONFIG_MAP_NAME),
                ("configmap", ENV_CONFIG_MAP_NAME),
                ("secret", HEADERS_SECRET_NAME),
            )
        )

    policy_operator.wait_for("the garbage collector to delete the generated objects", all_gone,
                             timeout=30)  # fmt: skip
