"""The sidecars' Redis URL, kept as a Secret in the namespaces where sidecars run.

Adapter (kopf handlers over :class:`KubeClient`). With ``A11I_OPERATOR_SIDECAR_REDIS_SECRET`` set
(the chart does when its Redis has a password), the operator writes a Secret of that name, key
``A11I_REDIS_URL`` (its own URL, password included), into every namespace that has an
AgentBudget or the ``a11i.io/inject=enabled`` label; the webhook points the injected sidecars'
``A11I_REDIS_URL`` at it (``secretKeyRef``), so the password is never in a pod spec and only the
proxy container holds it, not the agent's.

Applied on every AgentBudget and namespace event and again every ``RETRY_S`` while an apply
failed; an unchanged Secret is not written (server-side apply). A Secret of that name the
operator did not create is left alone, with a warning: it may be the user's.

What it may not do: write anywhere but the namespaces above, or log the URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import kopf

from a11i.operator.injection import ENABLED, NAMESPACE_LABEL
from a11i.operator.kube import SECRETS, KubeClient, KubeError
from a11i.operator.settings import OperatorSettings
from a11i.sidecar import contract

log = logging.getLogger(__name__)

KEY: Final = contract.REDIS_URL
#: The key of the sentinels' own password, when they ask one.
SENTINEL_PASSWORD_KEY: Final = "A11I_REDIS_SENTINEL_PASSWORD"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "a11i"
#: Seconds between retries of namespaces whose Secret could not be written.
RETRY_S: Final = 30.0
#: Seconds a written Secret is trusted to be there; the next event after that applies it again
#: (so one deleted by hand comes back).
RECHECK_S: Final = 300.0


class SidecarRedisSecrets:
    """Keeps ``name`` in the namespaces where sidecars run."""

    def __init__(
        self,
        name: str,
        redis_url: str,
        namespaces: tuple[str, ...] = (),
        sentinel_password: str | None = None,
    ) -> None:
        self.name = name
        #: ``A11I_OPERATOR_NAMESPACES``: kopf serves only those AgentBudgets, but watches the
        #: cluster-scoped Namespaces whole; the labelled ones outside are not written into.
        self._namespaces = namespaces
        self._data = {KEY: _b64(redis_url)}
        if sentinel_password:
            # The sentinels' own password (A11I_REDIS_MODE=sentinel), beside the URL.
            self._data[SENTINEL_PASSWORD_KEY] = _b64(sentinel_password)
        self._client: KubeClient | None = None
        #: namespace -> when its Secret was last written or found (monotonic seconds).
        self._written: dict[str, float] = {}
        self._failed: set[str] = set()
        self._retry: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self, **_: Any) -> None:
        self._client = KubeClient()
        self._retry = asyncio.create_task(self._retry_failed(), name="a11i-redis-secret-retry")

    async def cleanup(self, **_: Any) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._client is not None:
            await self._client.close()

    # -- handlers ----------------------------------------------------------------------------

    async def budget_event(self, event: Mapping[str, Any], namespace: str | None, **_: Any) -> None:
        if namespace is not None and event.get("type") != "DELETED":
            await self.ensure(namespace)

    async def namespace_event(
        self, event: Mapping[str, Any], name: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        if name is None:
            return
        if event.get("type") == "DELETED":
            self._written.pop(name, None)
            self._failed.discard(name)
        elif labels.get(NAMESPACE_LABEL) == ENABLED and self.serves(name):
            await self.ensure(name)

    def serves(self, namespace: str) -> bool:
        """Whether ``namespace`` is among ``A11I_OPERATOR_NAMESPACES`` (globs, ``!`` excludes)."""
        if not self._namespaces:
            return True
        included = [glob for glob in self._namespaces if not glob.startswith("!")]
        excluded = [glob[1:] for glob in self._namespaces if glob.startswith("!")]
        if included and not any(fnmatch.fnmatchcase(namespace, g) for g in included):
            return False
        return not any(fnmatch.fnmatchcase(namespace, g) for g in excluded)

    async def ensure(self, namespace: str) -> bool:
        """Write the Secret into ``namespace`` unless this process did already; whether it is
        there now."""
        written = self._written.get(namespace)
        if written is not None and time.monotonic() - written < RECHECK_S:
            return True
        if self._client is None:
            return False
        try:
            existing = await self._client.get(SECRETS, namespace, self.name)
            metadata = existing.get("metadata") if existing is not None else None
            labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
            ours = isinstance(labels, Mapping) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
            if existing is not None and not ours:
                log.warning(
                    "Secret %s/%s exists and is not a11i's: left alone (its %s is what the "
                    "sidecars there use)",
                    namespace,
                    self.name,
                    KEY,
                )
                self._written[namespace] = time.monotonic()
                return True
            await self._client.apply(SECRETS, namespace, self._body())
        except KubeError as error:
            if namespace not in self._failed:
                log.warning(
                    "Secret %s/%s not written (%s); retrying every %.0f s",
                    namespace,
                    self.name,
                    error,
                    RETRY_S,
                )
            self._failed.add(namespace)
            return False
        if written is None:
            log.info("Secret %s/%s holds the sidecars' Redis URL", namespace, self.name)
        self._failed.discard(namespace)
        self._written[namespace] = time.monotonic()
        return True

    # -- internals ---------------------------------------------------------------------------

    def _body(self) -> dict[str, object]:
        return {
            "metadata": {
                "name": self.name,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {
                    "a11i.io/purpose": "the a11i sidecars' A11I_REDIS_URL (written by the operator)"
                },
            },
            "type": "Opaque",
            "data": self._data,
        }

    async def _retry_failed(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            for namespace in sorted(self._failed):
                await self.ensure(namespace)


def register(
    settings: OperatorSettings, registry: kopf.OperatorRegistry
) -> SidecarRedisSecrets | None:
    """The handlers in ``registry``, when a Secret name is set."""
    if not settings.sidecar_redis_secret:
        return None
    keeper = SidecarRedisSecrets(
        settings.sidecar_redis_secret,
        settings.redis_url,
        settings.namespaces,
        settings.redis_sentinel_password,
    )
    kopf.on.startup(id="a11i-redis-secret-startup", registry=registry)(keeper.startup)
    kopf.on.cleanup(id="a11i-redis-secret-cleanup", registry=registry)(keeper.cleanup)
    kopf.on.event(
        "a11i.io", "v1alpha1", "agentbudgets", id="a11i-redis-secret-budgets", registry=registry
    )(keeper.budget_event)
    kopf.on.event("", "v1", "namespaces", id="a11i-redis-secret-namespaces", registry=registry)(
        keeper.namespace_event
    )
    return keeper
