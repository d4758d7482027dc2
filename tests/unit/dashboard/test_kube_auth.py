"""The pure parts of the dashboard's Kubernetes side: the review cache (with an injected clock),
roles from RBAC answers, identities from TokenReviews, Kubernetes session cookies, the limit
arithmetic of a top-up through an AgentBudget and which AgentBudget owns a wallet."""

from __future__ import annotations

import argparse
import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from a11i.core.errors import SettingsError
from a11i.dashboard.agentbudgets import TopUpRefused, owner, raised_limit
from a11i.dashboard.auth import (
    MAX_COOKIE_LENGTH,
    Authenticator,
    AuthError,
    AuthSettings,
    Identity,
    Principal,
    Role,
    SessionTooLarge,
)
from a11i.dashboard.kube_auth import (
    ReviewCache,
    identity_of,
    no_role_message,
    role_from,
    token_key,
)
from a11i.dashboard.server import settings_from
from a11i.operator.status import MAX_LIMIT_USD

NOW = 1_700_000_000.0
KEY = "k" * 40
ALICE = Identity(
    "alice@example.com",
    "uid-1",
    ("dev", "system:authenticated"),
    (("authentication.kubernetes.io/pod-name", ("p-1",)),),
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the review cache -----------------------------------------------------------------------------


def test_cache_entry_expires_at_its_ttl() -> None:
    clock = Clock()
    cache: ReviewCache[str, Role | None] = ReviewCache(10, clock)
    cache.put("a", Role.ADMIN, 60.0)
    clock.now += 59.9
    assert cache.get("a") == (True, Role.ADMIN)
    clock.now += 0.1
    assert cache.get("a") == (False, None)
    assert len(cache) == 0


def test_cache_remembers_a_negative_answer_as_found() -> None:
    clock = Clock()
    cache: ReviewCache[str, Role | None] = ReviewCache(10, clock)
    cache.put("nobody", None, 10.0)
    assert cache.get("nobody") == (True, None)
    assert cache.get("other") == (False, None)


def test_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    cache: ReviewCache[int, int] = ReviewCache(3, Clock())
    for key in range(5):
        cache.put(key, key, 60.0)
    assert len(cache) == 3
    assert [cache.get(key)[0] for key in range(5)] == [False, False, True, True, True]


def test_cache_put_again_renews_the_entry() -> None:
    clock = Clock()
    cache: ReviewCache[str, int] = ReviewCache(2, clock)
    cache.put("a", 1, 10.0)
    cache.put("b", 2, 10.0)
    clock.now += 9.0
    cache.put("a", 3, 10.0)  # renewed: now the newest
    cache.put("c", 4, 10.0)  # evicts b, the oldest
    assert cache.get("b") == (False, None)
    clock.now += 5.0
    assert cache.get("a") == (True, 3)


def test_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ReviewCache(0)


def test_token_key_is_a_digest_never_the_token() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.secret-part"
    key = token_key(token)
    assert len(key) == 64
    assert "secret" not in key
    assert key == token_key(token)
    assert key != token_key(token + "x")


# --- roles and identities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("may_patch", "may_list", "role"),
    [(True, True, Role.ADMIN), (True, False, Role.ADMIN), (False, True, Role.VIEWER),
     (False, False, None)],
    ids=["both", "patch-only", "list-only", "neither"],
)  # fmt: skip
def test_role_from_rbac(may_patch: bool, may_list: bool, role: Role | None) -> None:
    assert role_from(may_patch, may_list) is role


def test_identity_of_an_authenticated_review() -> None:
    review = {
        "status": {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:team:bot",
                "uid": "u-2",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": ["JTI=abc"]},
            },
        }
    }
    identity = identity_of(review)
    assert identity == Identity(
        "system:serviceaccount:team:bot",
        "u-2",
        ("system:serviceaccounts", "system:authenticated"),
        (("authentication.kubernetes.io/credential-id", ("JTI=abc",)),),
    )


@pytest.mark.parametrize(
    "review",
    [
        {"status": {"authenticated": False, "error": "token expired"}},
        {"status": {"authenticated": True}},
        {"status": {"authenticated": True, "user": {"username": ""}}},
        {"status": {"authenticated": True, "user": {"username": "a", "groups": "admins"}}},
        {"status": {"authenticated": True, "user": {"username": "a", "extra": {"k": "v"}}}},
        {"status": {"authenticated": "true", "user": {"username": "a"}}},
        {},
        [],
    ],
    ids=["rejected", "no-user", "empty-name", "groups-not-list", "extra-not-list",
         "authenticated-not-bool", "no-status", "not-an-object"],
)  # fmt: skip
def test_identity_of_anything_else_is_none(review: Any) -> None:
    assert identity_of(review) is None


