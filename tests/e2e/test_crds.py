"""The AgentBudget and TelemetryPolicy CRDs, as a user meets them: through the real kubectl
against the real kube-apiserver.

What is pinned down here: the examples apply as-is, the server fills in the defaults, the printer
columns, short names and ``kubectl explain`` work, the status subresource keeps spec and status
apart, and every common mistake is refused by the server with a message that says what to fix
(the messages are listed in docs/crds.md; a change here is a change there).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from a11i.core.scrub import rules_from_config
from tests.e2e.crds import CRD_DIR, CRD_NAMES, a11i_crds  # noqa: F401  (a fixture)
from tests.support.cluster import ROOT, ControlPlane

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("a11i_crds")]

EXAMPLES = ROOT / "examples"
API_VERSION = "a11i.io/v1alpha1"


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def manifest(kind: str, spec: dict[str, Any] | None, name: str = "x") -> str:
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    return json.dumps(body)


def get_json(plane: ControlPlane, namespace: str, *what: str) -> Any:
    result = plane.kubectl("get", *what, "-n", namespace, "-o", "json", check=True)
    return json.loads(result.stdout)


def table(plane: ControlPlane, namespace: str, *args: str) -> list[list[str]]:
    """``kubectl get`` output split into cells (none of the values here holds a space)."""
    result = plane.kubectl("get", *args, "-n", namespace, check=True)
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def shared_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """One namespace for the tests whose objects never collide (refused ones are never stored,
    accepted ones have names of their own): a namespace per case would cost a second each."""
    name = control_plane.create_namespace(f"e2e-crds-{uuid.uuid4().hex[:8]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


# --------------------------------------------------------------------------- installation


def test_both_kinds_are_established_structural_and_named(control_plane: ControlPlane) -> None:
    for name in CRD_NAMES:
        crd = json.loads(control_plane.kubectl("get", "crd", name, "-o", "json", check=True).stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
        assert "NonStructuralSchema" not in conditions
        assert crd["spec"]["group"] == "a11i.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["categories"] == ["a11i"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        assert crd["status"]["acceptedNames"]["shortNames"] == [
            {"agentbudgets.a11i.io": "ab", "telemetrypolicies.a11i.io": "tp"}[name]
        ]
    resources = control_plane.kubectl("api-resources", "--api-group=a11i.io", check=True).stdout
    rows = {line.split()[0]: line.split() for line in resources.splitlines()[1:]}
    assert rows["agentbudgets"][1:] == ["ab", API_VERSION, "true", "AgentBudget"]
    assert rows["telemetrypolicies"][1:] == ["tp", API_VERSION, "true", "TelemetryPolicy"]


def test_installing_again_changes_nothing(control_plane: ControlPlane) -> None:
    """Other modules install the CRDs too: a second apply must be a no-op, not an error."""
    # Twice: whoever installed them first (Helm, say) may have left other annotations behind.
    control_plane.kubectl("apply", "-f", str(CRD_DIR), check=True)
    result = control_plane.kubectl("apply", "-f", str(CRD_DIR), check=True)
    # crds/ also holds kopf's two peering CRDs (the operator's leader election).
    assert result.stdout.count("unchanged") == len(CRD_NAMES) + 2, result.stdout


# --------------------------------------------------------------------------- examples

# Referenced objects first: the TelemetryPolicy names the Secret and the ConfigMaps.
EXAMPLE_FILES = (
    "otlp-headers-secret.yaml",
    "pii-rules-configmap.yaml",
    "rate-card-configmap.yaml",
    "agentbudget.yaml",
    "agentbudget-per-agent.yaml",
    "telemetrypolicy.yaml",
)


@pytest.mark.parametrize(
    "file", EXAMPLE_FILES, ids=[f.removesuffix(".yaml") for f in EXAMPLE_FILES]
)
def test_example_applies_as_is(control_plane: ControlPlane, namespace: str, file: str) -> None:
    path = EXAMPLES / file
    # No namespace in the file: `-n` decides (kubectl refuses a file naming another namespace).
    assert "namespace" not in yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]
    applied = control_plane.kubectl("apply", "-n", namespace, "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr == ""  # not even a warning (an unknown field would be one)
    stored = get_json(control_plane, namespace, "-f", str(path))
    assert stored["metadata"]["namespace"] == namespace


def test_all_examples_apply_together(control_plane: ControlPlane, namespace: str) -> None:
    args = [arg for file in EXAMPLE_FILES for arg in ("-f", str(EXAMPLES / file))]
    control_plane.kubectl("apply", "-n", namespace, *args, check=True)
    policy = get_json(control_plane, namespace, "tp", "default")["spec"]
    for ref in ("piiRulesRef", "rateCardRef"):
        data = get_json(control_plane, namespace, "configmap", policy[ref]["name"])["data"]
        assert policy[ref]["key"] in data
    secret = policy["otlp"]["headersSecretRef"]["name"]
    assert get_json(control_plane, namespace, "secret", secret)["data"]
    names = table(control_plane, namespace, "a11i", "-o", "name")
    assert sorted(row[0] for row in names) == [
        "agentbudget.a11i.io/default",
        "agentbudget.a11i.io/research-agents",
        "telemetrypolicy.a11i.io/default",
    ]


def test_example_configmaps_hold_what_the_sidecar_reads() -> None:
    """The ConfigMaps are only useful if the sidecar accepts what they hold."""
    pii = yaml.safe_load((EXAMPLES / "pii-rules-configmap.yaml").read_text(encoding="utf-8"))
    entries = yaml.safe_load(pii["data"]["pii_rules.yaml"])["pii_rules"]
    names = [rule.name for rule in rules_from_config(entries, source="pii-rules")]
    assert "employee_id" in names
    assert "ip_address" not in names  # disabled in the example
    card = yaml.safe_load((EXAMPLES / "rate-card-configmap.yaml").read_text(encoding="utf-8"))
    # The same rate card as examples/rate-card.yaml, byte for byte, so the two cannot drift.
    assert card["data"]["rate-card.yaml"] == (EXAMPLES / "rate-card.yaml").read_text(
        encoding="utf-8"
    )


# --------------------------------------------------------------------------- defaults


def test_agentbudget_defaults_are_filled_in(
    control_plane: ControlPlane, shared_namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", "-",
        input=manifest("AgentBudget", {"limit": "10"}, name="defaults"), check=True,
    )  # fmt: skip
    spec = get_json(control_plane, shared_namespace, "ab", "defaults")["spec"]
    assert spec == {
        "limit": "10",
        "period": "Monthly",
        "timeZone": "UTC",
        "warnAtPercent": 75,
        "optimizeAtPercent": 90,
        "whenExhausted": "Block",
        "suspend": False,
    }


def test_telemetrypolicy_defaults_are_filled_in(
    control_plane: ControlPlane, shared_namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", "-",
        input=manifest("TelemetryPolicy", None, name="empty"), check=True,
    )  # fmt: skip
    spec = get_json(control_plane, shared_namespace, "tp", "empty")["spec"]
    # No otlp: nothing exported, and no default invents a collector.
    assert spec == {
        "sampling": {"ratio": "1.0"},
        "captureContent": False,
        "decisionLogs": False,
        "contextSaturationWarningPercent": 90,
    }

    refs = {
        "otlp": {"endpoint": "http://otel-collector.monitoring:4318"},
        "piiRulesRef": {"name": "pii-rules"},
        "rateCardRef": {"name": "rate-card"},
    }
    control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", "-",
        input=manifest("TelemetryPolicy", refs, name="refs"), check=True,
    )  # fmt: skip
    spec = get_json(control_plane, shared_namespace, "tp", "refs")["spec"]
    assert spec["otlp"] == {
        "endpoint": "http://otel-collector.monitoring:4318",
        "protocol": "http",
        "timeoutSeconds": 10,
    }
    assert spec["piiRulesRef"] == {"name": "pii-rules", "key": "pii_rules.yaml"}
    assert spec["rateCardRef"] == {"name": "rate-card", "key": "rate-card.yaml"}


# --------------------------------------------------------------------------- kubectl get / explain


def patch_status(plane: ControlPlane, namespace: str, what: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch", what, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}), check=True,
    )  # fmt: skip


READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Synced",
    "message": "the sidecars have the configuration",
    "lastTransitionTime": "2025-06-01T00:00:00Z",
    "observedGeneration": 1,
}


def test_printer_columns_and_short_names(control_plane: ControlPlane, namespace: str) -> None:
    for file in EXAMPLE_FILES:
        control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / file), check=True)
    patch_status(
        control_plane, namespace, "agentbudget/default",
        {"phase": "Yellow", "spent": "190.5", "reserved": "0.25", "remaining": "59.25"},
    )  # fmt: skip
    patch_status(control_plane, namespace, "telemetrypolicy/default", {"conditions": [READY]})

    header, default, per_agent = table(control_plane, namespace, "ab")
    assert header == ["NAME", "LIMIT", "SPENT", "REMAINING", "PHASE", "AGE"]
    assert default[:5] == ["default", "250.00", "190.5", "59.25", "Yellow"]
    assert per_agent[:2] == ["research-agents", "40.00"]  # no status yet: empty cells

    header, default, _ = table(control_plane, namespace, "ab", "-o", "wide")
    assert header == ["NAME", "LIMIT", "SPENT", "REMAINING", "PHASE", "PERIOD", "SUSPENDED", "AGE"]
    assert default[:7] == ["default", "250.00", "190.5", "59.25", "Yellow", "Monthly", "false"]

    header, policy = table(control_plane, namespace, "tp")
    assert header == ["NAME", "ENDPOINT", "PROTOCOL", "CAPTURE", "READY", "AGE"]
    assert policy[:5] == [
        "default",
        "http://otel-collector.monitoring:4318",
        "http",
        "false",
        "True",
    ]

    # The long names, the singular and the category list the same objects.
    for kind in ("agentbudgets", "agentbudget", "agentbudgets.a11i.io"):
        assert table(control_plane, namespace, kind)[0] == table(control_plane, namespace, "ab")[0]
    assert [row[0] for row in table(control_plane, namespace, "telemetrypolicy", "-o", "name")] == [
        "telemetrypolicy.a11i.io/default"
    ]
    everything = control_plane.kubectl("get", "a11i", "-n", namespace, check=True).stdout
    assert "agentbudget.a11i.io/research-agents" in everything
    assert "telemetrypolicy.a11i.io/default" in everything


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("agentbudget.spec.limit", "The budget in US dollars per period, as a decimal string such"),
        ("ab.spec.period", "Default: Monthly."),
        ("ab.spec.suspend", "emergency stop"),
        ("ab.status.phase", "Exhausted (at"),
        ("telemetrypolicy.spec.otlp.endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("tp.spec.captureContent", "Off by default"),
    ],
    ids=["ab-limit", "ab-period", "ab-suspend", "ab-status-phase", "tp-endpoint", "tp-capture"],
)
def test_kubectl_explain_shows_the_descriptions(
    control_plane: ControlPlane, field: str, expected: str
) -> None:
    # The aggregated OpenAPI document catches up with a CRD change shortly after it.
    def explained() -> bool:
        result = control_plane.kubectl("explain", field)
        return result.returncode == 0 and expected in " ".join(result.stdout.split())

    assert eventually(explained), control_plane.kubectl("explain", field).stdout


# --------------------------------------------------------------------------- status subresource


def test_status_subresource_keeps_spec_and_status_apart(
    control_plane: ControlPlane, shared_namespace: str
) -> None:
    ns = shared_namespace
    control_plane.kubectl(
        "apply", "-n", ns, "-f", "-",
        input=manifest("AgentBudget", {"limit": "25.00"}, name="generations"), check=True,
    )  # fmt: skip
    assert get_json(control_plane, ns, "ab", "generations")["metadata"]["generation"] == 1

    status = {
        "phase": "Green",
        "spent": "1.23",
        "reserved": "0.1",
        "remaining": "23.67",
        "periodStart": "2025-06-01T00:00:00Z",
        "topAgents": [{"agent": "researcher-7d9f", "spent": "1.000000001"}],
        "lastSyncTime": "2025-06-02T10:00:00Z",
        "observedGeneration": 1,
        "conditions": [READY],
    }
    # A spec change sent to the status subresource is ignored; the status is stored.
    control_plane.kubectl(
        "patch", "ab/generations", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status, "spec": {"limit": "99"}}), check=True,
    )  # fmt: skip
    stored = get_json(control_plane, ns, "ab", "generations")
    assert stored["status"] == status
    assert stored["spec"]["limit"] == "25.00"
    assert stored["metadata"]["generation"] == 1  # a status change is no new generation

    # A status sent to the main resource is ignored; a spec change bumps the generation.
    control_plane.kubectl(
        "patch", "ab/generations", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"limit": "30.00"}, "status": {"phase": "Red"}}), check=True,
    )  # fmt: skip
    stored = get_json(control_plane, ns, "ab", "generations")
    assert stored["spec"]["limit"] == "30.00"
    assert stored["status"]["phase"] == "Green"
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["observedGeneration"] == 1  # the operator has not caught up yet

    # The status is validated too: the operator cannot write nonsense either.
    refused = control_plane.kubectl(
        "patch", "ab/generations", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Blue", "spent": "-1"}}),
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'status.phase: Unsupported value: "Blue"' in refused.stderr
    assert "status.spent" in refused.stderr

    # The TelemetryPolicy's status subresource: the generated ConfigMap's name and Ready.
    control_plane.kubectl(
        "apply", "-n", ns, "-f", "-",
        input=manifest("TelemetryPolicy", {"captureContent": True}, name="generations"), check=True,
    )  # fmt: skip
    tp_status = {
        "observedGeneration": 1,
        "configMapName": "a11i-telemetry-generations",
        "lastSyncTime": "2025-06-02T10:00:00Z",
        "conditions": [
            {**READY, "status": "False", "reason": "ConfigMapMissing",
             "message": 'ConfigMap "pii-rules" not found'},
        ],
    }  # fmt: skip
    patch_status(control_plane, ns, "tp/generations", tp_status)
    stored = get_json(control_plane, ns, "tp", "generations")
    assert stored["status"] == tp_status
    assert stored["metadata"]["generation"] == 1


# --------------------------------------------------------------------------- validation

AB, TP = "AgentBudget", "TelemetryPolicy"
SELECTOR = {"matchLabels": {"app.kubernetes.io/part-of": "research"}}

# (kind, spec, fragments of kubectl's stderr): what the user reads.
REJECTED: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "limit-not-a-number": (AB, {"limit": "ten"}, [
        'spec.limit: Invalid value: "ten"',
        'limit must be US dollars as a quoted decimal string such as "25.00"',
        'not "ten"',
    ]),
    "limit-negative": (AB, {"limit": "-1"}, [
        "no sign", 'not "-1"',
    ]),
    "limit-seven-decimals": (AB, {"limit": "1.1234567"}, [
        "at most 9 digits before the point and 6 after", 'not "1.1234567"',
    ]),
    "limit-unquoted-number": (AB, {"limit": 25}, [
        "spec.limit", "must be of type string",
    ]),
    "limit-missing": (AB, {"period": "Monthly"}, [
        "spec.limit: Required value",
    ]),
    "period-yearly": (AB, {"limit": "10", "period": "Yearly"}, [
        'spec.period: Unsupported value: "Yearly"',
        'supported values: "Daily", "Weekly", "Monthly", "Total"',
    ]),
    "warn-above-optimize": (AB, {"limit": "10", "warnAtPercent": 95, "optimizeAtPercent": 90}, [
        "spec.warnAtPercent",
        "warnAtPercent (95) must be below optimizeAtPercent (90)",
        "lower warnAtPercent or raise optimizeAtPercent",
        "e.g. warnAtPercent: 75 and optimizeAtPercent: 90",
    ]),
    "warn-equal-to-default-optimize": (AB, {"limit": "10", "warnAtPercent": 90}, [
        "warnAtPercent (90) must be below optimizeAtPercent (90)",
    ]),
    "optimize-above-100": (AB, {"limit": "10", "optimizeAtPercent": 101}, [
        "spec.optimizeAtPercent: Invalid value: 101",
        "should be less than or equal to 100",
    ]),
    "per-agent-limit-without-selector": (AB, {"limit": "10", "perAgentLimit": "2"}, [
        "spec.perAgentLimit: Forbidden",
        "perAgentLimit needs an agentSelector",
        "set agentSelector to the pods that each get this limit, or remove perAgentLimit",
    ]),
    "per-agent-limit-above-limit": (AB, {
        "limit": "25.00", "perAgentLimit": "30.00", "agentSelector": SELECTOR,
    }, [
        "spec.perAgentLimit",
        "perAgentLimit (30.00) must not exceed limit (25.00)",
        "lower perAgentLimit or raise limit",
    ]),
    "per-agent-limit-malformed": (AB, {
        "limit": "25", "perAgentLimit": "5$", "agentSelector": SELECTOR,
    }, [
        'perAgentLimit must be US dollars as a quoted decimal string such as "5.00"', 'not "5$"',
    ]),
    "unknown-field": (AB, {"limit": "10", "limitUSD": "10"}, [
        'strict decoding error: unknown field "spec.limitUSD"',
    ]),
    "when-exhausted-explode": (AB, {"limit": "10", "whenExhausted": "Explode"}, [
        'spec.whenExhausted: Unsupported value: "Explode"', 'supported values: "Block", "Warn"',
    ]),
    "time-zone-not-iana": (AB, {"limit": "10", "timeZone": "Mars/Olympus Mons"}, [
        "spec.timeZone",
        "timeZone must be an IANA time zone name such as UTC, Europe/Berlin",
        'not "Mars/Olympus Mons"',
    ]),
    "selector-in-without-values": (AB, {
        "limit": "10", "perAgentLimit": "1",
        "agentSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]},
    }, [
        "spec.agentSelector.matchExpressions[0]",
        "values must list at least one value with operator In or NotIn",
    ]),
    "key-custody-with-selector": (AB, {
        "limit": "10", "perAgentLimit": "1", "agentSelector": SELECTOR,
        "keyCustody": {"secretName": "a11i-provider-keys", "openaiKey": "openai"},
    }, [
        "spec.keyCustody: Forbidden",
        "keyCustody belongs to the namespace-wide AgentBudget (without agentSelector)",
        "move keyCustody there",
    ]),
    "key-custody-without-a-key": (AB, {
        "limit": "10", "keyCustody": {"secretName": "a11i-provider-keys"},
    }, [
        "spec.keyCustody",
        "keyCustody must name at least one key of the Secret: openaiKey, anthropicKey or both",
    ]),
    "key-custody-bad-secret-name": (AB, {
        "limit": "10", "keyCustody": {"secretName": "Provider_Keys", "openaiKey": "openai"},
    }, [
        'spec.keyCustody.secretName: Invalid value: "Provider_Keys"',
        "keyCustody.secretName must be the name of a Secret in this namespace",
    ]),
    "key-custody-bad-key": (AB, {
        "limit": "10", "keyCustody": {"secretName": "keys", "openaiKey": "open ai"},
    }, [
        "spec.keyCustody.openaiKey",
        "keyCustody.openaiKey must be a key of the Secret's data",
    ]),
    "key-custody-dot-dot": (AB, {
        "limit": "10", "keyCustody": {"secretName": "keys", "anthropicKey": ".."},
    }, [
        "keyCustody.anthropicKey must be a key of the Secret's data",
    ]),
    "key-custody-allow-unmetered-bad-pattern": (AB, {
        "limit": "10",
        "keyCustody": {
            "secretName": "keys", "openaiKey": "openai",
            "allowUnmetered": ["GET /v1/files*", "FETCH /v1/batches", "POST /v1/a,b"],
        },
    }, [
        "spec.keyCustody.allowUnmetered[1]",
        'keyCustody.allowUnmetered entries must be "METHOD /path-glob"',
        "spec.keyCustody.allowUnmetered[2]",
    ]),
    "admission-floor-without-fitting": (AB, {
        "limit": "10", "admission": {"fitOutputCap": False, "minOutputTokens": 512},
    }, [
        "spec.admission.minOutputTokens: Forbidden",
        "minOutputTokens is the floor of a fitted output cap: with fitOutputCap: false no cap "
        "is fitted",
        "remove minOutputTokens or set fitOutputCap: true",
    ]),
    "admission-floor-zero": (AB, {"limit": "10", "admission": {"minOutputTokens": 0}}, [
        "spec.admission.minOutputTokens: Invalid value: 0",
        "minOutputTokens must be a whole number of output tokens from 1 to 1000000",
        "e.g. 1024, not 0",
    ]),
    "admission-floor-too-high": (AB, {"limit": "10", "admission": {"minOutputTokens": 1000001}}, [
        "spec.admission.minOutputTokens",
        "minOutputTokens must be a whole number of output tokens from 1 to 1000000",
        "not 1000001",
    ]),
    "admission-floor-fraction": (AB, {"limit": "10", "admission": {"minOutputTokens": 1.5}}, [
        "spec.admission.minOutputTokens", "must be of type integer",
    ]),
    "admission-wait-too-long": (AB, {"limit": "10", "admission": {"waitSeconds": 90}}, [
        "spec.admission.waitSeconds",
        "waitSeconds must be seconds from 0 (never wait) to 60, e.g. 5",
    ]),
    "admission-wait-negative": (AB, {"limit": "10", "admission": {"waitSeconds": -0.5}}, [
        "spec.admission.waitSeconds",
        "waitSeconds must be seconds from 0 (never wait) to 60, e.g. 5",
    ]),
    "admission-wait-quoted": (AB, {"limit": "10", "admission": {"waitSeconds": "5s"}}, [
        "spec.admission.waitSeconds", "must be of type number",
    ]),
    "admission-fit-quoted": (AB, {"limit": "10", "admission": {"fitOutputCap": "off"}}, [
        "spec.admission.fitOutputCap", "must be of type boolean",
    ]),
    "admission-unknown-field": (AB, {"limit": "10", "admission": {"strict": True}}, [
        'strict decoding error: unknown field "spec.admission.strict"',
    ]),
    "otlp-endpoint-without-scheme": (TP, {"otlp": {"endpoint": "collector:4317"}}, [
        "spec.otlp.endpoint",
        "otlp.endpoint must be an http:// or https:// URL with a host",
        "such as http://otel-collector.monitoring:4318",
        'not "collector:4317"',
    ]),
    "otlp-endpoint-missing": (TP, {"otlp": {"protocol": "grpc"}}, [
        "spec.otlp.endpoint: Required value",
    ]),
    "otlp-protocol-udp": (TP, {"otlp": {"endpoint": "http://c:4317", "protocol": "udp"}}, [
        'spec.otlp.protocol: Unsupported value: "udp"', 'supported values: "grpc", "http"',
    ]),
    "otlp-timeout-zero": (TP, {"otlp": {"endpoint": "http://c:4318", "timeoutSeconds": 0}}, [
        "spec.otlp.timeoutSeconds: Invalid value: 0", "should be greater than or equal to 1",
    ]),
    "otlp-headers-secret-bad-name": (TP, {
        "otlp": {"endpoint": "http://c:4318", "headersSecretRef": {"name": "OTLP_Headers"}},
    }, [
        'spec.otlp.headersSecretRef.name: Invalid value: "OTLP_Headers"',
        "headersSecretRef.name must be the name of a Secret in this namespace: lower-case "
        "letters, digits, '-' and '.', such as otlp-headers",
    ]),
    "sampling-ratio-above-one": (TP, {"sampling": {"ratio": "1.5"}}, [
        "spec.sampling.ratio",
        'sampling.ratio must be a quoted decimal string from "0" to "1.0", such as "0.25"',
        'not "1.5"',
    ]),
    "sampling-ratio-unquoted": (TP, {"sampling": {"ratio": 0.5}}, [
        "spec.sampling.ratio", "must be of type string",
    ]),
    "skills-empty-name": (TP, {"skills": ["get_pods", ""]}, [
        'spec.skills[1]: Invalid value: ""', "should be at least 1 chars long",
    ]),
    "skills-duplicate": (TP, {"skills": ["get_pods", "get_pods"]}, [
        'spec.skills[1]: Duplicate value: "get_pods"',
    ]),
    "pii-rules-ref-without-name": (TP, {"piiRulesRef": {"key": "pii_rules.yaml"}}, [
        "spec.piiRulesRef.name: Required value",
    ]),
    "saturation-zero": (TP, {"contextSaturationWarningPercent": 0}, [
        "spec.contextSaturationWarningPercent", "should be greater than or equal to 1",
    ]),
    "telemetry-unknown-field": (TP, {"otlp": {"endpoint": "http://c:4318", "insecure": True}}, [
        'strict decoding error: unknown field "spec.otlp.insecure"',
    ]),
}  # fmt: skip


@pytest.mark.parametrize(("kind", "spec", "fragments"), REJECTED.values(), ids=REJECTED.keys())
def test_invalid_resource_is_rejected_with_a_message_that_says_what_to_fix(
    control_plane: ControlPlane,
    shared_namespace: str,
    kind: str,
    spec: dict[str, Any],
    fragments: list[str],
) -> None:
    # kubectl apply as a user runs it: client-side apply, --validate=strict by default.
    refused = control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", "-", input=manifest(kind, spec, name="refused")
    )
    assert refused.returncode != 0
    for fragment in fragments:
        assert fragment in refused.stderr, refused.stderr
    # Refused means not stored.
    gone = control_plane.kubectl("get", kind.lower(), "refused", "-n", shared_namespace)
    assert "NotFound" in gone.stderr


ACCEPTED: dict[str, tuple[str, dict[str, Any]]] = {
    "limit-zero": (AB, {"limit": "0"}),
    "limit-largest": (AB, {"limit": "999999999.999999"}),
    "thresholds-full-range": (AB, {"limit": "10", "warnAtPercent": 0, "optimizeAtPercent": 100}),
    "per-agent-limit-equal-to-limit": (AB, {
        "limit": "5.00", "perAgentLimit": "5.000000", "agentSelector": SELECTOR,
    }),
    "per-agent-limit-with-empty-selector": (AB, {
        "limit": "5", "perAgentLimit": "0.000001", "agentSelector": {},
    }),
    "time-zone-three-parts": (AB, {"limit": "1", "timeZone": "America/Argentina/Buenos_Aires"}),
    "time-zone-with-offset": (AB, {"limit": "1", "timeZone": "Etc/GMT+5"}),
    "suspended-total": (AB, {"limit": "1", "period": "Total", "suspend": True}),
    "key-custody-anthropic-only": (AB, {
        "limit": "10",
        "keyCustody": {"secretName": "a11i-provider-keys", "anthropicKey": "anthropic"},
    }),
    "key-custody-both": (AB, {
        "limit": "10",
        "keyCustody": {"secretName": "keys.v2", "openaiKey": "OPENAI_API_KEY",
                       "anthropicKey": "a.b"},
    }),
    "admission-strict": (AB, {
        "limit": "10", "admission": {"fitOutputCap": False, "waitSeconds": 0},
    }),
    "admission-edges": (AB, {
        "limit": "10",
        "admission": {"fitOutputCap": True, "minOutputTokens": 1000000, "waitSeconds": 60},
    }),
    "admission-floor-one-wait-fraction": (AB, {
        "limit": "10", "admission": {"minOutputTokens": 1, "waitSeconds": 0.25},
    }),
    "admission-per-agent": (AB, {
        "limit": "10", "perAgentLimit": "1", "agentSelector": SELECTOR,
        "admission": {"fitOutputCap": False},
    }),
    "sampling-none": (TP, {"sampling": {"ratio": "0"}}),
    "sampling-all-long-form": (TP, {"sampling": {"ratio": "1.000"}}),
    "otlp-grpc-https-with-path": (TP, {
        "otlp": {"endpoint": "https://otlp.example.com:443/v1", "protocol": "grpc",
                 "timeoutSeconds": 60},
    }),
}  # fmt: skip


@pytest.mark.parametrize(("kind", "spec"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_valid_edge_is_accepted_and_stored_as_written(
    control_plane: ControlPlane, shared_namespace: str, kind: str, spec: dict[str, Any]
) -> None:
    name = f"edge-{uuid.uuid4().hex[:8]}"
    applied = control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", "-", input=manifest(kind, spec, name=name)
    )
    assert applied.returncode == 0, applied.stderr
    stored = get_json(control_plane, shared_namespace, kind.lower(), name)["spec"]
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(stored[key], dict):
            assert stored[key] | value == stored[key]  # defaults may add keys, not change ours
        else:
            assert stored[key] == value  # money strings exactly as written, never reformatted


def test_unknown_fields_are_dropped_when_the_client_does_not_validate(
    control_plane: ControlPlane, shared_namespace: str, tmp_path: Path
) -> None:
    """With --validate=warn (or an older client) the server prunes the field: the user sees a
    warning and the object is stored without it, never with it."""
    path = tmp_path / "budget.json"
    path.write_text(manifest(AB, {"limit": "10", "limitUSD": "10"}, name="pruned"), "utf-8")
    applied = control_plane.kubectl(
        "apply", "-n", shared_namespace, "-f", str(path), "--validate=warn", check=True
    )
    assert 'unknown field "spec.limitUSD"' in applied.stderr
    assert "limitUSD" not in get_json(control_plane, shared_namespace, "ab", "pruned")["spec"]
