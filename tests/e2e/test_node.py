"""The test node: kubelet on Debian's containerd, runc and CNI plugins, registered with the real
control plane, runs pods, serves their logs, routes Services, and leaves nothing behind.

Needs root and the node's Debian packages (``make node-system``); the binaries come from
``make cluster-bins``. tests/support/node.py says how the node is made.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ControlPlane, ControlPlaneError
from tests.support.images import BUSYBOX_IMAGE, PAUSE_IMAGE, ImageError, project_archives
from tests.support.node import NETNS_DIR, Node, _cgroup_controllers, start_cluster
from tests.support.paths import ROOT

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a node needs root (containerd, runc, netns)"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ControlPlane, Node]]:
    failure = ""
    try:
        plane, node = start_cluster()
    except ControlPlaneError as error:
        failure = str(error)
    else:
        try:
            yield plane, node
        finally:
            node.stop()
            plane.stop()
        return
    pytest.fail(failure, pytrace=False)


def _run_pod(plane: ControlPlane, name: str, script: str) -> None:
    plane.kubectl(
        "run", name, f"--image={BUSYBOX_IMAGE}", "--restart=Never", "--command", "--",
        "sh", "-c", script, check=True,
    )  # fmt: skip


def test_node_registers_ready_with_the_pinned_kubelet_on_containerd(
    cluster: tuple[ControlPlane, Node],
) -> None:
    plane, node = cluster
    info = plane.kubectl(
        "get", "node", node.name, "-o",
        "jsonpath={.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}"
        " {.status.addresses[?(@.type=='InternalIP')].address}",
        check=True,
    ).stdout.split()  # fmt: skip
    assert info[0] == plane.version
    assert info[1].startswith("containerd://1.")
    assert info[2] == node.network.node_ip
    images = node.ctr("images", "list", "--quiet").split()
    assert PAUSE_IMAGE in images
    assert BUSYBOX_IMAGE in images


def test_a_plain_pod_runs_and_its_log_is_read_through_the_kubelet(
    cluster: tuple[ControlPlane, Node],
) -> None:
    plane, node = cluster
    _run_pod(plane, "hello", "echo hello from $(hostname)")
    assert node.wait_pod_phase("default", "hello") == "Succeeded", node.describe_failure(
        "default", "hello"
    )
    assert plane.kubectl("logs", "hello", check=True).stdout == "hello from hello\n"


def test_pods_reach_the_apiserver_through_the_kubernetes_service(
    cluster: tuple[ControlPlane, Node],
) -> None:
    """ClusterIP 10.0.0.1:443 → kube-proxy's DNAT in the node → the apiserver on the host."""
    plane, node = cluster
    _run_pod(plane, "to-service", "nc -w 5 10.0.0.1 443 </dev/null && echo reached")
    phase = node.wait_pod_phase("default", "to-service")
    logs = plane.kubectl("logs", "to-service").stdout
    assert (phase, logs) == ("Succeeded", "reached\n"), node.logs("kube-proxy")


SIDECAR_POD = """
apiVersion: v1
kind: Pod
metadata: {name: sidecar-image}
spec:
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: a11i-proxy
      image: ghcr.io/a11i/sidecar:0.1.0
      imagePullPolicy: Never
      env: [{name: A11I_BUDGET_USD, value: "5"}]
      # What the webhook injects: the proxy listens on the pod's loopback only.
      readinessProbe:
        exec: {command: [a11i, probe]}
        periodSeconds: 1
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: tmp, mountPath: /tmp}
        - {name: wallet, mountPath: /var/lib/a11i}
  volumes:
    - {name: tmp, emptyDir: {}}
    - {name: wallet, emptyDir: {}}
"""


