"""The shared wallet: one Redis holds a namespace's wallet for every sidecar of that namespace.

Adapter over the pure rules of ``a11i.core.wallets``: each operation is one Lua script run
atomically by Redis (EVALSHA), applying exactly those rules — a property test holds this backend
to ``MemoryWallet`` — so concurrent sidecars can never all pass one stale check. Admission is
decided inside the script; Python only turns the script's numbers into a ``Verdict`` with
``a11i.core.policy.decide`` and builds the ``Reservation``.

Keys (``<ns>`` is the namespace; ``WalletKeys``: in a Redis Cluster they are hash-tagged,
``a11i:{<ns>}:wallet``, ``a11i:{<ns>}:held``, …, so that each script touches one slot):

- ``a11i:wallet:<ns>`` — hash: ``limit_nanos`` (integer nano-dollars, ``""`` = no limit),
  ``warn_at`` and ``optimize_at`` (decimal percent strings), ``when_exhausted`` (Block | Warn),
  ``period`` (Daily | Weekly | Monthly | Total), ``zone`` (the IANA zone whose midnights start
  the periods; every sidecar adopts it), ``period_start`` and ``origin`` (unix seconds),
  ``spent_nanos`` (integer), ``reserved_nanos`` (what the leases of ``reserved_period`` hold:
  a running total, so no script reads every lease), ``suspended`` ("0" / "1": the namespace's
  emergency stop).
- ``a11i:wallet:<ns>:held`` — sorted set: the leases of the current period, ``"nanos:id"``
  scored by when they expire; a script expires only those past their time.
- ``a11i:wallet:<ns>:settled`` — sorted set: ids of settled leases scored by when, kept for
  ``SETTLED_RETENTION_S``; it makes a settlement idempotent, so a settlement retried after a
  timeout (did it run?) is never charged twice.
- ``a11i:wallet:<ns>:line`` — sorted set: the waiting line (``reserve_in_line``).
- ``a11i:stop:cluster`` — ``"1"`` while the cluster-wide emergency stop is on. No script reads
  it (in a cluster it lives in another slot): each sidecar's watcher does, and refuses on it.
- channel ``a11i:stop`` — a message (the namespace, or ``"cluster"``) when a stop changes.
- the namespace's event stream (``a11i.sidecar.telemetry.events.stream_key``; in a cluster in
  the wallet's slot): a wallet built with ``events=True`` (the sidecar's) takes each call's
  event with its settlement and the settle script appends it, so a call costs Redis two round
  trips (reserve, settle), not three, and its event is written once with the settlement Redis
  had not seen (a retried or replayed settlement appends nothing).

Earlier releases kept the leases in a hash ``a11i:wallet:<ns>:leases``: sidecars of both kinds
share one wallet during an upgrade (the same spend, limit and stops), but neither counts what
the other's calls in flight hold, so for that while the wallet can pass its limit by what the
older sidecars' calls in flight hold (docs/capacity.md).

Numbers: Redis runs Lua 5.1, whose numbers are doubles, exact for integers up to 2^53 nano-dollars
(about $9,007,199), so a limit or a spend must stay below that; money is only ever added in Redis
with HINCRBY of a decimal string (never a Lua number turned back into text, which would print
``1e+15``), and timestamps travel as Python ``repr`` strings, read by Lua as the same doubles.

Failure: every Redis call is bounded by ``timeout_s``. When Redis does not answer, the wallet is
*down*: with ``fail_open`` calls are decided against a local shadow book (the last state Redis
gave, with this sidecar's own leases) and settlements are recorded locally; a watcher reconnects
and replays those settlements through the same (idempotent) settle script, so local spend is
never lost and never counted twice. Without ``fail_open`` ``reserve`` raises
``WalletUnavailable`` (503) at once. Settling and ``snapshot`` never fail for want of Redis.

What it may not do: own the policy once Redis holds a wallet (the sidecar's settings only fill a
wallet that does not exist yet; an operator's ``configure`` wins), block a call longer than the
timeout, or lose a settlement. The emergency stop reaches every sidecar within a second: by
pub/sub, subscribed again (and the stops read again) at once when the subscription breaks, and
polled every ``POLL_S`` while it is not subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.typing import EncodableT, FieldT

from a11i.core.errors import WalletUnavailable
from a11i.core.model import usd
from a11i.core.policy import (
    BudgetPolicy,
    Decision,
    ExhaustedAction,
    Period,
    Verdict,
    WalletState,
    decide,
    period_start,
    state_of,
)
from a11i.core.wallets import (
    Reservation,
    WalletBook,
    WalletSnapshot,
    advance,
    new_book,
    reserve,
    settle,
    snapshot_of,
    to_nanos,
    to_usd,
)
from a11i.sidecar.redis_clients import ScriptBatcher, is_cluster
from a11i.sidecar.telemetry.events import MAX_LENGTH, STREAMS, stream_key
from a11i.sidecar.wallets.journal import JournalEntry, SpendJournal

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from a11i.sidecar.redis_clients import AnyRedis


log = logging.getLogger(__name__)

STOP_CHANNEL = "a11i:stop"
CLUSTER_STOP_KEY = "a11i:stop:cluster"
#: Seconds between checks of the stop flags (and of whether Redis is back) while the stop
#: channel is not subscribed.
POLL_S = 0.5
#: Seconds between those checks while it is: a message on a live subscription is not lost (a
#: broken one is subscribed again, and the stops read again, at once), so this poll only
#: refreshes the figures of ``last_snapshot``. Each sidecar's poll is Redis work that grows
#: with the fleet, not with its calls: 2 reads a second from 100,000 pods would be a core.
QUIET_POLL_S = 10.0
#: Seconds a settled lease id is remembered, so that a retried settlement is not charged twice.
SETTLED_RETENTION_S = 3600.0
#: Leases expired by one script at most; a backlog (a sidecar that died with many calls in
#: flight) is worked off by the next calls, each paying for a bounded share.
EXPIRE_BATCH = 32
#: Seconds a wallet's start may take to learn a Redis Cluster's slots.
CLUSTER_START_S = 2.0
#: Largest amount of nano-dollars Lua's doubles hold exactly.
MAX_NANOS = 2**53

#: What "Redis did not answer" looks like; anything else (a script error) is a bug and raises.
#: A Redis Cluster adds its own: no node reachable, a slot not covered, CLUSTERDOWN.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ClusterError,
    TimeoutError,
    OSError,
)
_UNREACHABLE = UNREACHABLE


# Shared by the scripts. KEYS: 1 wallet hash, 2 leases (a sorted set of "nanos:id" by
# expires_at: only leases of the current period, those of an earlier one are dropped when it
# ends), 3 settled zset (4 the line). Every script touches only these keys of one namespace and
# O(1) of them per call whatever the number of leases: the wallet's hash is read once, the money
# held is a running total (``reserved_nanos``, for the period ``reserved_period``), and leases
# past their time are released only by a call that does not fit and by a snapshot (each
# sidecar's watcher takes one), at most EXPIRE_BATCH at a time (a backlog waits for the next:
# the total is then too high, never too low). ARGV 1-4: now, and the starts of the
# Daily, Weekly and Monthly periods that contain it (the Python side computes them with
# ``period_start``; Total starts at the stored origin).
_PRELUDE = """
local F = {'spent_nanos', 'reserved_nanos', 'limit_nanos', 'warn_at', 'optimize_at',
  'when_exhausted', 'period', 'period_start', 'origin', 'suspended', 'zone', 'reserved_period'}
