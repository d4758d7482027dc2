"""Spend settled while Redis is down survives the sidecar's death (issue 18, item 2).

A real sidecar process (a RedisWallet in a subprocess) settles calls with Redis away, then is
killed with SIGKILL; a real ``redis-server`` comes back; the next start replays the journal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from a11i.core.policy import BudgetPolicy, Period
from a11i.sidecar.wallets.journal import JournalEntry, SpendJournal, journal_path
from a11i.sidecar.wallets.redis import RedisWallet
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

CALLS = 50
NANOS_PER_CALL = 2_000_000  # $0.002

_WORKER = """
import asyncio, sys
from decimal import Decimal
from pathlib import Path
import redis.asyncio as aioredis
from a11i.core.policy import BudgetPolicy, Period
from a11i.sidecar.wallets.journal import SpendJournal
from a11i.sidecar.wallets.redis import RedisWallet

async def main(url, namespace, journal, calls):
    wallet = RedisWallet(
        aioredis.Redis.from_url(url), namespace=namespace, agent="doomed",
        policy=BudgetPolicy(limit_usd=Decimal(10)), period=Period.TOTAL, timeout_s=0.5,
        owns_client=True, journal=SpendJournal(Path(journal)),
    )
    await wallet.start()
    for _ in range(calls):
        _, lease = await wallet.reserve(Decimal("0.01"))
        assert lease is not None
        await wallet.settle(lease, Decimal("0.002"))
    print("settled", flush=True)
    await asyncio.sleep(3600)  # until killed: no close(), no last reconcile

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()  # its port is taken now, the server started later
    yield server
    server.close()


async def test_spend_settled_during_an_outage_survives_a_sigkill(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    namespace = "journaled"
    journal = journal_path(tmp_path, namespace)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WORKER,
        redis_server.url,
        namespace,
        str(journal),
        str(CALLS),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert worker.stdout is not None
        line = await worker.stdout.readline()
        assert line.strip() == b"settled"
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()
    assert len(SpendJournal(journal).entries()) == CALLS

    redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    wallet = RedisWallet(
        client,
        namespace=namespace,
        agent="reborn",
        policy=BudgetPolicy(limit_usd=Decimal(10)),
        period=Period.TOTAL,
        timeout_s=2.0,
        journal=SpendJournal(journal),
    )
    try:
        await wallet.start()
        assert wallet.connected
        spent = await client.hget(f"a11i:wallet:{namespace}", "spent_nanos")
        assert spent is not None
        assert int(spent) == CALLS * NANOS_PER_CALL
        assert SpendJournal(journal).entries() == []
        # A second start replays nothing: the journal was trimmed (and Redis remembers ids).
        await wallet.close()
        again = RedisWallet(
            client,
            namespace=namespace,
            agent="again",
            policy=BudgetPolicy(limit_usd=Decimal(10)),
            period=Period.TOTAL,
            timeout_s=2.0,
            journal=SpendJournal(journal),
        )
        await again.start()
        await again.close()
        spent = await client.hget(f"a11i:wallet:{namespace}", "spent_nanos")
        assert spent is not None
        assert int(spent) == CALLS * NANOS_PER_CALL
    finally:
        await wallet.close()
        await client.aclose()


def test_processes_sharing_a_journal_remove_only_their_own(tmp_path: Path) -> None:
    journal = SpendJournal(tmp_path / "j.jsonl")
    for i in range(4):
        journal.append(JournalEntry(f"id-{i}", 1.5, i))
    # A line cut by a crash mid-write is skipped, not fatal.
    with open(journal.path, "a", encoding="utf-8") as file:
        file.write('{"id": "cut", "peri')
    journal.remove(["id-1", "id-3"])
    assert journal.entries() == [JournalEntry("id-0", 1.5, 0), JournalEntry("id-2", 1.5, 2)]
