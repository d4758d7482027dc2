"""The injection webhook against the real kube-apiserver and kube-controller-manager.

``a11i operator --role webhook`` runs as a process, authenticated as the chart's operator
ServiceAccount, serving HTTPS on loopback with a certificate from ``a11i.operator.certs`` (an IP
SAN for 127.0.0.1). A MutatingWebhookConfiguration points the API server at
``https://127.0.0.1:<port>/a11i-inject`` with two entries, as the chart has them: annotated pods
(matchConditions on ``a11i.io/inject: "true"``) and pods of labelled namespaces
(``namespaceSelector`` ``a11i.io/inject=enabled``, unless the pod says ``"false"``). Pods stay
Pending (no kubelet) but are admitted and stored: the stored spec is what is checked.

The webhook logs one line per AdmissionReview (``admission <namespace>/<pod>: ...``), which is
how the tests count the requests that reach it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from a11i.operator import certs
from tests.e2e.crds import a11i_crds  # noqa: F401  (a fixture: the peering CRDs the RBAC needs)
from tests.e2e.operator import (
    SYSTEM_NAMESPACE,
    OperatorProcess,
    install_rbac,
    service_account_kubeconfig,
)
from tests.support.cluster import ROOT, ControlPlane, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("a11i_crds")]

IMAGE = "registry.example/a11i:e2e"
CONFIG = "a11i-inject-e2e"
#: Namespaces with this label are left to the failure-policy test's own configuration.
ISOLATED = "a11i-e2e/isolated"


class WebhookProcess(OperatorProcess):
    """``python -m a11i.operator --role webhook``."""

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the webhook is already running")
        self.starts += 1
        environment = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        environment.pop("A11I_REDIS_URL", None)  # the webhook role needs no Redis
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "a11i.operator", "--role", "webhook", "--verbose"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=ROOT, env=environment,
            )  # fmt: skip

    def admissions(self, namespace: str) -> list[str]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if f"admission {namespace}/" in line]


def served_certificate(port: int) -> bytes:
    """The DER certificate the server on ``port`` presents right now."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def start_webhook(
    plane: ControlPlane, directory: Path, **env: str
) -> tuple[WebhookProcess, int, certs.ServingCertificate]:
    install_rbac(plane)
    kubeconfig = service_account_kubeconfig(plane, directory / "kubeconfig")
    certificate = certs.self_signed(["127.0.0.1", "localhost"])
    certs.write(certificate, directory / "tls")
    port = free_port()
    process = WebhookProcess(
        kubeconfig,
        directory / "webhook.log",
        {
            "A11I_SIDECAR_IMAGE": IMAGE,
            "A11I_OPERATOR_NAMESPACE": SYSTEM_NAMESPACE,
            "A11I_NATIVE_SIDECARS": "auto",
            "A11I_WEBHOOK_PORT": str(port),
            "A11I_WEBHOOK_CERT_DIR": str(directory / "tls"),
            **env,
        },
    )
    process.start()

    def listening() -> bool:
        assert process.running, process.logs()
        try:
            served_certificate(port)
        except OSError:
            return False
        return "injection webhook listening" in process.logs(200)

    process.wait_for(listening, "the webhook serving HTTPS", timeout=60)
    return process, port, certificate


