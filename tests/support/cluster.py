"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager.

The binaries are built from the Go module proxy by ``tools/cluster/build.sh`` (see
docs/cluster.md); this module only starts them, the way controller-runtime's envtest does: a
throw-away CA, a serving certificate for 127.0.0.1, an admin client certificate in
``system:masters``, a service-account key pair, free loopback ports, a temporary directory, RBAC
authorization. Unlike envtest it also runs the controller manager, so namespaces are finalized,
every namespace gets its ``default`` ServiceAccount and ``kube-root-ca.crt``, and the admission
chain is the stock one. On its own there is no kubelet: pods are admitted and stored, never run;
``node_address=`` readies it for the node of tests/support/node.py (and starts kube-scheduler).

It may not build anything (``build.sh`` does) and it needs no Python package beyond the standard
library: certificates come from the ``openssl`` command.

``python -m tests.support.cluster`` (``make cluster``) builds what is missing, starts a plane in the
foreground and prints how to point kubectl at it.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from tests.support.paths import ROOT
from tests.support.redis_server import free_port

TOOLS = ROOT / "tools" / "cluster"
BUILD_SCRIPT = TOOLS / "build.sh"

# The service network of the plane, as kube-apiserver and the serving certificate see it.
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message says what to do."""


@dataclass(frozen=True)
class PinnedVersions:
    """What ``tools/cluster`` builds: read from its go.mod and build.sh, where they are pinned."""

    kubernetes: str
    """The Kubernetes release, ``v1.34.x``: what ``kubectl version`` reports for the server."""
    etcd: str
    """The etcd server release, ``v3.6.x``."""
    helm: str
    """The Helm release, ``v3.x.y``."""


def pinned_versions() -> PinnedVersions:
    go_mod = (TOOLS / "go.mod").read_text(encoding="utf-8")
    build = BUILD_SCRIPT.read_text(encoding="utf-8")

    def find(pattern: str, text: str, what: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ControlPlaneError(f"cannot find the pinned {what} in {TOOLS}")
        return match.group(1)

    return PinnedVersions(
        kubernetes=find(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, "Kubernetes release"),
        etcd=find(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", go_mod, "etcd release"),
        helm=find(r"^HELM_VERSION=(v\S+)$", build, "Helm release"),
    )


def build_binaries() -> Path:
    """Run ``build.sh`` (instant when warm, about nine minutes cold on 2 cores); the bin dir."""
    return _bin_dir_from(_build_script(), "")


def binaries_dir() -> Path:
    """Where ``build.sh`` put the binaries; fails unless all are there and up to date."""
    result = _build_script("--check")
    if result.returncode == 3:
        raise ControlPlaneError(
            f"{result.stderr.strip()}\nThe test control plane is not built: run "
            "`make cluster-bins` (tools/cluster/build.sh; about nine minutes on 2 cores the first "
            "time)"
        )
    return _bin_dir_from(result, "--check")


def _build_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        # The build's progress goes to the terminal; --check's findings are wanted in messages.
        stderr=subprocess.PIPE if "--check" in args else None,
        text=True,
        check=False,
    )


def _bin_dir_from(result: subprocess.CompletedProcess[str], what: str) -> Path:
    if result.returncode != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} {what} failed ({result.returncode}): {(result.stderr or '').strip()}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel SIGTERM the child when its parent dies, even by
    SIGKILL, so that a killed test run leaves no apiserver behind eating the two cores.

    The kernel sends it when the parent *thread* ends, so only the main thread asks for it. libc
    is loaded here, in the parent: the child runs nothing but the one call between fork and exec.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    pr_set_pdeathsig = 1
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


class _Pki:
    """The plane's certificates and keys, made with the openssl command in ``directory``."""

    def __init__(self, directory: Path, extra_ips: Sequence[str] = ()) -> None:
        self.dir = directory
        directory.mkdir(mode=0o700)
        self.ca_key, self.ca_crt = directory / "ca.key", directory / "ca.crt"
        self._openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256", "-days", "30",
            "-keyout", self.ca_key, "-out", self.ca_crt, "-subj", "/CN=a11i-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        sans = ",".join(
            [
                "IP:127.0.0.1",
                f"IP:{SERVICE_IP}",
                *(f"IP:{ip}" for ip in extra_ips),
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        )
        self.serving_crt, self.serving_key = self._issue(
            "apiserver", "/CN=kube-apiserver", "serverAuth", sans
        )
        self.admin_crt, self.admin_key = self._issue(
            "admin", "/O=system:masters/CN=a11i-admin", "clientAuth"
        )
        # The identity the RBAC bootstrap policy grants the controller manager's own role; its
        # controllers then act with their own service accounts (--use-service-account-credentials).
        self.kcm_crt, self.kcm_key = self._issue(
            "controller-manager", "/CN=system:kube-controller-manager", "clientAuth"
        )
        self.scheduler_crt, self.scheduler_key = self._issue(
            "scheduler", "/CN=system:kube-scheduler", "clientAuth"
        )
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                      "-out", self.sa_key)  # fmt: skip
        self._openssl("pkey", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)

    def issue(
        self, name: str, subject: str, usage: str, sans: str | None = None
    ) -> tuple[Path, Path]:
        """A key and a certificate signed by the plane's CA, in the PKI directory."""
        return self._issue(name, subject, usage, sans)

    def _issue(
        self, name: str, subject: str, usage: str, sans: str | None = None
    ) -> tuple[Path, Path]:
        crt, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        extensions = [
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext", f"extendedKeyUsage={usage}",
        ]  # fmt: skip
        if sans is not None:
            extensions += ["-addext", f"subjectAltName={sans}"]
        # OpenSSL 3 signs with the CA right in `req -x509 -CA`, extensions included.
        self._openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256", "-days", "30",
            "-CA", self.ca_crt, "-CAkey", self.ca_key,
            "-keyout", key, "-out", crt, "-subj", subject, *extensions,
        )  # fmt: skip
        return crt, key

    @staticmethod
    def _openssl(*args: str | Path) -> None:
        result = subprocess.run(
            ["openssl", *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ControlPlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _kubeconfig(server: str, ca: Path, crt: Path, key: Path, user: str) -> str:
    """A self-contained kubeconfig (JSON is YAML) with the certificates inline."""

    def inline(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "a11i-test",
                "cluster": {"server": server, "certificate-authority-data": inline(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": inline(crt),
                    "client-key-data": inline(key),
                },
            }
        ],
        "contexts": [{"name": "a11i-test", "context": {"cluster": "a11i-test", "user": user}}],
        "current-context": "a11i-test",
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports.

    ``start()`` returns once the apiserver is ready and the controller manager works; ``stop()``
    ends the processes and removes every file they wrote. Also a context manager.

    With ``node_address`` (the host's end of a node's network, see tests/support/node.py) the
    plane is made for nodes: kube-scheduler runs too, the apiserver also serves on that address,
    publishes it as the ``kubernetes`` Service's endpoint, authorizes kubelets (``Node,RBAC``)
    and reaches them for logs and exec with the admin certificate.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        kubeconfig_path: Path | None = None,
        port: int | None = None,
        node_address: str | None = None,
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else binaries_dir()
        self.versions = pinned_versions()
        self._tmp = tempfile.TemporaryDirectory(prefix="a11i-cluster-")
        self.dir = Path(self._tmp.name)
        self._own_kubeconfig = kubeconfig_path is None
        self.kubeconfig_path = kubeconfig_path or self.dir / "kubeconfig"
        self.port = port if port is not None else free_port()
        self.node_address = node_address
        self._processes: list[_Process] = []
        self._pki: _Pki | None = None
        self.startup_seconds: float | None = None
        """How long ``start()`` took, certificates to a working controller manager."""

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        """The Kubernetes release the server reports, e.g. ``v1.34.10``."""
        return self.versions.kubernetes

    @property
    def ca_path(self) -> Path:
        return self._require_pki().ca_crt

    @property
    def pki(self) -> _Pki:
        """The plane's CA and certificates (a node issues its kubelet's from it)."""
        return self._require_pki()

    def node_server_url(self) -> str:
        """The apiserver as a node and its pods reach it."""
        if self.node_address is None:
            raise ControlPlaneError("the plane was not made for nodes (node_address)")
        return f"https://{self.node_address}:{self.port}"

    def processes(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """The running servers, oldest first, by name."""
        return [(process.name, process.popen) for process in self._processes]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start the three servers and wait until the plane serves; ``timeout`` in seconds for
        the whole start-up (on 2 cores a cold start takes about ten)."""
        if self._processes:
            raise ControlPlaneError("the control plane is already running")
        started = time.monotonic()
        deadline = started + timeout
        try:
            extra = [self.node_address] if self.node_address else []
            pki = self._pki = _Pki(self.dir / "pki", extra)
            self._start_etcd(deadline)
            self._start_apiserver(pki, deadline)
            self.kubeconfig_path.write_text(
                _kubeconfig(
                    self.server_url, pki.ca_crt, pki.admin_crt, pki.admin_key, "a11i-admin"
                ),
                encoding="utf-8",
            )
            self.kubeconfig_path.chmod(0o600)
            self._start_controller_manager(pki, deadline)
            if self.node_address is not None:
                self._start_scheduler(pki, deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the servers, newest first (etcd last), and remove the temporary directory."""
        processes, self._processes = self._processes, []
        for process in reversed(processes):
            process.popen.terminate()
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.log.close()
        if not self._own_kubeconfig:
            self.kubeconfig_path.unlink(missing_ok=True)
        self._tmp.cleanup()

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        as_user: str | None = None,
        as_groups: Sequence[str] = (),
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl as the admin, or impersonating ``as_user``/``as_groups``."""
        command = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--cache-dir={self.dir / 'kube-cache'}",
        ]
        if as_user is not None:
            command.append(f"--as={as_user}")
        command += [f"--as-group={group}" for group in as_groups]
        return self._run([*command, *args], input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real helm against the plane, with its caches and config in the temp dir."""
        command = [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig_path}", *args]
        helm_home = self.dir / "helm"
        env = {
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        return self._run(command, input, check, timeout, env)

    def create_namespace(
        self, name: str, *, labels: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> str:
        """Create a namespace and wait for its ``default`` ServiceAccount: until the controller
        manager has made it, the ServiceAccount admission plugin refuses every pod there."""
        self.kubectl("create", "namespace", name, check=True)
        if labels:
            pairs = [f"{key}={value}" for key, value in labels.items()]
            self.kubectl("label", "namespace", name, *pairs, check=True)
        self.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", name,
            f"--timeout={int(timeout)}s", check=True, timeout=timeout + 10,
        )  # fmt: skip
        return name

    def logs(self, name: str, lines: int = 40) -> str:
        """The last lines a server wrote (``etcd``, ``kube-apiserver``, …), for error messages."""
        path = self.dir / "logs" / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals -----------------------------------------------------------------------------

    def _run(
        self,
        command: list[str],
        input: str | None,
        check: bool,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if not self._processes:
            raise ControlPlaneError("the control plane is not running")
        environment = {**os.environ, **(env or {})}
        environment.pop("KUBECONFIG", None)
        result = subprocess.run(
            command,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=environment,
        )
        if check and result.returncode != 0:
            # What the tool said, unlike CalledProcessError, whose message omits stderr.
            shown = " ".join([Path(command[0]).name, *command[1:]])
            raise ControlPlaneError(
                f"`{shown}` exited with {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def _require_pki(self) -> _Pki:
        if self._pki is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._pki

    def _spawn(self, name: str, args: list[str]) -> _Process:
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{name}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # Its own session: a Ctrl-C in `make cluster` reaches Python, which stops the
                # servers in order, rather than all three at once.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except BaseException:
            log.close()
            raise
        process = _Process(name, popen, log_path, log)
        self._processes.append(process)
        return process

    def _wait(
        self, process: _Process, ready: Callable[[], bool], what: str, deadline: float
    ) -> None:
        while True:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {process.popen.returncode} while starting; "
                    f"its log ({process.log_path}) ends with:\n{self.logs(process.name)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready in time; the log of {process.name} ends with:\n"
                    f"{self.logs(process.name)}"
                )
            time.sleep(0.1)

    def _start_etcd(self, deadline: float) -> None:
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        self._etcd_url = client
        etcd = self._spawn(
            "etcd",
            [
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # Test data: not worth an fsync per write (envtest does the same).
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, lambda: _http_ok(f"{client}/health", None), "etcd", deadline)

    def _start_apiserver(self, pki: _Pki, deadline: float) -> None:
        if self.node_address is None:
            addresses = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The default reconciler publishes the advertise address as the endpoints of the
                # `kubernetes` Service, and Endpoints refuse loopback addresses (an error a
                # second).
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
            ]
        else:
            # Loopback for the tests, the node's gateway for kubelets and pods: the `kubernetes`
            # Service then leads here from every pod, through kube-proxy.
            addresses = [
                "--bind-address=0.0.0.0",
                f"--advertise-address={self.node_address}",
                "--endpoint-reconciler-type=lease",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki.admin_crt}",
                f"--kubelet-client-key={pki.admin_key}",
                # Node names are not in any DNS here: reach kubelets at their node IP.
                "--kubelet-preferred-address-types=InternalIP",
            ]
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self._etcd_url}",
                *addresses,
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'apiserver'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        context = self._admin_context(pki)
        self._wait(
            apiserver,
            lambda: _http_ok(f"{self.server_url}/readyz", context),
            "kube-apiserver /readyz",
            deadline,
        )

    def _start_controller_manager(self, pki: _Pki, deadline: float) -> None:
        kubeconfig = self.dir / "controller-manager.kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(
                self.server_url,
                pki.ca_crt,
                pki.kcm_crt,
                pki.kcm_key,
                "system:kube-controller-manager",
            ),
            encoding="utf-8",
        )
        manager = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--use-service-account-credentials=true",
                # No HTTPS endpoint of its own: its readiness is read from what it does.
                "--secure-port=0",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        context = self._admin_context(pki)
        # The serviceaccount controller and the root-CA publisher have run once.
        paths = (
            "/api/v1/namespaces/default/serviceaccounts/default",
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
        )
        self._wait(
            manager,
            lambda: all(_http_ok(f"{self.server_url}{path}", context) for path in paths),
            "kube-controller-manager (the default ServiceAccount and kube-root-ca.crt)",
            deadline,
        )

    def _start_scheduler(self, pki: _Pki, deadline: float) -> None:
        kubeconfig = self.dir / "scheduler.kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(
                self.server_url,
                pki.ca_crt,
                pki.scheduler_crt,
                pki.scheduler_key,
                "system:kube-scheduler",
            ),
            encoding="utf-8",
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        # It serves nothing worth asking; it is ready once it runs (pods wait for it anyway).
        self._wait(scheduler, lambda: True, "kube-scheduler", deadline)

    @staticmethod
    def _admin_context(pki: _Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki.ca_crt))
        context.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
        return context


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    """GET ``url``: True on a 2xx answer, False on any error or other status."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            status: int = response.status
            return 200 <= status < 300
    except urllib.error.HTTPError as error:
        error.close()
        return False
    except (OSError, ssl.SSLError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``make cluster``: build what is missing, run a plane until Ctrl-C."""
    cache = Path(os.environ.get("A11I_CACHE", str(Path.home() / ".cache" / "a11i")))
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.cluster",
        description="Run the test control plane in the foreground (docs/cluster.md).",
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
    options = parser.parse_args(argv)

    bin_dir = build_binaries()
    options.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(bin_dir, kubeconfig_path=options.kubeconfig, port=options.port)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting etcd, kube-apiserver and kube-controller-manager {plane.version} ...")
    plane.start()
    try:
        print(
            f"control plane {plane.version} ready at {plane.server_url} "
            f"in {plane.startup_seconds:.1f} s (files in {plane.dir})\n\n"
            f"  export KUBECONFIG={plane.kubeconfig_path}\n"
            f"  export PATH={bin_dir}:$PATH\n"
            "  kubectl get namespaces\n\n"
            "Ctrl-C stops it and removes its data.",
            flush=True,
        )
        while not stopping.wait(1.0):
            for process in plane._processes:
                if process.popen.poll() is not None:
                    print(f"{process.name} exited:\n{plane.logs(process.name)}", file=sys.stderr)
                    return 1
    finally:
        print("stopping ...", flush=True)
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
