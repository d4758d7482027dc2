"""The kopf handlers for TelemetryPolicy: from a policy to the sidecars' configuration.

For each policy the operator reads the ConfigMaps and Secret it references, has
``policy_config`` turn them into the generated objects' data, writes those objects (owned by
the policy, so deleting it removes them) and reports in ``status.conditions`` (Ready). When the
policy or what it references is missing or invalid, Ready turns False with the reason and the
generated objects stay as they were: the sidecars keep the last good configuration.

What starts a reconciliation: the policy's creation, change or the operator's start (kopf's
create/update/resume); any event of a referenced ConfigMap (an index of the references keeps
that cheap), so a PII-rules edit reaches the sidecars' a11i.yaml within seconds; the deletion of
a generated ConfigMap (it is put back) or of another policy of the namespace; and a resync
timer, which also picks up a changed or newly created headers Secret (Secrets are not watched:
that would stream every Secret of the cluster through the operator).

The handlers are registered by :func:`register`, never on import. It may not compute a
configuration itself (``policy_config`` does) nor talk to the API other than through ``kube``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import kopf

from a11i.operator.kube import (
    CONFIG_MAPS,
    SECRETS,
    KubeClient,
    KubeError,
    KubeObject,
    Resource,
)
from a11i.operator.policy_config import (
    CONFIG_MAP_NAME,
    ENV_CONFIG_MAP_NAME,
    HEADERS_SECRET_NAME,
    PolicyConfigError,
    PolicySpec,
    SidecarConfig,
    parse_spec,
    sidecar_config,
)
from a11i.operator.settings import OperatorSettings

GROUP: Final = "a11i.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "telemetrypolicies"
POLICIES: Final = Resource(GROUP, VERSION, PLURAL, "TelemetryPolicy")

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "a11i"
POLICY_LABEL: Final = "a11i.io/policy"
#: A hash of the object's data: equal hash, equal content (for the injector and for humans).
CONTENT_HASH_ANNOTATION: Final = "a11i.io/content-hash"
GENERATED_NAMES: Final = frozenset({CONFIG_MAP_NAME, ENV_CONFIG_MAP_NAME, HEADERS_SECRET_NAME})

#: Ready=False when an older policy of the namespace is in force (one per namespace).
DUPLICATE_POLICY: Final = "DuplicatePolicy"
#: Seconds between resyncs of every policy (a headers Secret created or changed, a generated
#: object edited by hand).
RESYNC_INTERVAL_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """How TelemetryPolicies are reconciled."""

    #: Seconds before a handler is retried after the API server failed or refused it.
    retry_delay_s: float = 10.0
    #: Seconds between two resyncs of every policy.
    resync_interval_s: float = RESYNC_INTERVAL_S


@dataclass(slots=True)
class PolicyRuntime:
    """What the handlers share: the API client and one lock per policy, so the handlers, the
    ConfigMap watch and the timer never write one policy's objects at the same time."""

    client: KubeClient
    settings: PolicySettings = field(default_factory=PolicySettings)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())


# --------------------------------------------------------------------------- indexes


def policy_references(
    namespace: str | None, name: str | None, spec: kopf.Spec, **_: object
) -> dict[tuple[str, str, str], str]:
    """Index ``policy_references``: (namespace, kind, name) of a referenced object to the
    policies referencing it."""
    if namespace is None or name is None:
        return {}
    try:
        parsed = parse_spec(dict(spec))
    except PolicyConfigError:
        return {}  # nothing to watch until the spec is fixed
    return {(namespace, ref.kind, ref.name): name for ref in parsed.references}


def policies_by_namespace(
    namespace: str | None, name: str | None, meta: kopf.Meta, **_: object
) -> dict[str, tuple[str, str]]:
    """Index ``policies_by_namespace``: a namespace to its policies' (creation time, name)."""
    if namespace is None or name is None:
        return {}
    return {namespace: (str(meta.get("creationTimestamp") or ""), name)}


