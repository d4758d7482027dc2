"""Kubernetes authentication in front of the dashboard: TokenReview, then RBAC decides the role.

A bearer token that is not one of the static tokens is sent to the API server in a TokenReview
(authentication.k8s.io/v1), made with the dashboard's own credentials. The user it names gets a
role from two SubjectAccessReviews (authorization.k8s.io/v1), cluster-wide because the page
shows every namespace and holds the cluster-wide stop:

- ``patch agentbudgets.a11i.io`` in all namespaces: **admin** (stop, resume, top up);
- else ``list agentbudgets.a11i.io`` in all namespaces: **viewer**;
- neither: refused (403, saying which verbs are missing).

Answers are cached briefly (``review_ttl_s``), keyed by a SHA-256 of the token (never the token)
or of the identity, in a bounded cache, so a revoked binding takes effect within that time. An
API server that does not answer admits no one (503); a token it rejects is 401.

What it may not do: keep or log a token (only its digest, as a cache key), or decide a role any
other way than by asking RBAC.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from a11i.dashboard.auth import (
    Identity,
    KubernetesAuthSettings,
    Principal,
    Role,
    fingerprint,
)
from a11i.dashboard.source import DashboardError
from a11i.operator.kube import (
    SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
    KubeClient,
    KubeError,
    Resource,
)

#: The resource whose RBAC decides the dashboard roles.
GROUP: Final = "a11i.io"
RESOURCE: Final = "agentbudgets"
#: May patch every AgentBudget (raise limits, set suspend): may do the same on the page.
ADMIN_VERB: Final = "patch"
#: May list every AgentBudget: may see every namespace's spend.
VIEWER_VERB: Final = "list"

_K = TypeVar("_K")
_V = TypeVar("_V")


class KubernetesUnavailable(DashboardError):
    """The API server did not answer a review: nobody is admitted through Kubernetes."""

    status = 503


class NoRole(DashboardError):
    """An authenticated Kubernetes user whom RBAC grants neither dashboard role."""

    status = 403


class ReviewFailed(DashboardError):
    """The API server refused the dashboard's own review (its ClusterRole lacks a verb)."""

    status = 500


class ReviewCache(Generic[_K, _V]):
    """A bounded map whose entries expire; the clock is injected (monotonic seconds)."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("a review cache holds at least one entry")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()

    def get(self, key: _K) -> tuple[bool, _V | None]:
        """(found, value): an expired entry is dropped and not found."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key: _K, value: _V, ttl_s: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + ttl_s, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def token_key(token: str) -> str:
    """The cache key of a token: its SHA-256, so the cache never holds a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def role_from(may_patch: bool, may_list: bool) -> Role | None:
    """The dashboard role RBAC grants: patch wins, list alone is viewer, neither is none."""
    if may_patch:
        return Role.ADMIN
    if may_list:
        return Role.VIEWER
    return None


def identity_of(review: object) -> Identity | None:
    """The user of a TokenReview answer, None unless it says ``authenticated: true``."""
    status = review.get("status") if isinstance(review, dict) else None
    if not isinstance(status, dict) or status.get("authenticated") is not True:
        return None
    return Identity.from_json(status.get("user"))


def no_role_message(identity: Identity) -> str:
    return (
        f"Kubernetes user {identity.username!r} may neither {ADMIN_VERB} (admin) nor "
        f"{VIEWER_VERB} (viewer) {RESOURCE}.{GROUP} in all namespaces: bind the ClusterRole "
        "a11i-dashboard-viewer or a11i-dashboard-admin to it (examples/dashboard-rbac.yaml)"
    )


class KubernetesReviewer:
    """TokenReviews and SubjectAccessReviews through the dashboard's own client, cached."""

    def __init__(
        self,
        client: KubeClient,
        settings: KubernetesAuthSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings or KubernetesAuthSettings()
        self._tokens: ReviewCache[str, Identity | None] = ReviewCache(
            self.settings.max_entries, clock
        )
        self._roles: ReviewCache[str, Role | None] = ReviewCache(self.settings.max_entries, clock)

    async def close(self) -> None:
        await self.client.close()

    async def principal(self, token: str) -> Principal | None:
        """The principal of a Kubernetes token; None when the API server rejects the token,
        ``NoRole`` when RBAC grants it nothing, ``KubernetesUnavailable`` without an answer."""
        identity = await self.authenticate(token)
        if identity is None:
            return None
        role = await self.role(identity)
        return Principal(role, fingerprint(token), identity)

    async def authenticate(self, token: str) -> Identity | None:
        """The identity a TokenReview finds for ``token``, None when it is not valid."""
        key = token_key(token)
        found, identity = self._tokens.get(key)
        if found:
            return identity
        review = await self._create(TOKEN_REVIEWS, {"spec": {"token": token}}, "tokenreviews")
        identity = identity_of(review)
        ttl = self.settings.review_ttl_s if identity else self.settings.rejected_ttl_s
        self._tokens.put(key, identity, ttl)
        return identity

    async def role(self, identity: Identity) -> Role:
        """The dashboard role RBAC grants ``identity`` (``NoRole`` when none)."""
        key = identity.key
        found, role = self._roles.get(key)
        if not found:
            may_patch, may_list = await asyncio.gather(
                self._allowed(identity, ADMIN_VERB), self._allowed(identity, VIEWER_VERB)
            )
            role = role_from(may_patch, may_list)
            self._roles.put(key, role, self.settings.review_ttl_s)
        if role is None:
            raise NoRole(no_role_message(identity))
        return role

    async def _allowed(self, identity: Identity, verb: str) -> bool:
        spec: dict[str, object] = {
            "user": identity.username,
            "groups": list(identity.groups),
            "extra": {key: list(values) for key, values in identity.extra},
            # No namespace: the verb in every namespace (a ClusterRoleBinding).
            "resourceAttributes": {"group": GROUP, "resource": RESOURCE, "verb": verb},
        }
        if identity.uid:
            spec["uid"] = identity.uid
        review = await self._create(SUBJECT_ACCESS_REVIEWS, {"spec": spec}, "subjectaccessreviews")
        status = review.get("status")
        return isinstance(status, dict) and status.get("allowed") is True

    async def _create(
        self, resource: Resource, body: dict[str, object], what: str
    ) -> dict[str, object]:
        try:
            return await self.client.create(resource, None, body)
        except KubeError as exc:
            if exc.temporary:
                raise KubernetesUnavailable(
                    "the Kubernetes API server does not answer, so Kubernetes users cannot be "
                    f"checked now (static tokens still work): {exc}"
                ) from exc
            raise ReviewFailed(
                f"the dashboard's own credentials may not create {what}.{resource.group} "
                f"(give its ServiceAccount the chart's ClusterRole): {exc}"
            ) from exc
