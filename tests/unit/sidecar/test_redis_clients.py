"""Which Redis a sidecar reaches, and how: the mode, the sentinels a URL names, the key names."""

from __future__ import annotations

import pytest

from a11i.core.errors import SettingsError
from a11i.sidecar.redis_clients import RedisMode, sentinel_addresses, sentinel_primary_options
from a11i.sidecar.settings import from_env
from a11i.sidecar.wallets.redis import WalletKeys


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("redis://s1:26379", [("s1", 26379)], id="one"),
        pytest.param(
            "rediss://:pw@s1:26379,s2:26380,s3/0",
            [("s1", 26379), ("s2", 26380), ("s3", 26379)],
            id="three-with-password-default-port",
        ),
        pytest.param("redis://[::1]:26379", [("::1", 26379)], id="ipv6"),
    ],
)
def test_sentinel_addresses(url: str, expected: list[tuple[str, int]]) -> None:
    assert sentinel_addresses(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://s1:port", id="bad-port"),
        pytest.param("redis://s1:26379,,s2:26379", id="empty-entry"),
    ],
)
def test_sentinel_urls_that_name_no_sentinel(url: str) -> None:
    with pytest.raises(SettingsError, match="sentinel"):
        sentinel_addresses(url)


def test_the_mode_and_the_sentinel_settings_from_the_environment() -> None:
    settings = from_env(
        {
            "A11I_REDIS_URL": "redis://:pw@s1:26379,s2:26379/0",
            "A11I_REDIS_MODE": "Sentinel",
            "A11I_REDIS_MASTER": "a11i",
            "A11I_REDIS_REFRESH": "30",
        }
    )
    assert settings.redis_mode is RedisMode.SENTINEL
    assert (settings.redis_master, settings.redis_refresh_s) == ("a11i", 30.0)
    assert from_env({}).redis_mode is RedisMode.STANDALONE
    with pytest.raises(SettingsError, match="A11I_REDIS_MODE"):
        from_env({"A11I_REDIS_URL": "redis://r:6379", "A11I_REDIS_MODE": "replicated"})


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        pytest.param(
            False,
            WalletKeys(
                "a11i:wallet:team-a",
                "a11i:wallet:team-a:held",
                "a11i:wallet:team-a:settled",
                "a11i:wallet:team-a:line",
            ),
            id="standalone-keeps-the-names",
        ),
        pytest.param(
            True,
            WalletKeys(
                "a11i:{team-a}:wallet",
                "a11i:{team-a}:held",
                "a11i:{team-a}:settled",
                "a11i:{team-a}:line",
            ),
            id="cluster-tags-the-namespace",
        ),
    ],
)
def test_wallet_keys(cluster: bool, expected: WalletKeys) -> None:
    assert WalletKeys.of("team-a", cluster=cluster) == expected


def test_a_cluster_wallet_name_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        WalletKeys.of("team-{a}", cluster=True)


def test_the_primarys_options_in_a_sentinel_url() -> None:
    """Credentials, database, TLS and redis-py's URL options are the primary's; the hosts are
    the sentinels'."""
    options = sentinel_primary_options(
        "rediss://user:p%40ss@s1:26379,s2:26379/2?ssl_ca_certs=/etc/a11i/ca.pem"
    )
    assert options == {
        "username": "user",
        "password": "p@ss",
        "db": 2,
        "ssl": True,
        "ssl_ca_certs": "/etc/a11i/ca.pem",
    }
    assert sentinel_primary_options("redis://s1:26379") == {}
