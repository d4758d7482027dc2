"""Which namespaces get the sidecars' Redis Secret (the part without a cluster)."""

from __future__ import annotations

import base64

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


def test_the_sentinels_password_rides_beside_the_url() -> None:
    plain = SidecarRedisSecrets("a11i-sidecar-redis", "redis://:pw@s1:26379/0")
    assert set(plain._body()["data"]) == {"A11I_REDIS_URL"}  # type: ignore[arg-type]
    with_sentinels = SidecarRedisSecrets(
        "a11i-sidecar-redis", "redis://:pw@s1:26379/0", sentinel_password="s3cret"
    )
    data = with_sentinels._body()["data"]
    assert data == {  # type: ignore[comparison-overlap]
        "A11I_REDIS_URL": base64.b64encode(b"redis://:pw@s1:26379/0").decode(),
        "A11I_REDIS_SENTINEL_PASSWORD": base64.b64encode(b"s3cret").decode(),
    }
