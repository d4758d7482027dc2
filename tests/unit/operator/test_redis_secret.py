"""Which namespaces get the sidecars' Redis Secret (the part without a cluster)."""

from __future__ import annotations

import pytest

from a11i.operator.redis_secret import SidecarRedisSecrets


@pytest.mark.parametrize(
    ("namespaces", "name", "served"),
    [
        ((), "anything", True),
        (("agents",), "agents", True),
        (("agents",), "other", False),
        (("team-*",), "team-a", True),
        (("team-*", "!team-test"), "team-test", False),
        (("!kube-*",), "agents", True),
        (("!kube-*",), "kube-public", False),
    ],
)
def test_only_the_operators_namespaces(
    namespaces: tuple[str, ...], name: str, served: bool
) -> None:
    keeper = SidecarRedisSecrets("a11i-sidecar-redis", "redis://:pw@r:6379/0", namespaces)
    assert keeper.serves(name) is served
