"""The AgentBudget handlers: spec into the namespace's wallet in Redis, spend back into status.

Adapter: kopf calls these handlers, Redis is reached through
``a11i.sidecar.wallets.redis.RedisWallet`` (the same Lua scripts every sidecar runs) and the
event stream (``a11i:events``, or the namespace's own ``a11i:{<ns>}:events`` in a Redis
Cluster); every decision is made by the pure functions of ``a11i.operator.status``.
The Kubernetes API is reached only through kopf: the handlers fill kopf's ``patch`` and post
Events with ``kopf.event``.

- create / update of the spec / resume: the namespace's wallet gets the limit, period and
  thresholds (``RedisWallet.configure``); on create and on a change of ``spec.suspend`` also the
  emergency stop (``RedisWallet.suspend``). Otherwise the stop is left as it is: the dashboard
  may hold it.
- a timer every ``A11I_OPERATOR_STATUS_INTERVAL``: reads the wallet and the spend per agent since
  the period started, patches the status, posts an Event when the phase changes or a new period
  starts. The previous phase is the one in the status, so a restarted operator repeats nothing.
- delete: when the last namespace-wide AgentBudget of a namespace goes, its wallet's keys go
  too; while another remains, that one takes the wallet over (its spend included).

A wallet Redis lost (restarted without its data) is never recreated here once the status says
it existed (``periodStart``): from the spec it would start again from nothing spent, while the
sidecars that last saw it recreate it with its spend (polling every 0.5 s). Until one has, the
status says ``WalletUnavailable`` and spec changes wait (retried).

One namespace-wide AgentBudget (no agentSelector) owns a namespace's wallet: the oldest. Any
other one is reported ``Ready=False`` ``Conflict`` and left alone (no retries). A budget with an
agentSelector is applied by the sidecars of the selected pods; the operator only says so.

What it may not do: charge or refund a wallet (only sidecars spend), or raise anything from a
Redis failure but ``kopf.TemporaryError`` (kopf retries; the operator never crashes for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import kopf

from a11i.core.errors import WalletUnavailable
from a11i.core.wallets import WalletSnapshot
from a11i.operator.settings import OperatorSettings
from a11i.operator.status import (
    BudgetRef,
    BudgetSpec,
    InvalidBudget,
    Notice,
    Reason,
    budget_status,
    condition,
    is_applied,
    money,
    owner_of,
    parse_spec,
    phase_notice,
    reset_notice,
    stream_id,
    tally,
    top_agents,
)
from a11i.sidecar.redis_clients import is_cluster
from a11i.sidecar.telemetry.events import stream_key
from a11i.sidecar.wallets.redis import UNREACHABLE, RedisWallet, WalletKeys

if TYPE_CHECKING:
    from a11i.sidecar.redis_clients import AnyRedis

log = logging.getLogger(__name__)

RESOURCE = ("a11i.io", "v1alpha1", "agentbudgets")
#: The index of namespace-wide AgentBudgets by namespace (a kwarg of the handlers).
INDEX = "a11i_wide_budgets"
#: Who the operator's wallet handle says it is (it never spends).
AGENT = "a11i-operator"
#: Events read from the stream per round trip, and round trips per status update at most: a
#: backlog larger than that is caught up over the next updates.
STREAM_BATCH = 1000
STREAM_ROUNDS = 20

_UNREACHABLE = UNREACHABLE

WideBudgets = kopf.Index[str, BudgetRef]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Tally:
    """Spend per agent of one namespace since ``first`` (a stream id), read up to ``last``."""

    first: str
    last: str | None = None
    totals: dict[str, Decimal] = field(default_factory=dict)


class Wallets:
    """The namespaces' wallets in Redis, as the operator sees them."""

    def __init__(self, client: AnyRedis, timeout_s: float) -> None:
        self._client = client
        self._timeout = timeout_s
        self._tallies: dict[str, _Tally] = {}

    def _wallet(self, namespace: str, spec: BudgetSpec) -> RedisWallet:
        return RedisWallet(
            self._client,
            namespace=namespace,
            agent=AGENT,
            policy=spec.policy,
            period=spec.period,
            timeout_s=self._timeout,
            zone=spec.zone,
        )

    async def apply(
        self, namespace: str, spec: BudgetSpec, *, suspend: bool, create: bool = True
    ) -> None:
        """Limit, period and thresholds into the wallet (created if absent, and ``create``);
        the stop too when ``suspend``. ``WalletUnavailable`` without Redis or the wallet."""
        if not create:
            await self._require(namespace)
        wallet = self._wallet(namespace, spec)
        await wallet.configure(spec.policy, spec.period)
        if suspend:
            await wallet.suspend(spec.suspend)

    async def snapshot(self, namespace: str, spec: BudgetSpec) -> WalletSnapshot:
        """The wallet as Redis holds it now (its period advanced, expired leases dropped);
        ``WalletUnavailable`` when Redis does not hold it."""
        # Read through a fresh handle, a lost wallet would be recreated from the spec with
        # nothing spent, before the sidecars restore the spend they saw.
        await self._require(namespace)
        wallet = self._wallet(namespace, spec)
        # start() runs the same scripts a sidecar's start does and never fails for want of
        # Redis; whether it got an answer is in ``connected``.
        await wallet.start()
        try:
            snapshot = wallet.last_snapshot
            if not wallet.connected or snapshot is None:
                raise WalletUnavailable(f"the shared wallet of {namespace} cannot be read (Redis)")
            return snapshot
        finally:
            await wallet.close()

    async def spend_by_agent(self, namespace: str, since: datetime) -> dict[str, Decimal]:
        """What each agent of the namespace spent since ``since``, from the event stream; read
        on from where the last call stopped, so each event is read once per period. In a Redis
        Cluster the namespace's stream holds its events alone; one Redis server's is shared."""
        stream = stream_key(namespace, cluster=is_cluster(self._client))
        first = stream_id(since)
        current = self._tallies.get(namespace)
        if current is None or current.first != first:
            current = self._tallies[namespace] = _Tally(first)
        for _ in range(STREAM_ROUNDS):
            cursor = current.first if current.last is None else f"({current.last}"
            entries = await self._call(
                self._client.xrange(stream, min=cursor, max="+", count=STREAM_BATCH)
            )
            if not entries:
                break
            current.totals = tally(current.totals, (fields for _, fields in entries), namespace)
            current.last = str(entries[-1][0])
            if len(entries) < STREAM_BATCH:
                break
        return current.totals

    async def release(self, namespace: str) -> None:
        """Remove the namespace's wallet from Redis: the hash, its leases, settled ids and line
        (and the lease hash of earlier releases)."""
        keys = WalletKeys.of(namespace, cluster=is_cluster(self._client))
        legacy = f"a11i:wallet:{namespace}:leases"
        for name in (keys.wallet, keys.held, keys.settled, keys.line, legacy):
            await self._call(self._client.delete(name))
        self._tallies.pop(namespace, None)

    async def _require(self, namespace: str) -> None:
        key = WalletKeys.of(namespace, cluster=is_cluster(self._client)).wallet
        if not await self._call(self._client.exists(key)):
            raise WalletUnavailable(
                f"the wallet of {namespace} is not in Redis (restarted without its data?); the "
                "sidecars that last saw it recreate it with its spend at their next call or poll"
            )

    async def _call(self, call: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except _UNREACHABLE as exc:
            raise WalletUnavailable(f"Redis cannot be reached: {exc!r}") from exc


class Budgets:
    """The AgentBudget handlers, sharing one Redis client."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._client: AnyRedis | None = None
        self._wallets: Wallets | None = None

    @property
    def wallets(self) -> Wallets:
        if self._wallets is None:
            # Created in the operator's loop, on first use: redis-py binds to the running loop.
            self._client = self.settings.redis.connect(
                decode_responses=True,
                socket_timeout_s=self.settings.redis_timeout_s,
                connect_timeout_s=self.settings.redis_timeout_s,
            )
            self._wallets = Wallets(self._client, self.settings.redis_timeout_s)
        return self._wallets

    async def cleanup(self, **_: Any) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = self._wallets = None

    # --- handlers ------------------------------------------------------------------------------

    def index(self, *, namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, BudgetRef]:
        """Namespace-wide AgentBudgets that are not being deleted, by namespace."""
        ref = wide_ref(body)
        return {} if namespace is None or ref is None else {namespace: ref}

    async def changed(
        self,
        *,
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        namespace: str | None,
        uid: str,
        patch: kopf.Patch,
        reason: str,
        diff: kopf.Diff,
        **kwargs: Any,
    ) -> None:
        """Create, spec update, resume: apply the spec to the wallet and say so in Ready."""
        wide: WideBudgets = kwargs[INDEX]
        suspend = reason == kopf.Reason.CREATE or _touches_suspend(diff)
        await self._reconcile(
            body, spec, meta, status, namespace, uid, patch, wide, suspend=suspend, notify=True
        )

    async def sync(
        self,
        *,
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        namespace: str | None,
        uid: str | None,
        patch: kopf.Patch,
        **kwargs: Any,
    ) -> None:
        """The timer: the wallet into the status, an Event for a new phase or period."""
        if meta.get("deletionTimestamp"):
            return  # the delete handler releases the wallet; reading it would recreate it
        wide: WideBudgets = kwargs[INDEX]
        owned = await self._reconcile(
            body, spec, meta, status, namespace, uid, patch, wide, suspend=None, notify=False
        )
        if owned is None or namespace is None:
            return
        generation = int(meta.get("generation") or 0)
        previous = list(status.get("conditions") or ())
        try:
            snapshot = await self.wallets.snapshot(namespace, owned)
            totals = await self.wallets.spend_by_agent(namespace, snapshot.period_start)
        except WalletUnavailable as exc:
            raise self._unavailable(patch, exc, generation, previous) from exc
        now = utcnow()
        ready = condition(
            "Ready", True, Reason.CONFIGURED, _configured(owned), generation, now, previous
        )
        patch.status.update(
            budget_status(
                snapshot, top_agents(totals), now=now, generation=generation, conditions=[ready]
            )
        )
        notices = [
            reset_notice(status.get("periodStart"), snapshot),
            phase_notice(status.get("phase"), snapshot),
        ]
        for notice in notices:
            if notice is not None:
                _post(body, notice)

    async def deleted(
        self, *, spec: kopf.Spec, namespace: str | None, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        """The last namespace-wide AgentBudget of a namespace releases its wallet."""
        wide: WideBudgets = kwargs[INDEX]
        if namespace is None or spec.get("agentSelector") is not None:
            return
        successor = owner_of(wide.get(namespace, ()))
        if successor is not None:
            logger.info("the wallet of %s passes to AgentBudget %s", namespace, successor.name)
            return
        try:
            await self.wallets.release(namespace)
        except WalletUnavailable as exc:
            raise kopf.TemporaryError(
                f"{exc}; the wallet is released when Redis answers", delay=self._delay
            ) from exc
        logger.info("the wallet of %s is released", namespace)

    # --- internals -----------------------------------------------------------------------------

    @property
    def _delay(self) -> float:
        return max(self.settings.status_interval_s, 1.0)

    async def _reconcile(
        self,
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        namespace: str | None,
        uid: str | None,
        patch: kopf.Patch,
        wide: WideBudgets,
        *,
        suspend: bool | None,
        notify: bool,
    ) -> BudgetSpec | None:
        """Parse, decide ownership, apply the spec when needed; the parsed spec when this
        AgentBudget owns its namespace's wallet, else None (its condition says why).

        ``suspend``: whether to apply ``spec.suspend`` too; None: only when taking the wallet
        over. ``notify``: post Events for a refused spec (once per change, not per timer)."""
        generation = int(meta.get("generation") or 0)
        previous = list(status.get("conditions") or ())
        now = utcnow()

        def ready(ok: bool, reason: str, message: str) -> None:
            patch.status["conditions"] = [
                condition("Ready", ok, reason, message, generation, now, previous)
            ]
            patch.status["observedGeneration"] = generation
            patch.status["lastSyncTime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")

        try:
            parsed = parse_spec(spec)
        except InvalidBudget as exc:
            ready(False, exc.reason, exc.message)
            if notify:
                _post(body, Notice("Warning", exc.reason, exc.message))
                raise kopf.PermanentError(exc.message) from exc
            return None
        if namespace is None:
            raise kopf.PermanentError("an AgentBudget must be namespaced")
        if parsed.selective:
            ready(True, Reason.PER_AGENT, _per_agent(parsed))
            return None
        owner = owner_of(wide.get(namespace, ()))
        if owner is not None and owner.uid != uid:
            message = (
                f"the wallet of namespace {namespace} belongs to AgentBudget {owner.name!r}, "
                "the oldest namespace-wide one; this one is ignored until that one is deleted "
                "(or give this one an agentSelector)"
            )
            ready(False, Reason.CONFLICT, message)
            if notify:
                _post(body, Notice("Warning", Reason.CONFLICT, message))
            return None
        if suspend is None:
            if is_applied(status, generation):
                return parsed
            # Not yet in the wallet for this generation (a takeover, Redis back, a failed
            # change handler): apply now; the stop too unless this budget configured it before.
            suspend = not any(
                item.get("type") == "Ready" and item.get("reason") == Reason.CONFIGURED
                for item in previous
            )
        try:
            # Once the status shows the wallet was read, a missing one is Redis's loss: left to
            # the sidecars (module docstring).
            await self.wallets.apply(
                namespace, parsed, suspend=suspend, create=not status.get("periodStart")
            )
        except WalletUnavailable as exc:
            raise self._unavailable(patch, exc, generation, previous) from exc
        ready(True, Reason.CONFIGURED, _configured(parsed))
        return parsed

    def _unavailable(
        self,
        patch: kopf.Patch,
        exc: WalletUnavailable,
        generation: int,
        previous: list[Any],
    ) -> kopf.TemporaryError:
        message = f"{exc}; retrying every {self._delay:g}s (the sidecars decide on their own)"
        patch.status["conditions"] = [
            condition(
                "Ready", False, Reason.WALLET_UNAVAILABLE, message, generation, utcnow(), previous
            )
        ]
        return kopf.TemporaryError(message, delay=self._delay)


def wide_ref(body: Mapping[str, Any]) -> BudgetRef | None:
    """An AgentBudget (as the API returns it) that may own its namespace's wallet: one without
    an agentSelector and not being deleted. ``owner_of`` picks the owner among them. Also used
    by the dashboard's top-up, so that both agree on which AgentBudget owns a wallet."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    if meta.get("deletionTimestamp") or spec.get("agentSelector") is not None:
        return None
    name, uid = meta.get("name"), meta.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str):
        return None
    return BudgetRef(str(meta.get("creationTimestamp", "")), name, uid)


