"""The one place outside kopf that talks to the Kubernetes API.

kopf watches and patches the objects its handlers are registered for, but has no public client
for reading or writing other objects (a referenced ConfigMap, a generated Secret). This is a
small one over aiohttp, logged in the way kopf logs in (its public ``login_with_*`` helpers:
in-cluster ServiceAccount first, then the kubeconfig), with the credentials re-read once on a
401 (a rotated projected token). Namespaced objects only: get, server-side apply, delete,
status merge-patch. Every failure is a :class:`KubeError` carrying the HTTP status.

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

    def path(self, namespace: str, name: str | None = None, subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path


CONFIG_MAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS: Final = Resource("", "v1", "secrets", "Secret")


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the client talks to the API server."""

    #: Seconds one API call may take in all.
    timeout_s: float = 10.0


def login() -> kopf.ConnectionInfo:
    """The credentials kopf itself would use without a client library: the pod's
    ServiceAccount, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
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
                headers={**info.as_http_headers(), "User-Agent": FIELD_MANAGER},
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