def webhook_configuration(
    name: str,
    port: int,
    ca_pem: bytes,
    *,
    failure_policy: str = "Ignore",
    only_namespace: str | None = None,
) -> dict[str, Any]:
    """The two entries the chart renders (plus test-only selectors)."""
    client = {
        "url": f"https://127.0.0.1:{port}/a11i-inject",
        "caBundle": base64.b64encode(ca_pem).decode("ascii"),
    }
    never = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", SYSTEM_NAMESPACE],
    }
    scope = (
        [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [only_namespace]}]
        if only_namespace
        else [{"key": ISOLATED, "operator": "DoesNotExist"}]
    )
    common = {
        "clientConfig": client,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        "reinvocationPolicy": "Never",
    }
    not_host_network = {
        "name": "not-host-network",
        "expression": "!has(object.spec.hostNetwork) || !object.spec.hostNetwork",
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "annotated.inject.a11i.io",
                **common,
                "namespaceSelector": {
                    "matchExpressions": [
                        never,
                        {"key": "a11i.io/inject", "operator": "NotIn", "values": ["enabled"]},
                        *scope,
                    ]
                },
                "matchConditions": [
                    {
                        "name": "annotated",
                        "expression": "has(object.metadata.annotations) && "
                        "'a11i.io/inject' in object.metadata.annotations && "
                        "object.metadata.annotations['a11i.io/inject'] == 'true'",
                    },
                    not_host_network,
                ],
            },
            {
                "name": "namespace.inject.a11i.io",
                **common,
                "namespaceSelector": {
                    "matchLabels": {"a11i.io/inject": "enabled"},
                    "matchExpressions": [never, *scope],
                },
                "matchConditions": [
                    {
                        "name": "not-opted-out",
                        "expression": "!has(object.metadata.annotations) || "
                        "!('a11i.io/inject' in object.metadata.annotations) || "
                        "object.metadata.annotations['a11i.io/inject'] != 'false'",
                    },
                    not_host_network,
                ],
            },
        ],
    }


def apply(plane: ControlPlane, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)


def pod_manifest(
    name: str, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "agent", "image": "agent:1"}], **spec},
    }


def create_pod(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """``kubectl create`` the pod and return it as stored."""
    created = plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(manifest), check=True
    )
    loaded: dict[str, Any] = json.loads(created.stdout)
    return loaded


def is_injected(pod: dict[str, Any]) -> bool:
    names = [c["name"] for c in pod["spec"].get("initContainers", [])]
    names += [c["name"] for c in pod["spec"]["containers"]]
    return "a11i-proxy" in names


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def wait_logged(process: WebhookProcess, namespace: str, count: int) -> list[str]:
    process.wait_for(
        lambda: len(process.admissions(namespace)) >= count,
        f"{count} admission(s) in {namespace} logged",
        timeout=10,
    )
    return process.admissions(namespace)


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WebhookProcess, int, Path]]:
    directory = tmp_path_factory.mktemp("webhook")
    process, port, certificate = start_webhook(control_plane, directory)
    apply(control_plane, webhook_configuration(CONFIG, port, certificate.ca_pem))
    try:
        yield process, port, directory
    finally:
        control_plane.kubectl(
            "delete", "mutatingwebhookconfiguration", CONFIG, "--ignore-not-found"
        )  # fmt: skip
        process.stop()


