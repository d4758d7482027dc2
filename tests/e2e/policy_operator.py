"""The operator as a real process for the TelemetryPolicy end-to-end tests.

Runs ``python -m a11i_operator`` (both halves: the AgentBudget one needs a Redis, started here)
against the test control plane as the operator's own ServiceAccount, with the RBAC the chart
grants (rendered by the real helm), so a permission the chart forgot fails these tests. It runs
standalone (no peering) until the module's tests are done. Its log is attached to a failing
test's message through :meth:`PolicyOperator.log`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.operator import install_rbac, service_account_kubeconfig
from tests.support.cluster import ROOT, ControlPlane
from tests.support.redis_server import RedisServer

T = TypeVar("T")


class PolicyOperator:
    """One ``kopf run`` process; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._dir = tempfile.TemporaryDirectory(prefix="a11i-policy-operator-")
        self.log_path = Path(self._dir.name) / "operator.log"
        self._log = self.log_path.open("wb")
        install_rbac(plane)
        kubeconfig = service_account_kubeconfig(plane, Path(self._dir.name) / "kubeconfig")
        self.redis = RedisServer()
        self.redis.start()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "A11I_REDIS_URL": self.redis.url,
            "A11I_OPERATOR_PEERING": "standalone",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "a11i.operator", "--verbose"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self, lines: int = 60) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()
        self.redis.close()
        self._dir.cleanup()

    def get(self, kind: str, namespace: str, name: str) -> dict[str, object] | None:
        """The object as JSON, or None when it does not exist."""
        result = self.plane.kubectl("get", kind, name, "-n", namespace, "-o", "json",
                                    "--ignore-not-found")  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"kubectl get {kind} {name}: {result.stderr}")
        if not result.stdout.strip():
            return None
        loaded = json.loads(result.stdout)
        assert isinstance(loaded, dict)
        return loaded

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Poll ``probe`` until it returns something other than None (or False)."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"the operator exited while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{self.log()}")
            time.sleep(0.25)


@pytest.fixture(scope="module")
def policy_operator(a11i_crds: ControlPlane) -> Iterator[PolicyOperator]:
    operator = PolicyOperator(a11i_crds)
    try:
        yield operator
    finally:
        operator.stop()
