"""The test control plane is a real Kubernetes: version, RBAC, CRDs, controllers, Helm.

These tests pin down what the operator's end-to-end tests will rely on, each through the real
kubectl or helm binary, so that a broken build (a server reporting v0.0.0, mismatched staging
modules) or a broken start-up (no RBAC, no controller manager) fails here, by name.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.e2e


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_server_reports_the_pinned_release(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("version", "-o", "json", check=True)
    versions = json.loads(result.stdout)
    release = control_plane.version
    assert release.startswith("v1.34.")
    server = versions["serverVersion"]
    assert server["gitVersion"] == release
    assert (server["major"], server["minor"]) == ("1", "34")
    assert versions["clientVersion"]["gitVersion"] == release
    # The API server answers the raw endpoint too, the way client libraries ask.
    raw = json.loads(control_plane.kubectl("get", "--raw", "/version", check=True).stdout)
    assert raw["gitVersion"] == release


def test_namespaces_are_created_and_listed(control_plane: ControlPlane) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name, check=True)
    try:
        listed = control_plane.kubectl(
            "get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}", check=True
        )
        assert name in listed.stdout.split()
        assert "kube-system" in listed.stdout.split()
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_rbac_is_enforced_for_service_accounts(control_plane: ControlPlane, namespace: str) -> None:
    agent = f"system:serviceaccount:{namespace}:agent"
    control_plane.kubectl("create", "serviceaccount", "agent", "-n", namespace, check=True)

    denied = control_plane.kubectl("get", "pods", "-n", namespace, as_user=agent)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "{agent}" cannot list resource "pods"' in denied.stderr

    control_plane.kubectl(
        "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods",
        "-n", namespace, check=True,
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "agent-reads-pods", "--role=pod-reader",
        f"--serviceaccount={namespace}:agent", "-n", namespace, check=True,
    )  # fmt: skip

    # The authorizer learns of new bindings through a watch: a moment, not a restart.
    assert eventually(
        lambda: control_plane.kubectl("get", "pods", "-n", namespace, as_user=agent).returncode == 0
    )
    # The binding is namespaced: the same account is still denied everywhere else.
    elsewhere = control_plane.kubectl("get", "pods", "-n", "default", as_user=agent)
    assert "Forbidden" in elsewhere.stderr
    can_i = control_plane.kubectl("auth", "can-i", "delete", "pods", "-n", namespace, as_user=agent)
    assert can_i.stdout.strip() == "no"


def test_impersonated_groups_are_honoured(control_plane: ControlPlane, namespace: str) -> None:
    who = control_plane.kubectl(
        "auth", "whoami", "-o", "json", as_user="jane", as_groups=["a11i:operators"], check=True
    )
    status = json.loads(who.stdout)["status"]["userInfo"]
    assert status["username"] == "jane"
    assert "a11i:operators" in status["groups"]

    control_plane.kubectl(
        "create", "rolebinding", "operators-view", "--clusterrole=view",
        "--group=a11i:operators", "-n", namespace, check=True,
    )  # fmt: skip
    assert eventually(
        lambda: (
            control_plane.kubectl(
                "get", "configmaps", "-n", namespace, as_user="jane", as_groups=["a11i:operators"]
            ).returncode
            == 0
        )
    )
    alone = control_plane.kubectl("get", "configmaps", "-n", namespace, as_user="jane")
    assert "Forbidden" in alone.stderr


WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.a11i.io
spec:
  group: e2e.a11i.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size:
                  type: integer
                  minimum: 1
                  x-kubernetes-validations:
                    - rule: "self <= 10"
                      message: "size must be at most 10"
"""


def test_a_crd_is_established_and_serves_its_kind(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=WIDGET_CRD, check=True)
    try:
        control_plane.kubectl(
            "wait", "--for=condition=Established", "crd/widgets.e2e.a11i.io", "--timeout=60s",
            check=True,
        )  # fmt: skip
        widget = json.dumps(
            {
                "apiVersion": "e2e.a11i.io/v1",
                "kind": "Widget",
                "metadata": {"name": "w1", "namespace": namespace},
                "spec": {"size": 3},
            }
        )
        # Discovery of a brand-new group can lag the Established condition by a moment.
        assert eventually(
            lambda: control_plane.kubectl("create", "-f", "-", input=widget).returncode == 0
        )
        got = control_plane.kubectl("get", "wg", "w1", "-n", namespace, "-o", "json", check=True)
        assert json.loads(got.stdout)["spec"] == {"size": 3}

        # The schema and its CEL rule are enforced by the server.
        too_big = widget.replace('"w1"', '"w2"').replace('"size": 3', '"size": 11')
        refused = control_plane.kubectl("create", "-f", "-", input=too_big)
        assert refused.returncode != 0
        assert "size must be at most 10" in refused.stderr
    finally:
        control_plane.kubectl("delete", "crd", "widgets.e2e.a11i.io", "--wait=false")


