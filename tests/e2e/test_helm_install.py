"""``helm install`` of the chart into the test control plane, then upgrade and uninstall.

The release uses ci/webhook-url.yaml with the URL moved to a loopback port nothing listens on:
the API server really calls the webhook configuration the chart made (there is no kubelet, so
the Deployments' pods stay Pending and the in-cluster webhook never serves). That proves the
CEL matchConditions compile and select the right pods: with failurePolicy Fail a pod that asks
for injection is refused because the webhook is unreachable, a pod that does not is admitted
without the webhook ever being called.

Then ``a11i operator --role webhook`` runs on loopback with a token of the chart's webhook
ServiceAccount, and the release's webhook.url is pointed at it: opted-in pods get the sidecar.
The release namespace enforces the ``restricted`` Pod Security Standard, so the chart's pods are
created only if their security contexts pass it.

The release has its own name and peering (``a11i-e2e``), so it does not collide with the
ClusterKopfPeering ``a11i`` the operator tests apply.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.operator import service_account_kubeconfig
from tests.support.cluster import ROOT, ControlPlane, free_port

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "a11i"
VALUES = CHART / "ci" / "webhook-url.yaml"
RELEASE = "a11i-e2e"
PEERING = "a11i-e2e"
CRDS = (
    "agentbudgets.a11i.io",
    "telemetrypolicies.a11i.io",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)


class Release:
    """The installed release: its namespace, the URL its webhook points at, helm helpers."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        self.url = f"https://127.0.0.1:{free_port()}/a11i-inject"
        self.notes = ""
        """What ``helm install`` printed: the chart's NOTES.txt."""

    def settings(self, *extra: str) -> list[str]:
        return [
            "--namespace", self.namespace, "--values", str(VALUES),
            "--set", f"webhook.url={self.url}", "--set", f"operator.peering={PEERING}",
            *extra,
        ]  # fmt: skip

    def install(self) -> None:
        self.notes = self.plane.helm(
            "install", RELEASE, str(CHART), *self.settings(), check=True, timeout=90
        ).stdout

    def upgrade(self, *extra: str) -> str:
        return self.plane.helm(
            "upgrade", RELEASE, str(CHART), *self.settings(*extra), check=True, timeout=90
        ).stdout

    def get(self, *args: str) -> dict[str, Any]:
        found = self.plane.kubectl("get", *args, "-o", "json", check=True)
        loaded: dict[str, Any] = json.loads(found.stdout)
        return loaded

    def exists(self, *args: str) -> bool:
        return self.plane.kubectl("get", *args, "-o", "name").returncode == 0

    def create_pod(
        self,
        namespace: str,
        *,
        annotations: dict[str, str] | None = None,
        host_network: bool = False,
        injected: bool = False,
    ) -> tuple[bool, str]:
        """Create a pod; (admitted, what the API server said: the stored pod as JSON, or the
        error). ``injected`` says whether the stored pod must carry the sidecar."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"agent-{uuid.uuid4().hex[:6]}",
                "namespace": namespace,
                "annotations": annotations or {},
            },
            "spec": {
                "hostNetwork": host_network,
                # Restricted-compliant, for the release namespace (see the module docstring).
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "agent",
                        "image": "registry.local/agent:1",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        created = self.plane.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pod))
        if created.returncode != 0:
            return False, created.stderr
        stored = json.loads(created.stdout)
        names = [c["name"] for c in stored["spec"]["containers"]]
        names += [c["name"] for c in stored["spec"].get("initContainers", [])]
        assert ("a11i-proxy" in names) == injected, names
        if not injected:
            assert names == ["agent"]
        return True, created.stdout


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane) -> Iterator[Release]:
    # The strictest Pod Security Standard: the chart's pods must pass it to be created at all.
    namespace = control_plane.create_namespace(
        f"a11i-helm-{uuid.uuid4().hex[:6]}",
        labels={"pod-security.kubernetes.io/enforce": "restricted"},
    )
    installed = Release(control_plane, namespace)
    installed.install()
    try:
        yield installed
    finally:
        control_plane.helm("uninstall", RELEASE, "-n", namespace, "--ignore-not-found")
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def plain_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.create_namespace(f"plain-{uuid.uuid4().hex[:6]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def opted_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.create_namespace(
        f"opted-{uuid.uuid4().hex[:6]}", labels={"a11i.io/inject": "enabled"}
    )
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_install_creates_the_operator_the_webhook_and_the_crds(release: Release) -> None:
    ns = release.namespace
    operator = release.get("deployment", f"{RELEASE}-operator", "-n", ns)
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    webhook = release.get("deployment", f"{RELEASE}-webhook", "-n", ns)
    assert webhook["spec"]["replicas"] == 2
    assert release.get("pdb", f"{RELEASE}-webhook", "-n", ns)["spec"]["minAvailable"] == 1
    service = release.get("service", f"{RELEASE}-webhook", "-n", ns)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(443, "https")]
    assert release.exists("statefulset", f"{RELEASE}-redis", "-n", ns)
    assert release.exists("service", f"{RELEASE}-redis", "-n", ns)
    secret = release.get("secret", f"{RELEASE}-webhook-tls", "-n", ns)
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}

    configuration = release.get("mutatingwebhookconfiguration", f"{RELEASE}-injector")
    hooks = {w["name"]: w for w in configuration["webhooks"]}
    assert list(hooks) == ["pod.inject.a11i.io", "namespace.inject.a11i.io"]
    for hook in hooks.values():
        assert hook["clientConfig"]["url"] == release.url
        assert hook["failurePolicy"] == "Ignore"
        assert len(hook["matchConditions"]) == 2

    for crd in CRDS:
        assert release.exists("crd", crd), crd
    assert release.exists("clusterkopfpeering", PEERING)
    for role in (f"{RELEASE}-operator", f"{RELEASE}-webhook"):
        assert release.exists("clusterrole", role)
        assert release.exists("clusterrolebinding", role)

    notes = release.notes
    assert "Next step" in notes
    assert "a11i.io/inject=enabled" in notes
    assert release.url in notes
    assert "The dashboard" not in notes  # off by default


def test_the_dashboard_notes_say_how_to_log_in(release: Release) -> None:
    """With the dashboard on, the API server accepts every object (a server-side dry run, so
    the release stays as it is) and NOTES.txt says how to reach the page and get a token."""
    dashboard = f"{RELEASE}-dashboard"
    notes = release.upgrade("--set", "dashboard.enabled=true", "--dry-run=server")
    assert f"port-forward service/{dashboard} 11080:" in notes
    assert f"get secret {dashboard} -o jsonpath='{{.data.admin-token}}'" in notes
    assert "kubectl create token" in notes  # Kubernetes authentication, on by default
    assert "top-ups through the AgentBudget" in notes
    assert not release.exists("deployment", dashboard, "-n", release.namespace)
    static_only = release.upgrade(
        "--set", "dashboard.enabled=true", "--set", "dashboard.auth.kubernetes=false",
        "--dry-run=server",
    )  # fmt: skip
    assert "kubectl create token" not in static_only
    assert "admin-token" in static_only


def test_every_pod_passes_the_restricted_pod_security_standard(release: Release) -> None:
    """The controllers create the pods (none runs: no kubelet) only if PodSecurity admits them."""
    wanted = {"operator": 1, "webhook": 2, "redis": 1}
    deadline = time.monotonic() + 60
    while True:
        pods = release.get("pods", "-n", release.namespace)["items"]
        counts = {
            component: sum(
                p["metadata"]["labels"].get("app.kubernetes.io/component") == component
                for p in pods
            )
            for component in wanted
        }
        if counts == wanted:
            break
        events = release.plane.kubectl("get", "events", "-n", release.namespace).stdout
        assert "FailedCreate" not in events, events
        assert time.monotonic() < deadline, (counts, events)
        time.sleep(0.5)


def test_webhook_account_may_read_and_not_write(release: Release) -> None:
    account = f"system:serviceaccount:{release.namespace}:{RELEASE}-webhook"

    def may(*args: str) -> bool:
        answer = release.plane.kubectl("auth", "can-i", *args, as_user=account)
        return answer.stdout.strip() == "yes"

    assert may("watch", "namespaces")
    assert may("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert may("create", "events")
    assert not may("get", "secrets", "-n", release.namespace)
    assert not may("create", "pods", "-n", "default")
    assert not may("patch", "namespaces")
    # Per-agent budgets: it reads AgentBudgets (a watch), never writes them.
    assert may("watch", "agentbudgets.a11i.io")
    assert may("list", "agentbudgets.a11i.io", "-n", "default")
    assert not may("patch", "agentbudgets.a11i.io", "-n", "default")
    assert not may("update", "agentbudgets.a11i.io/status", "-n", "default")


def test_pods_are_admitted_while_the_webhook_is_down_and_ignored(
    release: Release, plain_namespace: str, opted_namespace: str
) -> None:
    # A pod that does not ask, and one that asks: both admitted, unchanged (Ignore).
    assert release.create_pod(plain_namespace)[0]
    assert release.create_pod(plain_namespace, annotations={"a11i.io/inject": "true"})[0]
    assert release.create_pod(opted_namespace)[0]


def test_match_conditions_decide_who_reaches_the_webhook(
    release: Release, plain_namespace: str, opted_namespace: str
) -> None:
    """With failurePolicy Fail every call of the (unreachable) webhook refuses the pod, so
    which pods are refused shows exactly which pods the API server sends to it."""
    release.upgrade("--set", "webhook.failurePolicy=Fail")
    try:
        opt_in = {"a11i.io/inject": "true"}
        admitted, said = release.create_pod(plain_namespace, annotations=opt_in)
        assert not admitted
        assert "pod.inject.a11i.io" in said, said
        assert "failed calling webhook" in said, said
        admitted, said = release.create_pod(opted_namespace)
        assert not admitted
        assert "namespace.inject.a11i.io" in said, said

        # Not called: no opt-in, opted out, host network, the excluded namespaces.
        assert release.create_pod(plain_namespace)[0]
        assert release.create_pod(opted_namespace, annotations={"a11i.io/inject": "false"})[0]
        assert release.create_pod(plain_namespace, annotations=opt_in, host_network=True)[0]
        assert release.create_pod(release.namespace, annotations=opt_in)[0]
    finally:
        release.upgrade()


def webhook_kubeconfig(plane: ControlPlane, namespace: str, path: Path) -> Path:
    """A kubeconfig holding a token of the chart's webhook ServiceAccount."""
    return service_account_kubeconfig(plane, path, f"{RELEASE}-webhook", namespace, "1h")


