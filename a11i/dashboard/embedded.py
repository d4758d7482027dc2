"""The dashboard's source on a laptop: the sidecar's in-process event ring and embedded wallets.

Adapter, for ``a11i up`` (the sidecar and the dashboard in one process, no Redis): events come
from the sidecar's ``EventRing`` (ids are whole numbers; a blocking read waits on the ring);
wallets come from the SQLite file every sidecar on the machine shares (``A11I_WALLET_FILE``), so
wallets of other ``a11i sidecar`` processes using the same file show and can be stopped too, or,
with ``A11I_WALLET_FILE=:memory:``, from this process's own wallets. Actions use the same code
as ``a11i wallet`` and are recorded in the ring.

What it may not do: block the event loop (SQLite work runs in a thread), or create a wallet:
stopping or topping up a namespace that has none is an ``UnknownWallet``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final, TypeVar

from a11i.core.errors import WalletUnavailable
from a11i.core.policy import state_of
from a11i.core.wallets import WalletBook, to_usd
from a11i.dashboard.source import (
    RawEvent,
    SourceUnavailable,
    UnknownWallet,
    Wallets,
)
from a11i.dashboard.state import WalletView, id_key
from a11i.sidecar.telemetry.events import EventRing
from a11i.sidecar.wallets.base import Wallet
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.nested import NestedWallet
from a11i.sidecar.wallets.sqlite import administer, read_books, set_cluster_stop

_T = TypeVar("_T")

#: Where the page and the actions say the data comes from.
MODE: Final = "embedded"


def wallet_from_book(namespace: str, book: WalletBook, cluster_stop: bool) -> WalletView:
    """A stored wallet as the page shows it (pure): its own stop in ``suspended``, the
    cluster's folded into the phase."""
    policy = book.policy
    effective = replace(policy, suspended=True) if cluster_stop else policy
    committed = to_usd(book.committed)
    return WalletView(
        namespace=namespace,
        limit_usd=policy.limit_usd,
        spent_usd=to_usd(book.spent),
        reserved_usd=to_usd(book.reserved),
        period=book.period.value,
        period_start=book.period_start,
        phase=state_of(effective, committed),
        suspended=policy.suspended,
    )


def in_process_wallets(wallet: Wallet) -> dict[str, MemoryWallet]:
    """The memory wallets behind a sidecar's wallet, by name (``namespace`` and, for an agent's
    own budget, ``namespace/agent``); empty for file and Redis backends."""
    if isinstance(wallet, NestedWallet):
        found = in_process_wallets(wallet.namespace_wallet)
        found.update(in_process_wallets(wallet.agent_wallet))
        return found
    if isinstance(wallet, MemoryWallet):
        return {wallet.namespace: wallet}
    return {}


@dataclass(frozen=True, slots=True)
class _Stop:
    """The cluster-wide stop of memory wallets: which ones it suspended (so a resume leaves a
    namespace stopped on its own stopped)."""

    suspended: frozenset[str]


class EmbeddedSource:
    """Events from an in-process ring; wallets from the SQLite file or from memory."""

    mode = MODE

    def __init__(
        self,
        ring: EventRing,
        *,
        wallet_file: Path | None,
        memory_wallets: Mapping[str, MemoryWallet] | None = None,
        clock: Callable[[], float] = lambda: datetime.now(UTC).timestamp(),
    ) -> None:
        self._ring = ring
        self._file = wallet_file
        self._memory = dict(memory_wallets or {})
        self._clock = clock
        self._stop: _Stop | None = None

    async def close(self) -> None:
        """Nothing to release: the ring and the wallets belong to the sidecar."""

    # -- events ------------------------------------------------------------------------------

    async def history(self, count: int) -> list[RawEvent]:
        return _raw(self._ring.latest(count))

    async def read(self, after: str, block_ms: int, count: int) -> list[RawEvent]:
        last = _ring_id(after)
        if self._ring.last_id <= last:
            await self._ring.wait(last, block_ms / 1000)
        return _raw(self._ring.since(last, count))

    async def range_after(self, after: str, count: int) -> list[RawEvent]:
        return _raw(self._ring.since(_ring_id(after), count))

    async def record(self, event: Mapping[str, str]) -> str:
        return str(self._ring.add(event))

    # -- wallets -----------------------------------------------------------------------------

    async def wallets(self, now: float) -> Wallets:
        if self._file is not None:
            moment = datetime.fromtimestamp(now, tz=UTC)
            books, stopped = await self._blocking(read_books, self._file, moment)
            return Wallets([wallet_from_book(name, book, stopped) for name, book in books], stopped)
        views = []
        for name, wallet in sorted(self._memory.items()):
            await wallet.snapshot()  # advances the period, as a call would
            views.append(wallet_from_book(name, wallet.book, False))
        return Wallets(views, self._stop is not None)

    async def suspend(self, namespace: str, on: bool) -> None:
        if self._file is not None:
            await self._administer(namespace, suspend=on)
            return
        wallet = self._memory_wallet(namespace)
        await wallet.suspend(on)
        if self._stop is not None and not on:
            # Resumed by hand: the cluster's resume must not be needed for it any more.
            self._stop = _Stop(self._stop.suspended - {namespace})

    async def top_up(self, namespace: str, amount: Decimal) -> None:
        if self._file is not None:
            await self._administer(namespace, top_up=amount)
            return
        await self._memory_wallet(namespace).top_up(amount)

    async def cluster_stop(self, on: bool) -> None:
        if self._file is not None:
            await self._blocking(set_cluster_stop, self._file, on)
            return
        if on and self._stop is None:
            newly = frozenset(n for n, w in self._memory.items() if not w.policy.suspended)
            for name in newly:
                await self._memory[name].suspend(True)
            self._stop = _Stop(newly)
        elif not on and self._stop is not None:
            for name in self._stop.suspended:
                await self._memory[name].suspend(False)
            self._stop = None

    # -- internals ---------------------------------------------------------------------------

    def _memory_wallet(self, namespace: str) -> MemoryWallet:
        wallet = self._memory.get(namespace)
        if wallet is None:
            raise UnknownWallet(f"there is no wallet for namespace {namespace!r}")
        return wallet

    async def _administer(
        self, namespace: str, *, suspend: bool | None = None, top_up: Decimal | None = None
    ) -> None:
        assert self._file is not None
        try:
            await administer(self._file, namespace, suspend=suspend, top_up=top_up)
        except KeyError as exc:
            raise UnknownWallet(f"there is no wallet for namespace {namespace!r}") from exc
        except (sqlite3.Error, OSError, WalletUnavailable) as exc:
            raise SourceUnavailable(f"the wallet file {self._file} cannot be used: {exc}") from exc

    async def _blocking(self, function: Callable[..., _T], *args: object) -> _T:
        try:
            return await asyncio.to_thread(function, *args)
        except (sqlite3.Error, OSError) as exc:
            raise SourceUnavailable(f"the wallet file {self._file} cannot be read: {exc}") from exc


def _ring_id(event_id: str) -> int:
    """A ring id from the hub's cursor (``"0-0"`` before the first event; Redis-shaped ids
    never reach an embedded source), read as every other id is."""
    return max(id_key(event_id)[0], 0)


def _raw(entries: list[tuple[int, Mapping[str, str]]]) -> list[RawEvent]:
    return [(str(event_id), dict(event)) for event_id, event in entries]