def test_controller_manager_finalizes_namespaces_and_creates_service_accounts(
    control_plane: ControlPlane,
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name, check=True)
    control_plane.kubectl("create", "configmap", "data", "--from-literal=a=b", "-n", name)
    # The serviceaccount controller gives every namespace its `default` account, and the root-CA
    # publisher its kube-root-ca.crt.
    assert eventually(
        lambda: (
            control_plane.kubectl("get", "serviceaccount", "default", "-n", name).returncode == 0
        )
    )
    assert eventually(
        lambda: (
            control_plane.kubectl("get", "configmap", "kube-root-ca.crt", "-n", name).returncode
            == 0
        )
    )
    # The namespace controller empties a deleted namespace and removes its finalizer.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=True)
    control_plane.kubectl(
        "wait", "--for=delete", f"namespace/{name}", "--timeout=60s", check=True, timeout=70
    )
    gone = control_plane.kubectl("get", "namespace", name)
    assert "NotFound" in gone.stderr


def test_service_account_tokens_authenticate(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "serviceaccount", "agent", "-n", namespace, check=True)
    token = control_plane.kubectl(
        "create", "token", "agent", "-n", namespace, "--duration=10m", check=True
    ).stdout.strip()
    assert token.count(".") == 2  # a JWT, signed with the plane's service-account key

    # The token alone, no client certificate: the server must authenticate it itself.
    who = control_plane.kubectl(
        "auth", "whoami", "-o", "json",
        f"--server={control_plane.server_url}",
        f"--certificate-authority={control_plane.ca_path}",
        f"--token={token}",
        "--kubeconfig=/dev/null",
        check=True,
    )  # fmt: skip
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:agent"
    assert f"system:serviceaccounts:{namespace}" in user["groups"]


def test_pods_pass_the_stock_admission_chain(control_plane: ControlPlane, namespace: str) -> None:
    """No kubelet runs pods here, but admission is real: the ServiceAccount plugin mounts the
    API token, which is what the operator's injection tests will look at next to their sidecar."""
    pod = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "agent", "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/agent:1"}]},
        }
    )
    control_plane.kubectl("create", "-f", "-", input=pod, check=True)
    got = control_plane.kubectl("get", "pod", "agent", "-n", namespace, "-o", "json", check=True)
    spec = json.loads(got.stdout)["spec"]
    assert spec["serviceAccountName"] == "default"
    assert any(volume["name"].startswith("kube-api-access-") for volume in spec["volumes"])
    phase = control_plane.kubectl(
        "get", "pod", "agent", "-n", namespace, "-o", "jsonpath={.status.phase}", check=True
    )
    assert phase.stdout == "Pending"  # stored, never scheduled: there are no nodes


def write_chart(directory: Path) -> Path:
    chart = directory / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        'apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: ">=1.30.0-0"\n',
        encoding="utf-8",
    )
    (chart / "values.yaml").write_text("greeting: hello\n", encoding="utf-8")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-tiny\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        "  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n",
        encoding="utf-8",
    )
    return chart


def test_helm_reports_its_pinned_version(control_plane: ControlPlane) -> None:
    result = control_plane.helm("version", "--template={{.Version}}", check=True)
    assert result.stdout.strip() == control_plane.versions.helm


def test_helm_renders_offline_with_the_planes_minor_release(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Without a cluster Helm assumes the Kubernetes version it was built for; build.sh sets it
    (left alone, Helm v3 assumes v1.20 and refuses a chart that needs >= 1.30)."""
    rendered = control_plane.helm("template", "r1", str(write_chart(tmp_path)), check=True)
    assert 'greeting: "hello"' in rendered.stdout
    assert 'kubeVersion: "v1.34.0"' in rendered.stdout


def test_helm_installs_a_chart_that_checks_the_kube_version(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Helm compares the chart's kubeVersion with what the server reports: a server built
    without the version ldflags says v0.0.0 and the install fails here."""
    chart = str(write_chart(tmp_path))
    dry = control_plane.helm("install", "r1", chart, "-n", namespace, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    assert f'kubeVersion: "{control_plane.version}"' in dry.stdout

    control_plane.helm("install", "r1", chart, "-n", namespace, "--wait", check=True)
    greeting = control_plane.kubectl(
        "get", "configmap", "r1-tiny", "-n", namespace, "-o", "jsonpath={.data.greeting}",
        check=True,
    )  # fmt: skip
    assert greeting.stdout == "hello"
    listed = control_plane.helm("list", "-n", namespace, "-o", "json", check=True)
    assert [release["name"] for release in json.loads(listed.stdout)] == ["r1"]
    control_plane.helm("uninstall", "r1", "-n", namespace, "--wait", check=True)
    gone = control_plane.kubectl("get", "configmap", "r1-tiny", "-n", namespace)
    assert "NotFound" in gone.stderr