def test_the_chart_points_the_api_server_at_a_running_webhook(
    release: Release, plain_namespace: str, opted_namespace: str, tmp_path: Path
) -> None:
    """``a11i operator --role webhook`` on loopback, as the chart's webhook ServiceAccount (so
    a permission the chart forgot fails here), and the release's webhook.url pointed at it."""
    port = free_port()
    log_path = tmp_path / "webhook.log"
    environment = {
        **os.environ,
        "KUBECONFIG": str(webhook_kubeconfig(release.plane, release.namespace, tmp_path / "kc")),
        "PYTHONUNBUFFERED": "1",
        "A11I_OPERATOR_NAMESPACE": release.namespace,
        "A11I_SIDECAR_IMAGE": "ghcr.io/a11i/sidecar:0.1.0",
        "A11I_SIDECAR_REDIS_URL": f"redis://{RELEASE}-redis.{release.namespace}.svc:6379/0",
        "A11I_NATIVE_SIDECARS": "auto",
    }
    command = [
        sys.executable, "-m", "a11i.operator", "--role", "webhook", "--self-signed",
        "--webhook-port", str(port), "--webhook-cert-dir", str(tmp_path / "tls"), "--verbose",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env=environment,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}/a11i-inject"

    def logs() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        deadline = time.monotonic() + 60
        while "injection webhook listening" not in logs():
            assert process.poll() is None, f"the webhook exited:\n{logs()}"
            assert time.monotonic() < deadline, f"the webhook did not listen:\n{logs()}"
            time.sleep(0.2)
        ca_bundle = base64.b64encode((tmp_path / "tls" / "ca.crt").read_bytes()).decode()
        release.upgrade(
            "--set", f"webhook.url={url}", "--set", f"webhook.caBundle={ca_bundle}",
            "--set", "webhook.failurePolicy=Fail",
        )  # fmt: skip
        opt_in = {"a11i.io/inject": "true"}
        assert release.create_pod(plain_namespace, annotations=opt_in, injected=True)[0]
        assert release.create_pod(opted_namespace, injected=True)[0]
        assert release.create_pod(plain_namespace)[0]
        assert release.create_pod(opted_namespace, annotations={"a11i.io/inject": "false"})[0]
        # Nothing the webhook asked for was refused to its ServiceAccount.
        assert "forbidden" not in logs().lower(), logs()
        assert "permission" not in logs().lower(), logs()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        release.upgrade()


