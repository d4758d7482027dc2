"""Wallets as the proxy sees them: the interface every backend serves.

Adapter over the pure rules of ``a11i.core.wallets``: a backend owns the clock and the storage,
applies those rules atomically and reports a ``WalletSnapshot``. No backend lives here:
``memory`` keeps one wallet in this process (a library user, a test), ``sqlite`` persists it to
a local file (the embedded default), ``redis`` shares it between sidecars, ``nested`` puts an
agent's wallet inside its namespace's.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol, runtime_checkable

from a11i.core.policy import Verdict
from a11i.core.wallets import Reservation, WalletSnapshot


class Wallet(Protocol):
    """What the proxy needs of a wallet backend."""

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        """Decide a call and hold ``projected`` USD for it; no reservation when it is refused
        (verdict BLOCK; state SUSPENDED for the emergency stop)."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Charge what the call cost and release its reservation."""
        ...

    async def snapshot(self) -> WalletSnapshot: ...

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        """The wallet as this process last read or wrote it (no I/O); None before any call."""
        ...

    @property
    def last_remaining_usd(self) -> Decimal | None:
        """``last_snapshot.remaining_usd`` (None before any call, and without a limit) without
        the rest of the snapshot: the remaining-budget header of every call."""
        ...

    def store(self) -> dict[str, str | int | bool]:
        """Where the wallet lives and how that store is doing, for ``/a11i/budget`` (no I/O):
        ``kind`` (memory, sqlite, redis) and what else an operator needs of that kind."""
        ...

    async def start(self) -> None:
        """Connect and configure; called once before the first call."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...


@runtime_checkable
class EventWallet(Wallet, Protocol):
    """A wallet whose store also holds the event stream (Redis): ``settle`` appends the call's
    event with the settlement, atomically and once, in one round trip instead of two."""

    @property
    def carries_events(self) -> bool:
        """Whether ``settle`` takes the call's event (else the event sink writes it)."""
        ...

    async def settle(
        self, reservation: Reservation, actual: Decimal, event: Mapping[str, str] | None = None
    ) -> None: ...


def event_wallet(wallet: Wallet) -> EventWallet | None:
    """``wallet`` when its settlements carry the calls' events, else None."""
    if isinstance(wallet, EventWallet) and wallet.carries_events:
        return wallet
    return None