def _index(kwargs: Mapping[str, object], name: str) -> Mapping[object, Iterable[object]]:
    """One of the indexes kopf passes to every handler by name (the handler protocols of kopf
    do not list them, hence not a parameter of its own)."""
    index = kwargs.get(name)
    if not isinstance(index, Mapping):
        raise kopf.PermanentError(f"the index {name} is not registered")
    return index


def _in_force(
    kwargs: Mapping[str, object], namespace: str, *, gone: str | None = None
) -> str | None:
    """The policy in force in a namespace: the oldest (then the first by name)."""
    candidates = [
        entry
        for entry in _index(kwargs, "policies_by_namespace").get(namespace, ())
        if isinstance(entry, tuple) and entry[1] != gone
    ]
    return str(min(candidates)[1]) if candidates else None


# --------------------------------------------------------------------------- handlers


class Policies:
    """The TelemetryPolicy handlers; the API client lives from kopf's startup to its cleanup."""

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()
        self._runtime: PolicyRuntime | None = None

    @property
    def runtime(self) -> PolicyRuntime:
        if self._runtime is None:
            raise kopf.PermanentError("the policy runtime was not started (on.startup did not run)")
        return self._runtime

    async def startup(self, **_: object) -> None:
        self._runtime = PolicyRuntime(KubeClient(), self.settings)

    async def cleanup(self, **_: object) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.client.close()

    async def reconcile(
        self, namespace: str | None, name: str | None, logger: kopf.Logger, **kwargs: object
    ) -> None:
        """Generate the sidecar configuration. Invalid content is reported in the status and
        not retried (it is retried when the policy or a referenced ConfigMap changes); the API
        server failing or refusing is retried after a delay."""
        if namespace is None or name is None:
            raise kopf.PermanentError("a TelemetryPolicy must be namespaced")
        runtime = self.runtime
        try:
            await sync_policy(runtime, namespace, name, _in_force(kwargs, namespace), logger)
        except KubeError as error:
            if error.temporary or error.status in (401, 403):
                # 401/403: credentials or RBAC, fixed outside the operator; worth trying again.
                raise kopf.TemporaryError(str(error), delay=self.settings.retry_delay_s) from error
            raise kopf.PermanentError(str(error)) from error

    async def resync(
        self, namespace: str | None, name: str | None, logger: kopf.Logger, **kwargs: object
    ) -> None:
        if namespace is not None and name is not None:
            in_force = _in_force(kwargs, namespace)
            await _sync_logged(self.runtime, namespace, name, in_force, logger)

    async def config_map_changed(
        self,
        event: kopf.RawEvent,
        namespace: str | None,
        name: str | None,
        labels: kopf.Labels,
        logger: kopf.Logger,
        **kwargs: object,
    ) -> None:
        """A referenced ConfigMap appeared, changed or went away; or a generated one was
        deleted (it is put back). Every other ConfigMap of the cluster is dismissed by one
        index lookup."""
        if namespace is None or name is None:
            return
        references = _index(kwargs, "policy_references")
        targets = {str(policy) for policy in references.get((namespace, "ConfigMap", name), ())}
        if (
            event.get("type") == "DELETED"
            and name in GENERATED_NAMES
            and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
        ):
            owner = labels.get(POLICY_LABEL)
            if owner:
                targets.add(owner)
        if not targets:
            return
        runtime = self.runtime
        in_force = _in_force(kwargs, namespace)
        for policy in sorted(targets):
            await _sync_logged(runtime, namespace, policy, in_force, logger)

    async def policy_deleted(
        self,
        event: kopf.RawEvent,
        namespace: str | None,
        name: str | None,
        logger: kopf.Logger,
        **kwargs: object,
    ) -> None:
        """When the policy in force goes, the next one of the namespace takes over at once."""
        if event.get("type") != "DELETED" or namespace is None or name is None:
            return
        successor = _in_force(kwargs, namespace, gone=name)
        if successor is not None:
            await _sync_logged(self.runtime, namespace, successor, successor, logger)


