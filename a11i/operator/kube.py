"""The one place outside kopf that talks to the Kubernetes API, over the official client.

kopf watches and patches the objects its handlers are registered for, but has no public client
for reading or writing other objects (a referenced ConfigMap, a generated Secret). This module
wraps the official ``kubernetes`` client (its ``DynamicClient``; server-side apply included) for
those, with credentials loaded as kubectl loads them (:func:`login`: the pod's ServiceAccount
first, then ``$KUBECONFIG`` / ``~/.kube/config`` with its exec credential plugins, proxy-url and
TLS settings) and re-read once on a 401 (a rotated projected token, an expired exec credential).
:func:`kopf_login` hands the same credentials to kopf, so both halves of the operator reach the
API server the same way.

The client is synchronous: every call runs on a small thread pool of its own, never on the
event loop, with an explicit timeout. Namespaced objects: get, list, server-side apply, delete,
merge-patch (of the object or its status); cluster-scoped reads (a Namespace, ``/version``) and
creates (the TokenReview and SubjectAccessReview the dashboard asks for). Every failure is a
:class:`KubeError` carrying the HTTP status; nothing typed ``Any`` leaves this module.

It may not decide anything: no policy, no retries beyond the one re-login.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import kopf
import urllib3
import yaml
from kubernetes import client as kubernetes_client
from kubernetes import config as kubernetes_config
from kubernetes import dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import should_bypass_proxies

#: The JSON of one Kubernetes object, as read from the wire.
KubeObject = dict[str, object]

#: Who the server records as the writer of the fields the operator applies.
FIELD_MANAGER: Final = "a11i-operator"

#: Where kubectl looks for a kubeconfig when ``$KUBECONFIG`` is not set.
DEFAULT_KUBECONFIG: Final = "~/.kube/config"


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
    """A resource of the API: core (``group=""``) or of an API group."""

    group: str
    version: str
    plural: str
    kind: str
    #: False for cluster-scoped resources (Namespace, TokenReview, ...).
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CONFIG_MAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
NAMESPACES: Final = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
AGENT_BUDGETS: Final = Resource("a11i.io", "v1alpha1", "agentbudgets", "AgentBudget")
#: Cluster-scoped and create-only: the server answers in the created object's ``status``.
TOKEN_REVIEWS: Final = Resource(
    "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False
)
SUBJECT_ACCESS_REVIEWS: Final = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False
)


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the client talks to the API server."""

    #: Seconds one API call may take in all (connecting included).
    timeout_s: float = 10.0
    #: The User-Agent of every request (shows in the API server's audit log).
    user_agent: str = FIELD_MANAGER
    #: Threads the blocking client runs on: the most API calls in flight at once.
    workers: int = 4


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the API server is and how to present oneself to it, as loaded by :func:`login`."""

    #: The API server's URL.
    server: str
    #: Where the credentials came from (for logs): the ServiceAccount or a kubeconfig path.
    source: str
    #: The official client's ``Configuration`` (untyped; read only in this module).
    configuration: Any = field(repr=False, compare=False)

    def connection_info(self) -> kopf.ConnectionInfo:
        """The same credentials in kopf's terms (its own API access)."""
        config = self.configuration
        # The client resolves an exec plugin's or a rotated token here (its refresh hook).
        header = config.get_api_key_with_prefix("BearerToken", alias="authorization")
        scheme, token = _authorization(str(header) if header else "")
        proxy = config.proxy if config.proxy else None
        if proxy and should_bypass_proxies(config.host, config.no_proxy or ""):
            proxy = None
        return kopf.ConnectionInfo(
            server=str(config.host),
            ca_path=config.ssl_ca_cert or None,
            insecure=not config.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=config.cert_file or None,
            private_key_path=config.key_file or None,
            proxy_url=str(proxy) if proxy else None,
        )


def login() -> Credentials:
    """The credentials kubectl would use: the pod's ServiceAccount (in a cluster), else
    ``$KUBECONFIG`` (a list of files, merged) or ``~/.kube/config``, exec plugins included.

    Blocking (it reads files and may run a credential plugin)."""
    configuration = kubernetes_client.Configuration()
    try:
        kubernetes_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes_config.ConfigException:
        pass
    else:
        return Credentials(str(configuration.host), "in-cluster ServiceAccount", configuration)
    # Read now, not at import: the client's own default is frozen when it is imported.
    path = os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    try:
        kubernetes_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (kubernetes_config.ConfigException, OSError, KeyError, ValueError, TypeError,
            yaml.YAMLError) as error:  # fmt: skip
        # No ServiceAccount, and a kubeconfig that is missing or names a missing context,
        # cluster, user or file.
        raise KubeError(
            f"no usable Kubernetes credentials: not in a pod with a ServiceAccount token, "
            f"and the kubeconfig {path} cannot be used: {error}"
        ) from error
    return Credentials(str(configuration.host), f"kubeconfig {path}", configuration)


