"""Two real sidecar processes sharing one wallet in a real Redis, under concurrent load."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from decimal import Decimal

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

CHAT = {
    "model": "gpt-4o",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Is the checkout service healthy?"}],
}
HEADERS = {"Authorization": "Bearer sk-agent"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.close()


async def wallet_of(url: str, namespace: str = "team-a") -> dict[str, str]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return await client.hgetall(f"a11i:wallet:{namespace}")  # type: ignore[no-any-return]
    finally:
        await client.aclose()


async def store_of(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """The sidecar's view of its wallet's store (``store`` of ``/a11i/budget``)."""
    async with http.get(url + "/a11i/budget") as response:
        body = await response.json()
    store: dict[str, object] = body["store"]
    assert store["kind"] == "redis"
    return store


async def test_two_sidecars_share_one_wallet_without_overspending(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    assert standin.url is not None
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": redis_server.url,
        "A11I_NAMESPACE": "team-a",
        "A11I_BUDGET_USD": "0.05",
        "A11I_REDIS_TIMEOUT": "2",
    }
    urls = [await sidecars.start(**settings, A11I_AGENT=f"agent-{i}") for i in range(2)]
    # 100 output tokens a call (about $0.00104): 60 calls need more than the limit.
    standin.configure(chunk_delay_ms=5, words=100)
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def call(index: int) -> None:
            body = {**CHAT, "stream": index % 3 == 0}
            async with http.post(
                urls[index % 2] + "/v1/chat/completions", json=body, headers=HEADERS
            ) as response:
                await response.read()
                statuses.append(response.status)

        await asyncio.gather(*(call(i) for i in range(60)))
    assert set(statuses) <= {200, 402}
    admitted = statuses.count(200)
    # Worst case of one call: its input and 200 output tokens of gpt-4o, about $0.0021; real
    # cost about $0.00104: calls wait for held money, so ~45 of them are let in, not the ~23 that
    # fit by their worst case at once.
    assert admitted >= 40
    assert statuses.count(402) > 0
    wallet = await wallet_of(redis_server.url)
    spent = Decimal(wallet["spent_nanos"]) / 10**9
    assert 0 < spent <= Decimal("0.05")
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await client.hlen("a11i:wallet:team-a:held") == 0
        # Every call, admitted or blocked, is an event in the shared stream.
        for _ in range(50):
            if await client.xlen("a11i:events") >= 60:
                break
            await asyncio.sleep(0.1)
        events = await client.xrange("a11i:events")
    finally:
        await client.aclose()
    assert len(events) == 60
    decided = [fields["decision"] for _, fields in events]
    assert decided.count("block") == statuses.count(402)
    assert {fields["agent"] for _, fields in events} == {"agent-0", "agent-1"}
    charged = sum(Decimal(fields["cost_usd"]) for _, fields in events)
    # Costs are charged rounded up to the nano-dollar.
    assert abs(charged - spent) <= Decimal("0.000001")


async def test_the_emergency_stop_reaches_every_sidecar_within_a_second(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    assert standin.url is not None
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": redis_server.url,
        "A11I_NAMESPACE": "team-a",
        "A11I_BUDGET_USD": "10",
    }
    urls = [await sidecars.start(**settings) for _ in range(2)]
    env = {**os.environ, **settings}

    async def a11i(*args: str) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a11i.cli",
            "wallet",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        return await process.wait()

    async with aiohttp.ClientSession() as http:

        async def statuses() -> list[int]:
            codes = []
            for url in urls:
                async with http.post(
                    url + "/v1/chat/completions", json=CHAT, headers=HEADERS
                ) as response:
                    codes.append(response.status)
            return codes

        assert await statuses() == [200, 200]
        for scope in (["stop"], ["stop", "--cluster"]):
            assert await a11i(*scope) == 0
            stopped_at = asyncio.get_running_loop().time()
            while await statuses() != [403, 403]:
                assert asyncio.get_running_loop().time() - stopped_at < 1.0, "stop too slow"
                await asyncio.sleep(0.05)
            assert await a11i("resume", *scope[1:]) == 0
            resumed_at = asyncio.get_running_loop().time()
            while await statuses() != [200, 200]:
                assert asyncio.get_running_loop().time() - resumed_at < 1.0, "resume too slow"
                await asyncio.sleep(0.05)


async def test_redis_going_away_under_load_fails_open_and_reconciles(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    assert standin.url is not None
    url = await sidecars.start(
        A11I_OPENAI_BASE=standin.url,
        A11I_REDIS_URL=redis_server.url,
        A11I_NAMESPACE="team-a",
        A11I_BUDGET_USD="10",
        A11I_REDIS_REFRESH="0.5",  # the watcher's rounds are counted below
    )
    closed = await sidecars.start(
        A11I_OPENAI_BASE=standin.url,
        A11I_REDIS_URL=redis_server.url,
        A11I_NAMESPACE="team-a",
        A11I_BUDGET_USD="10",
        A11I_REDIS_FAILURE="closed",
    )
    async with aiohttp.ClientSession() as http:

        async def call(target: str) -> int:
            async with http.post(
                target + "/v1/chat/completions", json=CHAT, headers=HEADERS
            ) as response:
                await response.read()
                return response.status

        assert await call(url) == 200
        before = Decimal((await wallet_of(redis_server.url))["spent_nanos"])
        redis_server.stop()
        started = asyncio.get_running_loop().time()
        during = await asyncio.gather(*(call(url) for _ in range(10)))
        refused = await call(closed)
        # Never a hang: every call answered within a few Redis timeouts.
        assert asyncio.get_running_loop().time() - started < 10
        assert during == [200] * 10
        assert refused == 503
        away = await store_of(http, url)
        assert away["connected"] is False
        assert Decimal(str(away["pending_usd"])) * 10**9 == before * 10  # nano-dollars
        redis_server.start()
        expected = before * 11  # the first call, and the ten made while Redis was away
        for _ in range(200):
            after = Decimal((await wallet_of(redis_server.url)).get("spent_nanos", "0"))
            if after >= expected:
                break
            await asyncio.sleep(0.1)
        # The ten calls accounted locally while Redis was away are in the shared wallet now,
        # replayed one settlement at a time, each exactly once.
        assert after == expected
        # Three more rounds of the sidecar's watcher (its /a11i/budget counts them): nothing
        # is replayed twice.
        rounds = int(str((await store_of(http, url))["watch_rounds"]))
        deadline = asyncio.get_running_loop().time() + 10
        while int(str((await store_of(http, url))["watch_rounds"])) < rounds + 3:
            assert asyncio.get_running_loop().time() < deadline, "the watcher stopped"
            await asyncio.sleep(0.1)
        store = await store_of(http, url)
        assert (store["connected"], store["pending_usd"]) == (True, "0")
        assert Decimal((await wallet_of(redis_server.url))["spent_nanos"]) == expected


async def test_calls_wait_for_held_money_and_use_the_limit_before_refusals(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    """100 concurrent calls through two sidecars on one Redis wallet: a call that fits beside
    what is spent waits for the holds of the calls in flight instead of being refused, so the
    wallet is used to the end, and never past its limit."""
    assert standin.url is not None
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": redis_server.url,
        "A11I_NAMESPACE": "team-a",
        "A11I_BUDGET_USD": "0.03",
        "A11I_REDIS_TIMEOUT": "2",
    }
    urls = [await sidecars.start(**settings, A11I_AGENT=f"agent-{i}") for i in range(2)]
    # 40 output tokens a call, about $0.00044 with the input: 100 calls need more than the
    # limit; each is held at its worst case (200 output tokens, about $0.00204) while in flight.
    standin.configure(words=40)
    statuses: list[int] = []
    waited: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def call(index: int) -> None:
            async with http.post(
                urls[index % 2] + "/v1/chat/completions", json=CHAT, headers=HEADERS
            ) as response:
                await response.read()
                statuses.append(response.status)
                if "x-a11i-admission-wait-ms" in response.headers:
                    waited.append(int(response.headers["x-a11i-admission-wait-ms"]))

        await asyncio.gather(*(call(i) for i in range(100)))
        budgets = [await (await http.get(url + "/a11i/budget")).json() for url in urls]
    assert set(statuses) <= {200, 402}
    assert statuses.count(402) > 0  # the money ran out in the end
    assert waited  # some calls waited for holds instead of being refused
    wallet = await wallet_of(redis_server.url)
    spent = Decimal(wallet["spent_nanos"]) / 10**9
    assert spent <= Decimal("0.03")
    # Refused only when even the worst case of one more call no longer fitted (<$0.00204 left).
    assert spent >= Decimal("0.03") * Decimal("0.9"), spent
    assert sum(b["admission"]["admitted_after_wait"] for b in budgets) > 0
    assert all(b["admission"]["waiting"] == 0 for b in budgets)


async def test_the_waiting_line_is_one_for_every_sidecar_of_the_wallet(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    """A call waiting in sidecar A for held money is not overtaken by a later call arriving at
    sidecar B that would fit at once: B's call queues behind it, across processes."""
    assert standin.url is not None
    settings = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_REDIS_URL": redis_server.url,
        "A11I_NAMESPACE": "team-a",
        "A11I_BUDGET_USD": "0.01",
        "A11I_REDIS_TIMEOUT": "2",
    }
    a, b = [await sidecars.start(**settings, A11I_AGENT=f"agent-{i}") for i in range(2)]

    def chat(max_tokens: int, name: str) -> dict[str, object]:
        return {**CHAT, "max_tokens": max_tokens, "user": name}

    async with aiohttp.ClientSession() as http:

        async def call(url: str, body: dict[str, object]) -> int:
            async with http.post(
                url + "/v1/chat/completions", json=body, headers=HEADERS
            ) as response:
                await response.read()
                return response.status

        # x holds $0.006 (600 output tokens of gpt-4o) for 1.5 s (the stand-in's next answer
        # only is slow).
        standin.configure(times=1, delay_ms=1500)
        first = asyncio.ensure_future(call(a, chat(600, "x")))
        for _ in range(300):
            if standin.requests:
                break
            await asyncio.sleep(0.01)
        # y needs $0.006 too: it fits beside what is spent, not beside x's hold: it waits.
        waiting = asyncio.ensure_future(call(a, chat(600, "y")))
        client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            for _ in range(200):
                if await client.zcard("a11i:wallet:team-a:line") == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("y never joined the line")
        finally:
            await client.aclose()
        # z needs $0.003: it would fit at once beside x's hold, but y came first.
        later = asyncio.ensure_future(call(b, chat(300, "z")))
        statuses = await asyncio.gather(first, waiting, later)
    assert statuses == [200, 200, 200]
    order = [r.json["user"] for r in standin.requests if isinstance(r.json, dict)]
    assert order == ["x", "y", "z"]


