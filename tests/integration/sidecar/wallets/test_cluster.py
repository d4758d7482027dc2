"""The shared wallet on a real 3-primary Redis Cluster: hash-tagged keys, one slot per wallet,
two sidecar processes of one namespace, and both emergency stops."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from a11i.core.policy import BudgetPolicy, Period
from a11i.sidecar.redis_clients import RedisMode, RedisTarget, connect
from a11i.sidecar.telemetry.events import STREAMS, stream_key
from a11i.sidecar.wallets.redis import RedisWallet, WalletKeys
from tests.support.redis_server import RedisClusterServers, RedisServer
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

CHAT = {
    "model": "gpt-4o",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Is the checkout service healthy?"}],
}
HEADERS = {"Authorization": "Bearer sk-agent"}


async def started_wallet(
    connection: Redis | RedisCluster,
    namespace: str,
    limit: str,
    period: Period,
    *,
    timeout_s: float = 2.0,  # the first command also learns the cluster's slots
    events: bool = False,
) -> RedisWallet:
    """A started namespace wallet of agent "agent" that owns ``connection``."""
    wallet = RedisWallet(
        connection,
        namespace=namespace,
        agent="agent",
        policy=BudgetPolicy(limit_usd=Decimal(limit)),
        period=period,
        owns_client=True,
        timeout_s=timeout_s,
        events=events,
    )
    await wallet.start()
    return wallet


@pytest.fixture
async def client(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    connection = connect(cluster.url, RedisMode.CLUSTER, decode_responses=True)
    assert isinstance(connection, RedisCluster)
    yield connection
    await connection.aclose()


async def test_a_wallets_keys_share_one_slot_and_wallets_spread_over_the_nodes(
    cluster: RedisClusterServers, client: RedisCluster
) -> None:
    nodes = set()
    for namespace in ("team-a", "team-b", "team-c", "payments", "search", "ops"):
        keys = WalletKeys.of(namespace, cluster=True)
        names = (keys.wallet, keys.held, keys.settled, keys.line)
        slot = {await client.cluster_keyslot(name) for name in names}
        assert len(slot) == 1, names
        nodes.add(client.get_node_from_key(keys.wallet).name)
        wallet = await started_wallet(
            connect(cluster.url, RedisMode.CLUSTER), namespace, "1", Period.DAILY
        )
        try:
            assert wallet.connected
            _, lease = await wallet.reserve(Decimal("0.25"))
            assert lease is not None
            await wallet.settle(lease, Decimal("0.1"))
            snapshot = await wallet.snapshot()
            assert (snapshot.spent_usd, snapshot.reserved_usd) == (Decimal("0.1"), 0)
        finally:
            await wallet.close()
        assert await client.hget(keys.wallet, "spent_nanos") == str(10**8)
    assert len(nodes) > 1  # the wallets are spread over the primaries


async def test_two_sidecars_on_a_cluster_share_one_wallet_and_both_stops(
    standin: StandIn, cluster: RedisClusterServers, client: RedisCluster, sidecars: Sidecars
) -> None:
    assert standin.url is not None
    namespace = "cluster-team"
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": cluster.url,
        "A11I_REDIS_MODE": "cluster",
        "A11I_NAMESPACE": namespace,
        "A11I_BUDGET_USD": "0.05",
        "A11I_REDIS_TIMEOUT": "2",
        "A11I_REDIS_REFRESH": "3600",
    }
    urls = [await sidecars.start(**settings, A11I_AGENT=f"agent-{i}") for i in range(2)]
    standin.configure(chunk_delay_ms=5, words=100)
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def call(index: int) -> int:
            body = {**CHAT, "stream": index % 3 == 0}
            async with http.post(
                urls[index % 2] + "/v1/chat/completions", json=body, headers=HEADERS
            ) as response:
                await response.read()
                return response.status

        statuses = list(await asyncio.gather(*(call(i) for i in range(60))))
        assert set(statuses) <= {200, 402}
        assert statuses.count(200) >= 40
        assert statuses.count(402) > 0
        keys = WalletKeys.of(namespace, cluster=True)
        spent = Decimal(await client.hget(keys.wallet, "spent_nanos")) / 10**9
        assert 0 < spent <= Decimal("0.05")
        assert await client.zcard(keys.held) == 0
        assert await client.hget(keys.wallet, "reserved_nanos") == "0"
        stream = stream_key(namespace, cluster=True)  # the namespace's own, in its wallet's slot
        assert await client.cluster_keyslot(stream) == await client.cluster_keyslot(keys.wallet)
        for _ in range(50):  # the sidecars write their events in the background
            if await client.xlen(stream) >= 60:
                break
            await asyncio.sleep(0.1)
        assert not await client.exists("a11i:events")
        assert namespace in await client.smembers(STREAMS)
        events = [fields for _, fields in await client.xrange(stream)]
        assert len(events) == 60
        assert {fields["agent"] for fields in events} == {"agent-0", "agent-1"}
        charged = sum(Decimal(fields["cost_usd"]) for fields in events)
        assert abs(charged - spent) <= Decimal("0.000001")

        # Both stops, from the command line as an SRE would, reach both sidecars.
        await client.hset(keys.wallet, "limit_nanos", str(10 * 10**9))  # room to call again
        env = {**os.environ, **settings}

        async def a11i(*args: str) -> int:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "a11i.cli", "wallet", *args, env=env
            )
            return await process.wait()

        async def both() -> list[int]:
            return [await call(1), await call(2)]

        async def until(codes: list[int]) -> None:
            # The sidecars re-read their wallet only every hour (A11I_REDIS_REFRESH): what
            # reaches them comes by the stop channel, at once. The bound only ends a hang.
            for _ in range(600):
                if await both() == codes:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the sidecars never answered {codes}")

        assert await both() == [200, 200]
        for scope in (["stop"], ["stop", "--cluster"]):
            assert await a11i(*scope) == 0
            await until([403, 403])
            assert await a11i("resume", *scope[1:]) == 0
            await until([200, 200])


async def test_the_dashboard_and_the_operator_follow_every_node(
    cluster: RedisClusterServers, client: RedisCluster
) -> None:
    """The dashboard's source lists the wallets of every primary and acts on them; the
    operator releases a wallet's keys wherever its slot lives."""
    from a11i.dashboard.source import RedisSource
    from a11i.operator.budgets import Wallets

    target = RedisTarget(cluster.url, RedisMode.CLUSTER)
    names = [f"listed-{index}" for index in range(6)]
    for name in names:
        wallet = await started_wallet(target.connect(), name, "2", Period.TOTAL)
        _, lease = await wallet.reserve(Decimal("0.5"))
        assert lease is not None
        await wallet.close()
    source = RedisSource.from_url(target)
    try:
        listed = {view.namespace: view for view in (await source.wallets(time.time())).wallets}
        assert set(names) <= set(listed)
        assert listed[names[0]].reserved_usd == Decimal("0.5")
        await source.suspend(names[0], True)
        keys = WalletKeys.of(names[0], cluster=True)
        assert await client.hget(keys.wallet, "suspended") == "1"
    finally:
        await source.close()
    await Wallets(client, 2.0).release(names[0])
    assert not await client.exists(keys.wallet, keys.held)


