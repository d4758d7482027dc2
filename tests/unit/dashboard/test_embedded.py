"""The embedded source of the dashboard: the event ring, memory wallets and the SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from a11i.core.policy import BudgetPolicy, Period, WalletState
from a11i.core.wallets import new_book, to_nanos
from a11i.dashboard.embedded import (
    EmbeddedSource,
    in_process_wallets,
    wallet_from_book,
)
from a11i.dashboard.hub import Hub, HubSettings
from a11i.dashboard.source import UnknownWallet
from a11i.dashboard.state import action_event
from a11i.sidecar.telemetry.events import EventRing
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.nested import NestedWallet
from a11i.sidecar.wallets.sqlite import SQLiteWallet

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def call(agent: str = "bot", cost: str = "0.01") -> dict[str, str]:
    return {
        "kind": "call",
        "ts": f"{time.time():.3f}",
        "namespace": "laptop",
        "agent": agent,
        "model": "gpt-4o-mini",
        "decision": "allow",
        "state": "Green",
        "status": "200",
        "input_tokens": "10",
        "output_tokens": "5",
        "projected_usd": cost,
        "cost_usd": cost,
    }


# --- the ring -----------------------------------------------------------------------------------


def test_the_ring_reads_after_an_id_and_forgets_the_oldest() -> None:
    ring = EventRing(capacity=3)
    assert ring.last_id == 0
    assert ring.since(0) == []
    ids = [ring.add(call(agent=f"a{i}")) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert [i for i, _ in ring.since(0)] == [3, 4, 5]  # 1 and 2 were forgotten
    assert [i for i, _ in ring.since(3)] == [4, 5]
    assert [i for i, _ in ring.since(3, limit=1)] == [4]
    assert ring.since(5) == []
    assert ring.since(99) == []
    assert [i for i, _ in ring.latest(2)] == [4, 5]
    assert [e["agent"] for _, e in ring.latest(10)] == ["a2", "a3", "a4"]


async def test_a_reader_waits_for_the_next_event() -> None:
    ring = EventRing()
    ring.add(call())
    assert await ring.wait(0, 5.0) is True  # already there: no wait
    waiting = asyncio.create_task(ring.wait(1, 5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    ring.add(call())
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert await ring.wait(2, 0.01) is False  # nothing new: times out


# --- wallets ------------------------------------------------------------------------------------


def test_a_book_as_the_page_shows_it() -> None:
    policy = BudgetPolicy(limit_usd=Decimal("10"))
    book = new_book(policy, Period.DAILY, NOW)
    book = replace(book, spent=to_nanos(Decimal("8")))
    view = wallet_from_book("laptop", book, cluster_stop=False)
    assert view.spent_usd == Decimal("8")
    assert view.remaining_usd == Decimal("2")
    assert view.phase is WalletState.YELLOW
    assert view.period == "Daily"
    assert not view.suspended
    stopped = wallet_from_book("laptop", book, cluster_stop=True)
    assert stopped.phase is WalletState.SUSPENDED
    assert not stopped.suspended  # its own stop is off; the cluster's is shown apart


def test_the_memory_wallets_behind_a_sidecar() -> None:
    outer = MemoryWallet(BudgetPolicy(), namespace="laptop", agent="bot")
    own = MemoryWallet(BudgetPolicy(), namespace="laptop/bot", agent="bot")
    assert in_process_wallets(NestedWallet(outer, own)) == {"laptop": outer, "laptop/bot": own}
    assert in_process_wallets(outer) == {"laptop": outer}


async def test_memory_wallets_stop_resume_and_top_up() -> None:
    first = MemoryWallet(BudgetPolicy(limit_usd=Decimal("1")), namespace="a", agent="x")
    second = MemoryWallet(BudgetPolicy(limit_usd=Decimal("1")), namespace="b", agent="y")
    source = EmbeddedSource(EventRing(), wallet_file=None, memory_wallets={"a": first, "b": second})
    await source.top_up("a", Decimal("2.5"))
    assert first.policy.limit_usd == Decimal("3.5")
    with pytest.raises(UnknownWallet, match="'nope'"):
        await source.top_up("nope", Decimal(1))
    with pytest.raises(UnknownWallet):
        await source.suspend("nope", True)

    # b is stopped on its own; the cluster stop and resume leave it stopped.
    await source.suspend("b", True)
    await source.cluster_stop(True)
    wallets = await source.wallets(time.time())
    assert wallets.cluster_stop
    assert {w.namespace: w.phase for w in wallets.wallets} == {
        "a": WalletState.SUSPENDED,
        "b": WalletState.SUSPENDED,
    }
    await source.cluster_stop(False)
    wallets = await source.wallets(time.time())
    assert not wallets.cluster_stop
    assert {w.namespace: w.suspended for w in wallets.wallets} == {"a": False, "b": True}

    # A namespace resumed by hand during a cluster stop is not stopped again by its resume.
    await source.cluster_stop(True)
    await source.suspend("a", False)
    await source.cluster_stop(False)
    assert not first.policy.suspended


async def test_the_wallet_file_lists_every_wallet_and_acts_on_it(tmp_path: Path) -> None:
    path = tmp_path / "wallets.sqlite"
    wallets = [
        SQLiteWallet(path, BudgetPolicy(limit_usd=Decimal("5")), namespace=name, agent="bot")
        for name in ("laptop", "side-project")
    ]
    for wallet in wallets:
        await wallet.start()
    try:
        verdict, lease = await wallets[1].reserve(Decimal("1"))
        assert lease is not None
        await wallets[1].settle(lease, Decimal("0.75"))
        source = EmbeddedSource(EventRing(), wallet_file=path)
        listed = await source.wallets(time.time())
        assert [w.namespace for w in listed.wallets] == ["laptop", "side-project"]
        assert listed.wallets[1].spent_usd == Decimal("0.75")
        assert not listed.cluster_stop

        await source.suspend("side-project", True)
        verdict, lease = await wallets[1].reserve(Decimal("0.01"))
        assert lease is None
        assert verdict.state is WalletState.SUSPENDED
        await source.suspend("side-project", False)
        await source.top_up("laptop", Decimal("1.5"))
        listed = await source.wallets(time.time())
        assert listed.wallets[0].limit_usd == Decimal("6.5")

        await source.cluster_stop(True)
        verdict, lease = await wallets[0].reserve(Decimal("0.01"))
        assert lease is None
        assert (await source.wallets(time.time())).cluster_stop
        await source.cluster_stop(False)
        verdict, lease = await wallets[0].reserve(Decimal("0.01"))
        assert lease is not None

        with pytest.raises(UnknownWallet):
            await source.suspend("nobody", True)
    finally:
        for wallet in wallets:
            await wallet.close()


async def test_no_wallet_file_yet_is_an_empty_list(tmp_path: Path) -> None:
    source = EmbeddedSource(EventRing(), wallet_file=tmp_path / "missing.sqlite")
    listed = await source.wallets(time.time())
    assert listed.wallets == []
    assert not (tmp_path / "missing.sqlite").exists()


# --- the hub on the ring ------------------------------------------------------------------------


async def test_the_hub_follows_the_ring_and_records_actions() -> None:
    ring = EventRing()
    ring.add(call(agent="early"))
    wallet = MemoryWallet(BudgetPolicy(limit_usd=Decimal("1")), namespace="laptop", agent="bot")
    source = EmbeddedSource(ring, wallet_file=None, memory_wallets={"laptop": wallet})
    hub = Hub(source, settings=HubSettings(block_s=0.05, publish_s=0.02, wallet_poll_s=0.02))
    await hub.start()
    try:
        page, _replay, truncated = await hub.attach(None)
        assert not truncated
        for _ in range(100):
            if hub.state.recent():
                break
            await asyncio.sleep(0.01)
        assert [e.agent for e in hub.state.recent() if hasattr(e, "agent")] == ["early"]
        ring.add(call(agent="late"))
        # The page attached before the history was read: it gets it, then the new event.
        seen: list[str] = []
        last_id = None
        while "late" not in seen:
            outgoing = await asyncio.wait_for(page.queue.get(), 2.0)
            if outgoing.kind == "events":
                message = json.loads(outgoing.text)
                events = message["events"]
                assert isinstance(events, list)
                seen += [event["agent"] for event in events]
                last_id = message["last_id"]
        assert seen == ["early", "late"]
        assert last_id == "2"
        # An action recorded through the source lands in the same ring, after the calls.
        event_id = await source.record(
            action_event("laptop", "stop", "admin:12345678", time.time(), None)
        )
        assert event_id == "3"
        # A page that saw id 1 gets 2 and 3 on resuming.
        _page, missed, _ = await hub.attach("1")
        for _ in range(100):
            _page, missed, _ = await hub.attach("1")
            if len(missed) == 2:
                break
            await asyncio.sleep(0.01)
        assert [e.id for e in missed] == ["2", "3"]
    finally:
        await hub.close()
