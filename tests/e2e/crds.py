"""The a11i CustomResourceDefinitions (``crds/``) installed into the test control plane.

A fixture for any end-to-end module that needs the kinds: import ``a11i_crds`` into the module
(``from tests.e2e.crds import a11i_crds``) and ask for it, or name it in
``pytest.mark.usefixtures``. Installing is idempotent (``kubectl apply`` of the same files), so
several modules may each install them into the one session plane; it never deletes them, since
another module may still use them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, ControlPlane, ControlPlaneError

CRD_DIR: Path = ROOT / "crds"
CRD_NAMES = ("agentbudgets.a11i.io", "telemetrypolicies.a11i.io")


def install_crds(plane: ControlPlane, timeout: float = 60.0) -> None:
    """Apply every CRD in ``crds/`` and wait until the server serves both kinds."""
    plane.kubectl("apply", "-f", str(CRD_DIR), check=True)
    plane.kubectl(
        "wait", "--for=condition=Established", *(f"crd/{name}" for name in CRD_NAMES),
        f"--timeout={int(timeout)}s", check=True, timeout=timeout + 10,
    )  # fmt: skip
    # Discovery of a brand-new group can lag the Established condition by a moment; kubectl
    # resolves the short names only once it sees them.
    deadline = time.monotonic() + timeout
    while True:
        listed = plane.kubectl("get", "ab,tp", "--all-namespaces")
        if listed.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"the a11i kinds are not served: {listed.stderr.strip()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def a11i_crds(control_plane: ControlPlane) -> ControlPlane:
    """The session's control plane with AgentBudget and TelemetryPolicy established."""
    install_crds(control_plane)
    return control_plane
