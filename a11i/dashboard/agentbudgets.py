"""Top-up through the AgentBudget: raise ``spec.limit`` of the one that owns a namespace's wallet.

With the operator running, an AgentBudget's ``spec.limit`` is the source of truth for its
namespace's wallet: the operator writes it into Redis on every change of the spec. A top-up
of namespace N therefore finds the AgentBudget that owns N's wallet, by the operator's own rule
(``budgets.wide_ref`` and ``status.owner_of``: the oldest namespace-wide one), and patches its
``spec.limit`` to the old limit plus the amount, conditionally on the ``resourceVersion`` it
read (a concurrent writer makes the server answer 409; the top-up then reads again and retries).
The caller then writes the same absolute limit into the wallet (``budgets.Wallets.apply``, what
the operator does), so nothing is counted twice when the operator applies the new spec.

What it may not do: write anything but ``spec.limit`` of that one AgentBudget, or touch Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from a11i.dashboard.kube_auth import KubernetesUnavailable
from a11i.dashboard.source import DashboardError
from a11i.operator.budgets import wide_ref
from a11i.operator.kube import AGENT_BUDGETS, KubeClient, KubeError, KubeObject
from a11i.operator.status import (
    MAX_LIMIT_USD,
    BudgetSpec,
    InvalidBudget,
    money,
    owner_of,
    parse_spec,
)

log = logging.getLogger(__name__)

#: The finest amount an AgentBudget's limit holds (the CRD allows 6 decimals).
MICRO: Final = Decimal("0.000001")
#: Reads and conditional writes before a top-up gives up on an AgentBudget that keeps changing.
MAX_ATTEMPTS: Final = 5


class TopUpRefused(DashboardError):
    """The top-up cannot be made through the AgentBudget as asked (the message says why)."""

    status = 400


class BudgetConflict(DashboardError):
    """The AgentBudget is invalid, or kept changing between reading and writing it."""

    status = 409


class BudgetWriteFailed(DashboardError):
    """The API server refused the dashboard's read or write (RBAC, validation)."""

    status = 502


@dataclass(frozen=True, slots=True)
class BudgetTopUp:
    """A top-up that went through an AgentBudget."""

    #: The AgentBudget's name (it lives in the topped-up namespace).
    name: str
    old_limit: Decimal
    new_limit: Decimal
    #: The spec as the server stored it after the patch: what the wallet is configured with.
    spec: BudgetSpec
    #: Conditional writes it took (more than one: another writer got in between).
    attempts: int


def raised_limit(old: Decimal, amount: Decimal) -> Decimal:
    """``old + amount``, or ``TopUpRefused`` when the result cannot be an AgentBudget's limit:
    more than 6 decimals, or at or above the largest limit a shared wallet holds."""
    if not amount.is_finite() or amount <= 0:
        raise TopUpRefused("a top-up must be a positive amount of USD")
    new = old + amount
    if new != new.quantize(MICRO):
        raise TopUpRefused(
            "an AgentBudget's limit has at most 6 decimals: top up by a whole number of "
            f"micro-dollars, not {amount}"
        )
    if new >= MAX_LIMIT_USD:
        raise TopUpRefused(
            f"the new limit ${money(new)} would reach the largest a shared wallet holds "
            f"(${money(MAX_LIMIT_USD)})"
        )
    return new


def owner(items: list[KubeObject]) -> KubeObject | None:
    """The AgentBudget that owns the namespace's wallet among ``items``, by the operator's rule."""
    by_uid: dict[str, KubeObject] = {}
    refs = []
    for item in items:
        ref = wide_ref(item)
        if ref is not None:
            refs.append(ref)
            by_uid[ref.uid] = item
    chosen = owner_of(refs)
    return None if chosen is None else by_uid[chosen.uid]


class AgentBudgets:
    """Top-ups through AgentBudgets, with the dashboard's own Kubernetes client."""

    def __init__(self, client: KubeClient, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.client = client
        self.max_attempts = max_attempts

    async def close(self) -> None:
        await self.client.close()

    async def top_up(self, namespace: str, amount: Decimal) -> BudgetTopUp | None:
        """Raise the limit of the AgentBudget owning ``namespace``'s wallet by ``amount``;
        None when the namespace has no namespace-wide AgentBudget."""
        for attempt in range(1, self.max_attempts + 1):
            found = owner(await self._list(namespace))
            if found is None:
                return None
            name, version, spec = _parts(found)
            try:
                old = parse_spec(spec)
            except InvalidBudget as exc:
                raise BudgetConflict(
                    f"AgentBudget {namespace}/{name} cannot be applied ({exc.message}): fix it "
                    "before topping up"
                ) from exc
            limit = old.policy.limit_usd
            if limit is None:  # pragma: no cover - parse_spec requires a limit
                raise BudgetConflict(f"AgentBudget {namespace}/{name} has no limit")
            new = raised_limit(limit, amount)
            patch = {"metadata": {"resourceVersion": version}, "spec": {"limit": money(new)}}
            try:
                patched = await self.client.patch(AGENT_BUDGETS, namespace, name, patch)
            except KubeError as exc:
                if exc.status in (404, 409):
                    # Changed (or deleted) since it was read: read again, decide again.
                    log.info(
                        "dashboard: AgentBudget %s/%s changed while topping up (%s); retrying",
                        namespace,
                        name,
                        exc.reason or exc.status,
                    )
                    continue
                raise _failed(exc, namespace) from exc
            _, _, stored = _parts(patched)
            return BudgetTopUp(name, limit, new, parse_spec(stored), attempt)
        raise BudgetConflict(
            f"the AgentBudget of namespace {namespace} changed {self.max_attempts} times while "
            "it was being topped up; nothing was changed, try again"
        )

    async def _list(self, namespace: str) -> list[KubeObject]:
        try:
            return await self.client.list(AGENT_BUDGETS, namespace)
        except KubeError as exc:
            raise _failed(exc, namespace) from exc


def _parts(item: KubeObject) -> tuple[str, str, dict[str, object]]:
    meta, spec = item.get("metadata"), item.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise BudgetWriteFailed("the API server answered an AgentBudget without metadata or spec")
    name, version = meta.get("name"), meta.get("resourceVersion")
    if not isinstance(name, str) or not isinstance(version, str):
        raise BudgetWriteFailed("the API server answered an AgentBudget without name or version")
    return name, version, spec


def _failed(exc: KubeError, namespace: str) -> DashboardError:
    if exc.temporary:
        return KubernetesUnavailable(
            f"the Kubernetes API server does not answer, so the AgentBudget of {namespace} "
            f"was not topped up (nothing changed): {exc}"
        )
    if exc.status in (401, 403):
        return BudgetWriteFailed(
            f"the dashboard's own credentials may not read or patch the AgentBudgets of "
            f"{namespace} (give its ServiceAccount the chart's ClusterRole): {exc}"
        )
    return BudgetWriteFailed(f"the API server refused the top-up of {namespace}: {exc}")