async def test_a_calls_event_is_in_the_stream_once_its_answer_is(
    standin: StandIn, redis_server: RedisServer, sidecars: Sidecars
) -> None:
    """The settle script appends a non-streamed call's event: by the time the agent has the
    answer, the stream has its event (no background writer to wait for), once."""
    assert standin.url is not None
    url = await sidecars.start(
        A11I_OPENAI_BASE=standin.url,
        A11I_REDIS_URL=redis_server.url,
        A11I_NAMESPACE="team-e",
        A11I_AGENT="agent-e",
        A11I_BUDGET_USD="5",
        A11I_REDIS_TIMEOUT="2",
    )
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            costs = []
            for _ in range(3):
                async with http.post(
                    url + "/v1/chat/completions", json=CHAT, headers=HEADERS
                ) as response:
                    assert response.status == 200
                    costs.append(response.headers["x-a11i-cost-usd"])
                    await response.read()
                events = [fields for _, fields in await client.xrange("a11i:events")]
                assert [event["cost_usd"] for event in events] == costs
            assert {event["agent"] for event in events} == {"agent-e"}
            assert {event["decision"] for event in events} == {"allow"}
            assert all(event["status"] == "200" and event["complete"] == "1" for event in events)
            # A streamed call's event is written by the event writer once the stream ends.
            async with http.post(
                url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=HEADERS
            ) as response:
                assert response.status == 200
                await response.read()
            for _ in range(50):
                if await client.xlen("a11i:events") >= 4:
                    break
                await asyncio.sleep(0.1)
            events = [fields for _, fields in await client.xrange("a11i:events")]
        wallet = await wallet_of(redis_server.url, "team-e")
    finally:
        await client.aclose()
    assert len(events) == 4
    assert events[-1]["streamed"] == "1"
    charged = sum(Decimal(event["cost_usd"]) for event in events)
    # Costs are charged rounded up to the nano-dollar.
    assert abs(charged - Decimal(wallet["spent_nanos"]) / 10**9) <= Decimal("0.000001")
