"""The a11i operator as a process against the test control plane, with the chart's RBAC.

``install_rbac`` renders ``templates/operator-rbac.yaml`` with the real helm and applies it;
``service_account_kubeconfig`` writes a kubeconfig holding a token of that ServiceAccount (from
``kubectl create token``), so the operator has exactly the permissions the chart grants and a
missing one fails the tests. ``OperatorProcess`` runs ``python -m a11i_operator`` with it, logs
to a file (shown in failure messages), and stops it with SIGINT, then SIGKILL.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.support.cluster import ROOT, ControlPlane

CHART = ROOT / "charts" / "a11i"
RELEASE = "a11i"
SYSTEM_NAMESPACE = "a11i-system"
SERVICE_ACCOUNT = f"{RELEASE}-operator"
PEERING = "a11i"
#: The Secret the operator keeps in agent namespaces for the sidecars (the chart's name).
SIDECAR_REDIS_SECRET = "a11i-sidecar-redis"


def install_rbac(plane: ControlPlane) -> None:
    """The chart's operator ServiceAccount, ClusterRole and binding, as helm renders them."""
    if plane.kubectl("get", "namespace", SYSTEM_NAMESPACE).returncode != 0:
        plane.create_namespace(SYSTEM_NAMESPACE)
    rendered = plane.helm(
        "template", RELEASE, str(CHART), "--namespace", SYSTEM_NAMESPACE,
        "--show-only", "templates/operator-rbac.yaml", check=True,
    ).stdout  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=rendered, check=True)
    # The peering object the chart's operator reconciles under (kopf.dev CRDs from crds/).
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(peering), check=True)


def service_account_kubeconfig(
    plane: ControlPlane,
    path: Path,
    account: str = SERVICE_ACCOUNT,
    namespace: str = SYSTEM_NAMESPACE,
    duration: str = "2h",
) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (by default the
    operator's) with a bound token."""
    token = plane.kubectl(
        "create", "token", account, "-n", namespace, f"--duration={duration}", check=True
    ).stdout.strip()
    return token_kubeconfig(plane, token, path)


def token_kubeconfig(
    plane: ControlPlane, token: str, path: Path, server: str | None = None
) -> Path:
    """A kubeconfig (mode 0600) presenting ``token`` to ``server`` (default the plane's API
    server), trusting the plane's CA."""
    ca = base64.b64encode(plane.ca_path.read_bytes()).decode("ascii")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "a11i-test",
                "cluster": {
                    "server": server or plane.server_url,
                    "certificate-authority-data": ca,
                },
            }
        ],
        "users": [{"name": "a11i-test", "user": {"token": token}}],
        "contexts": [
            {"name": "a11i-test", "context": {"cluster": "a11i-test", "user": "a11i-test"}}
        ],
        "current-context": "a11i-test",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    path.chmod(0o600)
    return path


class OperatorProcess:
    """``python -m a11i_operator`` with a kubeconfig and settings; restartable."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: Mapping[str, str]) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the operator is already running")
        self.starts += 1
        environment = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "a11i.operator", "--verbose"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=environment,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (kopf's graceful stop), SIGKILL after ``timeout``; the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def logs(self, lines: int = 60) -> str:
        if not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 20.0) -> object:
        """Poll until ``condition()`` is truthy; fail with the operator's log if it never is."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not within {timeout}s; the operator "
                    f"({'running' if self.running else 'not running'}) logged:\n{self.logs()}"
                )
            time.sleep(0.2)


def reconciling_operator(
    plane: ControlPlane, directory: Path, redis_url: str, liveness_port: int | None = None
) -> OperatorProcess:
    """The operator as the chart's ServiceAccount (RBAC installed from the chart), against
    ``redis_url``, with a one-second status interval (and kopf's liveness endpoint on
    ``liveness_port``); started."""
    install_rbac(plane)
    env = {
        "A11I_REDIS_URL": redis_url,
        "A11I_OPERATOR_STATUS_INTERVAL": "1",
        "A11I_REDIS_TIMEOUT": "1",
        # As the chart sets it for a Redis with a password.
        "A11I_OPERATOR_SIDECAR_REDIS_SECRET": SIDECAR_REDIS_SECRET,
    }
    if liveness_port is not None:
        env["A11I_OPERATOR_LIVENESS"] = f"http://127.0.0.1:{liveness_port}/healthz"
    process = OperatorProcess(
        service_account_kubeconfig(plane, directory / "kubeconfig"), directory / "operator.log", env
    )
    process.start()
    return process
