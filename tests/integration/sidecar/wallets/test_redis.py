"""The Redis wallet against a real ``redis-server``: concurrency across clients and processes,
equivalence with the in-memory reference, the emergency stop, and Redis going away."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.commands.core import AsyncScript

from a11i.core.policy import BudgetPolicy, Decision, ExhaustedAction, Period, WalletState
from a11i.core.wallets import Reservation, to_usd
from a11i.sidecar.redis_clients import ScriptBatcher, connect
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.redis import (
    EXPIRE_BATCH,
    RedisWallet,
    WalletUnavailable,
    set_cluster_stop,
)
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

WORST = Decimal("0.001")
#: Fits 20 calls at their worst case.
LIMIT = WORST * 20


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


WalletFactory = Callable[..., Awaitable[RedisWallet]]


@pytest.fixture
async def make_wallet() -> AsyncIterator[WalletFactory]:
    """Start RedisWallets, each on its own client (as separate sidecars are); close them all."""
    wallets: list[RedisWallet] = []
    clients: list[aioredis.Redis] = []

    async def make(url: str, namespace: str, **options: object) -> RedisWallet:
        connection = aioredis.Redis.from_url(url)
        clients.append(connection)
        options.setdefault("policy", BudgetPolicy(limit_usd=LIMIT))
        options.setdefault("period", Period.TOTAL)
        wallet = RedisWallet(connection, namespace=namespace, agent="agent", **options)  # type: ignore[arg-type]
        wallets.append(wallet)
        await wallet.start()
        return wallet

    yield make
    for wallet in wallets:
        await wallet.close()
    for connection in clients:
        await connection.aclose()


def _namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:10]}"


async def _cycle(wallet: RedisWallet, rng: random.Random) -> int:
    """One call: reserve the worst case, run a moment, settle a smaller actual. Nanos charged."""
    verdict, lease = await wallet.reserve(WORST)
    if lease is None:
        assert verdict.decision is Decision.BLOCK
        return -1
    await asyncio.sleep(rng.uniform(0, 0.01))
    actual_nanos = rng.randint(1, 1_000_000)
    await wallet.settle(lease, to_usd(actual_nanos))
    return actual_nanos


async def _wallet_hash(client: aioredis.Redis, namespace: str) -> dict[str, str]:
    raw = await client.hgetall(f"a11i:wallet:{namespace}")
    return {_str(key): _str(value) for key, value in raw.items()}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_concurrent_wallets_never_overspend(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    # A generous timeout: this test is about concurrency, not about a loaded machine's latency.
    wallets = [await make_wallet(redis_server.url, namespace, timeout_s=2.0) for _ in range(3)]
    rng = random.Random(7)
    results = await asyncio.gather(*(_cycle(wallets[i % 3], rng) for i in range(100)))
    assert all(wallet.connected for wallet in wallets)
    charged = [nanos for nanos in results if nanos >= 0]
    stored = await _wallet_hash(client, namespace)
    assert int(stored["spent_nanos"]) == sum(charged) <= 20 * 1_000_000
    assert await client.hlen(f"a11i:wallet:{namespace}:held") == 0
    # Everything that fits at the worst case got in; the limit was not lost to stale leases.
    assert len(charged) >= 20
    snapshot = await wallets[0].snapshot()
    assert snapshot.reserved_usd == 0
    assert snapshot.spent_usd == to_usd(sum(charged))


def _worker_main(url: str, namespace: str, calls: int, seed: int) -> None:
    """Run in a separate process: ``calls`` concurrent cycles, then print what was charged."""

    async def run() -> list[int]:
        connection = aioredis.Redis.from_url(url)
        wallet = RedisWallet(
            connection,
            namespace=namespace,
            agent=f"worker-{seed}",
            policy=BudgetPolicy(limit_usd=LIMIT),
            period=Period.TOTAL,
            timeout_s=2.0,
        )
        await wallet.start()
        try:
            rng = random.Random(seed)
            return list(await asyncio.gather(*(_cycle(wallet, rng) for _ in range(calls))))
        finally:
            await wallet.close()
            await connection.aclose()

    print(json.dumps(asyncio.run(run())))


async def test_concurrent_processes_never_overspend(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    namespace = _namespace()
    code = (
        "import sys; from tests.integration.sidecar.wallets.test_redis import _worker_main as m; "
    )
    code += " m(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            redis_server.url,
            namespace,
            "50",
            str(seed),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in (1, 2)
    ]
    outputs = await asyncio.gather(*(process.communicate() for process in processes))
    charged: list[int] = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
        charged += [nanos for nanos in json.loads(out) if nanos >= 0]
    stored = await _wallet_hash(client, namespace)
    assert int(stored["spent_nanos"]) == sum(charged) <= 20 * 1_000_000
    assert await client.hlen(f"a11i:wallet:{namespace}:held") == 0
    assert len(charged) >= 20


async def test_start_keeps_an_existing_wallet(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    # Not a test of timeouts: under a loaded CI, 0.25 s once started the second wallet "down",
    # its snapshot then the local view of its own settings.
    first = await make_wallet(redis_server.url, namespace, timeout_s=2.0)
    _, lease = await first.reserve(Decimal("0.005"))
    assert lease is not None
    await first.settle(lease, Decimal("0.004"))
    await first.configure(
        BudgetPolicy(limit_usd=Decimal(5), warn_at_percent=Decimal(50)), Period.DAILY
    )
    second = await make_wallet(
        redis_server.url,
        namespace,
        policy=BudgetPolicy(limit_usd=Decimal(1)),
        period=Period.TOTAL,
        timeout_s=2.0,
    )
    snapshot = await second.snapshot()
    assert snapshot.limit_usd == Decimal(5)
    assert snapshot.period is Period.DAILY
    assert snapshot.spent_usd == Decimal("0.004")
    await second.top_up(Decimal("2.5"))
    assert (await first.snapshot()).limit_usd == Decimal("7.5")


# --- equivalence with the in-memory reference ----------------------------------------------

_START = datetime(2025, 3, 30, 22, 0, tzinfo=UTC)

_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 8_000)),
    st.tuples(st.just("settle"), st.integers(0, 10), st.integers(0, 12_000)),
    st.tuples(st.just("advance"), st.sampled_from([1, 30, 600, 901, 3600, 4 * 3600, 86400])),
    st.tuples(st.just("suspend"), st.booleans()),
    st.tuples(st.just("top_up"), st.integers(1, 10_000)),
    st.tuples(st.just("snapshot")),
)


async def test_expired_leases_are_released_a_bounded_batch_per_call(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    """Leases of a sidecar that died are released by the next calls, at most EXPIRE_BATCH per
    call (no call pays for them all), and the running total always matches the leases held."""
    namespace = _namespace()
    then = datetime(2026, 12, 1, tzinfo=UTC)
    dead = await make_wallet(redis_server.url, namespace, clock=lambda: then, lease_seconds=60)
    small = WORST / 10
    for _ in range(3 * EXPIRE_BATCH + 5):
        _, lease = await dead.reserve(small)
        assert lease is not None
    await dead.close()
    later = await make_wallet(
        redis_server.url,
        namespace,
        clock=lambda: then + timedelta(seconds=61),
        poll_s=3600.0,
        quiet_poll_s=3600.0,
    )
    if not later.watch_rounds:  # its one round (on subscribing) done: no script runs but ours
        await later.watched(1)
    held = f"a11i:wallet:{namespace}:held"
    counts = []
    while True:
        snapshot = await later.snapshot()
        count = await client.zcard(held)
        assert snapshot.reserved_usd == small * count
        counts.append(count)
        if not count:
            break
    assert all(a - b <= EXPIRE_BATCH for a, b in itertools.pairwise(counts))
    verdict, lease = await later.reserve(LIMIT)
    assert lease is not None, verdict


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limit=st.sampled_from([None, 0, 10_000, 30_000]),
    when_exhausted=st.sampled_from(list(ExhaustedAction)),
    period=st.sampled_from([Period.DAILY, Period.WEEKLY, Period.MONTHLY, Period.TOTAL]),
    offset=st.integers(0, 6 * 3600),
    ops=st.lists(_op, max_size=30),
)
async def test_same_rules_as_the_memory_wallet(
    redis_server: RedisServer,
    limit: int | None,
    when_exhausted: ExhaustedAction,
    period: Period,
    offset: int,
    ops: list[tuple[object, ...]],
) -> None:
    now = [_START + timedelta(seconds=offset)]

    def clock() -> datetime:
        return now[0]

    policy = BudgetPolicy(
        limit_usd=None if limit is None else to_usd(limit), when_exhausted=when_exhausted
    )
    namespace = _namespace()
    memory = MemoryWallet(
        policy,
        namespace=namespace,
        agent="agent",
        period=period,
        lease=timedelta(seconds=900),
        clock=clock,
    )
    connection = aioredis.Redis.from_url(redis_server.url)
    shared = RedisWallet(
        connection,
        namespace=namespace,
        agent="agent",
        policy=policy,
        period=period,
        lease_seconds=900.0,
        timeout_s=2.0,
        clock=clock,
    )
    await shared.start()
    held: list[tuple[Reservation, Reservation]] = []
    try:
        for op in ops:
            kind = op[0]
            if kind == "reserve":
                projected = to_usd(int(op[1]))  # type: ignore[call-overload]
                expected, expected_lease = await memory.reserve(projected)
                got, got_lease = await shared.reserve(projected)
                assert (got.decision, got.state) == (expected.decision, expected.state), op
                assert (got_lease is None) == (expected_lease is None)
                if got_lease is not None and expected_lease is not None:
                    assert (got_lease.nanos, got_lease.expires_at, got_lease.period_start) == (
                        expected_lease.nanos,
                        expected_lease.expires_at,
                        expected_lease.period_start,
                    )
                    held.append((expected_lease, got_lease))
            elif kind == "settle" and held:
                expected_lease, got_lease = held.pop(int(op[1]) % len(held))  # type: ignore[call-overload]
                actual = to_usd(int(op[2]))  # type: ignore[call-overload]
                await memory.settle(expected_lease, actual)
                await shared.settle(got_lease, actual)
            elif kind == "advance":
                now[0] += timedelta(seconds=int(op[1]))  # type: ignore[call-overload]
            elif kind == "suspend":
                memory.policy = replace(memory.policy, suspended=bool(op[1]))
                await shared.suspend(bool(op[1]))
            elif kind == "top_up":
                amount = to_usd(int(op[1]))  # type: ignore[call-overload]
                await memory.top_up(amount)
                await shared.top_up(amount)
            assert await shared.snapshot() == await memory.snapshot(), op
    finally:
        await shared.close()
        await connection.aclose()


# --- the emergency stop --------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``check`` holds; fails if it does not within ``within`` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within}s")


async def _refused(wallet: RedisWallet) -> bool:
    verdict, lease = await wallet.reserve(Decimal("0.0001"))
    if lease is not None:
        await wallet.settle(lease, Decimal(0))
        return False
    return verdict.state is WalletState.SUSPENDED


async def _admitted(wallet: RedisWallet) -> bool:
    return not await _refused(wallet)


async def test_a_stop_reaches_another_sidecar_within_a_second(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    operator = await make_wallet(redis_server.url, namespace)
    sidecar = await make_wallet(redis_server.url, namespace)
    other = await make_wallet(redis_server.url, _namespace())
    assert await _admitted(sidecar)

    await operator.suspend(True)
    await _until(lambda: _refused(sidecar), 1.0)
    assert await _admitted(other)
    assert (await sidecar.snapshot()).state is WalletState.SUSPENDED
    await operator.suspend(False)
    await _until(lambda: _admitted(sidecar), 1.0)

    # A stop whose message is lost (written while the sidecar's subscription is broken, and
    # never published) is still seen: subscribing again reads the stops again.
    for flag, seen in (("1", _refused), ("0", _admitted)):
        await client.client_kill_filter(_type="pubsub")
        await client.hset(f"a11i:wallet:{namespace}", "suspended", flag)
        await _until(lambda: seen(sidecar), 1.0)  # noqa: B023 (awaited in this iteration)

    await set_cluster_stop(client, True)
    try:
        await _until(lambda: _refused(sidecar), 1.0)
        await _until(lambda: _refused(other), 1.0)
        verdict, _ = await other.reserve(Decimal("0.0001"))
        assert "cluster" in verdict.reason
    finally:
        await set_cluster_stop(client, False)
    await _until(lambda: _admitted(sidecar), 1.0)
    await _until(lambda: _admitted(other), 1.0)


# --- Redis going away ----------------------------------------------------------------------


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    """A Redis that keeps its data across a restart, as a deployment with persistence does."""
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.close()


async def test_fail_open_accounts_locally_and_reconciles_once(
    persistent_redis: RedisServer, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    wallet = await make_wallet(
        persistent_redis.url, namespace, policy=BudgetPolicy(limit_usd=Decimal(1))
    )
    _, before = await wallet.reserve(Decimal("0.01"))
    _, across = await wallet.reserve(Decimal("0.01"))  # held through the outage
    assert before is not None
    assert across is not None
    await wallet.settle(before, Decimal("0.01"))

    persistent_redis.stop()
    started = time.monotonic()
    for _ in range(10):
        verdict, lease = await wallet.reserve(Decimal("0.005"))
        assert lease is not None
        assert verdict.decision is Decision.ALLOW
        await wallet.settle(lease, Decimal("0.002"))
    await wallet.settle(across, Decimal("0.003"))
    snapshot = await wallet.snapshot()
    assert time.monotonic() - started < 2.0  # one timeout at most, then local decisions
    assert not wallet.connected
    assert snapshot.spent_usd == Decimal("0.033")
    assert wallet.pending_usd == Decimal("0.023")

    persistent_redis.start()
    await _until(lambda: _connected(wallet), 3.0)
    assert wallet.pending_usd == 0
    check = aioredis.Redis.from_url(persistent_redis.url)
    try:
        stored = await _wallet_hash(check, namespace)
        assert int(stored["spent_nanos"]) == 33_000_000
        assert await check.hlen(f"a11i:wallet:{namespace}:held") == 0
        await wallet.watched(3)  # three more watcher rounds: nothing is replayed twice
        stored = await _wallet_hash(check, namespace)
        assert int(stored["spent_nanos"]) == 33_000_000
    finally:
        await check.aclose()
    assert (await wallet.snapshot()).spent_usd == Decimal("0.033")


async def _connected(wallet: RedisWallet) -> bool:
    return wallet.connected


async def test_a_restarted_redis_without_data_gets_the_local_spend(
    make_wallet: WalletFactory,
) -> None:
    server = RedisServer()
    server.start()
    try:
        wallet = await make_wallet(
            server.url, _namespace(), policy=BudgetPolicy(limit_usd=Decimal(1))
        )
        # Spent while Redis had it: seen by the sidecar, lost with Redis's data.
        _, seen = await wallet.reserve(Decimal("0.01"))
        assert seen is not None
        await wallet.settle(seen, Decimal("0.002"))
        server.stop()
        _, lease = await wallet.reserve(Decimal("0.01"))
        assert lease is not None
        await wallet.settle(lease, Decimal("0.004"))
        server.start()
        await _until(lambda: _connected(wallet), 3.0)
        snapshot = await wallet.snapshot()
        # The wallet comes back as the sidecar last saw it, plus what it spent meanwhile.
        assert snapshot.spent_usd == Decimal("0.006")
        assert snapshot.limit_usd == Decimal(1)
    finally:
        server.close()


async def test_fail_closed_refuses_quickly(make_wallet: WalletFactory) -> None:
    server = RedisServer()
    server.start()
    try:
        wallet = await make_wallet(server.url, _namespace(), fail_open=False, timeout_s=0.25)
        _, held = await wallet.reserve(Decimal("0.001"))
        assert held is not None

        # Slow: the server is frozen, so a call would wait forever but for the timeout.
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(WalletUnavailable) as raised:
                    await wallet.reserve(Decimal("0.001"))
                assert time.monotonic() - started < 0.5
                assert raised.value.status == 503
                assert raised.value.kind == "wallet_unavailable"
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await _until(lambda: _connected(wallet), 3.0)

        # Gone: refused at once; a call admitted before still settles (accounted locally).
        server.stop()
        await _until(lambda: _disconnected(wallet), 3.0)
        started = time.monotonic()
        with pytest.raises(WalletUnavailable):
            await wallet.reserve(Decimal("0.001"))
        assert time.monotonic() - started < 0.5
        await wallet.settle(held, Decimal("0.0005"))
        assert (await wallet.snapshot()).spent_usd == Decimal("0.0005")
        server.start()
        await _until(lambda: _connected(wallet), 3.0)
        assert (await wallet.snapshot()).spent_usd == Decimal("0.0005")
    finally:
        server.close()


async def _disconnected(wallet: RedisWallet) -> bool:
    return not wallet.connected


async def test_every_sidecar_uses_the_wallets_time_zone(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    """An operator configures a Daily wallet in Europe/Berlin; a sidecar set to UTC must count
    the day from Berlin's midnight too, or at 23:30 UTC (00:30 in Berlin) the two would start
    different days and one would reset the other's spend."""
    namespace = _namespace()
    now = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 00:30 on the 24th in Berlin
    berlin_midnight = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    operator = await make_wallet(
        redis_server.url, namespace, period=Period.DAILY, zone="Europe/Berlin", clock=lambda: now
    )
    await operator.configure(BudgetPolicy(limit_usd=LIMIT), Period.DAILY)
    assert (await _wallet_hash(client, namespace))["zone"] == "Europe/Berlin"
    sidecar = await make_wallet(
        redis_server.url, namespace, period=Period.DAILY, zone="UTC", clock=lambda: now
    )
    _, lease = await sidecar.reserve(WORST)
    assert lease is not None
    await sidecar.settle(lease, WORST)
    snapshot = await sidecar.snapshot()
    assert snapshot.period_start == berlin_midnight
    assert snapshot.spent_usd == WORST
    # The operator's view agrees: nothing was reset.
    assert (await operator.snapshot()).spent_usd == WORST


