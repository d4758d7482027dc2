"""The injection webhook: kopf's ``on.mutate`` handler for pods, and its HTTPS server.

Adapter around the pure :mod:`a11i.operator.injection`: the handler reads the admission request,
asks :func:`injection.decide` once and hands the JSONPatch to kopf, which answers the API server.
The handler id is :data:`HANDLER_ID`; kopf's server routes ``POST /<handler id>`` to the handler
of that id, so the admission path is ``/a11i-inject``.

- Namespace labels (``a11i.io/inject=enabled``) come from a watch of namespaces, with a GET for a
  namespace the watch has not reported yet (a namespace created a moment before its first pod).
- Per-agent AgentBudgets (those with an ``agentSelector``) come from a watch of AgentBudgets, kept
  per namespace as :class:`injection.AgentBudgetRule`; a pod they select gets its own limit.
  The same watch keeps the namespace-wide ones (:class:`injection.NamespaceBudget`), whose
  ``keyCustody`` names the Secret of provider keys the sidecars hold. The webhook only names
  that Secret in the pod spec: it never reads Secrets. Both kinds carry ``spec.admission``,
  which becomes the sidecar's ``A11I_BUDGET_*`` admission settings.
- ``A11I_NATIVE_SIDECARS=auto`` asks the API server's ``/version`` once at start.
- TLS: :class:`ReloadingWebhookServer` serves ``tls.crt``/``tls.key`` from a directory and loads
  renewed files into the same SSL context (new connections get the new certificate; the
  listener never closes, so no admission is lost during a rotation).

What it may not do: refuse a pod. Whatever goes wrong (a spec it cannot patch, a bug), the pod is
admitted unchanged with a warning; ``failurePolicy`` only ever applies when the webhook cannot
answer at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kopf

from a11i.operator import certs, injection
from a11i.operator.injection import (
    AgentBudgetRule,
    Decision,
    Injection,
    InjectionSettings,
    NamespaceBudget,
)
from a11i.operator.kube import NAMESPACES, KubeClient, KubeError
from a11i.operator.settings import WebhookSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: kopf's handler id, and so the URL path the API server posts AdmissionReviews to.
HANDLER_ID = "a11i-inject"
PATH = f"/{HANDLER_ID}"
#: Kubernetes release from which init containers with ``restartPolicy: Always`` are sidecars.
NATIVE_SIDECARS_SINCE = (1, 29)
#: Seconds a namespace's labels read by GET (not yet seen by the watch) are trusted.
LABELS_TTL_S = 10.0


class ReloadingWebhookServer(kopf.WebhookServer):
    """kopf's webhook server contract over one TLS context whose certificate is reloaded in
    place when ``tls.crt``/``tls.key`` change (kopf's own server restarts its listener instead).

    Also puts the request's namespace into a pod that carries none yet (pods created by
    controllers arrive with ``generateName`` and no namespace), so handlers can rely on it.
    """

    def __init__(
        self, *, port: int, cert_dir: Path, addr: str | None = None, check_interval: float = 2.0
    ) -> None:
        super().__init__(addr=addr, port=port, host="127.0.0.1")
        self.cert_dir = cert_dir
        self.check_interval = check_interval
        self._digest = ""

    @property
    def cert_files(self) -> tuple[Path, Path]:
        return self.cert_dir / certs.CERT_FILE, self.cert_dir / certs.KEY_FILE

    def _read_digest(self) -> str:
        hasher = hashlib.sha256()
        for path in self.cert_files:
            hasher.update(path.read_bytes())
        return hasher.hexdigest()

    def _load(self, context: ssl.SSLContext) -> None:
        digest = self._read_digest()
        cert, key = self.cert_files
        context.load_cert_chain(cert, key)
        self._digest = digest

    async def _watch(self, context: ssl.SSLContext) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                if self._read_digest() == self._digest:
                    continue
                self._load(context)
            except (OSError, ssl.SSLError) as error:
                # Mid-rotation (a key that does not match the certificate yet): keep serving
                # the old pair and look again.
                log.warning("webhook certificate in %s not reloaded: %s", self.cert_dir, error)
            else:
                log.info("webhook certificate reloaded from %s", self.cert_dir)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context)

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(_with_namespace(fn), request)

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.post("/{id:.*}", serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        watcher = asyncio.create_task(self._watch(context), name="a11i-webhook-certificates")
        try:
            site = aiohttp.web.TCPSite(runner, self.addr, self.port, ssl_context=context)
            await site.start()
            log.info("injection webhook listening on https://%s:%d%s",
                     self.addr or "*", self.port, PATH)  # fmt: skip
            yield kopf.WebhookClientConfig(url=f"https://127.0.0.1:{self.port}{PATH}")
            await asyncio.Event().wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await runner.cleanup()


def _with_namespace(fn: kopf.WebhookFn) -> kopf.WebhookFn:
    async def call(request: Any, **kwargs: Any) -> Any:
        payload = request.get("request") if isinstance(request, dict) else None
        if isinstance(payload, dict):
            namespace, pod = payload.get("namespace"), payload.get("object")
            if isinstance(namespace, str) and isinstance(pod, dict):
                metadata = pod.setdefault("metadata", {})
                if isinstance(metadata, dict) and not metadata.get("namespace"):
                    metadata["namespace"] = namespace
        return await fn(request, **kwargs)

    return call


async def namespace_labels(client: KubeClient, name: str) -> dict[str, str] | None:
    """The labels of namespace ``name``; None when it does not exist."""
    found = await client.get(NAMESPACES, None, name)
    if found is None:
        return None
    metadata = found.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


class Injector:
    """The handlers' state: the settings, the namespaces' labels, the API client."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.injection: InjectionSettings = settings.injection
        self._watched: dict[str, dict[str, str]] = {}
        self._fetched: dict[str, tuple[float, dict[str, str]]] = {}
        self._pending: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._client: KubeClient | None = None
        #: Per-agent AgentBudgets by namespace, then name (from the watch).
        self._agent_budgets: dict[str, dict[str, AgentBudgetRule]] = {}
        #: Namespace-wide AgentBudgets by namespace, then name (from the same watch).
        self._namespace_budgets: dict[str, dict[str, NamespaceBudget]] = {}

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient()
        return self._client

    async def startup(self, logger: kopf.Logger, **_: Any) -> None:
        native = self.settings.native_sidecars
        if native is None:
            try:
                version = await self.client.version()
            except KubeError as error:
                logger.warning(f"/version unreadable ({error}); the proxy is a regular container")
                native = False
            else:
                native = version >= NATIVE_SIDECARS_SINCE
                logger.info(f"Kubernetes {version[0]}.{version[1]}: native sidecars {native}")
        self.injection = replace(self.settings.injection, native_sidecars=native)

    async def cleanup(self, **_: Any) -> None:
        if self._client is not None:
            await self._client.close()

    async def namespace_event(
        self, event: Mapping[str, Any], name: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        if name is None:
            return
        if event.get("type") == "DELETED":
            self._watched.pop(name, None)
        else:
            self._watched[name] = dict(labels)
        self._fetched.pop(name, None)

    async def agent_budget_event(
        self,
        event: Mapping[str, Any],
        body: kopf.Body,
        name: str | None,
        namespace: str | None,
        **_: Any,
    ) -> None:
        if name is None or namespace is None:
            return
        deleted = event.get("type") == "DELETED"
        _keep(self._agent_budgets, namespace, name,
              None if deleted else injection.agent_budget_rule(body))  # fmt: skip
        _keep(self._namespace_budgets, namespace, name,
              None if deleted else injection.namespace_budget(body))  # fmt: skip

    def agent_budgets(self, namespace: str) -> list[AgentBudgetRule]:
        return list(self._agent_budgets.get(namespace, {}).values())

    def namespace_budgets(self, namespace: str) -> list[NamespaceBudget]:
        return list(self._namespace_budgets.get(namespace, {}).values())

    async def labels_of(self, namespace: str) -> Mapping[str, str]:
        watched = self._watched.get(namespace)
        if watched is not None:
            return watched
        fetched = self._fetched.get(namespace)
        if fetched is not None and time.monotonic() - fetched[0] < LABELS_TTL_S:
            return fetched[1]
        # One GET per namespace at a time: a burst of pods must not become a burst of GETs.
        pending = self._pending.get(namespace)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(namespace))
            self._pending[namespace] = pending
        return await asyncio.shield(pending)

    async def _fetch(self, namespace: str) -> dict[str, str]:
        try:
            labels = await namespace_labels(self.client, namespace) or {}
            self._fetched[namespace] = (time.monotonic(), labels)
            return labels
        finally:
            self._pending.pop(namespace, None)

    async def mutate(
        self,
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        warnings: list[str],
        dryrun: bool,
        **kwargs: Any,
    ) -> None:
        """Decide once, hand the JSONPatch to kopf; never raise (a raise refuses the pod)."""
        operation = kwargs.get("operation")
        namespace = body.metadata.namespace or ""
        pod = body.metadata.name or f"{body.metadata.get('generateName') or ''}*"
        try:
            if operation != "CREATE":
                log.info("admission %s %s/%s: skipped: not a CREATE", operation, namespace, pod)
                return
            decision = await self._decide(body, namespace)
        except Exception as error:  # any failure admits the pod unchanged
            log.exception("admission %s/%s: failed; admitted unchanged", namespace, pod)
            warnings.append(f"a11i: not injected ({type(error).__name__}); admitted unchanged")
            return
        warnings.extend(decision.warnings)
        if isinstance(decision, Injection):
            ops = decision.patch
            patch.fns.append(lambda raw: injection.apply(raw, ops))  # type: ignore[arg-type]
            log.info("admission %s/%s: injected%s", namespace, pod, " (dry run)" * dryrun)
        else:
            log.info("admission %s/%s: skipped: %s", namespace, pod, decision.reason)

    async def _decide(self, body: kopf.Body, namespace: str) -> Decision:
        if body.metadata.annotations.get(injection.INJECT) in ("true", "false"):
            # The pod's own word decides: the namespace's labels are not needed.
            return injection.decide(
                dict(body),
                namespace=namespace,
                namespace_labels={},
                settings=self.injection,
                agent_budgets=self.agent_budgets(namespace),
                namespace_budgets=self.namespace_budgets(namespace),
            )
        try:
            labels = await self.labels_of(namespace)
        except KubeError as error:
            # The annotation still decides; only the namespace label is unknown.
            log.warning("labels of namespace %s unreadable: %s", namespace, error)
            labels = {}
        return injection.decide(
            dict(body),
            namespace=namespace,
            namespace_labels=labels,
            settings=self.injection,
            agent_budgets=self.agent_budgets(namespace),
            namespace_budgets=self.namespace_budgets(namespace),
        )