def kopf_login(**_: object) -> kopf.ConnectionInfo:
    """kopf's login handler: the credentials of :func:`login`, so kopf's watches and patches
    reach the API server as this module does (exec plugins and proxy-url included)."""
    try:
        return login().connection_info()
    except KubeError as error:
        raise kopf.LoginError(str(error)) from error


class _KnownResources:
    """A ``DynamicClient`` discoverer for resources whose coordinates are known: no discovery
    requests (they would run without a timeout) and no discovery cache file in /tmp."""

    def __init__(self, client: object, cache_file: object) -> None:
        del client, cache_file


@dataclass(slots=True)
class _Connection:
    """One logged-in official client; ``generation`` counts the logins."""

    api: Any  # kubernetes.client.ApiClient
    dynamic: Any  # kubernetes.dynamic.DynamicClient
    generation: int


class KubeClient:
    """The operator's (and the dashboard's) API client; ``close()`` it on shutdown.

    Logs in lazily, on the first call, and again once when the API server answers 401."""

    def __init__(
        self,
        credentials: Callable[[], Credentials] = login,
        settings: KubeSettings | None = None,
    ) -> None:
        self._credentials = credentials
        self._settings = settings or KubeSettings()
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._logins = 0
        self._executor: ThreadPoolExecutor | None = None

    async def close(self) -> None:
        """Wait for the calls in flight (each bounded by the timeout), then drop the
        connections."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(executor.shutdown, wait=True, cancel_futures=True)
            )
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.api.close()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> KubeObject | None:
        """The object, or None when it does not exist (``namespace=None``: cluster-scoped)."""
        try:
            return await self._call("get", resource, name=_segment(name), namespace=namespace)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, resource: Resource, namespace: str) -> list[KubeObject]:
        """Every object of ``resource`` in ``namespace`` (one page: the kinds listed here hold a
        handful of objects per namespace)."""
        found = await self._call("get", resource, namespace=namespace)
        items = found.get("items")
        if not isinstance(items, list):
            raise KubeError(f"list {resource.plural} in {namespace}: the answer has no items")
        return [item for item in items if isinstance(item, dict)]

    async def create(
        self, resource: Resource, namespace: str | None, body: Mapping[str, object]
    ) -> KubeObject:
        """POST a new object (``namespace=None``: cluster-scoped, e.g. a TokenReview); the
        server's answer, which for a review holds its ``status``."""
        full = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self._call("create", resource, body=full, namespace=namespace)

    async def patch(
        self, resource: Resource, namespace: str, name: str, body: Mapping[str, object]
    ) -> KubeObject:
        """JSON merge-patch the object. A ``metadata.resourceVersion`` in ``body`` makes the
        write conditional: the server answers 409 Conflict when the object changed since."""
        return await self._call(
            "patch", resource, body=dict(body), name=_segment(name), namespace=namespace,
            content_type="application/merge-patch+json",
        )  # fmt: skip

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
        return await self._call(
            "server_side_apply", resource, body=full, name=_segment(name), namespace=namespace,
            field_manager=FIELD_MANAGER, force_conflicts=True,
        )  # fmt: skip

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object; False when it did not exist."""
        try:
            await self._call("delete", resource, name=_segment(name), namespace=namespace)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, resource: Resource, namespace: str, name: str, status: Mapping[str, object]
    ) -> KubeObject:
        """Merge ``status`` into the object's status subresource."""
        return await self._call(
            "patch", resource, body={"status": dict(status)}, name=_segment(name),
            namespace=namespace, content_type="application/merge-patch+json", subresource="status",
        )  # fmt: skip

    async def version(self) -> tuple[int, int]:
        """The API server's Kubernetes version, (major, minor)."""
        answer = await self._call("request", None, method="get", path="/version")
        major, minor = str(answer.get("major", "")), str(answer.get("minor", ""))
        try:
            # Some distributions answer "29+".
            return int(major.rstrip("+")), int(minor.rstrip("+"))
        except ValueError as error:
            raise KubeError(f"/version: unreadable major/minor {major!r}/{minor!r}") from error

    async def _call(self, verb: str, resource: Resource | None, **kwargs: Any) -> KubeObject:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._settings.workers, thread_name_prefix="a11i-kube"
            )
        call = functools.partial(self._blocking, verb, resource, kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _blocking(self, verb: str, resource: Resource | None, kwargs: dict[str, Any]) -> KubeObject:
        """One call on a worker thread, logged in again once on a 401."""
        what = _describe(verb, resource, kwargs)
        subresource = kwargs.pop("subresource", None)
        for attempt in (1, 2):
            connection = self._connect()
            target = _dynamic(resource, subresource) if resource is not None else None
            method = getattr(connection.dynamic, verb)
            args = () if target is None else (target,)
            try:
                answer = method(
                    *args,
                    serializer=_as_json,
                    _request_timeout=self._settings.timeout_s,
                    **kwargs,
                )
            except ApiException as error:
                if error.status == 401 and attempt == 1:
                    # A projected ServiceAccount token is rotated on disk, an exec plugin's
                    # credential expired: log in again, once.
                    self._forget(connection)
                    continue
                raise _error(what, error) from error
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise KubeError(f"{what}: no answer from the API server: {error!r}") from error
            if not isinstance(answer, dict):
                raise KubeError(f"{what}: the answer is not a JSON object")
            return {str(key): value for key, value in answer.items()}
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> _Connection:
        with self._lock:
            if self._connection is None:
                credentials = self._credentials()
                configuration = credentials.configuration
                # One attempt per call: kopf (or the caller) decides when to try again.
                configuration.retries = 0
                api = kubernetes_client.ApiClient(configuration)
                api.user_agent = self._settings.user_agent
                self._logins += 1
                self._connection = _Connection(
                    api,
                    dynamic.DynamicClient(  # type: ignore[no-untyped-call]
                        api, discoverer=_KnownResources
                    ),
                    self._logins,
                )
            return self._connection

    def _forget(self, connection: _Connection) -> None:
        """Drop ``connection`` unless another thread already logged in again."""
        with self._lock:
            if (
                self._connection is not None
                and self._connection.generation == connection.generation
            ):
                self._connection = None
            else:
                return
        connection.api.close()


@functools.cache
def _dynamic(resource: Resource, subresource: str | None) -> Any:
    """The official client's description of ``resource`` (or of its subresource)."""
    subresources = None
    if subresource:
        path = f"{resource.plural}/{subresource}"
        subresources = {
            subresource: {"kind": resource.kind, "name": path, "namespaced": resource.namespaced}
        }
    described = dynamic.Resource(  # type: ignore[no-untyped-call]
        prefix="apis" if resource.group else "api",
        group=resource.group,
        api_version=resource.version,
        kind=resource.kind,
        namespaced=resource.namespaced,
        name=resource.plural,
        subresources=subresources,
    )
    return described.subresources[subresource] if subresource else described


def _as_json(_client: object, loaded: object) -> object:
    """The ``DynamicClient``'s serializer: the parsed JSON as it is (no attribute wrappers)."""
    return loaded


def _segment(name: str) -> str:
    """A name as one URL path segment (Kubernetes names never need quoting; this makes sure)."""
    return quote(name, safe="")


def _describe(verb: str, resource: Resource | None, kwargs: Mapping[str, Any]) -> str:
    """``VERB kind namespace/name`` for error messages."""
    if resource is None:
        return f"{str(kwargs.get('method', verb)).upper()} {kwargs.get('path', '')}"
    where = "/".join(str(kwargs[key]) for key in ("namespace", "name") if kwargs.get(key))
    suffix = f"/{kwargs['subresource']}" if kwargs.get("subresource") else ""
    return f"{verb} {resource.plural}{' ' + where if where else ''}{suffix}"


def _authorization(header: str) -> tuple[str | None, str | None]:
    """An Authorization header's scheme and credentials (RFC 7235, appendix C)."""
    parts = header.split(" ", 1)
    if not header:
        return None, None
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]


def _error(what: str, error: ApiException) -> KubeError:
    """The server's Status object (message, reason) as a KubeError."""
    status = int(error.status) if error.status else None
    text = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else error.body
    text = str(text or "")
    message, reason = text.strip()[:500] or str(error.reason or ""), ""
    try:
        loaded: object = json.loads(text)
    except json.JSONDecodeError:
        loaded = None
    if isinstance(loaded, dict):
        message = str(loaded.get("message") or message)
        reason = str(loaded.get("reason") or "")
    return KubeError(f"{what}: {status} {reason}: {message}", status=status, reason=reason)
