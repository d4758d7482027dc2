"""The event streams on a real 3-primary Redis Cluster: two namespaces' sidecar processes write
their own streams, on different primaries; the operator tallies each namespace's spend per agent
from its stream, and the dashboard's WebSocket feed follows both (a replay, live pushes, and a
resume from the page's cursor of one position per stream), none lost and none twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from a11i.dashboard.hub import HubSettings
from a11i.dashboard.server import DashboardSettings, build_app
from a11i.dashboard.source import RedisSource
from a11i.dashboard.state import advance, format_cursor, id_stream, parse_cursor
from a11i.operator.budgets import Wallets
from a11i.sidecar.redis_clients import RedisMode, RedisTarget, connect
from a11i.sidecar.telemetry.events import STREAM, STREAMS, RedisEventStream, stream_key
from a11i.sidecar.wallets.redis import WalletKeys
from tests.support.redis_server import RedisClusterServers, free_port
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

CHAT = {
    "model": "gpt-4o",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "Is the checkout service healthy?"}],
}
HEADERS = {"Authorization": "Bearer sk-agent"}


@pytest.fixture
async def client(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    for node in cluster.nodes:  # each test starts with no streams
        plain = Redis.from_url(node.url)
        await plain.flushall()
        await plain.aclose()
    connection = connect(cluster.url, RedisMode.CLUSTER, decode_responses=True)
    assert isinstance(connection, RedisCluster)
    yield connection
    await connection.aclose()


@pytest.fixture
async def dashboard(cluster: RedisClusterServers) -> AsyncIterator[str]:
    """The dashboard over the cluster, without login (loopback only)."""
    source = RedisSource.from_url(RedisTarget(cluster.url, RedisMode.CLUSTER))
    runner = web.AppRunner(
        build_app(DashboardSettings(hub=HubSettings(block_s=0.5)), source),
        access_log=None,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def on_two_nodes(client: RedisCluster) -> tuple[str, str]:
    """Two namespaces whose streams live on different primaries."""
    first = "team-a"
    node = client.get_node_from_key(stream_key(first, cluster=True)).name
    for index in range(100):
        other = f"team-{index}"
        if client.get_node_from_key(stream_key(other, cluster=True)).name != node:
            return first, other
    raise AssertionError("no two namespaces on different nodes")


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.receive_str())
            if predicate(message):
                return message  # type: ignore[no-any-return]


async def feed(
    ws: aiohttp.ClientWebSocketResponse, since: str | None, count: int
) -> tuple[list[str], str]:
    """Resume from ``since`` and read events until ``count`` arrived; their ids and the page's
    cursor (the last ``last_id`` the dashboard sent)."""
    await ws.send_json({"type": "resume", "since": since})
    ids: list[str] = []
    cursor = since
    while len(ids) < count:
        message = await receive_until(ws, lambda m: m["type"] == "events")
        ids += [event["id"] for event in message["events"]]
        cursor = message["last_id"]
    assert cursor is not None
    return ids, cursor


async def test_two_namespaces_streams_on_two_nodes_reach_the_operator_and_the_dashboard(
    standin: StandIn,
    cluster: RedisClusterServers,
    client: RedisCluster,
    sidecars: Sidecars,
    dashboard: str,
) -> None:
    assert standin.url is not None
    await client.initialize()
    namespaces = on_two_nodes(client)
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": cluster.url,
        "A11I_REDIS_MODE": "cluster",
        "A11I_BUDGET_USD": "10",
        "A11I_REDIS_TIMEOUT": "2",
    }
    urls = {
        namespace: await sidecars.start(
            **settings, A11I_NAMESPACE=namespace, A11I_AGENT=f"{namespace}-bot"
        )
        for namespace in namespaces
    }
    streams = {namespace: stream_key(namespace, cluster=True) for namespace in namespaces}

    async def calls(count: int) -> None:
        async with aiohttp.ClientSession() as http:

            async def call(namespace: str, index: int) -> None:
                body = {**CHAT, "stream": index % 2 == 0}
                url = urls[namespace] + "/v1/chat/completions"
                async with http.post(url, json=body, headers=HEADERS) as response:
                    await response.read()
                    assert response.status == 200

            await asyncio.gather(*(call(ns, i) for ns in namespaces for i in range(count)))

    async def written(count: int) -> None:
        for _ in range(100):  # the sidecars write their events in the background
            if all([await client.xlen(stream) >= count for stream in streams.values()]):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the events did not reach their streams")

    await calls(6)
    await written(6)
    nodes = {client.get_node_from_key(stream).name for stream in streams.values()}
    assert len(nodes) == 2
    assert not await client.exists(STREAM)
    assert set(namespaces) <= await client.smembers(STREAMS)

    # The operator: each namespace's spend per agent, from its own stream, is its wallet's.
    wallets = Wallets(client, 2.0)
    for namespace in namespaces:
        by_agent = await wallets.spend_by_agent(namespace, datetime(2020, 1, 1, tzinfo=UTC))
        spent = await client.hget(WalletKeys.of(namespace, cluster=True).wallet, "spent_nanos")
        assert set(by_agent) == {f"{namespace}-bot"}
        assert by_agent[f"{namespace}-bot"] == Decimal(spent) / 10**9 > 0

    # The dashboard: one feed of both streams; ids name their namespace.
    all_ids = {
        f"{namespace}/{event_id}"
        for namespace, stream in streams.items()
        for event_id, _ in await client.xrange(stream)
    }
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": dashboard}
        async with http.ws_connect(dashboard + "/ws", headers=headers) as ws:
            seen, cursor = await feed(ws, None, 12)
            assert sorted(seen) == sorted(all_ids)
            assert {position.rpartition("/")[0] for position in cursor.split(",")} >= set(
                namespaces
            )
            view = await receive_until(
                ws,
                lambda m: (
                    m["type"] == "view"
                    and {row["namespace"]: row["calls"] for row in m["namespaces"]}
                    == dict.fromkeys(namespaces, 6)
                ),
            )
            assert view["source"]["ok"] is True

        # Away, both namespaces call again; back with the cursor, the page gets exactly those.
        await calls(4)
        await written(10)
        async with http.ws_connect(dashboard + "/ws", headers=headers) as ws:
            missed, _ = await feed(ws, cursor, 8)
        fresh = {
            f"{namespace}/{event_id}"
            for namespace, stream in streams.items()
            for event_id, _ in await client.xrange(stream)
        } - all_ids
        assert len(fresh) == 8
        assert sorted(missed) == sorted(fresh)


async def test_the_dashboards_source_reads_every_namespaces_stream_by_its_own_cursor(
    cluster: RedisClusterServers, client: RedisCluster
) -> None:
    await client.initialize()
    writer = RedisEventStream(connect(cluster.url, RedisMode.CLUSTER), owns_client=True)
    await writer.start()
    source = RedisSource(connect(cluster.url, RedisMode.CLUSTER, decode_responses=True))
    try:
        # A quiet namespace first, then a busy one: the quiet one's event is the oldest.
        writer.append({"kind": "call", "namespace": "quiet", "agent": "a", "cost_usd": "1"})
        await writer.drained()
        for index in range(6):
            writer.append({"kind": "call", "namespace": "busy", "agent": "b", "seq": str(index)})
            await writer.drained()  # one XADD each: six ids in order
        assert {"quiet", "busy"} <= await client.smembers(STREAMS)

        # The history's last 3 across the streams keep the quiet stream's newest too.
        history = await source.history(3)
        assert [id_stream(event_id) for event_id, _ in history] == ["quiet", "busy", "busy"]
        assert [fields.get("seq") for _, fields in history] == [None, "4", "5"]
        cursor = format_cursor(advance({}, (event_id for event_id, _ in history)))
        assert len(await source.history(10)) == 7  # fewer than asked: all of them

        # Nothing after it; then a late event of the quiet stream is found by its own cursor.
        assert await source.read(cursor, 300, 100) == []
        writer.append({"kind": "call", "namespace": "quiet", "agent": "a", "cost_usd": "2"})
        await writer.drained()
        late = await source.read(cursor, 2_000, 100)
        assert [(id_stream(event_id), fields["cost_usd"]) for event_id, fields in late] == [
            ("quiet", "2")
        ]

        # From the start, two at a time: every event once, each stream in its order.
        seen: list[str] = []
        position = ""
        while batch := await source.range_after(position, 2):
            assert len(batch) <= 2
            seen += [event_id for event_id, _ in batch]
            position = format_cursor(advance(parse_cursor(position), (i for i, _ in batch)))
        assert len(seen) == len(set(seen)) == 8
        everything = await source.range_after("", 100)
        busy = [fields["seq"] for event_id, fields in everything if id_stream(event_id) == "busy"]
        assert busy == [str(i) for i in range(6)]
    finally:
        await writer.close()
        await source.close()