def test_upgrade_keeps_the_generated_certificate(release: Release) -> None:
    ns = release.namespace
    before = release.get("secret", f"{RELEASE}-webhook-tls", "-n", ns)["data"]
    release.upgrade()
    assert release.get("secret", f"{RELEASE}-webhook-tls", "-n", ns)["data"] == before
    # Switched to the Service: the caBundle is the kept Secret's CA.
    release.upgrade("--set", "webhook.url=")
    try:
        assert release.get("secret", f"{RELEASE}-webhook-tls", "-n", ns)["data"] == before
        configuration = release.get("mutatingwebhookconfiguration", f"{RELEASE}-injector")
        for hook in configuration["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == before["ca.crt"]
            assert hook["clientConfig"]["service"]["name"] == f"{RELEASE}-webhook"
    finally:
        release.upgrade()
    revisions = json.loads(
        release.plane.helm("history", RELEASE, "-n", ns, "-o", "json", check=True).stdout
    )
    assert revisions[-1]["status"] == "deployed"


def test_uninstall_removes_what_it_installed_but_the_crds(release: Release) -> None:
    ns = release.namespace
    release.plane.helm("uninstall", RELEASE, "-n", ns, "--wait", check=True, timeout=90)
    for args in (
        ("deployment", f"{RELEASE}-operator", "-n", ns),
        ("deployment", f"{RELEASE}-webhook", "-n", ns),
        ("service", f"{RELEASE}-webhook", "-n", ns),
        ("statefulset", f"{RELEASE}-redis", "-n", ns),
        ("secret", f"{RELEASE}-webhook-tls", "-n", ns),
        ("pdb", f"{RELEASE}-webhook", "-n", ns),
        ("mutatingwebhookconfiguration", f"{RELEASE}-injector"),
        ("clusterrole", f"{RELEASE}-operator"),
        ("clusterrole", f"{RELEASE}-webhook"),
        ("clusterkopfpeering", PEERING),
    ):
        assert not release.exists(*args), args
    # Helm never deletes the CRDs of crds/ (that would delete every AgentBudget).
    for crd in CRDS:
        assert release.exists("crd", crd), crd