def test_identity_key_depends_on_everything_rbac_sees() -> None:
    assert ALICE.key == Identity.from_json(ALICE.as_json()).key  # type: ignore[union-attr]
    other_group = Identity(ALICE.username, ALICE.uid, ("dev",), ALICE.extra)
    assert other_group.key != ALICE.key


def test_no_role_message_says_what_to_grant() -> None:
    message = no_role_message(ALICE)
    assert "'alice@example.com'" in message
    assert "patch (admin)" in message
    assert "list (viewer)" in message
    assert "agentbudgets.a11i.io" in message
    assert "examples/dashboard-rbac.yaml" in message


def test_principal_of_a_kubernetes_user_is_recorded_by_user_name() -> None:
    assert Principal(Role.ADMIN, "1a2b3c4d", ALICE).who == "k8s:alice@example.com"
    assert Principal(Role.VIEWER, "1a2b3c4d").who == "viewer:1a2b3c4d"


# --- Kubernetes sessions --------------------------------------------------------------------------


def k8s_auth(key: str | None = KEY, **extra: Any) -> Authenticator:
    return Authenticator(AuthSettings(kubernetes=True, session_key=key, **extra))


def test_kubernetes_session_carries_the_identity_not_the_role() -> None:
    auth = k8s_auth()
    cookie = auth.issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    assert cookie.startswith("k8s.")
    assert "admin" not in cookie
    assert auth.session(cookie, NOW + 3599) == ALICE
    assert auth.session(cookie, NOW + 3601) is None  # kubernetes_session_ttl_s
    assert auth.session_ttl(Principal(Role.ADMIN, "fp", ALICE)) == 3600


def test_kubernetes_session_is_signed() -> None:
    auth = k8s_auth()
    cookie = auth.issue(Principal(Role.VIEWER, "fp", ALICE), NOW)
    kind, data, expires, nonce, signature = cookie.split(".")
    forged = Identity("root", groups=("system:masters",)).as_json()
    forged_data = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    assert auth.session(".".join([kind, forged_data, expires, nonce, signature]), NOW) is None
    assert (
        auth.session(".".join([kind, data, str(int(expires) + 999), nonce, signature]), NOW) is None
    )


def test_configured_key_is_shared_by_replicas_a_random_key_is_not() -> None:
    cookie = k8s_auth().issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    assert k8s_auth().session(cookie, NOW) == ALICE  # another process with the same key
    assert k8s_auth(KEY.upper()).session(cookie, NOW) is None
    random_cookie = k8s_auth(None).issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    assert k8s_auth(None).session(random_cookie, NOW) is None  # a restart ends it


def test_kubernetes_cookie_is_refused_without_kubernetes_auth() -> None:
    cookie = k8s_auth().issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    static = Authenticator(AuthSettings(admin_token="a" * 20, session_key=KEY))
    assert static.session(cookie, NOW) is None
    assert static.csrf_token(cookie) is None


def test_kubernetes_session_has_a_csrf_token_of_its_own() -> None:
    auth = k8s_auth(admin_token="a" * 20)
    one = auth.issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    two = auth.issue(Principal(Role.ADMIN, "fp", ALICE), NOW)
    csrf = auth.csrf_token(one)
    assert csrf is not None
    assert auth.check_csrf(one, csrf)
    assert not auth.check_csrf(two, csrf)


def test_static_sessions_still_work_beside_kubernetes_ones() -> None:
    auth = k8s_auth(admin_token="a" * 20)
    principal = auth.check_token("a" * 20)
    assert principal is not None
    cookie = auth.issue(principal, NOW)
    assert auth.session(cookie, NOW) == Principal(Role.ADMIN, principal.fingerprint)


def test_an_identity_too_large_for_a_cookie_is_refused() -> None:
    crowded = Identity("bob", groups=tuple(f"group-{i:04d}" for i in range(400)))
    with pytest.raises(SessionTooLarge, match="Authorization header"):
        k8s_auth().issue(Principal(Role.VIEWER, "fp", crowded), NOW)
    assert MAX_COOKIE_LENGTH < 4096


# --- settings -------------------------------------------------------------------------------------


def test_kubernetes_auth_alone_is_enough_to_start() -> None:
    assert AuthSettings(kubernetes=True).kubernetes


def test_no_auth_at_all_is_refused_and_names_every_way() -> None:
    with pytest.raises(AuthError, match="--kubernetes-auth") as caught:
        AuthSettings()
    assert "A11I_DASHBOARD_ADMIN_TOKEN" in str(caught.value)
    assert "--insecure-no-auth" in str(caught.value)


def test_short_session_key_is_refused() -> None:
    with pytest.raises(AuthError, match="at least 32 characters"):
        AuthSettings(kubernetes=True, session_key="short")