local w = redis.call('HMGET', KEYS[1], unpack(F))

local function add(field, index, nanos)
  if nanos ~= '0' then w[index] = redis.call('HINCRBY', KEYS[1], field, nanos) end
end

local function release(member)
  if redis.call('ZREM', KEYS[2], member) == 1 then
    local nanos = string.match(member, '^([^:]+)')
    if nanos ~= '0' then add('reserved_nanos', 2, '-' .. nanos) end
  end
end

local function advance()
  if not w[7] or not w[8] or not w[9] then return nil end
  local start = w[9]
  if w[7] == 'Daily' then start = ARGV[2]
  elseif w[7] == 'Weekly' then start = ARGV[3]
  elseif w[7] == 'Monthly' then start = ARGV[4] end
  if tonumber(start) > tonumber(w[8]) then
    redis.call('HSET', KEYS[1], 'period_start', start, 'spent_nanos', '0')
    w[8], w[1] = start, '0'
  end
  if w[12] ~= w[8] then
    -- A new period (or a wallet written before the running total): nothing is held in it;
    -- the calls of the last one are charged to it or to nothing when they settle.
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'reserved_nanos', '0', 'reserved_period', w[8])
    w[2], w[12] = '0', w[8]
  end
  return w[8]
end

-- Leases past their time, released: only where it can change an answer (a call that does not
-- fit, a snapshot), never on the path of a call that fits anyway.
local function expire()
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, EXPIRE_BATCH)
  for i = 1, #expired do release(expired[i]) end
end

local function state(flag)
  return {'ok', flag, w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11] or ''}
end

-- Whether ARGV[6] nano-dollars fit beside what is spent and held, and whether they fit beside
-- what is spent alone (worth waiting for). The namespace's stop refuses everything.
local function fits()
  if w[10] == '1' then return false, false end
  if w[3] == '' then return true, false end
  local worth = tonumber(w[1]) + tonumber(ARGV[6]) <= tonumber(w[3])
  return w[6] == 'Warn' or tonumber(w[1]) + tonumber(w[2]) + tonumber(ARGV[6]) <= tonumber(w[3]),
    worth
end

-- The reply carries the money held before this lease.
local function hold()
  local reply = state(1)
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6] .. ':' .. ARGV[5])
  add('reserved_nanos', 2, ARGV[6])
  return reply
end
""".replace("EXPIRE_BATCH", str(EXPIRE_BATCH))

# ARGV 5: lease id, 6: projected nanos, 7: expires_at. Admission is decided here.
_RESERVE = (
    _PRELUDE
    + """
if not advance() then return {'missing'} end
if not fits() then
  expire()
  if not fits() then return state(0) end
end
return hold()
"""
)

# The waiting line (docs/budget.md): calls that fit beside what is spent but not beside what
# calls in flight hold wait in arrival order across every sidecar of the wallet. KEYS 4: a
# sorted set of tickets scored by their deadline (every waiter waits as long, so the earliest
# deadline is the earliest arrival); a ticket past its deadline is dropped.
# ARGV 5: lease id, 6: projected nanos, 7: expires_at, 8: ticket, 9: its deadline, 10: '1' to
# join the line when refused for held money only. Flag: 1 admitted, 2 waiting in the line (not
# this call's turn, or the money is still held), 0 refused.
_RESERVE_IN_LINE = (
    _PRELUDE
    + """
if not advance() then return {'missing'} end
local line, ticket = KEYS[4], ARGV[8]
redis.call('ZREMRANGEBYSCORE', line, '-inf', '(' .. ARGV[1])
if w[10] == '1' then
  redis.call('ZREM', line, ticket)
  return state(0)
end
local fit, worth = fits()
if not fit then
  expire()
  fit, worth = fits()
end
local head = redis.call('ZRANGE', line, 0, 0)[1]
if head and head ~= ticket then
  -- Someone who came earlier is waiting: this call queues behind them.
  if worth and ARGV[10] == '1' then redis.call('ZADD', line, 'NX', ARGV[9], ticket) end
  if worth and redis.call('ZSCORE', line, ticket) then return state(2) end
  return state(0)
end
if not fit then
  if worth and ARGV[10] == '1' then
    redis.call('ZADD', line, 'NX', ARGV[9], ticket)
    return state(2)
  end
  redis.call('ZREM', line, ticket)
  return state(0)