async def test_moving_the_wallets_from_one_redis_server_to_a_cluster(
    cluster: RedisClusterServers, client: RedisCluster, tmp_path: Path
) -> None:
    """``a11i wallet copy`` carries every wallet's limit, spend and stop into a cluster's key
    names; a wallet the cluster already has is left as it is."""
    server = RedisServer()
    server.start()
    try:
        names = ["moving-a", "moving-b", "moving-c"]
        for index, name in enumerate(names):
            wallet = await started_wallet(Redis.from_url(server.url), name, "5", Period.MONTHLY)
            _, lease = await wallet.reserve(Decimal("1"))
            assert lease is not None
            await wallet.settle(lease, Decimal(index + 1) / 10)
            if index == 0:
                await wallet.suspend(True)
            await wallet.close()
        taken = WalletKeys.of("moving-c", cluster=True).wallet
        await client.hset(taken, mapping={"limit_nanos": "1", "spent_nanos": "0"})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a11i.cli",
            "wallet",
            "copy",
            "--redis",
            server.url,
            "--to",
            cluster.url,
            "--to-mode",
            "cluster",
            env={**os.environ, "A11I_WALLET_FILE": str(tmp_path / "w.sqlite")},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        assert out.decode().splitlines() == [
            "moving-a: copied",
            "moving-b: copied",
            "moving-c: already there, left as it is",
        ]
        moved = await started_wallet(
            connect(cluster.url, RedisMode.CLUSTER), "moving-b", "1", Period.MONTHLY
        )
        try:
            snapshot = await moved.snapshot()
            assert (snapshot.limit_usd, snapshot.spent_usd, snapshot.reserved_usd) == (
                Decimal("5"),
                Decimal("0.2"),
                0,
            )
        finally:
            await moved.close()
        stopped = WalletKeys.of("moving-a", cluster=True).wallet
        assert await client.hget(stopped, "suspended") == "1"
        assert await client.hget(taken, "limit_nanos") == "1"
    finally:
        server.close()