def test_the_images_built_from_our_dockerfiles_run_on_the_node(
    cluster: tuple[ControlPlane, Node],
) -> None:
    """buildah's images, imported under the chart's names: the sidecar's ENTRYPOINT serves
    as its non-root user on a read-only root and passes the injected exec probe; the operator
    image's CLI runs."""
    plane, node = cluster
    try:
        archives = project_archives()
    except ImageError as error:
        pytest.fail(str(error), pytrace=False)
    for archive in archives:
        node.import_image(archive)
    images = node.ctr("images", "list", "--quiet").split()
    assert "ghcr.io/a11i/sidecar:0.1.0" in images
    assert "ghcr.io/a11i/operator:0.1.0" in images
    plane.kubectl("apply", "-f", "-", input=SIDECAR_POD, check=True)
    plane.kubectl(
        "run", "operator-image", "--image=ghcr.io/a11i/operator:0.1.0",
        "--image-pull-policy=Never", "--restart=Never", "--", "operator", "--help", check=True,
    )  # fmt: skip
    assert node.wait_pod_phase("default", "operator-image") == "Succeeded", node.describe_failure(
        "default", "operator-image"
    )
    assert "--role" in plane.kubectl("logs", "operator-image", check=True).stdout
    ready = plane.kubectl(
        "wait", "--for=condition=Ready", "pod/sidecar-image", "--timeout=90s", timeout=100
    )
    assert ready.returncode == 0, node.describe_failure("default", "sidecar-image")
    budget = plane.kubectl(
        "exec", "sidecar-image", "--", "python3", "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:11000/a11i/budget').read().decode())",
        check=True,
    ).stdout  # fmt: skip
    assert '"limit_usd": "5' in budget
    user = plane.kubectl("exec", "sidecar-image", "--", "id", "-u", check=True).stdout
    assert user.strip() == "65532"


