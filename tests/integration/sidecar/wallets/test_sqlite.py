"""The embedded wallet on a real SQLite file: persistence, processes sharing it, stops, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from a11i.core.errors import WalletUnavailable
from a11i.core.policy import BudgetPolicy, Decision, Period, WalletState
from a11i.sidecar.admission import AdmissionQueue
from a11i.sidecar.wallets.sqlite import SQLiteWallet, set_cluster_stop

pytestmark = pytest.mark.integration

POLICY = BudgetPolicy(limit_usd=Decimal("1.00"))


def wallet(path: Path, policy: BudgetPolicy = POLICY, **kwargs: object) -> SQLiteWallet:
    return SQLiteWallet(path, policy, namespace="team-a", agent="sre-bot", **kwargs)  # type: ignore[arg-type]


async def test_a_restart_loses_nothing_settled(tmp_path: Path) -> None:
    path = tmp_path / "wallets.sqlite"
    first = wallet(path)
    await first.start()
    _, held = await first.reserve(Decimal("0.30"))
    assert held is not None
    await first.settle(held, Decimal("0.125"))
    _, pending = await first.reserve(Decimal("0.20"))
    assert pending is not None
    await first.close()

    second = wallet(path)
    await second.start()
    snapshot = await second.snapshot()
    assert snapshot.spent_usd == Decimal("0.125")
    # The reservation of the call in flight survives too, until it settles or its lease ends.
    assert snapshot.reserved_usd == Decimal("0.2")
    await second.settle(pending, Decimal("0.05"))
    assert (await second.snapshot()).spent_usd == Decimal("0.175")
    await second.close()


async def test_reconfiguring_keeps_spend_and_top_ups(tmp_path: Path) -> None:
    path = tmp_path / "wallets.sqlite"
    first = wallet(path)
    await first.start()
    _, held = await first.reserve(Decimal("0.5"))
    assert held is not None
    await first.settle(held, Decimal("0.5"))
    await first.top_up(Decimal("2"))
    assert (await first.snapshot()).limit_usd == Decimal("3.00")
    await first.close()
    bigger = wallet(path, BudgetPolicy(limit_usd=Decimal("5")), period=Period.MONTHLY)
    await bigger.start()
    snapshot = await bigger.snapshot()
    assert snapshot.limit_usd == Decimal("7")
    assert snapshot.spent_usd == Decimal("0.5")
    assert snapshot.period is Period.MONTHLY
    await bigger.close()


async def test_stop_and_cluster_stop_reach_every_user_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wallets.sqlite"
    sidecar, operator = wallet(path), wallet(path)
    await sidecar.start()
    await operator.start()
    await operator.suspend(True)
    verdict, held = await sidecar.reserve(Decimal("0.01"))
    assert (verdict.state, held) == (WalletState.SUSPENDED, None)
    await operator.suspend(False)
    verdict, held = await sidecar.reserve(Decimal("0.01"))
    assert verdict.decision is Decision.ALLOW
    assert held is not None
    await asyncio.to_thread(set_cluster_stop, path, True)
    assert (await sidecar.reserve(Decimal("0.01")))[0].state is WalletState.SUSPENDED
    await asyncio.to_thread(set_cluster_stop, path, False)
    assert (await sidecar.reserve(Decimal("0.01")))[1] is not None
    await sidecar.close()
    await operator.close()


async def test_a_call_belongs_to_the_period_it_was_reserved_in(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 23, 23, 59, tzinfo=UTC)]
    daily = wallet(tmp_path / "w.sqlite", period=Period.DAILY, clock=lambda: now[0])
    await daily.start()
    _, held = await daily.reserve(Decimal("0.4"))
    assert held is not None
    now[0] += timedelta(minutes=2)  # past midnight: a new day
    await daily.settle(held, Decimal("0.3"))
    snapshot = await daily.snapshot()
    assert snapshot.spent_usd == 0
    assert snapshot.period_start == datetime(2026, 11, 24, tzinfo=UTC)
    await daily.close()


WORKER = """
import asyncio, json, random, sys
from decimal import Decimal
from a11i.core.policy import BudgetPolicy
from a11i.sidecar.wallets.sqlite import SQLiteWallet