async def test_a_lost_primary_fails_open_and_loses_nothing() -> None:
    """A primary of the cluster stops: the wallets whose slots it served are decided locally
    (fail open) and replay what they settled when it is back; nothing is lost or counted twice.
    (A wallet of another primary may also go local for a moment: the client re-learns the
    cluster's slots after the failure, which can take longer than A11I_REDIS_TIMEOUT.)"""
    servers = RedisClusterServers(primaries=3)
    servers.start()
    wallets: list[RedisWallet] = []
    try:
        probe = connect(servers.url, RedisMode.CLUSTER)
        assert isinstance(probe, RedisCluster)
        await probe.initialize()
        owner: dict[str, int] = {}
        for index in range(12):
            name = f"spread-{index}"
            owner[name] = probe.get_node_from_key(WalletKeys.of(name, cluster=True).wallet).port
        await probe.aclose()
        victim = next(node for node in servers.nodes if node.port in owner.values())
        lost = [name for name, port in owner.items() if port == victim.port]
        kept = [name for name, port in owner.items() if port != victim.port]
        assert lost
        assert kept
        for name in (lost[0], kept[0]):
            wallet = await started_wallet(
                connect(servers.url, RedisMode.CLUSTER), name, "10", Period.TOTAL, timeout_s=1.0
            )
            assert wallet.connected
            wallets.append(wallet)
        victim.stop()
        for wallet in wallets:
            _, lease = await wallet.reserve(Decimal("0.5"))
            assert lease is not None  # admitted either way: from Redis, or locally (fail open)
            await wallet.settle(lease, Decimal("0.25"))
        assert not wallets[0].connected
        assert wallets[0].pending_usd == Decimal("0.25")
        victim.start()
        for _ in range(600):  # the watchers reconnect and replay what was settled meanwhile
            if all(wallet.connected and wallet.pending_usd == 0 for wallet in wallets):
                break
            await asyncio.sleep(0.05)
        for wallet in wallets:
            snapshot = await wallet.snapshot()
            assert (wallet.connected, snapshot.spent_usd) == (True, Decimal("0.25"))
    finally:
        for wallet in wallets:
            await wallet.close()
        servers.close()


async def test_a_settlement_appends_its_event_in_the_wallets_slot_once(
    cluster: RedisClusterServers, client: RedisCluster
) -> None:
    namespace = "events-in-slot"
    connection = connect(cluster.url, RedisMode.CLUSTER)
    wallet = await started_wallet(connection, namespace, "1", Period.TOTAL, events=True)
    try:
        # Listed for the readers that follow every namespace's stream (the dashboard).
        assert namespace in await client.smembers(STREAMS)
        event = {"kind": "call", "namespace": namespace, "agent": "agent", "cost_usd": "0.002"}
        _, lease = await wallet.reserve(Decimal("0.01"))
        assert lease is not None
        await wallet.settle(lease, Decimal("0.002"), event)
        await wallet.settle(lease, Decimal("0.002"), event)  # a retry: no second event
    finally:
        await wallet.close()
    stream = stream_key(namespace, cluster=True)
    assert [fields for _, fields in await client.xrange(stream)] == [event]
    assert not await client.exists("a11i:events")