def _keep(index: dict[str, dict[str, _T]], namespace: str, name: str, value: _T | None) -> None:
    """Put ``value`` under namespace and name in ``index``, or take the name out when None."""
    entries = index.setdefault(namespace, {})
    if value is None:
        entries.pop(name, None)
    else:
        entries[name] = value
    if not entries:
        index.pop(namespace, None)


def register(settings: WebhookSettings, registry: kopf.OperatorRegistry) -> Injector:
    """The injection handlers in ``registry``."""
    injector = Injector(settings)
    kopf.on.startup(id="a11i-inject-startup", registry=registry)(injector.startup)
    kopf.on.cleanup(id="a11i-inject-cleanup", registry=registry)(injector.cleanup)
    kopf.on.event("", "v1", "namespaces", id="a11i-inject-namespaces", registry=registry)(
        injector.namespace_event
    )
    kopf.on.event(
        "a11i.io", "v1alpha1", "agentbudgets", id="a11i-inject-agentbudgets", registry=registry
    )(injector.agent_budget_event)
    kopf.on.mutate("", "v1", "pods", id=HANDLER_ID, operations=["CREATE"], registry=registry)(
        injector.mutate
    )
    return injector


def server(settings: WebhookSettings) -> ReloadingWebhookServer:
    """The HTTPS server kopf hands admission requests from (all interfaces, the given port)."""
    return ReloadingWebhookServer(port=settings.port, cert_dir=settings.cert_dir)