end
redis.call('ZREM', line, ticket)
return hold()
"""
)

# ARGV 5: lease id, 6: the lease's period start, 7: actual nanos, 8: forget settled ids before,
# 9: the nanos the lease holds; with the call's event (``settle(event=...)``) KEYS 5: the
# namespace's event stream (in a Redis Cluster in the wallet's slot), ARGV 10: its MAXLEN, 11…:
# the event's fields and values. The event is appended only with a settlement Redis had not
# seen: once per call, however often the settlement is retried; last, and with pcall, so that
# an event Redis refuses (a stream key of another type) never leaves the charge half made: the
# reply then carries the error after the state. Flag: 1 charged to the current period, 0 the
# lease's period is over, -1 already settled.
_SETTLE = (
    _PRELUDE
    + """
local current = advance()
if not current then return {'missing'} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[8])
if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[5]) == 0 then return state(-1) end
release(ARGV[9] .. ':' .. ARGV[5])
local flag = 0
if tonumber(ARGV[6]) == tonumber(current) then
  add('spent_nanos', 1, ARGV[7])
  flag = 1
end
local reply = state(flag)
if #ARGV > 10 then
  local added = redis.pcall('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*', unpack(ARGV, 11))
  if type(added) == 'table' and added.err then reply[#reply + 1] = added.err end
end
return reply
"""
)

_SNAPSHOT = (
    _PRELUDE
    + """
if not advance() then return {'missing'} end
expire()
return state(0)
"""
)


# Fills only the fields that are absent: a starting sidecar never overwrites a wallet that an
# operator or another sidecar already holds. ARGV: the fields' values in _FIELDS order.
_INIT = """
local fields = {'limit_nanos', 'warn_at', 'optimize_at', 'when_exhausted', 'period', 'zone',
  'period_start', 'origin', 'spent_nanos', 'suspended'}
local created = 0
for i = 1, #fields do created = created + redis.call('HSETNX', KEYS[1], fields[i], ARGV[i]) end
return created
"""

# ARGV 1: nanos added to the limit (a wallet without a limit stays without one).
_TOP_UP = """
local limit = redis.call('HGET', KEYS[1], 'limit_nanos')
if not limit then return -1 end
if limit == '' then return 0 end
redis.call('HINCRBY', KEYS[1], 'limit_nanos', ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class WalletKeys:
    """The Redis keys of one namespace's wallet.

    Standalone and Sentinel keep the names of earlier releases (``a11i:wallet:<ns>``, …), so an
    upgrade needs no migration; a Redis Cluster gets them hash-tagged on the namespace
    (``a11i:{<ns>}:wallet``, …): every key a script touches lives in one slot."""

    wallet: str
    held: str
    settled: str
    line: str

    @classmethod
    def of(cls, namespace: str, *, cluster: bool = False) -> WalletKeys:
        if cluster:
            if "{" in namespace or "}" in namespace:
                raise ValueError(f"a wallet name may not hold braces: {namespace!r}")
            base = f"a11i:{{{namespace}}}"
            return cls(f"{base}:wallet", *(f"{base}:{part}" for part in _PARTS))
        base = f"a11i:wallet:{namespace}"
        return cls(base, *(f"{base}:{part}" for part in _PARTS))


#: The keys beside the wallet's hash: its leases ("nanos:id" by expires_at; earlier releases
#: kept a hash ``:leases``, left to them), the settled ids, the waiting line.
_PARTS = ("held", "settled", "line")


@dataclass(frozen=True, slots=True)
class _Remote:
    """The wallet as a script last returned it."""

    policy: BudgetPolicy
    period: Period
    period_start: float
    origin: float
    spent: int
    reserved: int
    namespace_stop: bool
    cluster_stop: bool
    #: The IANA zone whose midnights start the wallet's periods ("" for a wallet written
    #: before zones were stored: each sidecar then uses its own A11I_BUDGET_TIMEZONE).
    zone: str = ""

    @property
    def committed(self) -> int:
        return self.spent + self.reserved


@dataclass(frozen=True, slots=True)
class _Pending:
    """A settlement made while Redis was down, to replay when it is back."""

    lease_id: str
    #: None: the current period of a Total wallet this sidecar never saw in Redis (its local
    #: period start was a guess; a Total wallet has one period).
    period_start: float | None
    nanos: int
    #: What the lease holds in Redis, which names it there ("nanos:id"); 0 when unknown (a
    #: journal of an earlier run): the lease is then released when it expires.
    held: int = 0
    #: The call's event (fields and values, flat), appended by the settle script when it
    #: replays: kept in memory only (a journal of an earlier run has none).
    event: tuple[str, ...] = ()


Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RedisWallet:
    """One namespace's wallet, shared through Redis by every sidecar of the namespace."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        namespace: str,
        agent: str,
        policy: BudgetPolicy,
        period: Period,
        lease_seconds: float = 900.0,
        timeout_s: float = 0.25,
        fail_open: bool = True,
        clock: Clock = _utcnow,
        owns_client: bool = False,
        zone: str = "UTC",
        poll_s: float = POLL_S,
        journal: SpendJournal | None = None,
        quiet_poll_s: float = QUIET_POLL_S,
        events: bool = False,
        events_max_length: int = MAX_LENGTH,
    ) -> None:
        _check_nanos(policy)
        #: Whether ``settle`` takes the call's event and its script appends it to the
        #: namespace's stream (``stream_key``): one round trip for both.
        self.carries_events = events
        self._stream = stream_key(namespace, cluster=is_cluster(client)) if events else ""
        self._events_max_length = str(events_max_length)
        #: Where spend settled while Redis is down is kept durably until Redis has it.
        self._journal = journal
        self._replayed: list[str] = []
        self.namespace = namespace
        self.agent = agent
        self._client = client
        self._owns_client = owns_client
        self._policy = policy
        self._period = period
        self._lease_seconds = lease_seconds
        self._timeout = timeout_s
        self.fail_open = fail_open
        self._clock = clock
        self.keys = WalletKeys.of(namespace, cluster=is_cluster(client))
        self._key = self.keys.wallet
        self._keys = [self.keys.wallet, self.keys.held, self.keys.settled, self.keys.line]
        self._prefix = f"{os.getpid()}-"
        # register_script only hashes the source; the script is loaded on first use (and again
        # after a NOSCRIPT, e.g. a restarted Redis) by redis-py.
        self._reserve_script = client.register_script(_RESERVE)
        self._line_script = client.register_script(_RESERVE_IN_LINE)
        self._settle_script = client.register_script(_SETTLE)
        self._snapshot_script = client.register_script(_SNAPSHOT)
        self._init_script = client.register_script(_INIT)
        #: The reserve, settle and snapshot scripts of concurrent calls leave in one pipeline.
        self._batcher = ScriptBatcher(client, timeout_s=max(timeout_s, 1.0))
        self._top_up_script = client.register_script(_TOP_UP)
        self._link: Literal["new", "up", "down"] = "new"
        self._remote: _Remote | None = None
        #: Leases this sidecar holds in Redis, so a shadow book knows what is its own.
        self._held: dict[str, Reservation] = {}
        #: While down: the local book calls are decided against.
        self._shadow: WalletBook | None = None
        self._pending: list[_Pending] = []
        #: The local view of the emergency stops; reserve refuses on it without a round trip.
        self._namespace_stop = False
        self._cluster_stop = False
        #: Bumped by each local change of the stops, so an older read does not undo it.
        self._stop_version = 0
        #: Whether the last read of the cluster-wide stop failed (said once in the log).
        self._stop_unread = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Set by close(): the background loops also end on it, because a cancellation that
        #: lands while redis-py's own read timeout expires can be swallowed (Python 3.11).
        self._closing = False
        self._zone = ZoneInfo(zone)
        self._zone_name = zone
        #: Seconds between the watcher's rounds when no stop message wakes it and the stop
        #: channel is not subscribed (messages could be missed), and when it is.
        self._poll_s = poll_s
        self._quiet_poll_s = max(quiet_poll_s, poll_s)
        #: Whether the listener holds a live subscription to the stop channel.
        self._subscribed = False
        #: Rounds the watcher has finished (refreshed the stops, or tried to reconnect).
        self.watch_rounds = 0
        self._round_done = asyncio.Condition()

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        """The wallet as the last script run by this sidecar returned it (no round trip)."""
        return None if self._remote is None else self._snapshot_of(self._remote)

    @property
    def last_remaining_usd(self) -> Decimal | None:
        snapshot = self.last_snapshot
        return None if snapshot is None else snapshot.remaining_usd

    @property
    def connected(self) -> bool:
        """Whether the last exchange with Redis succeeded."""
        return self._link == "up"

    @property
    def pending_usd(self) -> Decimal:
        """Spend settled locally and not yet reconciled into Redis."""
        return to_usd(sum(item.nanos for item in self._pending))

    def store(self) -> dict[str, str | int | bool]:
        return {
            "kind": "redis",
            "connected": self.connected,
            "pending_usd": usd(self.pending_usd),
            "watch_rounds": self.watch_rounds,
        }

    async def watched(self, rounds: int) -> None:
        """Return once the watcher has finished ``rounds`` more rounds: what a caller waits
        on instead of sleeping through a guessed number of polls."""
        target = self.watch_rounds + rounds
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.watch_rounds >= target)

    async def start(self) -> None:
        """Create the wallet in Redis if absent and start watching the stops. Never fails for
        want of Redis: the wallet then starts down and the watcher connects when it can."""
        try:
            if isinstance(self._client, RedisCluster):
                # Learning the cluster's slots takes a few round trips, once: not one call's.
                async with asyncio.timeout(max(self._timeout, CLUSTER_START_S)):
                    await self._client.initialize()
            # The wallet's own zone first: a period start computed in another zone could
            # look like a new period to the first script and reset the spend.
            async with asyncio.timeout(self._timeout):
                stored = await self._client.hget(self._key, "zone")
            if stored:
                self._adopt_zone(_text(stored))
            await self._restore_journal()
            await self._init(self._clock())
            if self._pending:
                charged = await self._reconcile()
                log.warning(
                    "wallet %s: replayed $%s settled while Redis was down before a restart",
                    self.namespace,
                    charged,
                )
            await self._refresh()
            self._up()
            await self._forget_replayed()
        except _UNREACHABLE as exc:
            self._lost(exc)
        self._tasks = [
            asyncio.create_task(self._watch(), name=f"a11i-wallet-watch-{self.namespace}"),
            asyncio.create_task(self._listen(), name=f"a11i-wallet-listen-{self.namespace}"),
        ]

    async def close(self) -> None:
        """Stop the background tasks, try once more to reconcile, close an owned client."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            # A round of the watcher in progress is let end (each Redis step in it is bounded
            # by the timeout, and it stops at once when it sees ``_closing``): cancelled in the
            # middle of a command, redis-py can leave that command's connection open, which the
            # client's close then never reaches. The listener, waiting on its subscription, is
            # cancelled and closes the subscription itself; so is a round that overruns.
            watcher, *others = self._tasks
            await asyncio.wait([watcher], timeout=4 * self._timeout + 1.0)
            for task in [*others, watcher]:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        if self._pending:
            with contextlib.suppress(*_UNREACHABLE):
                await self._reconcile()
            await self._forget_replayed()
            if self._pending:
                log.error(
                    "wallet %s: closing with $%s settled locally that Redis never received",
                    self.namespace,
                    self.pending_usd,
                )
        await self._batcher.close()
        if self._owns_client:
            await self._client.aclose()

    # --- the Wallet protocol -----------------------------------------------------------------

    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        if self._namespace_stop or self._cluster_stop:
            return self._stop_verdict(self._cluster_stop and not self._namespace_stop), None
        now = self._clock()
        amount = to_nanos(projected)
        lease_id = self._new_id()
        expires_at = now.timestamp() + self._lease_seconds
        if self._link == "up":
            version = self._stop_version
            try:
                remote, admitted = await self._run(
                    self._reserve_script, now, lease_id, str(amount), repr(expires_at)
                )
            except _UNREACHABLE as exc:
                self._lost(exc)
                # The script may have run before the answer was lost: release that lease.
                self._pending.append(_Pending(lease_id, 0.0, 0, amount))
            else:
                return self._admitted(remote, admitted, version, lease_id, amount, expires_at)
        if not self.fail_open:
            raise WalletUnavailable(
                f"the shared wallet of {self.namespace} cannot be reached (Redis), "
                "and A11I_REDIS_FAILURE=closed refuses calls until it can"
            )
        # A new id: the one sent to Redis is queued for release, which marks it settled.
        self._shadow, verdict, lease = reserve(
            self._shadow_book(now), self._new_id(), projected, now, self._lease_seconds
        )
        return verdict, lease

    async def reserve_in_line(
        self, projected: Decimal, ticket: str, deadline: float, *, join: bool
    ) -> tuple[Verdict, Reservation | None, bool]:
        """``reserve`` for a call that may wait in the wallet's line, shared by every sidecar:
        the verdict, the reservation, and whether the call is (now) waiting in the line for its
        turn. ``deadline``: when its ticket lapses (epoch seconds); ``join``: queue when refused
        for money that is only held. While Redis is away it is ``reserve``, never waiting."""
        if self._namespace_stop or self._cluster_stop or self._link != "up":
            verdict, reservation = await self.reserve(projected)
            return verdict, reservation, False
        now = self._clock()
        amount = to_nanos(projected)
        lease_id = self._new_id()
        expires_at = now.timestamp() + self._lease_seconds
        version = self._stop_version
        try:
            remote, flag = await self._run(
                self._line_script,
                now,
                lease_id,
                str(amount),
                repr(expires_at),
                ticket,
                repr(deadline),
                "1" if join else "0",
            )
        except _UNREACHABLE as exc:
            self._lost(exc)
            self._pending.append(_Pending(lease_id, 0.0, 0, amount))
            verdict, reservation = await self.reserve(projected)
            return verdict, reservation, False
        verdict, reservation = self._admitted(
            remote, 1 if flag == 1 else 0, version, lease_id, amount, expires_at
        )
        return verdict, reservation, flag == 2

    async def leave_line(self, ticket: str) -> None:
        """Take a ticket out of the line (a waiter that gave up); it would lapse anyway."""
        with contextlib.suppress(*_UNREACHABLE):
            async with asyncio.timeout(self._timeout):
                await self._client.zrem(self.keys.line, ticket)

    async def settle(
        self, reservation: Reservation, actual: Decimal, event: Mapping[str, str] | None = None
    ) -> None:
        """Charge ``actual`` and release the reservation; with ``event`` (a wallet that
        ``carries_events``: the call's event) append that event to the namespace's stream in the
        same script, exactly once: with a settlement Redis had not seen, also when it is
        replayed after Redis was away."""
        now = self._clock()
        nanos = to_nanos(actual)
        fields = self._event_args(event)
        if self._link == "up":
            version = self._stop_version
            try:
                remote, flag = await self._run(
                    self._settle_script,
                    now,
                    reservation.id,
                    repr(reservation.period_start),
                    str(nanos),
                    repr(now.timestamp() - SETTLED_RETENTION_S),
                    str(reservation.nanos),
                    *fields,
                    keys=self._event_keys if fields else None,
                )
            except _UNREACHABLE as exc:
                self._lost(exc)
            else:
                self._held.pop(reservation.id, None)
                self._remember(remote, version)
                if self._shadow is not None:
                    # Another call lost Redis meanwhile: keep the shadow in step.
                    self._shadow, _ = settle(self._shadow, reservation, actual, now)
                if flag == 0:
                    log.info(
                        "wallet %s/%s: $%s charged to the period the call was reserved in",
                        self.namespace,
                        self.agent,
                        actual,
                    )
                return
        # Down: account locally and keep the settlement for Redis. It may have run already (the
        # answer was lost): the settle script remembers settled ids, so replaying is safe.
        self._shadow, _ = settle(self._shadow_book(now), reservation, actual, now)
        self._held.pop(reservation.id, None)
        start: float | None = reservation.period_start
        if self._remote is None and self._period is Period.TOTAL:
            start = None
        self._pending.append(_Pending(reservation.id, start, nanos, reservation.nanos, fields))
        if self._journal is not None:
            # Durable before the call ends: a sidecar killed before Redis is back keeps it.
            entry = JournalEntry(reservation.id, start, nanos)
            try:
                await asyncio.to_thread(self._journal.append, entry)
            except OSError as exc:
                log.error(
                    "wallet %s: spend journal %s not written (%s): $%s kept in memory only",
                    self.namespace,
                    self._journal.path,
                    exc,
                    actual,
                )

    async def snapshot(self) -> WalletSnapshot:
        now = self._clock()
        if self._link == "up":
            version = self._stop_version
            try:
                remote, _ = await self._run(self._snapshot_script, now)
            except _UNREACHABLE as exc:
                self._lost(exc)
            else:
                self._remember(remote, version)
                return self._snapshot_of(remote)
        # Informational, so it never fails: the local view while Redis is away.
        self._shadow = advance(self._shadow_book(now), now)
        return snapshot_of(self._shadow, self.namespace, self.agent)

    # --- administration (needs Redis: raises WalletUnavailable without it) --------------------

    async def suspend(self, on: bool) -> None:
        """Turn the namespace's emergency stop on or off, and tell every sidecar."""
        await self._admin(self._client.hset(self._key, "suspended", "1" if on else "0"))
        self._stop_version += 1
        self._namespace_stop = on
        await self._admin(self._client.publish(STOP_CHANNEL, self.namespace))

    async def cluster_stop(self, on: bool) -> None:
        """Turn the cluster-wide emergency stop on or off, and tell every sidecar."""
        await set_cluster_stop(self._client, on, timeout_s=self._timeout)
        self._stop_version += 1
        self._cluster_stop = on

    async def top_up(self, amount: Decimal) -> None:
        """Raise the limit by ``amount`` USD (rounded down to a nano-dollar)."""
        if amount <= 0:
            raise ValueError("a top-up must be a positive amount")
        nanos = math.floor(amount * 10**9)
        for _ in range(2):
            found = await self._admin(self._top_up_script(keys=self._keys, args=[str(nanos)]))
            if found != -1:
                return
            await self._admin(self._init(self._clock()))

    async def configure(self, policy: BudgetPolicy, period: Period) -> None:
        """Set the wallet's limit, thresholds, period and time zone (this wallet's ``zone``);
        what was spent is kept."""
        _check_nanos(policy)
        fields: dict[FieldT, EncodableT] = {
            name: value for name, value in _policy_fields(policy, period, self._zone_name).items()
        }
        await self._admin(self._client.hset(self._key, mapping=fields))
        # A wallet that did not exist gets its other fields (spent, period start) now.
        await self._admin(self._init(self._clock()))

    # --- internals ----------------------------------------------------------------------------

    async def _admin(self, call: object) -> object:
        """Await an administrative Redis call within the timeout; WalletUnavailable if not."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call  # type: ignore[misc]
        except _UNREACHABLE as exc:
            raise WalletUnavailable(
                f"the shared wallet of {self.namespace} cannot be reached (Redis): {exc!r}"
            ) from exc

    async def _init(self, now: datetime) -> None:
        remote = self._remote
        if remote is None:
            fields = _policy_fields(self._policy, self._period, self._zone_name)
            start = period_start(self._period, now, now, self._zone).timestamp()
            origin, suspended, spent = None, "0", "0"
        else:
            # Redis lost the wallet (restarted without persistence): recreate it as it was last
            # seen, its spend included, so its period (and the leases of that period) carry on
            # and a restart never hands out money already spent. Lost: what other sidecars
            # settled after this one's last look (docs/failure-modes.md).
            fields = _policy_fields(
                replace(remote.policy, suspended=False),
                remote.period,
                remote.zone or self._zone_name,
            )
            start, origin = remote.period_start, remote.origin
            suspended = "1" if remote.namespace_stop else "0"
            spent = str(remote.spent)
        values = [
            *fields.values(),
            repr(start),
            repr(now.timestamp() if origin is None else origin),
            spent,
            suspended,
        ]
        async with asyncio.timeout(self._timeout):
            created = await self._init_script(keys=[self._key], args=values)
            if self._stream and is_cluster(self._client):
                # The readers follow the namespaces listed here (another slot: not in a script);
                # again after Redis lost the wallet, as it lost this list then too.
                await self._client.sadd(STREAMS, self.namespace)
        if created:
            log.info("wallet %s: created in Redis from this sidecar's settings", self.namespace)

    @property
    def _event_keys(self) -> list[str]:
        """The settle script's keys when it appends an event: the wallet's and the stream."""
        return [*self._keys, self._stream]

    def _event_args(self, event: Mapping[str, str] | None) -> tuple[str, ...]:
        """The settle script's arguments for ``event``: MAXLEN, then fields and values."""
        if event is None or not event:
            return ()
        if not self.carries_events:
            raise ValueError(f"the wallet {self.namespace} does not carry events")
        if event.get("namespace") != self.namespace:
            # Another namespace's stream may live in another slot of a cluster.
            raise ValueError(f"an event of {event.get('namespace')!r} in {self.namespace}'s wallet")
        flat = [self._events_max_length]
        for field, value in event.items():
            flat += (field, value)
        return tuple(flat)

    async def _run(
        self, script: AsyncScript, now: datetime, *args: str, keys: list[str] | None = None
    ) -> tuple[_Remote, int]:
        """Run a wallet script at ``now`` (creating the wallet first if Redis has none)."""
        stamps = [repr(now.timestamp())] + [
            repr(period_start(period, now, now, self._zone).timestamp())
            for period in (Period.DAILY, Period.WEEKLY, Period.MONTHLY)
        ]
        for _ in range(2):
            async with asyncio.timeout(self._timeout):
                reply = await self._batcher.run(script, keys or self._keys, [*stamps, *args])
            if _text(reply[0]) == "ok":
                if len(reply) > 13:  # the settle script's event was refused
                    log.warning(
                        "wallet %s: a call's event was not appended to %s: %s",
                        self.namespace,
                        self._stream,
                        _text(reply[13]),
                    )
                return _parse(reply, self._cluster_stop), int(reply[1])
            # The wallet is gone (a Redis that lost its data, a deleted key): recreate it.
            await self._init(now)
        raise redis.exceptions.ResponseError(f"the wallet {self._key} could not be created")

    async def _refresh(self) -> None:
        """Read the wallet and both stops (the cluster-wide one lives in its own key, in its own
        slot of a cluster: no script reads it, the sidecar refuses on its local view)."""
        version = self._stop_version
        try:
            async with asyncio.timeout(self._timeout):
                cluster = _text(await self._client.get(CLUSTER_STOP_KEY)) == "1"
        except UNREACHABLE as exc:
            # In a cluster that key's primary is not this wallet's: its loss must not take the
            # wallet down. The last flag read stays (no stop can be written there meanwhile).
            if not self._stop_unread:
                log.warning(
                    "wallet %s: the cluster-wide stop cannot be read (%r); the last read stays",
                    self.namespace,
                    exc,
                )
            self._stop_unread = True
        else:
            self._stop_unread = False
            if version == self._stop_version:
                self._cluster_stop = cluster
        remote, _ = await self._run(self._snapshot_script, self._clock())
        self._remember(remote, version)

    def _admitted(
        self,
        remote: _Remote,
        admitted: int,
        version: int,
        lease_id: str,
        amount: int,
        expires_at: float,
    ) -> tuple[Verdict, Reservation | None]:
        if remote.namespace_stop or remote.cluster_stop:
            self._remember(remote, version)
            return self._stop_verdict(not remote.namespace_stop), None
        verdict = decide(remote.policy, to_usd(remote.committed), to_usd(amount))
        if not admitted:
            self._remember(remote, version)
            if verdict.decision is not Decision.BLOCK:  # the script decides; the reason follows
                verdict = Verdict(
                    Decision.BLOCK, state_of(remote.policy, to_usd(remote.committed)), "no budget"
                )
            return verdict, None
        lease = Reservation(lease_id, amount, expires_at, remote.period_start)
        self._held[lease_id] = lease
        self._remember(replace(remote, reserved=remote.reserved + amount), version)
        return verdict, lease

    def _new_id(self) -> str:
        # Unique across sidecars and restarts: settled ids are remembered to stop replays.
        return f"{self._prefix}{uuid.uuid4().hex}"

    def _remember(self, remote: _Remote, version: int) -> None:
        self._remote = remote
        if remote.zone:
            self._adopt_zone(remote.zone)
        if version == self._stop_version:
            self._namespace_stop = remote.namespace_stop
            self._cluster_stop = remote.cluster_stop

    def _adopt_zone(self, name: str) -> None:
        """Compute period starts in the wallet's zone (an operator sets it from the
        AgentBudget's ``timeZone``), whatever this sidecar's own setting says."""
        if name == self._zone_name:
            return
        try:
            zone = ZoneInfo(name)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            log.error(
                "wallet %s: unknown time zone %r in Redis; periods stay in %s",
                self.namespace,
                name,
                self._zone_name,
            )
            return
        log.info(
            "wallet %s: periods start at midnight in %s (the wallet's zone)", self.namespace, name
        )
        self._zone, self._zone_name = zone, name

    def _stop_verdict(self, cluster: bool) -> Verdict:
        reason = "the cluster-wide emergency stop is on" if cluster else "the emergency stop is on"
        return Verdict(Decision.BLOCK, WalletState.SUSPENDED, reason)

    def _snapshot_of(self, remote: _Remote) -> WalletSnapshot:
        return WalletSnapshot(
            namespace=self.namespace,
            agent=self.agent,
            limit_usd=remote.policy.limit_usd,
            spent_usd=to_usd(remote.spent),
            reserved_usd=to_usd(remote.reserved),
            period=remote.period,
            period_start=datetime.fromtimestamp(remote.period_start, tz=UTC),
            state=state_of(remote.policy, to_usd(remote.committed)),
        )

    def _shadow_book(self, now: datetime) -> WalletBook:
        if self._shadow is not None:
            return self._shadow
        remote = self._remote
        if remote is None:  # never reached Redis: the settings are all there is
            self._shadow = new_book(self._policy, self._period, now, self._zone_name)
            return self._shadow
        # What others hold is counted as spent (conservative); this sidecar's own leases stay
        # leases, so settling them charges what they cost, not what they reserved.
        own = sum(
            lease.nanos
            for lease in self._held.values()
            if lease.period_start == remote.period_start
        )
        self._shadow = WalletBook(
            policy=remote.policy,
            period=remote.period,
            period_start=remote.period_start,
            origin=remote.origin,
            spent=remote.spent + max(remote.reserved - own, 0),
            leases=tuple(self._held.values()),
            zone=self._zone_name,
        )
        return self._shadow

    def _lost(self, exc: BaseException) -> None:
        if self._link != "down" and isinstance(exc, redis.exceptions.AuthenticationError):
            # Reachable, but the password is missing or wrong: a setting to fix, not an outage.
            log.error(
                "wallet %s: Redis refused the password in A11I_REDIS_URL (%s); calls are %s "
                "until it accepts one",
                self.namespace,
                exc,
                "admitted and accounted locally" if self.fail_open else "refused",
            )
        elif self._link != "down":
            log.warning(
                "wallet %s: Redis lost (%r); calls are %s until it answers",
                self.namespace,
                exc,
                "admitted and accounted locally" if self.fail_open else "refused",
            )
        self._link = "down"
        self._shadow_book(self._clock())

    def _up(self) -> None:
        self._link = "up"
        self._shadow = None

    async def _reconcile(self) -> Decimal:
        """Replay the settlements made while down; returns what they charged."""
        charged = 0
        if self._remote is None:
            await self._refresh()
        while self._pending:
            item = self._pending[0]
            now = self._clock()
            start = item.period_start
            if start is None:
                start = self._remote.period_start if self._remote is not None else 0.0
            _, flag = await self._run(
                self._settle_script,
                now,
                item.lease_id,
                repr(start),
                str(item.nanos),
                repr(now.timestamp() - SETTLED_RETENTION_S),
                str(item.held),
                *item.event,
                keys=self._event_keys if item.event else None,
            )
            self._pending.pop(0)
            self._replayed.append(item.lease_id)
            if flag == 1:
                charged += item.nanos
        return to_usd(charged)

    async def _restore_journal(self) -> None:
        """Queue what a previous run of this sidecar settled while Redis was down."""
        if self._journal is None:
            return
        try:
            entries = await asyncio.to_thread(self._journal.entries)
        except OSError as exc:
            log.error("wallet %s: spend journal unreadable: %s", self.namespace, exc)
            return
        queued = {item.lease_id for item in self._pending}
        restored = [
            _Pending(e.lease_id, e.period_start, e.nanos)
            for e in entries
            if e.lease_id not in queued
        ]
        if restored:
            log.warning(
                "wallet %s: %d settlement(s) from %s to replay into Redis",
                self.namespace,
                len(restored),
                self._journal.path,
            )
        self._pending = [*restored, *self._pending]

    async def _forget_replayed(self) -> None:
        """Drop from the journal what Redis has taken."""
        replayed, self._replayed = self._replayed, []
        if self._journal is None or not replayed:
            return
        try:
            await asyncio.to_thread(self._journal.remove, replayed)
        except OSError as exc:
            # Replaying them again is harmless: Redis remembers settled ids.
            log.error("wallet %s: spend journal not trimmed: %s", self.namespace, exc)

    async def _recover(self) -> None:
        await self._init(self._clock())
        charged = await self._reconcile()
        # No await between the last replay and going up: no settlement can slip in between.
        self._up()
        await self._forget_replayed()
        log.warning(
            "wallet %s: Redis is back; reconciled $%s spent meanwhile", self.namespace, charged
        )
        await self._refresh()

    async def _watch(self) -> None:
        """At once on a stop message or a new subscription, else every ``poll_s`` (every
        ``quiet_poll_s`` while subscribed): refresh the stops, or reconnect."""
        while not self._closing:
            wait = self._quiet_poll_s if self._subscribed and self._link == "up" else self._poll_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                if self._link == "up":
                    await self._refresh()
                else:
                    await self._recover()
            except _UNREACHABLE as exc:
                self._lost(exc)
            except Exception:
                # A bug here must not end the watching of the emergency stop.
                log.exception("wallet %s: the watcher failed", self.namespace)
            self.watch_rounds += 1
            async with self._round_done:
                self._round_done.notify_all()

    async def _listen(self) -> None:
        """Wake the watcher when a stop message concerns this namespace."""
        while not self._closing:
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(STOP_CHANNEL)
                    # Subscribed once Redis confirms it: only then is no message missed.
                    while await pubsub.get_message(timeout=self._timeout) is None:
                        pass
                # What changed while unsubscribed was told to nobody: read the stops again now.
                self._subscribed = True
                self._wake.set()
                while not self._closing:
                    async with asyncio.timeout(self._poll_s + self._timeout):
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self._poll_s
                        )
                    if message is not None and _text(message["data"]) in (
                        self.namespace,
                        "cluster",
                    ):
                        self._wake.set()
            except Exception:
                # Redis away (or a broken connection): the watcher looks now, and polls until
                # subscribed again.
                self._subscribed = False
                self._wake.set()
                if not self._closing:
                    await asyncio.sleep(self._poll_s)
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.aclose()


async def set_cluster_stop(client: AnyRedis, on: bool, *, timeout_s: float = 1.0) -> None:
    """Turn the cluster-wide emergency stop on or off and tell every sidecar."""
    try:
        async with asyncio.timeout(timeout_s):
            if on:
                await client.set(CLUSTER_STOP_KEY, "1")
            else:
                await client.delete(CLUSTER_STOP_KEY)
            await client.publish(STOP_CHANNEL, "cluster")
    except _UNREACHABLE as exc:
        raise WalletUnavailable(f"the cluster stop cannot be set (Redis): {exc!r}") from exc


#: What a scan for wallet hashes looks for, by key style (``WalletKeys``).
_WALLET_PATTERNS = {
    False: ("a11i:wallet:*", "a11i:wallet:", ""),
    True: ("a11i:{*}:wallet", "a11i:{", "}:wallet"),
}


async def wallet_names(client: AnyRedis) -> list[str]:
    """The wallets in ``client``'s Redis (on every primary of a cluster), by name: a scan for
    wallet hashes, not the keys beside them (``:held``, ``:settled``…)."""
    pattern, prefix, suffix = _WALLET_PATTERNS[is_cluster(client)]
    names = set()
    async for key in client.scan_iter(match=pattern, count=500):
        text = _text(key)
        name = text[len(prefix) : len(text) - len(suffix)]
        if name and ":" not in name and "{" not in name and "}" not in name:
            names.add(name)
    return sorted(names)


async def copy_wallets(source: AnyRedis, target: AnyRedis) -> tuple[list[str], list[str]]:
    """Copy every wallet of ``source`` into ``target`` under the target's key names (a move from
    one Redis server to a Redis Cluster, or back): limit, policy, period, spend and stop.
    Not copied: the money calls in flight hold (they settle into the Redis their sidecar uses;
    the copy starts with nothing held) and the settled ids. A wallet ``target`` already has is
    left as it is. Returns the names copied and those left."""
    copied, kept = [], []
    for name in await wallet_names(source):
        fields = {
            _text(field): _text(value)
            for field, value in (
                await source.hgetall(WalletKeys.of(name, cluster=is_cluster(source)).wallet)
            ).items()
            if _text(field) not in ("reserved_nanos", "reserved_period")
        }
        key = WalletKeys.of(name, cluster=is_cluster(target)).wallet
        if not fields or await target.exists(key):
            kept.append(name)
            continue
        mapping: dict[FieldT, EncodableT] = {field: value for field, value in fields.items()}
        await target.hset(key, mapping=mapping)
        copied.append(name)
    return copied, kept


def _policy_fields(policy: BudgetPolicy, period: Period, zone: str) -> dict[str, str]:
    limit = policy.limit_usd
    return {
        # Rounded down: a fraction of a nano-dollar of limit is never spendable.
        "limit_nanos": "" if limit is None else str(math.floor(limit * 10**9)),
        "warn_at": str(policy.warn_at_percent),
        "optimize_at": str(policy.optimize_at_percent),
        "when_exhausted": policy.when_exhausted.value,
        "period": period.value,
        # Every sidecar computes period starts in the wallet's zone, not its own.
        "zone": zone,
    }


def _check_nanos(policy: BudgetPolicy) -> None:
    if policy.limit_usd is not None and policy.limit_usd * 10**9 >= MAX_NANOS:
        raise ValueError(f"a Redis wallet's limit must stay below ${to_usd(MAX_NANOS)}")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(reply: Sequence[object], cluster_stop: bool) -> _Remote:
    """The ``state`` a script returned: flag, spent, reserved, limit, warn_at, optimize_at,
    when_exhausted, period, period_start, origin, suspended, zone; the cluster-wide stop as
    this sidecar last read it."""
    (spent, reserved, limit, warn_at, optimize_at, when, period, start, origin, ns, zone) = (
        _text(value) for value in reply[2:13]
    )
    namespace_stop = ns == "1"
    policy = BudgetPolicy(
        limit_usd=None if limit == "" else to_usd(int(limit)),
        warn_at_percent=Decimal(warn_at),
        optimize_at_percent=Decimal(optimize_at),
        when_exhausted=ExhaustedAction(when),
        suspended=namespace_stop or cluster_stop,
    )
    return _Remote(
        policy=policy,
        period=Period(period),
        period_start=float(start),
        origin=float(origin),
        spent=int(spent),
        reserved=int(reserved),
        namespace_stop=namespace_stop,
        cluster_stop=cluster_stop,
        zone=zone,
    )