async def main(path, calls):
    w = SQLiteWallet(__import__("pathlib").Path(path), BudgetPolicy(limit_usd=Decimal("1.00")),
                     namespace="team-a", agent=f"worker")
    await w.start()
    admitted = 0
    async def one():
        nonlocal admitted
        verdict, held = await w.reserve(Decimal("0.05"))
        if held is not None:
            admitted += 1
            await asyncio.sleep(random.random() / 100)
            await w.settle(held, Decimal("0.05") * Decimal(random.randint(1, 10)) / 10)
    await asyncio.gather(*(one() for _ in range(calls)))
    await w.close()
    print(json.dumps({"admitted": admitted}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_two_processes_share_one_wallet_without_overspending(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            str(path),
            "60",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(worker.communicate(), 120) for worker in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors.decode()
    admitted = sum(json.loads(out)["admitted"] for out, _ in outputs)
    check = wallet(path)
    await check.start()
    snapshot = await check.snapshot()
    await check.close()
    assert snapshot.spent_usd <= Decimal("1.00")
    assert snapshot.reserved_usd == 0
    # Worst case $0.05 a call against $1.00: at least the 20 that fit by worst case were let in,
    # and more as settlements came in under their reservations.
    assert admitted >= 20
    # Every admitted call was charged (at least 10% of $0.05 each): none lost.
    assert snapshot.spent_usd >= admitted * Decimal("0.005")


def test_wallet_command(tmp_path: Path) -> None:
    path = tmp_path / "wallets.sqlite"
    env = {**os.environ, "A11I_WALLET_FILE": str(path), "A11I_NAMESPACE": "team-a"}

    def a11i(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "a11i.cli", "wallet", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    missing = a11i("show")
    assert missing.returncode == 1
    assert "no wallet for 'team-a'" in missing.stderr

    async def create() -> None:
        w = wallet(path)
        await w.start()
        _, held = await w.reserve(Decimal("0.2"))
        assert held is not None
        await w.settle(held, Decimal("0.2"))
        await w.close()

    asyncio.run(create())
    shown = a11i("show", "--json")
    assert shown.returncode == 0, shown.stderr
    (body,) = json.loads(shown.stdout)
    assert (body["spent_usd"], body["limit_usd"], body["state"]) == ("0.2", "1", "Green")
    assert a11i("top-up", "4.00").returncode == 0
    assert a11i("top-up", "-3").returncode == 2
    assert a11i("stop").returncode == 0
    (body,) = json.loads(a11i("show", "--json").stdout)
    assert (body["limit_usd"], body["state"]) == ("5", "Suspended")
    assert a11i("resume").returncode == 0
    assert a11i("stop", "--cluster").returncode == 0
    assert json.loads(a11i("show", "--json").stdout)[0]["state"] == "Suspended"
    assert a11i("resume", "--cluster").returncode == 0
    assert "team-a: Green" in a11i("show").stdout


def test_an_unusable_wallet_file_stops_the_sidecar_with_a_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "a11i.cli", "sidecar"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "A11I_WALLET_FILE": str(blocker / "wallets.sqlite"),
            "A11I_PORT": str(port),
        },
    )
    assert result.returncode == 2
    assert f"The wallet file {blocker / 'wallets.sqlite'} cannot be used" in result.stderr


async def test_a_busy_file_makes_the_reservation_wait_on_the_wallet_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wallets.sqlite"
    shared = wallet(path)
    await shared.start()
    queue = AdmissionQueue(shared, wait_s=0)
    # A free file: reserved at once on the event loop, without awaiting.
    made = shared.reserve_now(Decimal("0.10"))
    assert made is not None
    assert made[1] is not None
    # Another process (here: another connection) holds the write lock.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert shared.reserve_now(Decimal("0.10")) is None
    waiting = asyncio.ensure_future(queue.reserve(Decimal("0.20")))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # waits for the lock on the wallet thread, not refused
    other.execute("COMMIT")
    other.close()
    verdict, held, waited = await waiting
    assert verdict.decision is Decision.ALLOW
    assert held is not None
    assert waited == 0.0
    snapshot = await shared.snapshot()
    assert snapshot.reserved_usd == Decimal("0.3")
    await shared.close()


SPEND = """
import asyncio, sys
from decimal import Decimal
from pathlib import Path
from a11i.core.policy import BudgetPolicy
from a11i.sidecar.wallets.sqlite import SQLiteWallet

async def main(path, amount):
    w = SQLiteWallet(Path(path), BudgetPolicy(limit_usd=Decimal("1.00")),
                     namespace="team-a", agent="other-process")
    await w.start()
    _, held = await w.reserve(Decimal(amount))
    assert held is not None
    await w.settle(held, Decimal(amount))
    await w.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_what_other_processes_commit_reaches_the_next_reservation_at_once(
    tmp_path: Path,
) -> None:
    """The sidecar's transactions start from the book it last wrote while the row is
    unchanged: a spend, top-up or stop committed by another process in between must be seen
    by the very next reservation on the event loop, and never written over."""
    path = tmp_path / "wallets.sqlite"
    env = {**os.environ, "A11I_WALLET_FILE": str(path), "A11I_NAMESPACE": "team-a"}

    def other_process(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr

    def cli(*args: str) -> None:
        other_process("-m", "a11i.cli", "wallet", *args)

    sidecar = wallet(path)
    await sidecar.start()

    def reserve_on_the_loop(amount: str) -> tuple[WalletState, bool]:
        made = sidecar.reserve_now(Decimal(amount))
        assert made is not None  # the file is free: done on the event loop's own connection
        verdict, held = made
        return verdict.state, held is not None

    assert reserve_on_the_loop("0.05") == (WalletState.GREEN, True)
    await asyncio.to_thread(other_process, "-c", SPEND, str(path), "0.90")
    # $0.05 held + $0.90 spent elsewhere: $0.10 more does not fit.
    assert reserve_on_the_loop("0.10") == (WalletState.RED, False)
    await asyncio.to_thread(cli, "top-up", "1.00")
    assert reserve_on_the_loop("0.10") == (WalletState.GREEN, True)
    await asyncio.to_thread(cli, "stop")
    assert reserve_on_the_loop("0.01") == (WalletState.SUSPENDED, False)
    await asyncio.to_thread(cli, "resume")
    assert reserve_on_the_loop("0.01")[1]
    await asyncio.to_thread(cli, "stop", "--cluster")
    assert reserve_on_the_loop("0.01") == (WalletState.SUSPENDED, False)
    await asyncio.to_thread(cli, "resume", "--cluster")
    assert reserve_on_the_loop("0.01")[1]
    await asyncio.to_thread(other_process, "-c", SPEND, str(path), "0.20")
    snapshot = await sidecar.snapshot()
    await sidecar.close()
    assert snapshot.limit_usd == Decimal("2.00")
    assert snapshot.spent_usd == Decimal("1.10")
    assert snapshot.reserved_usd == Decimal("0.17")


async def test_the_loop_and_the_wallet_thread_each_see_what_the_other_wrote(
    tmp_path: Path,
) -> None:
    """Both of a wallet's connections write the file (the event loop's when it is free, the
    wallet thread's for snapshots, stops, top-ups and when it is busy), and a second wallet on
    the same file in this process has connections of its own: each sees every other's writes."""
    path = tmp_path / "wallets.sqlite"
    first, second = wallet(path), wallet(path)
    await first.start()
    await second.start()
    holds = []
    for round_ in range(20):
        # On the event loop, each wallet in turn: every reservation follows one by the other.
        for shared in (first, second):
            made = shared.reserve_now(Decimal("0.01"))
            assert made is not None
            assert made[1] is not None
            holds.append((shared, made[1]))
        # On first's wallet thread: a snapshot (it writes the advanced book) and a top-up.
        assert (await first.snapshot()).reserved_usd == Decimal("0.02") * (round_ + 1)
        await first.top_up(Decimal("0.01"))
    await first.suspend(True)
    made = first.reserve_now(Decimal("0.01"))
    assert made is not None
    assert made[0].state is WalletState.SUSPENDED
    await first.suspend(False)
    for shared, held in holds:
        await shared.settle(held, Decimal("0.005"))
    for shared in (first, second):
        snapshot = await shared.snapshot()
        assert snapshot.limit_usd == Decimal("1.20")
        assert snapshot.spent_usd == Decimal("0.2")
        assert snapshot.reserved_usd == 0
    await first.close()
    await second.close()


async def test_a_transaction_that_fails_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    """A write the file refuses after the rules ran (here a trigger, as a full disk would)
    rolls back: the reservation is neither in the file nor in what the wallet remembers."""
    path = tmp_path / "wallets.sqlite"
    shared = wallet(path)
    await shared.start()
    made = shared.reserve_now(Decimal("0.30"))
    assert made is not None
    assert made[1] is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON wallets "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    with pytest.raises(WalletUnavailable, match="refused by the test"):
        shared.reserve_now(Decimal("0.50"))
    with pytest.raises(WalletUnavailable, match="refused by the test"):
        await shared.reserve(Decimal("0.50"))
    other.execute("DROP TRIGGER refuse")
    other.close()
    # $0.30 held: $0.70 fits only if the refused $0.50s were not kept anywhere.
    made = shared.reserve_now(Decimal("0.70"))
    assert made is not None
    assert made[1] is not None
    assert (await shared.snapshot()).reserved_usd == Decimal("1.00")
    await shared.close()


async def test_what_the_loop_reserves_and_settles_is_committed_when_it_returns(
    tmp_path: Path,
) -> None:
    """The usual reserve and settle are one conditional UPDATE in a transaction of its own:
    another process sees the reservation before the call is forwarded and the settlement
    before the agent has the answer, and no transaction is left open on the loop's
    connection, whether the write succeeded, found the row changed or was refused."""
    path = tmp_path / "wallets.sqlite"
    shared = wallet(path)
    await shared.start()
    other = sqlite3.connect(path, isolation_level=None)

    def stored() -> dict[str, object]:
        row = other.execute("SELECT book FROM wallets WHERE namespace = 'team-a'").fetchone()
        return dict(json.loads(row[0]))

    def loop_idle() -> bool:
        return shared._loop_connection is not None and not shared._loop_connection.in_transaction

    first = shared.reserve_now(Decimal("0.10"))  # the first reads the row
    assert first is not None
    assert first[1] is not None
    made = shared.reserve_now(Decimal("0.20"))  # the next swaps it
    assert made is not None
    assert made[1] is not None
    assert [lease[0] for lease in stored()["leases"]] == [first[1].id, made[1].id]  # type: ignore[attr-defined]
    assert loop_idle()
    await shared.settle(made[1], Decimal("0.05"))
    assert stored()["spent_nanos"] == 50_000_000
    assert [lease[0] for lease in stored()["leases"]] == [first[1].id]  # type: ignore[attr-defined]
    assert loop_idle()
    # Another process writes: the swap changes nothing and the row is read and written again.
    other.execute("UPDATE wallets SET book = replace(book, '\"leases\":[[', '\"leases\":[ [')")
    await shared.settle(first[1], Decimal("0.01"))
    assert (stored()["spent_nanos"], stored()["leases"]) == (60_000_000, [])
    assert loop_idle()
    # A write the file refuses: nothing kept, nothing left open.
    other.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON wallets "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    with pytest.raises(WalletUnavailable, match="refused by the test"):
        shared.reserve_now(Decimal("0.10"))
    assert loop_idle()
    other.execute("DROP TRIGGER refuse")
    assert (await shared.snapshot()).reserved_usd == 0
    other.close()
    await shared.close()