async def test_a_redis_with_a_password(
    make_wallet: WalletFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The chart's bundled Redis requires a password: with it in the URL the wallet works; with
    a wrong one (or none) it is refused like an unreachable Redis (here fail closed), and the
    log says it is the password, not an outage."""
    server = RedisServer(password="pw-0123456789abcdef")
    server.start()
    try:
        namespace = _namespace()
        wallet = await make_wallet(server.url, namespace)
        _verdict, lease = await wallet.reserve(WORST)
        assert lease is not None
        await wallet.settle(lease, WORST)
        assert (await wallet.snapshot()).spent_usd == WORST

        wrong = server.url.replace("pw-0123456789abcdef", "not-the-password")
        refused = await make_wallet(wrong, namespace, fail_open=False, timeout_s=1.0)
        with pytest.raises(WalletUnavailable, match="cannot be reached"):
            await refused.reserve(WORST)
        assert "refused the password in A11I_REDIS_URL" in caplog.text
        bare = f"redis://127.0.0.1:{server.port}/0"
        anonymous = await make_wallet(bare, namespace, fail_open=False, timeout_s=1.0)
        with pytest.raises(WalletUnavailable):
            await anonymous.reserve(WORST)
        # Nothing the refused wallets did reached the shared one.
        assert (await wallet.snapshot()).spent_usd == WORST
    finally:
        server.close()


async def test_concurrent_scripts_share_round_trips_and_survive_a_script_flush(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    """Scripts of concurrent calls leave together (fewer round trips than scripts, each reply
    to its caller), and a Redis that lost its scripts gets them again within the batch."""
    connection = aioredis.Redis.from_url(redis_server.url)
    batcher = ScriptBatcher(connection)
    script = connection.register_script("return {KEYS[1], ARGV[1]}")
    try:
        for _ in range(2):
            replies = await asyncio.gather(
                *(batcher.run(script, [f"key-{i}"], [str(i)]) for i in range(50))
            )
            assert [(_str(key), _str(arg)) for key, arg in replies] == [
                (f"key-{i}", str(i)) for i in range(50)
            ]
            await client.script_flush()
        assert batcher.scripts == 100
        assert batcher.batches < 100
        failing = connection.register_script("return redis.error_reply('no budget here')")
        with pytest.raises(aioredis.ResponseError, match="no budget here"):
            await batcher.run(failing, ["k"], [])
    finally:
        await batcher.close()
        await connection.aclose()


async def test_callers_are_answered_in_the_order_redis_ran_their_scripts(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    """A script Redis lacked runs again after the rest of its batch: a snapshot queued behind
    a settle whose script was missing read the wallet before that settle, and must reach its
    caller first, or the wallet would keep the older state as its latest view."""
    connection = aioredis.Redis.from_url(redis_server.url)
    batcher = ScriptBatcher(connection)
    key = f"order-{uuid.uuid4().hex}"
    writer = connection.register_script("redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]")
    reader = connection.register_script("return redis.call('GET', KEYS[1]) or 'none'")
    answered: list[tuple[str, str]] = []

    async def call(name: str, script: AsyncScript, args: list[str]) -> None:
        answered.append((name, _str(await batcher.run(script, [key], args))))

    try:
        await client.script_flush()
        await batcher.run(reader, [key], [])  # alone: loaded; the writer is not
        await asyncio.gather(call("writer", writer, ["new"]), call("reader", reader, []))
        assert batcher.batches == 2  # the two went together
        assert answered == [("reader", "none"), ("writer", "new")]
    finally:
        await batcher.close()
        await connection.aclose()


def _event(namespace: str, cost: str) -> dict[str, str]:
    return {"kind": "call", "namespace": namespace, "agent": "agent", "cost_usd": cost}


async def _events_of(client: aioredis.Redis, namespace: str) -> list[dict[str, str]]:
    entries = await client.xrange("a11i:events")
    events = [{_str(k): _str(v) for k, v in fields.items()} for _, fields in entries]
    return [event for event in events if event["namespace"] == namespace]


async def test_a_settlement_appends_its_event_once_however_often_it_is_retried(
    redis_server: RedisServer, client: aioredis.Redis, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    wallet = await make_wallet(redis_server.url, namespace, events=True)
    _, lease = await wallet.reserve(WORST)
    assert lease is not None
    event = _event(namespace, "0.0004")
    await wallet.settle(lease, Decimal("0.0004"), event)
    # The settlement and its event are one script: the stream holds it once the settle returns.
    assert await _events_of(client, namespace) == [event]
    # A retried settlement (its answer lost) is neither charged nor written a second time.
    await wallet.settle(lease, Decimal("0.0004"), event)
    assert await _events_of(client, namespace) == [event]
    assert (await wallet.snapshot()).spent_usd == Decimal("0.0004")
    # A call without an event (a wallet's own settlement) writes none.
    _, plain = await wallet.reserve(WORST)
    assert plain is not None
    await wallet.settle(plain, Decimal("0.0001"))
    assert await _events_of(client, namespace) == [event]


async def test_an_event_goes_only_to_its_own_namespaces_wallet(
    redis_server: RedisServer, make_wallet: WalletFactory
) -> None:
    wallet = await make_wallet(redis_server.url, _namespace(), events=True)
    plain = await make_wallet(redis_server.url, _namespace())
    for carrier, event in (
        (wallet, _event("elsewhere", "0")),
        (plain, _event(plain.namespace, "0")),
    ):
        _, lease = await carrier.reserve(WORST)
        assert lease is not None
        with pytest.raises(ValueError, match="event"):
            await carrier.settle(lease, Decimal(0), event)


async def test_the_events_a_settlement_appends_keep_the_streams_cap(
    make_wallet: WalletFactory,
) -> None:
    server = RedisServer()
    server.start()
    check = aioredis.Redis.from_url(server.url)
    try:
        namespace = _namespace()
        wallet = await make_wallet(
            server.url,
            namespace,
            events=True,
            events_max_length=10,
            policy=BudgetPolicy(limit_usd=None),
        )
        for index in range(300):
            _, lease = await wallet.reserve(WORST)
            assert lease is not None
            await wallet.settle(lease, WORST, _event(namespace, str(index)))
        # Trimmed as XADD MAXLEN ~ trims: whole nodes of 100 entries, never below the cap.
        assert 10 <= await check.xlen("a11i:events") <= 200
        newest = await check.xrevrange("a11i:events", count=1)
        assert newest[0][1][b"cost_usd"] == b"299"
    finally:
        await check.aclose()
        server.close()


async def test_events_settled_while_redis_is_away_are_appended_once_when_it_is_back(
    persistent_redis: RedisServer, make_wallet: WalletFactory
) -> None:
    namespace = _namespace()
    wallet = await make_wallet(
        persistent_redis.url, namespace, events=True, policy=BudgetPolicy(limit_usd=Decimal(1))
    )
    _, before = await wallet.reserve(Decimal("0.01"))
    assert before is not None
    persistent_redis.stop()
    away = [_event(namespace, f"0.00{i}") for i in range(1, 4)]
    for event in away:
        _, lease = await wallet.reserve(Decimal("0.01"))
        assert lease is not None
        await wallet.settle(lease, Decimal(event["cost_usd"]), event)
    # The lease taken before: its settlement may have run (an answer lost): replayed once.
    await wallet.settle(before, Decimal("0.004"), _event(namespace, "0.004"))
    assert not wallet.connected
    persistent_redis.start()
    await _until(lambda: _connected(wallet), 3.0)
    await wallet.watched(2)  # more watcher rounds: nothing is replayed twice
    check = aioredis.Redis.from_url(persistent_redis.url)
    try:
        events = await _events_of(check, namespace)
        stored = await _wallet_hash(check, namespace)
    finally:
        await check.aclose()
    assert events == [*away, _event(namespace, "0.004")]
    # The events of the namespace add up to its spend.
    assert sum(Decimal(event["cost_usd"]) for event in events) == to_usd(int(stored["spent_nanos"]))


async def test_an_event_redis_refuses_never_costs_the_settlement(
    make_wallet: WalletFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    check = aioredis.Redis.from_url(server.url)
    try:
        await check.set("a11i:events", "not a stream")
        namespace = _namespace()
        wallet = await make_wallet(server.url, namespace, events=True)
        _, lease = await wallet.reserve(WORST)
        assert lease is not None
        await wallet.settle(lease, Decimal("0.0003"), _event(namespace, "0.0003"))
        assert int((await _wallet_hash(check, namespace))["spent_nanos"]) == 300_000
        assert await check.zcard(f"a11i:wallet:{namespace}:held") == 0
        assert "event was not appended" in caplog.text
        assert wallet.connected
    finally:
        await check.aclose()
        server.close()


async def test_closing_a_client_closes_its_connections(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    # What every wallet, event stream and admin command closes: its connections end with it,
    # not when the garbage collector finds them (a ResourceWarning, a descriptor held).
    made = connect(redis_server.url)
    name = f"closing-{uuid.uuid4().hex[:8]}"
    await made.client_setname(name)

    async def named() -> int:
        return sum(1 for seen in await client.client_list() if seen.get("name") == name)

    assert await named() == 1
    await made.aclose()
    for _ in range(100):
        if await named() == 0:
            break
        await asyncio.sleep(0.02)
    # ``made`` is still referenced here: only aclose can have closed its connection.
    assert await named() == 0