def register(settings: OperatorSettings, registry: kopf.OperatorRegistry) -> Policies:
    """The TelemetryPolicy handlers in ``registry``. ``settings`` holds nothing for them yet;
    the handler ids are the ones kopf's progress annotations on existing policies carry."""
    del settings
    policies = Policies()
    on = kopf.on
    on.startup(id="start_policy_runtime", registry=registry)(policies.startup)
    on.cleanup(id="stop_policy_runtime", registry=registry)(policies.cleanup)
    for index in (policy_references, policies_by_namespace):
        kopf.index(GROUP, VERSION, PLURAL, id=index.__name__, registry=registry)(index)
    for reacting in (on.resume, on.create, on.update):
        reacting(GROUP, VERSION, PLURAL, id="reconcile_policy", registry=registry)(
            policies.reconcile
        )
    interval = policies.settings.resync_interval_s
    kopf.timer(
        GROUP, VERSION, PLURAL, id="resync_policy", interval=interval, initial_delay=interval,
        registry=registry,
    )(policies.resync)  # fmt: skip
    on.event("", "v1", "configmaps", id="config_map_changed", registry=registry)(
        policies.config_map_changed
    )
    on.event(GROUP, VERSION, PLURAL, id="policy_deleted", registry=registry)(
        policies.policy_deleted
    )
    return policies


async def _sync_logged(
    runtime: PolicyRuntime, namespace: str, name: str, in_force: str | None, logger: kopf.Logger
) -> None:
    """For the watch and the timer: nothing retries them, the next event or resync will."""
    try:
        await sync_policy(runtime, namespace, name, in_force, logger)
    except KubeError as error:
        logger.warning("TelemetryPolicy %s/%s not reconciled: %s", namespace, name, error)


# --------------------------------------------------------------------------- reconciliation


async def sync_policy(
    runtime: PolicyRuntime,
    namespace: str,
    name: str,
    in_force: str | None,
    logger: kopf.Logger,
) -> None:
    """Read the policy afresh, generate its objects, write its status. Raises ``KubeError``."""
    client = runtime.client
    async with runtime.lock(namespace, name):
        policy = await client.get(POLICIES, namespace, name)
        if policy is None:
            return
        meta = _dict(policy.get("metadata"))
        if meta.get("deletionTimestamp"):
            return
        status = _dict(policy.get("status"))
        generation = _int(meta.get("generation"))
        if in_force is not None and in_force != name:
            message = (
                f"TelemetryPolicy {in_force} is in force in this namespace (the oldest one is): "
                "the sidecars of a namespace follow one policy; merge this one into it and "
                "delete this one"
            )
            await _write_status(client, namespace, name, status, generation, False,
                                DUPLICATE_POLICY, message, changed=False)  # fmt: skip
            return
        try:
            spec = parse_spec(_dict(policy.get("spec")))
            config_maps, secrets = await _read_references(client, namespace, spec)
            config = sidecar_config(spec, config_maps, secrets, policy=f"{namespace}/{name}")
        except PolicyConfigError as error:
            existing = await client.get(CONFIG_MAPS, namespace, CONFIG_MAP_NAME)
            keep = (
                "The sidecars keep the configuration last generated."
                if existing is not None
                else "Nothing is generated until this is fixed."
            )
            logger.warning("TelemetryPolicy %s/%s: %s: %s", namespace, name, error.reason,
                           error.message)  # fmt: skip
            message = f"{error.message}. {keep}"
            await _write_status(client, namespace, name, status, generation, False,
                                str(error.reason), message, changed=False)  # fmt: skip
            return
        uid = str(meta.get("uid") or "")
        changed = await _publish(client, namespace, name, uid, config)
        if changed:
            logger.info("TelemetryPolicy %s/%s: sidecar configuration %s generated", namespace,
                        name, config.hashes[CONFIG_MAP_NAME])  # fmt: skip
        generated = f"ConfigMaps {CONFIG_MAP_NAME} ({', '.join(sorted(config.config))}) and "
        generated += ENV_CONFIG_MAP_NAME
        if config.headers is not None:
            generated += f", Secret {HEADERS_SECRET_NAME}"
        await _write_status(client, namespace, name, status, generation, True, "Generated",
                            f"generated {generated}", changed=changed)  # fmt: skip


