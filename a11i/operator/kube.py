"""The one place outside kopf that talks to the Kubernetes API.

kopf watches and patches the objects its handlers are registered for, but has no public client
for reading or writing other objects (a referenced ConfigMap, a generated Secret). This is a
small one over aiohttp, logged in the way kopf logs in (its public ``login_with_*`` helpers:
in-cluster ServiceAccount first, then the kubeconfig), with the credentials re-read once on a
401 (a rotated projected token). Namespaced objects: get, list, server-side apply, delete,
merge-patch (of the object or its status); cluster-scoped creates for the reviews the dashboard
asks for (TokenReview, SubjectAccessReview). Every failure is a :class:`KubeError` carrying the
HTTP status.

It may not decide anything: no policy, no retries beyond the one re-login.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import aiohttp
import kopf
import yaml

#: The JSON of one Kubernetes object, as read from the wire.
KubeObject = dict[str, object]

#: Who the server records as the writer of the fields the operator applies.
FIELD_MANAGER: Final = "a11i-operator"


class KubeError(Exception):
    """A Kubernetes API call failed. ``status`` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        #: The ``reason`` of the server's Status object (NotFound, Forbidden, Conflict, ...).
        self.reason = reason

    @property
    def temporary(self) -> bool:
        """Whether trying again later may succeed without anyone changing anything."""
        return self.status is None or self.status in (409, 429) or self.status >= 500


@dataclass(frozen=True, slots=True)
class Resource:
    """A namespaced resource of the API: core (``group=""``) or of an API group."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str = "") -> str:
        """The URL path; ``namespace=None`` for a cluster-scoped resource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is None:
            path = f"{base}/{self.plural}"
        else:
            path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path


CONFIG_MAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
AGENT_BUDGETS: Final = Resource("a11i.io", "v1alpha1", "agentbudgets", "AgentBudget")
#: Cluster-scoped and create-only: the server answers in the created object's ``status``.
TOKEN_REVIEWS: Final = Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview")
SUBJECT_ACCESS_REVIEWS: Final = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview"
)


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the client talks to the API server."""

    #: Seconds one API call may take in all.
    timeout_s: float = 10.0
    #: The User-Agent of every request (shows in the API server's audit log).
    user_agent: str = FIELD_MANAGER


def login() -> kopf.ConnectionInfo:
    """The credentials kopf itself would use without a client library: the pod's
    ServiceAccount, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    settings = kopf.OperatorSettings()
    try:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    except (kopf.LoginError, OSError, KeyError, ValueError, yaml.YAMLError) as error:
        # A kubeconfig that names a missing file, context, cluster or user.
        raise KubeError(f"the Kubernetes credentials cannot be read: {error!r}") from error
    if info is None:
        raise KubeError(
            "no Kubernetes credentials: neither a ServiceAccount token nor a kubeconfig"
        )
    return info


class KubeClient:
    """One aiohttp session to the API server; ``close()`` it on shutdown."""

    def __init__(
        self,
        credentials: Callable[[], kopf.ConnectionInfo] = login,
        settings: KubeSettings | None = None,
    ) -> None:
        self._credentials = credentials
        self._settings = settings or KubeSettings()
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, resource: Resource, namespace: str, name: str) -> KubeObject | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", resource.path(namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, resource: Resource, namespace: str) -> list[KubeObject]:
        """Every object of ``resource`` in ``namespace`` (one page: the kinds listed here hold a
        handful of objects per namespace)."""
        found = await self._request("GET", resource.path(namespace))
        items = found.get("items")
        if not isinstance(items, list):
            raise KubeError(f"GET {resource.path(namespace)}: the answer has no items list")
        return [item for item in items if isinstance(item, dict)]

    async def create(
        self, resource: Resource, namespace: str | None, body: Mapping[str, object]
    ) -> KubeObject:
        """POST a new object (``namespace=None``: cluster-scoped, e.g. a TokenReview); the
        server's answer, which for a review holds its ``status``."""
        full = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self._request("POST", resource.path(namespace), body=full)

    async def patch(
        self, resource: Resource, namespace: str, name: str, body: Mapping[str, object]
    ) -> KubeObject:
        """JSON merge-patch the object. A ``metadata.resourceVersion`` in ``body`` makes the
        write conditional: the server answers 409 Conflict when the object changed since."""
        return await self._request(
            "PATCH",
            resource.path(namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def apply(
        self, resource: Resource, namespace: str, body: Mapping[str, object]
    ) -> KubeObject:
        """Create or replace the object by server-side apply: the fields this manager set before
        and leaves out now are removed; an unchanged object is not written at all."""
        metadata = body.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str):
            raise KubeError("apply needs metadata.name")
        full = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self._request(
            "PATCH",
            resource.path(namespace, name),
            body=full,
            content_type="application/apply-patch+yaml",  # JSON is YAML
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object; False when it did not exist."""
        try:
            await self._request("DELETE", resource.path(namespace, name))
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, resource: Resource, namespace: str, name: str, status: Mapping[str, object]
    ) -> KubeObject:
        """Merge ``status`` into the object's status subresource."""
        return await self._request(
            "PATCH",
            resource.path(namespace, name, "status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> KubeObject:
        for attempt in (1, 2):
            session, server = self._connect()
            data = json.dumps(body).encode("utf-8") if body is not None else None
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                async with session.request(
                    method, server + path, data=data, headers=headers, params=params
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                raise KubeError(
                    f"{method} {path}: no answer from the API server: {error!r}"
                ) from error
            if status == 401 and attempt == 1:
                # A projected ServiceAccount token is rotated on disk: log in again, once.
                await self.close()
                self._info = None
                continue
            if status >= 400:
                raise _error(method, path, status, text)
            try:
                loaded: object = json.loads(text) if text else {}
            except json.JSONDecodeError as error:
                raise KubeError(
                    f"{method} {path}: the answer is not JSON", status=status
                ) from error
            if not isinstance(loaded, dict):
                raise KubeError(f"{method} {path}: the answer is not an object", status=status)
            return loaded
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> tuple[aiohttp.ClientSession, str]:
        if self._info is None:
            self._info = self._credentials()
        if self._session is None:
            info = self._info
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": self._settings.user_agent},
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
                trust_env=info.trust_env,
            )
        return self._session, self._info.server.rstrip("/")


def _error(method: str, path: str, status: int, text: str) -> KubeError:
    """The server's Status object (message, reason) as a KubeError."""
    message, reason = text.strip()[:500], ""
    try:
        loaded: object = json.loads(text)
    except json.JSONDecodeError:
        loaded = None
    if isinstance(loaded, dict):
        message = str(loaded.get("message") or message)
        reason = str(loaded.get("reason") or "")
    return KubeError(f"{method} {path}: {status} {reason}: {message}", status=status, reason=reason)
