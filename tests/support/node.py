"""A real Kubernetes node for the tests: containerd, runc, CNI, kubelet and kube-proxy.

The node lives in a network namespace of its own (``a11i-node-<id>``), joined to the host by a
veth pair: its end is the node's IP, the host's end is where the control plane serves it (see
``ControlPlane(node_address=...)``). containerd (Debian's, with its CRI plugin, overlayfs and
runc on cgroupfs, cgroup v1), kubelet and kube-proxy run in that namespace, so the pods' bridge,
the CNI plugins' and kube-proxy's iptables rules all live there and go with it. Every file is
in one temporary directory (containerd's root and state, runc's state, kubelet's root); the pod
cgroups are under a cgroup root of the node's own. ``stop()`` kills what runs, unmounts what
was mounted under the directory, deletes the pods' network namespaces and the node's, removes the
cgroups and the directory: nothing is left behind.

The images it starts with are the sandbox (pause) and busybox (tests/support/images.py); others
are imported with ``import_image()``. It may not build binaries (tools/cluster/build.sh does) and
needs root and Debian's containerd, runc and containernetworking-plugins
(``make node-system``).

``python -m tests.support.node`` (``make cluster``) builds what is missing (binaries, images),
starts a plane with a node, imports the project's images and stays in the foreground until
Ctrl-C or SIGTERM, which tear it all down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from tests.support.cluster import (
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
    _die_with_parent,
    _kubeconfig,
    binaries_dir,
    build_binaries,
)
from tests.support.cluster import main as plane_main
from tests.support.images import (
    BUILD_SCRIPT as IMAGES_SCRIPT,
)
from tests.support.images import (
    PAUSE_IMAGE,
    busybox_archive,
    pause_archive,
    project_archives,
)

CNI_BIN_DIR = Path("/usr/lib/cni")
POD_CIDR = "10.244.0.0/24"
STORAGE_CLASS = "a11i-local"
PERSISTENT_VOLUMES = 4
"""Pre-made hostPath volumes the default StorageClass binds claims to (no provisioner)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
# Debian packages that provide what the node runs: (file that must exist, package).
NODE_PACKAGES = (
    ("/usr/bin/containerd", "containerd"),
    ("/usr/sbin/runc", "runc"),
    (str(CNI_BIN_DIR / "bridge"), "containernetworking-plugins"),
    ("/usr/sbin/conntrack", "conntrack"),
    ("/usr/sbin/iptables", "iptables"),
    ("/bin/busybox", "busybox-static"),
)


class NodeError(ControlPlaneError):
    """The node could not start or a pod on it failed; the message carries the logs' tails."""


def missing_packages() -> list[str]:
    """The Debian packages the node needs that are not installed."""
    return [package for path, package in NODE_PACKAGES if not Path(path).exists()]


@dataclass(frozen=True)
class NodeNetwork:
    """The veth pair between the host and a node: a /30 of 100.66.0.0/16 chosen per node."""

    id: str
    host_ip: str
    node_ip: str

    @property
    def netns(self) -> str:
        return f"a11i-node-{self.id}"

    @property
    def host_link(self) -> str:
        return f"a11i{self.id}"

    @classmethod
    def choose(cls) -> NodeNetwork:
        """A fresh id and addresses not in use on this host."""
        used = subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(64):
            ident = uuid.uuid4().hex[:6]
            block = int(ident, 16) % 16384  # 16384 /30 blocks in a /16
            third, fourth = divmod(block * 4, 256)
            host_ip, node_ip = f"100.66.{third}.{fourth + 1}", f"100.66.{third}.{fourth + 2}"
            if f" {host_ip}/" not in used:
                return cls(ident, host_ip, node_ip)
        raise NodeError("no free address for a node's veth pair in 100.66.0.0/16")


@dataclass
class _NodeProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