async def _read_references(
    client: KubeClient, namespace: str, spec: PolicySpec
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, bytes]]]:
    """The referenced objects that exist, their data parsed from the wire."""
    config_maps: dict[str, dict[str, str]] = {}
    secrets: dict[str, dict[str, bytes]] = {}
    for ref in spec.references:
        if ref.kind == "ConfigMap":
            if ref.name not in config_maps:
                found = await client.get(CONFIG_MAPS, namespace, ref.name)
                if found is not None:
                    config_maps[ref.name] = {
                        str(k): str(v) for k, v in _dict(found.get("data")).items()
                    }
        elif ref.name not in secrets:
            found = await client.get(SECRETS, namespace, ref.name)
            if found is not None:
                secrets[ref.name] = _secret_data(found)
    return config_maps, secrets


def _secret_data(secret: KubeObject) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for key, value in _dict(secret.get("data")).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            data[str(key)] = b"\xff"  # the API server only stores base64: never seen
    return data


async def _publish(
    client: KubeClient, namespace: str, policy: str, uid: str, config: SidecarConfig
) -> bool:
    """Write the generated objects; whether any content changed."""
    wanted: list[tuple[Resource, str, dict[str, object]]] = [
        (CONFIG_MAPS, CONFIG_MAP_NAME, {"data": dict(config.config)}),
        (CONFIG_MAPS, ENV_CONFIG_MAP_NAME, {"data": dict(config.env)}),
    ]
    if config.headers is not None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in config.headers.items()}
        wanted.append((SECRETS, HEADERS_SECRET_NAME, {"type": "Opaque", "data": encoded}))
    changed = False
    for resource, object_name, content in wanted:
        current = await client.get(resource, namespace, object_name)
        digest = config.hashes[object_name]
        if current is None or _annotations(current).get(CONTENT_HASH_ANNOTATION) != digest:
            changed = True
        body: dict[str, object] = {
            "metadata": {
                "name": object_name,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, POLICY_LABEL: policy},
                "annotations": {CONTENT_HASH_ANNOTATION: digest},
                "ownerReferences": [
                    {
                        "apiVersion": POLICIES.api_version,
                        "kind": POLICIES.kind,
                        "name": policy,
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            **content,
        }
        # Always applied: an unchanged object is not written, a hand-edited one is put back.
        await client.apply(resource, namespace, body)
    if config.headers is None:
        stale = await client.get(SECRETS, namespace, HEADERS_SECRET_NAME)
        if stale is not None and _labels(stale).get(MANAGED_BY_LABEL) == MANAGED_BY:
            await client.delete(SECRETS, namespace, HEADERS_SECRET_NAME)
            changed = True
    return changed


async def _write_status(
    client: KubeClient,
    namespace: str,
    name: str,
    current: Mapping[str, object],
    generation: int | None,
    ready: bool,
    reason: str,
    message: str,
    *,
    changed: bool,
) -> None:
    """Patch the status when it says something new (an unchanged resync writes nothing)."""
    now = _now()
    flag = "True" if ready else "False"
    conditions = [c for c in _list(current.get("conditions")) if isinstance(c, dict)]
    previous = next((c for c in conditions if c.get("type") == "Ready"), None)
    condition: dict[str, object] = {
        "type": "Ready",
        "status": flag,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": (
            previous.get("lastTransitionTime", now)
            if previous is not None and previous.get("status") == flag
            else now
        ),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != "Ready"]
    status: dict[str, object] = {"conditions": [*others, condition]}
    if generation is not None:
        status["observedGeneration"] = generation
    if ready:
        status["configMapName"] = CONFIG_MAP_NAME
    unchanged = all(current.get(key) == value for key, value in status.items())
    if ready and (changed or not unchanged or "lastSyncTime" not in current):
        status["lastSyncTime"] = now
    elif unchanged:
        return
    await client.patch_status(POLICIES, namespace, name, status)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dict(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _annotations(obj: KubeObject) -> dict[str, object]:
    return _dict(_dict(obj.get("metadata")).get("annotations"))


def _labels(obj: KubeObject) -> dict[str, object]:
    return _dict(_dict(obj.get("metadata")).get("labels"))