def test_deployment_pods_come_out_injected(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    process, _, _ = webhook
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {
                    "labels": {"app": "agent", "a11i.io/project": "research"},
                    "annotations": {"a11i.io/inject": "true"},
                },
                "spec": {
                    "containers": [
                        {"name": "agent", "image": "agent:1"},
                        {
                            "name": "tools",
                            "image": "tools:1",
                            "env": [{"name": "OPENAI_BASE_URL", "value": "https://mine/v1"}],
                        },
                    ]
                },
            },
        },
    }
    apply(control_plane, deployment)

    def pods() -> list[dict[str, Any]]:
        listed = control_plane.kubectl("get", "pods", "-n", namespace, "-l", "app=agent",
                                       "-o", "json", check=True)  # fmt: skip
        items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
        return items if len(items) == 2 else []

    found = process.wait_for(pods, "the ReplicaSet's two pods", timeout=30)
    assert isinstance(found, list)
    for pod in found:
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert pod["metadata"]["annotations"]["a11i.io/status"] == "injected"
        (proxy,) = pod["spec"]["initContainers"]  # v1.34: a native sidecar
        assert (proxy["name"], proxy["restartPolicy"], proxy["image"], proxy["args"]) == (
            "a11i-proxy", "Always", IMAGE, ["sidecar"],
        )  # fmt: skip
        env = env_of(proxy)
        assert env["A11I_NAMESPACE"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
        }
        assert env["A11I_AGENT"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
        assert env["A11I_PROJECT"] == "research"
        assert env["A11I_WALLET_FILE"] == "/var/lib/a11i/wallets.sqlite"
        assert proxy["resources"] == {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        }
        assert proxy["startupProbe"]["exec"]["command"] == ["a11i", "probe"]
        assert proxy["readinessProbe"]["exec"]["command"] == ["a11i", "probe"]
        assert proxy["securityContext"]["runAsUser"] == 65532
        assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
        assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["a11i-config"]["configMap"]["name"] == "a11i-sidecar-config"
        agent, tools = pod["spec"]["containers"]
        assert env_of(agent)["OPENAI_BASE_URL"] == "http://127.0.0.1:11000/v1"
        assert env_of(agent)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:11000"
        assert env_of(tools)["OPENAI_BASE_URL"] == "https://mine/v1"  # the user's, kept
        assert env_of(tools)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:11000"
    assert len(wait_logged(process, namespace, 2)) == 2


def test_namespace_label_and_the_false_that_wins(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path]
) -> None:
    process, _, _ = webhook
    namespace = control_plane.create_namespace(
        f"e2e-label-{uuid.uuid4().hex[:6]}", labels={"a11i.io/inject": "enabled"}
    )
    try:
        labelled = create_pod(control_plane, namespace, pod_manifest("plain"))
        assert is_injected(labelled)
        assert labelled["metadata"]["annotations"]["a11i.io/status"] == "injected"
        opted_out = create_pod(
            control_plane, namespace, pod_manifest("out", {"a11i.io/inject": "false"})
        )
        assert not is_injected(opted_out)
        assert "a11i.io/status" not in opted_out["metadata"].get("annotations", {})
        host = create_pod(control_plane, namespace, pod_manifest("host", hostNetwork=True))
        assert not is_injected(host)
        # Only the first reached the webhook: matchConditions kept the others away.
        time.sleep(0.5)
        (line,) = process.admissions(namespace)
        assert f"admission {namespace}/plain: injected" in line
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_second_admission_changes_nothing(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    process, _, _ = webhook
    first = create_pod(control_plane, namespace, pod_manifest("one", {"a11i.io/inject": "true"}))
    assert is_injected(first)
    again = json.loads(json.dumps(first))
    again["metadata"] = {
        "name": "two",
        "annotations": first["metadata"]["annotations"],
        "labels": first["metadata"].get("labels", {}),
    }
    again.pop("status", None)
    second = create_pod(control_plane, namespace, again)
    assert second["spec"]["initContainers"] == first["spec"]["initContainers"]
    assert second["spec"]["containers"] == first["spec"]["containers"]
    assert second["spec"]["volumes"] == first["spec"]["volumes"]
    lines = wait_logged(process, namespace, 2)
    assert "skipped: already injected" in lines[1]


def test_kube_system_and_pods_not_asking_are_left_alone(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    process, _, _ = webhook
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    system = create_pod(
        control_plane, "kube-system", pod_manifest(name, {"a11i.io/inject": "true"})
    )
    control_plane.kubectl("delete", "pod", name, "-n", "kube-system", "--wait=false")
    assert not is_injected(system)
    plain = create_pod(control_plane, namespace, pod_manifest("plain"))
    assert not is_injected(plain)
    assert plain["spec"]["containers"][0].get("env") is None
    time.sleep(0.5)
    assert process.admissions("kube-system") == []
    assert process.admissions(namespace) == []


def test_failure_policy_when_the_webhook_is_down(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = control_plane.create_namespace(
        f"e2e-down-{uuid.uuid4().hex[:6]}", labels={ISOLATED: "true"}
    )
    name = f"a11i-inject-down-{uuid.uuid4().hex[:6]}"
    process, port, certificate = start_webhook(control_plane, tmp_path)
    try:
        for policy in ("Ignore", "Fail"):
            apply(control_plane, webhook_configuration(name, port, certificate.ca_pem,
                                                       failure_policy=policy,
                                                       only_namespace=namespace))  # fmt: skip
        up = create_pod(control_plane, namespace, pod_manifest("up", {"a11i.io/inject": "true"}))
        assert is_injected(up)
        process.stop()

        apply(control_plane, webhook_configuration(name, port, certificate.ca_pem,
                                                   only_namespace=namespace))  # fmt: skip
        ignored = create_pod(
            control_plane, namespace, pod_manifest("ignored", {"a11i.io/inject": "true"})
        )
        assert not is_injected(ignored)

        apply(control_plane, webhook_configuration(name, port, certificate.ca_pem,
                                                   failure_policy="Fail",
                                                   only_namespace=namespace))  # fmt: skip
        refused = control_plane.kubectl(
            "create", "-n", namespace, "-f", "-",
            input=json.dumps(pod_manifest("refused", {"a11i.io/inject": "true"})),
        )  # fmt: skip
        assert refused.returncode != 0
        assert 'failed calling webhook "annotated.inject.a11i.io"' in refused.stderr
        assert "/a11i-inject" in refused.stderr
    finally:
        process.stop()
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_rotated_certificate_is_served_without_a_restart(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    process, port, directory = webhook
    assert process.process is not None
    pid = process.process.pid
    before = served_certificate(port)
    renewed = certs.self_signed(["127.0.0.1", "localhost"])
    certs.write(renewed, directory / "tls")
    process.wait_for(lambda: served_certificate(port) != before, "the renewed certificate served")
    assert process.running
    assert process.process.pid == pid
    # The API server, given the new CA only, reaches the webhook: the chain is the new one.
    apply(control_plane, webhook_configuration(CONFIG, port, renewed.ca_pem))
    pod = create_pod(control_plane, namespace, pod_manifest("after", {"a11i.io/inject": "true"}))
    assert is_injected(pod)
    assert "webhook certificate reloaded" in process.logs(200)


def test_a_per_agent_budget_reaches_the_pods_it_selects(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    """An AgentBudget with agentSelector + perAgentLimit, applied with kubectl: the pods it
    selects get their own limit (env and annotation); the others do not; deleting it stops it.
    The webhook only reads it: the reconciler's finalizer on it stays."""
    process, _, _ = webhook
    apply(
        control_plane,
        {
            "apiVersion": "a11i.io/v1alpha1",
            "kind": "AgentBudget",
            "metadata": {
                "name": "per-bot",
                "namespace": namespace,
                # As the reconciler leaves it: the webhook's kopf must not take this away.
                "finalizers": ["a11i.io/finalizer"],
            },
            "spec": {
                "limit": "50.00",
                "perAgentLimit": "2.50",
                "agentSelector": {
                    "matchLabels": {"app": "bot"},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["free"]}],
                },
            },
        },
    )

    def bot(name: str, **labels: str) -> dict[str, Any]:
        manifest = pod_manifest(name, {"a11i.io/inject": "true"})
        manifest["metadata"]["labels"] = {"app": "bot", **labels}
        return manifest

    # The webhook learns of the budget through its watch: the first pods may predate it.
    attempt = 0

    def limited() -> bool:
        nonlocal attempt
        attempt += 1
        created = create_pod(control_plane, namespace, bot(f"bot-{attempt}"))
        sidecar = created["spec"]["initContainers"][0]
        return env_of(sidecar).get("A11I_AGENT_BUDGET_USD") == "2.50"

    process.wait_for(limited, "a selected pod with its own limit", timeout=15)
    selected = json.loads(
        control_plane.kubectl(
            "get", "pod", f"bot-{attempt}", "-n", namespace, "-o", "json", check=True
        ).stdout
    )
    assert selected["metadata"]["annotations"]["a11i.io/agent-budget"] == "per-bot=$2.50"
    stored = json.loads(
        control_plane.kubectl(
            "get", "agentbudget", "per-bot", "-n", namespace, "-o", "json", check=True
        ).stdout
    )
    assert stored["metadata"]["finalizers"] == ["a11i.io/finalizer"]
    assert not any(key.startswith("a11i.io/") for key in stored["metadata"].get("annotations", {}))

    # Not selected (another app; or excluded by the expression): injected, no limit of its own.
    for name, manifest in (
        ("cron", pod_manifest("cron", {"a11i.io/inject": "true"})),
        ("free-bot", bot("free-bot", tier="free")),
    ):
        created = create_pod(control_plane, namespace, manifest)
        assert is_injected(created), name
        assert "A11I_AGENT_BUDGET_USD" not in env_of(created["spec"]["initContainers"][0]), name
        assert "a11i.io/agent-budget" not in created["metadata"]["annotations"], name

    # Deleted (the finalizer taken off, as the reconciler would): the next selected pod gets
    # no limit of its own.
    control_plane.kubectl(
        "patch", "agentbudget", "per-bot", "-n", namespace, "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}', check=True,
    )  # fmt: skip
    control_plane.kubectl("delete", "agentbudget", "per-bot", "-n", namespace, check=True)

    def unlimited() -> bool:
        nonlocal attempt
        attempt += 1
        created = create_pod(control_plane, namespace, bot(f"bot-{attempt}"))
        return "A11I_AGENT_BUDGET_USD" not in env_of(created["spec"]["initContainers"][0])

    process.wait_for(unlimited, "the deleted budget forgotten", timeout=15)


def test_key_custody_mounts_the_keys_into_the_sidecar_alone(
    control_plane: ControlPlane, webhook: tuple[WebhookProcess, int, Path], namespace: str
) -> None:
    """The namespace-wide AgentBudget's keyCustody, applied with kubectl: the pod spec the real
    API server stores has the Secret as a read-only volume of a11i-proxy alone, the key files in
    its env, a placeholder key in the app container, no key anywhere as an env value, and the
    mark. The webhook only names the Secret (it does not exist here, nor need it)."""
    process, _, _ = webhook
    apply(
        control_plane,
        {
            "apiVersion": "a11i.io/v1alpha1",
            "kind": "AgentBudget",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": {
                "limit": "50.00",
                "keyCustody": {
                    "secretName": "a11i-provider-keys",
                    "openaiKey": "openai",
                    "anthropicKey": "anthropic",
                },
            },
        },
    )
    containers = [
        {"name": "agent", "image": "agent:1"},
        {
            "name": "tools",
            "image": "tools:1",
            "env": [{"name": "OPENAI_API_KEY", "value": "sk-the-tools-own"}],
        },
    ]
    attempt = 0

    def held() -> dict[str, Any] | None:
        nonlocal attempt
        attempt += 1
        manifest = pod_manifest(f"held-{attempt}", {"a11i.io/inject": "true"})
        manifest["spec"]["containers"] = containers
        created = create_pod(control_plane, namespace, manifest)
        marked = "a11i.io/key-custody" in created["metadata"]["annotations"]
        return created if marked else None

    # The webhook learns of the budget through its watch: the first pods may predate it.
    pod = process.wait_for(held, "a pod under key custody", timeout=15)
    assert isinstance(pod, dict)
    assert pod["metadata"]["annotations"]["a11i.io/key-custody"] == "openai,anthropic"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["a11i-provider-keys"]["secret"] == {
        "secretName": "a11i-provider-keys",
        "items": [{"key": "openai", "path": "openai"}, {"key": "anthropic", "path": "anthropic"}],
        "defaultMode": 0o444,
        "optional": False,
    }
    (proxy,) = pod["spec"]["initContainers"]
    keys_dir = "/var/run/secrets/a11i/provider-keys"
    assert {"name": "a11i-provider-keys", "mountPath": keys_dir, "readOnly": True} in proxy[
        "volumeMounts"
    ]
    env = env_of(proxy)
    assert env["A11I_OPENAI_API_KEY_FILE"] == f"{keys_dir}/openai"
    assert env["A11I_ANTHROPIC_API_KEY_FILE"] == f"{keys_dir}/anthropic"
    agent, tools = pod["spec"]["containers"]
    for app in (agent, tools):
        assert "a11i-provider-keys" not in [m["name"] for m in app.get("volumeMounts", [])]
        assert not any("_FILE" in name for name in env_of(app))
    assert env_of(agent)["OPENAI_API_KEY"] == "held-by-the-a11i-sidecar"
    assert env_of(agent)["ANTHROPIC_API_KEY"] == "held-by-the-a11i-sidecar"
    assert env_of(tools)["OPENAI_API_KEY"] == "sk-the-tools-own"  # its own: kept
    # No container reads the Secret through env: only the sidecar's volume names it.
    assert "secretKeyRef" not in json.dumps(pod["spec"]["containers"] + [proxy])
    assert "a11i-provider-keys" not in json.dumps(pod["spec"]["containers"])

    # "false" wins: no sidecar, no keys, no placeholder.
    out = create_pod(control_plane, namespace, pod_manifest("out", {"a11i.io/inject": "false"}))
    assert not is_injected(out)
    assert "volumes" not in out["spec"] or not [
        v for v in out["spec"]["volumes"] if v["name"] == "a11i-provider-keys"
    ]
    assert out["spec"]["containers"][0].get("env") is None


def test_the_cluster_wide_key_custody_default(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A webhook started with the chart's default (A11I_KEY_CUSTODY_*) holds the keys in a
    namespace without an AgentBudget; the pod's fsGroup makes the files group-readable only."""
    namespace = control_plane.create_namespace(
        f"e2e-custody-{uuid.uuid4().hex[:6]}", labels={ISOLATED: "true"}
    )
    name = f"a11i-inject-custody-{uuid.uuid4().hex[:6]}"
    process, port, certificate = start_webhook(
        control_plane,
        tmp_path,
        A11I_KEY_CUSTODY_SECRET="cluster-keys",
        A11I_KEY_CUSTODY_OPENAI_KEY="OPENAI_API_KEY",
    )
    try:
        apply(control_plane, webhook_configuration(name, port, certificate.ca_pem,
                                                   only_namespace=namespace))  # fmt: skip
        pod = create_pod(
            control_plane,
            namespace,
            pod_manifest("agent", {"a11i.io/inject": "true"}, securityContext={"fsGroup": 2000}),
        )
        assert pod["metadata"]["annotations"]["a11i.io/key-custody"] == "openai"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["a11i-provider-keys"]["secret"] == {
            "secretName": "cluster-keys",
            "items": [{"key": "OPENAI_API_KEY", "path": "openai"}],
            "defaultMode": 0o440,
            "optional": False,
        }
        (proxy,) = pod["spec"]["initContainers"]
        assert "A11I_ANTHROPIC_API_KEY_FILE" not in env_of(proxy)
        (agent,) = pod["spec"]["containers"]
        assert env_of(agent)["OPENAI_API_KEY"] == "held-by-the-a11i-sidecar"
        assert "ANTHROPIC_API_KEY" not in env_of(agent)
    finally:
        process.stop()
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_agent_budget_admission_reaches_the_sidecars(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """spec.admission, applied with kubectl, in the pod specs the real API server stores, field
    by field: the per-agent AgentBudget that limits a pod over the namespace's over the chart's
    default (A11I_SIDECAR_BUDGET_*); a change reaches the pods created after it."""
    namespace = control_plane.create_namespace(
        f"e2e-admission-{uuid.uuid4().hex[:6]}", labels={ISOLATED: "true"}
    )
    name = f"a11i-inject-admission-{uuid.uuid4().hex[:6]}"
    process, port, certificate = start_webhook(
        control_plane,
        tmp_path,
        A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS="512",
        A11I_SIDECAR_BUDGET_ADMISSION_WAIT="3",
    )
    variables = (
        "A11I_BUDGET_FIT_OUTPUT_CAP",
        "A11I_BUDGET_MIN_OUTPUT_TOKENS",
        "A11I_BUDGET_ADMISSION_WAIT",
    )
    attempt = 0

    def admission_of(**labels: str) -> dict[str, Any]:
        nonlocal attempt
        attempt += 1
        manifest = pod_manifest(f"agent-{attempt}", {"a11i.io/inject": "true"})
        manifest["metadata"]["labels"] = labels
        created = create_pod(control_plane, namespace, manifest)
        (proxy,) = created["spec"]["initContainers"]
        env = env_of(proxy)
        return {key: env[key] for key in variables if key in env} | {
            "limit": env.get("A11I_AGENT_BUDGET_USD")
        }

    try:
        apply(control_plane, webhook_configuration(name, port, certificate.ca_pem,
                                                   only_namespace=namespace))  # fmt: skip
        # No AgentBudget yet: the chart's default, and the sidecar's own for the rest.
        assert admission_of() == {
            "A11I_BUDGET_MIN_OUTPUT_TOKENS": "512",
            "A11I_BUDGET_ADMISSION_WAIT": "3",
            "limit": None,
        }
        for budget in (
            {"metadata": {"name": "team"}, "spec": {
                "limit": "50.00", "admission": {"fitOutputCap": False, "waitSeconds": 0},
            }},
            {"metadata": {"name": "bots"}, "spec": {
                "limit": "50.00", "perAgentLimit": "2.00",
                "agentSelector": {"matchLabels": {"app": "bot"}},
                "admission": {"fitOutputCap": True, "waitSeconds": 0.5},
            }},
        ):  # fmt: skip
            budget["metadata"]["namespace"] = namespace
            apply(control_plane, {"apiVersion": "a11i.io/v1alpha1", "kind": "AgentBudget",
                                  **budget})  # fmt: skip

        strict = {
            "A11I_BUDGET_FIT_OUTPUT_CAP": "off",
            "A11I_BUDGET_MIN_OUTPUT_TOKENS": "512",
            "A11I_BUDGET_ADMISSION_WAIT": "0",
            "limit": None,
        }
        bot = {
            "A11I_BUDGET_FIT_OUTPUT_CAP": "on",
            "A11I_BUDGET_MIN_OUTPUT_TOKENS": "512",
            "A11I_BUDGET_ADMISSION_WAIT": "0.5",
            "limit": "2.00",
        }
        # The webhook learns of the budgets through its watch: the first pods may predate it.
        process.wait_for(lambda: admission_of() == strict, "a strict namespace", timeout=15)
        process.wait_for(lambda: admission_of(app="bot") == bot, "a fitting bot", timeout=15)
        assert admission_of(app="cron") == strict

        # The namespace's budget made lenient again: new pods get the default back.
        control_plane.kubectl(
            "patch", "agentbudget", "team", "-n", namespace, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/admission"}]', check=True,
        )  # fmt: skip
        process.wait_for(
            lambda: admission_of()
            == {"A11I_BUDGET_MIN_OUTPUT_TOKENS": "512", "A11I_BUDGET_ADMISSION_WAIT": "3",
                "limit": None},
            "the namespace's admission removed",
            timeout=15,
        )  # fmt: skip
        # The pods created before the change keep what they started with.
        stored = json.loads(
            control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json", check=True).stdout
        )["items"]
        still_strict = [
            pod["metadata"]["name"]
            for pod in stored
            if env_of(pod["spec"]["initContainers"][0]).get("A11I_BUDGET_FIT_OUTPUT_CAP") == "off"
        ]
        assert still_strict
    finally:
        process.stop()
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