class Node:
    """One node registered with ``plane``, named ``name``; ``start()`` returns once it is Ready.

    The plane must have been made with ``node_address=network.host_ip``.
    """

    def __init__(
        self, plane: ControlPlane, network: NodeNetwork, *, name: str = "a11i-node"
    ) -> None:
        if os.geteuid() != 0:
            raise NodeError("a node needs root (containerd, runc, network namespaces)")
        if missing := missing_packages():
            raise NodeError(
                f"the node needs Debian packages: {' '.join(missing)} (make node-system)"
            )
        if plane.node_address != network.host_ip:
            raise NodeError("the plane must serve the node's network (node_address=host_ip)")
        self.plane = plane
        self.network = network
        self.name = name
        self._tmp = tempfile.TemporaryDirectory(prefix=f"a11i-node-{network.id}-")
        self.dir = Path(self._tmp.name)
        self.socket = self.dir / "containerd" / "containerd.sock"
        self.cgroup_parent = f"a11i-node-{network.id}"
        self._processes: list[_NodeProcess] = []
        self._netns_made = False
        self.routes_from_host = False
        """Whether the host routes the Service and pod networks to this node."""
        self.startup_seconds: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._make_network()
            self._make_cgroups()
            self._start_containerd(deadline)
            images = self.dir / "images"
            self.import_image(pause_archive(images / "pause.tar"))
            self.import_image(busybox_archive(images / "busybox.tar"))
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns(deadline)
            self._wait_ready(deadline)
            self._make_storage()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Kill everything the node runs and remove all it made, in the reverse order."""
        netns_paths = self._pod_netns_paths() if self.socket.exists() else []
        for process in reversed(self._processes):
            if process.name == "containerd":
                self._kill_containers()
            process.popen.terminate()
            try:
                process.popen.wait(15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.log.close()
        self._processes = []
        self._kill_leftovers()
        self._unmount_all()
        for path in netns_paths:
            _quiet(["umount", path])
            Path(path).unlink(missing_ok=True)
        if self._netns_made:
            _quiet(["ip", "netns", "delete", self.network.netns])
            self._netns_made = False
        self._remove_cgroups()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._tmp.cleanup()

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use -----------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        """Run containerd's ``ctr`` in the Kubernetes namespace of this node's containerd."""
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def import_image(self, archive: Path) -> None:
        """Import an OCI or docker archive; its names are the ones written inside it."""
        self.ctr("images", "import", "--no-unpack", str(archive))

    def logs(self, name: str = "kubelet", lines: int = 40) -> str:
        """The last lines of ``kubelet``, ``containerd`` or ``kube-proxy``."""
        path = self.dir / "logs" / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def describe_failure(self, namespace: str, pod: str) -> str:
        """What to read when a pod does not start: its description, events, the kubelet log."""
        described = self.plane.kubectl("describe", "pod", pod, "-n", namespace).stdout
        return (
            f"{described[-3000:]}\n--- kubelet log ends with:\n{self.logs('kubelet', 30)}"
            f"\n--- containerd log ends with:\n{self.logs('containerd', 15)}"
        )

    def processes(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        return [(process.name, process.popen) for process in self._processes]

    def wait_pod_phase(
        self,
        namespace: str,
        pod: str,
        phases: Sequence[str] = ("Succeeded", "Failed"),
        timeout: float = 90.0,
    ) -> str:
        """Poll the pod until its phase is one of ``phases``; the phase. On timeout the error
        carries the pod's description, its events and the kubelet's log tail."""
        deadline = time.monotonic() + timeout
        phase = ""
        while time.monotonic() < deadline:
            result = self.plane.kubectl(
                "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}"
            )
            phase = result.stdout.strip()
            if phase in phases:
                return phase
            time.sleep(0.5)
        raise NodeError(
            f"pod {namespace}/{pod} still {phase or 'absent'} after {timeout:.0f} s, wanted "
            f"{' or '.join(phases)}:\n{self.describe_failure(namespace, pod)}"
        )

    # -- start-up ------------------------------------------------------------------------------

    def _make_network(self) -> None:
        net = self.network
        _run(["ip", "netns", "add", net.netns])
        self._netns_made = True
        peer = f"a11in{net.id}"
        _run(["ip", "link", "add", net.host_link, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", net.netns])
        _run(["ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_link])
        _run(["ip", "link", "set", net.host_link, "up"])
        inside = ["ip", "netns", "exec", net.netns]
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "ip", "link", "set", peer, "name", "eth0"])
        _run([*inside, "ip", "addr", "add", f"{net.node_ip}/30", "dev", "eth0"])
        _run([*inside, "ip", "link", "set", "eth0", "up"])
        _run([*inside, "ip", "route", "add", "default", "via", net.host_ip])
        # The node routes between its pods' bridge and its uplink; kube-proxy wants localnet
        # DNAT for NodePorts on loopback.
        _run([*inside, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        _run([*inside, "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"])
        # The host (the apiserver calling a webhook's Service, a shell of `make cluster`)
        # reaches Services and pods through the node, where kube-proxy's rules are. Only one
        # node per host can own these routes: a second one goes without (they vanish with the
        # veth pair).
        self.routes_from_host = all(
            _quiet(["ip", "route", "add", cidr, "via", net.node_ip, "dev", net.host_link])
            for cidr in (SERVICE_CIDR, POD_CIDR)
        )
        cni = self.dir / "cni"
        cni.mkdir()
        (cni / "10-a11i.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "a11i-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            # Pods reach the host (the apiserver) as the node's IP.
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.dir / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            ),
            encoding="utf-8",
        )

    def _make_cgroups(self) -> None:
        # kubelet's --cgroup-root must exist in every hierarchy it uses.
        for controller in _cgroup_controllers():
            (controller / self.cgroup_parent).mkdir(exist_ok=True)

    def _spawn(self, name: str, args: list[str]) -> _NodeProcess:
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        log = (logs / f"{name}.log").open("wb")
        try:
            # nsenter, not `ip netns exec`: that one also makes a private mount namespace, and
            # kubelet's volume mounts must be the ones containerd sees.
            popen = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR / self.network.netns}", "--", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except BaseException:
            log.close()
            raise
        process = _NodeProcess(name, popen, log)
        self._processes.append(process)
        return process

    def _start_containerd(self, deadline: float) -> None:
        root = self.dir / "containerd"
        config = root / "config.toml"
        root.mkdir()
        config.write_text(
            f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri.v1alpha2"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # The sandbox asks for oom_score_adj -998, which this host refuses (the container start then
  # fails with "can't get final child's PID"): keep every score at or above containerd's own.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{self.dir / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.dir / "cni"}"
    max_conf_num = 1
""",
            encoding="utf-8",
        )
        containerd = self._spawn("containerd", ["containerd", f"--config={config}"])
        while True:
            if containerd.popen.poll() is not None:
                raise NodeError(f"containerd exited:\n{self.logs('containerd')}")
            if self.socket.exists() and self.ctr("version", check=False, timeout=10):
                return
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not start:\n{self.logs('containerd')}")
            time.sleep(0.1)

    def _node_kubeconfig(self, user: str, subject: str) -> Path:
        pki = self.plane.pki
        crt, key = pki.issue(f"{user}-{self.network.id}", subject, "clientAuth")
        path = self.dir / f"{user}.kubeconfig"
        path.write_text(
            _kubeconfig(self.plane.node_server_url(), pki.ca_crt, crt, key, user),
            encoding="utf-8",
        )
        return path

    def _start_kubelet(self) -> None:
        kubeconfig = self._node_kubeconfig("kubelet", f"/O=system:nodes/CN=system:node:{self.name}")
        config = self.dir / "kubelet.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{self.cgroup_parent}",
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(self.plane.ca_path)},
                    },
                    # The apiserver (admin certificate) is the only client: logs, exec.
                    "authorization": {"mode": "AlwaysAllow"},
                    # CoreDNS runs beside kubelet in the node's namespace, on the node's IP.
                    "clusterDNS": [self.network.node_ip],
                    "clusterDomain": "cluster.local",
                    "address": self.network.node_ip,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "podCIDR": POD_CIDR,
                    "maxPods": 60,
                    "resolvConf": "/etc/resolv.conf",
                    "serializeImagePulls": False,
                    # A shared disk may be fuller than kubelet's defaults like: no eviction
                    # and no image garbage collection on this test node.
                    "evictionHard": {
                        "memory.available": "50Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "nodeStatusReportFrequency": "10s",
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "5s",
                    "protectKernelDefaults": False,
                    "registerNode": True,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        self._spawn(
            "kubelet",
            [
                str(self.plane.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.network.node_ip}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._node_kubeconfig("kube-proxy", "/CN=system:kube-proxy")
        self._spawn(
            "kube-proxy",
            [
                str(self.plane.bin_dir / "kube-proxy"),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                # The node's own network namespace: its default ports are free there.
                "--metrics-bind-address=127.0.0.1:10249",
                "--healthz-bind-address=127.0.0.1:10256",
                # Conntrack limits are the host's to set; a pod test has no need of them.
                "--conntrack-max-per-core=0",
                "--v=1",
            ],
        )

    def _start_coredns(self, deadline: float) -> None:
        """Cluster DNS: CoreDNS's kubernetes plugin on the node's IP, port 53, reading Services
        and EndpointSlices as ``system:a11i-coredns`` (a ClusterRole of its own). Names outside
        ``cluster.local`` are not forwarded: pods have no way out anyway."""
        self.plane.kubectl("apply", "-f", "-", input=_COREDNS_RBAC, check=True)
        kubeconfig = self._node_kubeconfig("coredns", "/CN=system:a11i-coredns")
        corefile = self.dir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.network.node_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} a11i-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""",
            encoding="utf-8",
        )
        coredns = self._spawn("coredns", [str(self.plane.bin_dir / "coredns"), f"-conf={corefile}"])
        while "CoreDNS-" not in self.logs("coredns", 200):
            if coredns.popen.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"CoreDNS did not start:\n{self.logs('coredns')}")
            time.sleep(0.1)

    def _make_storage(self) -> None:
        """A default StorageClass with no provisioner and a few hostPath volumes in the node's
        directory: a claim of the class binds to one once its pod is scheduled."""
        volumes = self.dir / "volumes"
        items: list[dict[str, object]] = [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }
        ]
        for index in range(PERSISTENT_VOLUMES):
            path = volumes / f"pv-{index}"
            path.mkdir(parents=True)
            # hostPath volumes get no fsGroup ownership: open to the pods' non-root users.
            path.chmod(0o1777)
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"{self.name}-pv-{index}"},
                    "spec": {
                        "capacity": {"storage": "10Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": STORAGE_CLASS,
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": str(path), "type": "Directory"},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": [self.name],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            )
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.plane.kubectl("apply", "-f", "-", input=manifest, check=True)

    def _wait_ready(self, deadline: float) -> None:
        while True:
            for process in self._processes:
                if process.popen.poll() is not None:
                    raise NodeError(
                        f"{process.name} exited with {process.popen.returncode}; its log ends "
                        f"with:\n{self.logs(process.name)}"
                    )
            result = self.plane.kubectl(
                "get", "node", self.name, "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            )  # fmt: skip
            if result.returncode == 0 and result.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise NodeError(
                    f"node {self.name} not Ready in time ({result.stdout.strip() or 'absent'});"
                    f" the kubelet log ends with:\n{self.logs('kubelet')}"
                )
            time.sleep(0.5)

    # -- teardown ------------------------------------------------------------------------------

    def _pod_netns_paths(self) -> list[str]:
        """The network namespaces containerd made for pods (bind mounts in /var/run/netns)."""
        paths: list[str] = []
        listing = self.ctr("containers", "list", "--quiet", check=False, timeout=20)
        for container in listing.split():
            info = self.ctr("containers", "info", container, check=False, timeout=20)
            try:
                spec = json.loads(info).get("Spec") or {}
            except json.JSONDecodeError:
                continue
            for namespace in (spec.get("linux") or {}).get("namespaces") or []:
                path = namespace.get("path") or ""
                if namespace.get("type") == "network" and path.startswith(f"{NETNS_DIR}/cni-"):
                    paths.append(path)
        return sorted(set(paths))

    def _kill_containers(self) -> None:
        """Every task SIGKILLed and deleted, every container removed, before containerd ends."""
        if not self.socket.exists():
            return
        for line in self.ctr("tasks", "list", check=False, timeout=20).splitlines()[1:]:
            task = line.split()[0]
            self.ctr("tasks", "kill", "--signal=SIGKILL", task, check=False, timeout=20)
        for line in self.ctr("tasks", "list", check=False, timeout=20).splitlines()[1:]:
            task = line.split()[0]
            self.ctr("tasks", "delete", "--force", task, check=False, timeout=20)
        for container in self.ctr("containers", "list", "--quiet", check=False).split():
            self.ctr("containers", "delete", container, check=False, timeout=20)

    def _kill_leftovers(self) -> None:
        """Shims and container processes whose command line names the node's directory."""
        mine = str(self.dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if mine in cmdline or f"/{self.cgroup_parent}/" in _cgroup_of(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), 9)

    def _unmount_all(self) -> None:
        mine = str(self.dir)
        for _ in range(3):
            mounts = [
                line.split()[1]
                for line in Path("/proc/self/mounts").read_text().splitlines()
                if line.split()[1].startswith(mine)
            ]
            if not mounts:
                return
            for mount in sorted(mounts, key=len, reverse=True):
                _quiet(["umount", "-l", mount])

    def _remove_cgroups(self) -> None:
        for controller in _cgroup_controllers():
            top = controller / self.cgroup_parent
            if not top.exists():
                continue
            # Depth first: a cgroup goes only once it has no children and no processes.
            for directory in sorted(
                (path for path in top.rglob("*") if path.is_dir()),
                key=lambda path: len(path.parts),
                reverse=True,
            ):
                _rmdir(directory)
            _rmdir(top)


_COREDNS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:a11i-coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:a11i-coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:a11i-coredns"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:a11i-coredns"}
"""


def start_cluster() -> tuple[ControlPlane, Node]:
    """A control plane and one node, Ready; stopped again if the node fails."""
    network = NodeNetwork.choose()
    plane = ControlPlane(binaries_dir(), node_address=network.host_ip)
    plane.start(timeout=90.0)
    try:
        node = Node(plane, network)
        node.start(timeout=120.0)
    except BaseException:
        plane.stop()
        raise
    return plane, node


def _cgroup_controllers() -> list[Path]:
    wanted = (
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        "hugetlb", "net_cls", "net_prio", "perf_event", "systemd",
    )  # fmt: skip
    return [CGROUP_ROOT / name for name in wanted if (CGROUP_ROOT / name).is_dir()]


def _cgroup_of(proc: Path) -> str:
    try:
        return (proc / "cgroup").read_text()
    except OSError:
        return ""


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(
        list(command), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NodeError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")


def _quiet(command: Sequence[str]) -> bool:
    """Run ``command``, ignoring its output; whether it succeeded."""
    result = subprocess.run(
        list(command), stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    return result.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    """``make cluster``: control plane + node + the project's images until Ctrl-C/SIGTERM."""
    cache = Path(os.environ.get("A11I_CACHE", str(Path.home() / ".cache" / "a11i")))
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.node",
        description="Run the test cluster, with a node, in the foreground (docs/cluster.md).",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=cache / "kubeconfig",
        help="where to write the admin kubeconfig (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="the apiserver's port (default: a free one)"
    )
    parser.add_argument(
        "--no-images", action="store_true", help="do not build or import the project's images"
    )
    options = parser.parse_args(argv)
    if os.geteuid() != 0 or missing_packages():
        print(
            "a node needs root and Debian packages (make node-system): starting the control "
            "plane alone",
            file=sys.stderr,
        )
        plane_args = [f"--kubeconfig={options.kubeconfig}"]
        if options.port is not None:
            plane_args.append(f"--port={options.port}")
        return plane_main(plane_args)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bin_dir = build_binaries()
    archives: list[Path] = []
    if not options.no_images:
        subprocess.run(["bash", str(IMAGES_SCRIPT)], stdout=subprocess.DEVNULL, check=True)
        archives = project_archives()
    options.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    network = NodeNetwork.choose()
    plane = ControlPlane(
        bin_dir, kubeconfig_path=options.kubeconfig, port=options.port, node_address=network.host_ip
    )
    print(f"starting the control plane {plane.version} and node {network.netns} ...", flush=True)
    plane.start()
    node: Node | None = None
    try:
        node = Node(plane, network)
        node.start()
        for archive in archives:
            print(f"importing {archive.name} ...", flush=True)
            node.import_image(archive)
        print(
            f"cluster {plane.version} ready at {plane.server_url}: node {node.name} "
            f"({network.node_ip}) Ready in {node.startup_seconds:.1f} s, images "
            f"{', '.join(a.name for a in archives) or 'pause and busybox only'}\n"
            f"files in {plane.dir} and {node.dir}\n\n"
            f"  export KUBECONFIG={plane.kubeconfig_path}\n"
            f"  export PATH={bin_dir}:$PATH\n"
            "  kubectl get nodes\n\n"
            "Ctrl-C stops it and removes everything it made.",
            flush=True,
        )
        while not stopping.wait(1.0):
            for name, popen in [*plane.processes(), *node.processes()]:
                if popen.poll() is not None:
                    logs = node.logs(name) or plane.logs(name)
                    print(f"{name} exited:\n{logs}", file=sys.stderr)
                    return 1
    finally:
        print("stopping ...", flush=True)
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.stop()
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
