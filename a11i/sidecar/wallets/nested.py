"""An agent's own wallet inside its namespace's (``A11I_AGENT_BUDGET_USD``): a call must fit both.

Composes two backends of any kind; it stores nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from a11i.core.policy import Decision, Verdict, WalletState
from a11i.core.wallets import Reservation, WalletSnapshot
from a11i.sidecar.wallets.base import Wallet, event_wallet

_SEVERITY = {Decision.ALLOW: 0, Decision.WARN: 1, Decision.OPTIMIZE: 2, Decision.BLOCK: 3}
_STATE_SEVERITY = {
    WalletState.GREEN: 0,
    WalletState.YELLOW: 1,
    WalletState.RED: 2,
    WalletState.EXHAUSTED: 3,
    WalletState.SUSPENDED: 4,
}


class NestedWallet:
    """An agent's own wallet inside its namespace's: a call must fit both, and is charged to
    both. The agent's is reserved first; if the namespace then refuses, the agent's
    reservation is released at once. The stricter decision of the two is the call's."""

    def __init__(self, namespace_wallet: Wallet, agent_wallet: Wallet) -> None:
        self.namespace_wallet = namespace_wallet
        self.agent_wallet = agent_wallet
        self._agent_reservations: dict[str, Reservation] = {}

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        agent_verdict, agent_reservation = await self.agent_wallet.reserve(projected)
        if agent_reservation is None:
            return agent_verdict, None
        verdict, reservation = await self.namespace_wallet.reserve(projected)
        if reservation is None:
            await self.agent_wallet.settle(agent_reservation, Decimal(0))
            return verdict, None
        self._agent_reservations[reservation.id] = agent_reservation
        return _stricter(verdict, agent_verdict), reservation

    @property
    def carries_events(self) -> bool:
        """The namespace's wallet writes the calls' events (the agent's own does not)."""
        return event_wallet(self.namespace_wallet) is not None

    async def settle(
        self, reservation: Reservation, actual: Decimal, event: Mapping[str, str] | None = None
    ) -> None:
        agent_reservation = self._agent_reservations.pop(reservation.id, None)
        if event is None:
            await self.namespace_wallet.settle(reservation, actual)
        else:
            carrier = event_wallet(self.namespace_wallet)
            if carrier is None:
                raise ValueError("the namespace's wallet does not carry events")
            await carrier.settle(reservation, actual, event)
        if agent_reservation is not None:
            await self.agent_wallet.settle(agent_reservation, actual)

    async def snapshot(self) -> WalletSnapshot:
        return await self.namespace_wallet.snapshot()

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        """The namespace's wallet, with what is left of the tighter of the two."""
        outer = self.namespace_wallet.last_snapshot
        inner = self.agent_wallet.last_snapshot
        if outer is None or inner is None or inner.remaining_usd is None:
            return outer
        if outer.remaining_usd is not None and outer.remaining_usd <= inner.remaining_usd:
            return outer
        return inner

    @property
    def last_remaining_usd(self) -> Decimal | None:
        """``last_snapshot.remaining_usd``: the tighter of the two wallets' remainders."""
        inner = self.agent_wallet.last_remaining_usd
        outer = self.namespace_wallet.last_remaining_usd
        if inner is None or (outer is not None and outer <= inner):
            return outer
        # The agent's is tighter, or the namespace has no limit: the agent's, once the
        # namespace's wallet has been used at all (last_snapshot is None until then).
        return None if self.namespace_wallet.last_snapshot is None else inner

    def store(self) -> dict[str, str | int | bool]:
        """The namespace's store (the agent's own wallet lives in the same kind of store)."""
        return self.namespace_wallet.store()

    async def start(self) -> None:
        await self.namespace_wallet.start()
        await self.agent_wallet.start()

    async def close(self) -> None:
        await self.agent_wallet.close()
        await self.namespace_wallet.close()


def _stricter(first: Verdict, second: Verdict) -> Verdict:
    if _SEVERITY[second.decision] > _SEVERITY[first.decision]:
        return second
    if _SEVERITY[second.decision] == _SEVERITY[first.decision] and (
        _STATE_SEVERITY[second.state] > _STATE_SEVERITY[first.state]
    ):
        return second
    return first
