"""The real Kubernetes control plane for the end-to-end tests, one per test session.

The binaries must have been built beforehand (``make cluster-bins``): a cold build takes minutes,
far more than a test's timeout, so this fixture never builds; it fails and says what to run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.cluster import ControlPlane, ControlPlaneError, binaries_dir


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, ready (about 10 s on 2
    cores, charged to the first test that asks for it)."""
    plane = _started()
    try:
        yield plane
    finally:
        plane.stop()


def _started() -> ControlPlane:
    failure = ""
    try:
        plane = ControlPlane(binaries_dir())
        plane.start(timeout=90.0)
    except ControlPlaneError as error:
        failure = str(error)
    else:
        return plane
    # Outside the except block: the message alone, without a chained traceback.
    pytest.fail(failure, pytrace=False)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount exists (pods may be created at once);
    deleted afterwards without waiting for the namespace controller to finish."""
    name = control_plane.create_namespace(f"e2e-{uuid.uuid4().hex[:8]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