REDIS = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: redis-data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: redis, labels: {app: redis}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999}
  containers:
    - name: redis
      image: docker.io/library/redis:7.4
      imagePullPolicy: Never
      args: [redis-server, --appendonly, "yes", --dir, /data, --protected-mode, "no"]
      readinessProbe:
        exec: {command: [redis-cli, ping]}
        periodSeconds: 1
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: redis-data}}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
"""


def test_cluster_dns_resolves_services_in_pods(cluster: tuple[ControlPlane, Node]) -> None:
    plane, node = cluster
    _run_pod(plane, "dns", "nslookup kubernetes.default.svc.cluster.local")
    phase = node.wait_pod_phase("default", "dns")
    logs = plane.kubectl("logs", "dns").stdout
    assert phase == "Succeeded", f"{logs}\n{node.logs('coredns')}"
    assert "10.0.0.1" in logs


def test_the_redis_image_runs_on_a_claim_of_the_default_storage_class_behind_a_service(
    cluster: tuple[ControlPlane, Node],
) -> None:
    """The chart's bundled Redis needs all three: its image (Debian's redis-server under the
    chart's name), a default StorageClass for its claim, and its Service's name in DNS."""
    plane, node = cluster
    try:
        archives = [path for path in project_archives() if path.name.startswith("redis-")]
    except ImageError as error:
        pytest.fail(str(error), pytrace=False)
    node.import_image(archives[0])
    plane.kubectl("apply", "-f", "-", input=REDIS, check=True)
    ready = plane.kubectl(
        "wait", "--for=condition=Ready", "pod/redis", "--timeout=90s", timeout=100
    )
    assert ready.returncode == 0, node.describe_failure("default", "redis")
    claim = plane.kubectl(
        "get", "pvc", "redis-data", "-o", "jsonpath={.status.phase} {.spec.storageClassName}"
    ).stdout
    assert claim == "Bound a11i-local"
    _run_pod(
        plane,
        "redis-client",
        'printf "SET k v\\r\\nGET k\\r\\n" | nc -w 3 redis.default.svc.cluster.local 6379',
    )
    assert node.wait_pod_phase("default", "redis-client") == "Succeeded"
    assert plane.kubectl("logs", "redis-client").stdout.split() == ["+OK", "$1", "v"]
    written = plane.kubectl("exec", "redis", "--", "ls", "/data", check=True).stdout
    assert "appendonlydir" in written


@pytest.mark.timeout(600)
def test_the_chart_installs_verbatim_and_injects_the_proxy_into_the_example_agent(
    cluster: tuple[ControlPlane, Node],
) -> None:
    """The README's `helm install` with the built images: operator, webhook (behind its Service,
    called by the apiserver) and the bundled Redis come up; the example agent Deployment gets
    a11i-proxy as a native sidecar, which starts and turns Ready before the app container.

    The example's agent container pip-installs the openai SDK at start, and pods have no way
    to PyPI here: the metered journey runs on an agent image with the SDK built in
    (tests/e2e/test_journey.py, docs/cluster.md)."""
    plane, node = cluster
    try:
        archives = project_archives()
    except ImageError as error:
        pytest.fail(str(error), pytrace=False)
    for archive in archives:
        node.import_image(archive)
    installed = plane.helm(
        "install", "a11i", str(ROOT / "charts" / "a11i"), "--namespace", "a11i-system",
        "--create-namespace", "--wait", "--timeout=240s", timeout=260,
    )  # fmt: skip
    pods = plane.kubectl("get", "pods", "-n", "a11i-system", "-o", "wide").stdout
    assert installed.returncode == 0, f"{installed.stderr}\n{pods}\n{node.logs('kubelet', 20)}"
    examples = ROOT / "examples"
    plane.kubectl("apply", "-f", str(examples / "namespace.yaml"), check=True)
    for name in ("provider-keys-secret", "agentbudget", "agent-loop-configmap", "agent-deployment"):
        plane.kubectl("apply", "-n", "agents", "-f", str(examples / f"{name}.yaml"), check=True)
    deadline = time.monotonic() + 150
    proxy: dict[str, Any] = {}
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline and not proxy.get("ready"):
        listed = plane.kubectl("get", "pods", "-n", "agents", "-o", "json", check=True).stdout
        items = json.loads(listed)["items"]
        pod = items[0] if items else {}
        statuses = pod.get("status", {}).get("initContainerStatuses", []) if pod else []
        proxy = next((st for st in statuses if st["name"] == "a11i-proxy"), {})
        time.sleep(1)
    name = pod.get("metadata", {}).get("name", "") if pod else ""
    assert proxy.get("ready") is True, node.describe_failure("agents", str(name))
    init = pod["spec"]["initContainers"]
    assert [(c["name"], c.get("restartPolicy")) for c in init] == [("a11i-proxy", "Always")]
    assert pod["metadata"]["annotations"]["a11i.io/status"]
    phase = plane.kubectl(
        "get", "agentbudget", "default", "-n", "agents", "-o", "jsonpath={.status.phase}"
    ).stdout
    assert phase == "Green"


def _pod_netns() -> set[Path]:
    return {path for path in NETNS_DIR.iterdir() if path.name.startswith("cni-")}


def test_stop_leaves_no_process_mount_netns_cgroup_or_file_behind() -> None:
    # Other nodes (the module's) may run pods meanwhile: only the new namespaces are this one's.
    before = _pod_netns()
    plane, node = start_cluster()
    try:
        _run_pod(plane, "sleeper", "sleep 3600")
        assert node.wait_pod_phase("default", "sleeper", ("Running",)) == "Running"
        pod_netns = _pod_netns() - before
        assert pod_netns, "a running pod has a network namespace"
    finally:
        node.stop()
        plane.stop()
    directory = str(node.dir)
    mounts = Path("/proc/self/mounts").read_text()
    assert directory not in mounts
    assert not node.dir.exists()
    assert not any(path.exists() for path in pod_netns)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert node.network.netns not in netns.stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert node.network.host_link not in links.stdout
    assert not [c for c in _cgroup_controllers() if (c / node.cgroup_parent).exists()]
    leftovers = [
        proc.name
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and directory in _cmdline(proc)
    ]
    assert leftovers == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