def test_settings_from_flags_and_environment() -> None:
    args = argparse.Namespace(
        host="0.0.0.0",
        port=11080,
        redis="redis://r:6379/0",
        insecure_no_auth=False,
        kubernetes_auth=False,
        agentbudgets=False,
    )
    env = {
        "A11I_DASHBOARD_KUBERNETES_AUTH": "true",
        "A11I_DASHBOARD_AGENTBUDGETS": "true",
        "A11I_DASHBOARD_SESSION_KEY": KEY,
    }
    settings = settings_from(args, env)
    assert settings.auth.kubernetes
    assert settings.auth.session_key == KEY
    assert settings.agentbudgets
    assert settings.uses_kubernetes
    args.kubernetes_auth = True
    assert settings_from(args, {"A11I_DASHBOARD_ADMIN_TOKEN": "a" * 20}).auth.kubernetes
    assert not settings_from(args, {"A11I_DASHBOARD_ADMIN_TOKEN": "a" * 20}).agentbudgets


def test_dashboard_switches_are_spelled_as_everywhere_else() -> None:
    """The dashboard's switches take the spellings every a11i variable takes (on/off too) and
    refuse the rest by name, as configuration errors."""
    args = argparse.Namespace(
        host="127.0.0.1", port=11080, redis="redis://r:6379/0", insecure_no_auth=False
    )
    env = {"A11I_DASHBOARD_ADMIN_TOKEN": "a" * 20, "A11I_DASHBOARD_SECURE_COOKIE": "on"}
    assert settings_from(args, env).auth.secure_cookie
    env["A11I_DASHBOARD_SECURE_COOKIE"] = "OFF"
    assert not settings_from(args, env).auth.secure_cookie
    env["A11I_DASHBOARD_AGENTBUDGETS"] = "sometimes"
    with pytest.raises(SettingsError, match="A11I_DASHBOARD_AGENTBUDGETS must be on or off"):
        settings_from(args, env)
    env["A11I_DASHBOARD_AGENTBUDGETS"] = "no"
    env["A11I_DASHBOARD_KUBERNETES_REVIEW_TTL"] = "7200"
    with pytest.raises(SettingsError, match="REVIEW_TTL must be a positive number of seconds up"):
        settings_from(args, env)


# --- the limit arithmetic of a top-up through an AgentBudget --------------------------------------


@pytest.mark.parametrize(
    ("old", "amount", "new"),
    [("250", "10", "260"), ("0", "0.000001", "0.000001"), ("25.50", "0.25", "25.75"),
     ("100", "1000000", "1000100")],
    ids=["whole", "one-micro-dollar", "cents", "large"],
)  # fmt: skip
def test_raised_limit(old: str, amount: str, new: str) -> None:
    assert raised_limit(Decimal(old), Decimal(amount)) == Decimal(new)


@pytest.mark.parametrize(
    ("old", "amount", "said"),
    [
        ("250", "0.0000001", "at most 6 decimals"),
        ("250", "0", "positive"),
        ("250", "-5", "positive"),
        ("250", "NaN", "positive"),
        (str(MAX_LIMIT_USD.quantize(Decimal(1))), "1", "largest a shared wallet holds"),
    ],
    ids=["sub-micro", "zero", "negative", "nan", "too-large"],
)
def test_raised_limit_refuses(old: str, amount: str, said: str) -> None:
    with pytest.raises(TopUpRefused, match=said):
        raised_limit(Decimal(old), Decimal(amount))


def budget(
    name: str, created: str, *, selector: bool = False, deleting: bool = False
) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    spec: dict[str, object] = {"limit": "10"}
    if selector:
        spec["agentSelector"] = {"matchLabels": {"app": "x"}}
    return {"metadata": meta, "spec": spec}


def test_owner_is_the_oldest_namespace_wide_budget() -> None:
    items = [
        budget("newer", "2026-01-02T00:00:00Z"),
        budget("per-agent", "2025-01-01T00:00:00Z", selector=True),
        budget("going", "2025-06-01T00:00:00Z", deleting=True),
        budget("oldest", "2026-01-01T00:00:00Z"),
    ]
    found = owner(items)
    assert found is not None
    assert found["metadata"]["name"] == "oldest"  # type: ignore[index]


def test_same_age_budgets_are_ordered_by_name() -> None:
    items = [budget("b", "2026-01-01T00:00:00Z"), budget("a", "2026-01-01T00:00:00Z")]
    assert owner(items)["metadata"]["name"] == "a"  # type: ignore[index]


def test_no_namespace_wide_budget_no_owner() -> None:
    assert owner([budget("per-agent", "2026-01-01T00:00:00Z", selector=True)]) is None
    assert owner([]) is None