def _configured(spec: BudgetSpec) -> str:
    policy = spec.policy
    limit = money(policy.limit_usd) if policy.limit_usd is not None else "none"
    return (
        f"the wallet holds limit ${limit} per {spec.period.value} period ({spec.zone}), warn at "
        f"{policy.warn_at_percent}%, optimize at {policy.optimize_at_percent}%, "
        f"{policy.when_exhausted.value} when exhausted"
    )


def _per_agent(spec: BudgetSpec) -> str:
    cap = "" if spec.per_agent_limit is None else f" (perAgentLimit ${money(spec.per_agent_limit)})"
    return (
        f"accepted: the limits of this budget{cap} are applied by the a11i sidecars of the pods "
        "agentSelector selects, each in a wallet of its own; the operator does not track that "
        "spend here and leaves the namespace's wallet to its namespace-wide AgentBudget"
    )


def _touches_suspend(diff: kopf.Diff) -> bool:
    # With field="spec" the paths are relative to the spec; a whole-spec change has ().
    return any(
        tuple(item[1])[-1:] == ("suspend",) or tuple(item[1]) in ((), ("spec",)) for item in diff
    )


def _post(body: kopf.Body, notice: Notice) -> None:
    kopf.event(body, type=notice.type, reason=notice.reason, message=notice.message)


def register(settings: OperatorSettings, registry: kopf.OperatorRegistry) -> Budgets:
    """The AgentBudget handlers in ``registry``."""
    budgets = Budgets(settings)
    group, version, plural = RESOURCE
    kopf.index(group, version, plural, id=INDEX, registry=registry)(budgets.index)
    kopf.on.create(group, version, plural, id="wallet-create", registry=registry)(budgets.changed)
    kopf.on.update(group, version, plural, id="wallet-update", field="spec", registry=registry)(
        budgets.changed
    )
    kopf.on.resume(group, version, plural, id="wallet-resume", registry=registry)(budgets.changed)
    kopf.on.delete(group, version, plural, id="wallet-release", registry=registry)(budgets.deleted)
    kopf.timer(
        group,
        version,
        plural,
        id="status",
        interval=settings.status_interval_s,
        registry=registry,
    )(budgets.sync)
    kopf.on.cleanup(id="a11i-budgets-cleanup", registry=registry)(budgets.cleanup)
    return budgets
