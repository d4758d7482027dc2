"""Every Kubernetes manifest in examples/ applies as it is, against the real API server.

Each file goes through ``kubectl apply --dry-run=server`` (the API server's validation, the CRDs'
schemas and CEL rules included, nothing stored) and then ``kubectl apply -n <ns>`` for real,
exactly the commands the files' own comments show. The agent Deployment then gets a pod from
the ReplicaSet controller (kube-controller-manager); without the injection webhook here (and no
kubelet) the pod is checked only to exist and to be as written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.crds import a11i_crds
from tests.support.cluster import ROOT, ControlPlane

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures(a11i_crds.__name__)]

EXAMPLES = ROOT / "examples"
# YAML in examples/ that is not a Kubernetes object: the sidecar's own configuration files,
# loaded by tests/unit/test_examples.py instead.
CONFIG_FILES = {"a11i.yaml": "a11i.yaml (A11I_CONFIG)", "rate-card.yaml": "a rate card"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def is_manifest(path: Path) -> bool:
    docs = documents(path)
    return bool(docs) and all("apiVersion" in doc and "kind" in doc for doc in docs)


MANIFESTS = sorted(
    path for path in EXAMPLES.glob("*.y*ml") if path.name not in CONFIG_FILES and is_manifest(path)
)
# Cluster-scoped objects first (the namespace), as a user applies them.
MANIFESTS.sort(key=lambda path: documents(path)[0]["kind"] != "Namespace")


def test_every_yaml_in_examples_is_a_manifest_or_a_known_config_file() -> None:
    for path in EXAMPLES.glob("*.y*ml"):
        assert path.name in CONFIG_FILES or is_manifest(path), (
            f"{path.name}: neither a Kubernetes manifest nor one of {sorted(CONFIG_FILES)}"
        )
    kinds = {doc["kind"] for path in MANIFESTS for doc in documents(path)}
    assert {"AgentBudget", "TelemetryPolicy", "ConfigMap", "Deployment", "Namespace"} <= kinds


def test_the_agent_configmap_holds_the_agent_loop_unchanged() -> None:
    (configmap,) = documents(EXAMPLES / "agent-loop-configmap.yaml")
    script = (EXAMPLES / "agent_loop.py").read_text(encoding="utf-8")
    assert configmap["data"]["agent_loop.py"] == script


@pytest.fixture
def cluster_scoped_cleanup(control_plane: ControlPlane) -> Iterator[None]:
    """Delete what the examples create outside the test's namespace (the example namespace)."""
    yield
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] == "Namespace":
                name = doc["metadata"]["name"]
                control_plane.kubectl("delete", "namespace", name, "--wait=false",
                                      "--ignore-not-found")  # fmt: skip


def apply(plane: ControlPlane, namespace: str, path: Path, *extra: str) -> str:
    result = plane.kubectl("apply", "-n", namespace, "-f", str(path), *extra)
    assert result.returncode == 0, f"{path.name}: {result.stderr.strip()}"
    return str(result.stdout)


@pytest.mark.usefixtures("cluster_scoped_cleanup")
def test_every_manifest_applies_as_is(control_plane: ControlPlane, namespace: str) -> None:
    assert MANIFESTS
    for path in MANIFESTS:
        dry = apply(control_plane, namespace, path, "--dry-run=server")
        assert "(server dry run)" in dry, dry
    for path in MANIFESTS:
        apply(control_plane, namespace, path)
    for path in MANIFESTS:
        for doc in documents(path):
            scope = [] if doc["kind"] == "Namespace" else ["-n", namespace]
            got = control_plane.kubectl(
                "get", doc["kind"], doc["metadata"]["name"], *scope, "-o", "json"
            )
            assert got.returncode == 0, got.stderr
            stored = json.loads(got.stdout)
            written_labels = doc["metadata"].get("labels", {})
            assert stored["metadata"].get("labels", {}).items() >= written_labels.items()
            if "spec" in doc and doc["kind"] in ("AgentBudget", "TelemetryPolicy"):
                # What the user wrote is what is stored (the CRDs' defaults may add fields).
                assert stored["spec"].items() >= doc["spec"].items(), stored["spec"]
    # Applying again changes nothing: the files are declarative as they are. (A Secret written
    # with stringData always reads "configured": the server stores it as data.)
    for path in MANIFESTS:
        again = apply(control_plane, namespace, path)
        for line in again.splitlines():
            assert line.endswith("unchanged") or line.startswith("secret/"), line


def test_the_agent_deployment_gets_its_pod(control_plane: ControlPlane, namespace: str) -> None:
    (deployment,) = documents(EXAMPLES / "agent-deployment.yaml")
    apply(control_plane, namespace, EXAMPLES / "agent-loop-configmap.yaml")
    apply(control_plane, namespace, EXAMPLES / "agent-deployment.yaml")
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    waited = control_plane.kubectl(
        "wait", "--for=create", "pod", "-l", selector, "-n", namespace, "--timeout=60s",
        timeout=70,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    listed = control_plane.kubectl("get", "pods", "-l", selector, "-n", namespace, "-o", "json")
    pods: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    assert len(pods) == deployment["spec"]["replicas"]
    (pod,) = pods
    template = deployment["spec"]["template"]
    # The identity the webhook and the sidecar's attribution read, as written.
    assert pod["metadata"]["annotations"]["a11i.io/inject"] == "true"
    assert pod["metadata"]["labels"]["a11i.io/project"] == "checkout"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    # No webhook in this plane: the pod is exactly the template, with no sidecar.
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == [c["name"] for c in template["spec"]["containers"]]
    (agent,) = pod["spec"]["containers"]
    (written,) = template["spec"]["containers"]
    for key in ("image", "command", "args", "env", "volumeMounts"):
        assert agent[key] == written[key], key
    assert "a11i.io/status" not in pod["metadata"]["annotations"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_no_example_pins_a_namespace() -> None:
    """Each example belongs to the namespace it is applied to (``-n``)."""
    for path in MANIFESTS:
        for doc in documents(path):
            assert "namespace" not in doc["metadata"], path.name
