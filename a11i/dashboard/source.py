"""Where the dashboard's data comes from and where its actions go: the shared Redis.

Adapter: reads the event stream ``a11i:events`` (history, then blocking XREAD from the last id),
or in a Redis Cluster every namespace's stream ``a11i:{<ns>}:events`` named in
``a11i:events:namespaces`` (one non-blocking XRANGE per stream, pipelined per node, every
``poll_s`` while nothing comes; ids ``<ns>/<ms>-<seq>``, a cursor per stream), lists the
wallets by scanning the ``a11i:wallet:*`` hashes (``a11i:{*}:wallet`` on every node of a Redis
Cluster; not the keys beside them) read-only, and applies actions through the same code
the sidecars and ``a11i wallet`` use (``RedisWallet.suspend``/``top_up``,
``set_cluster_stop``), recording each as an event; after a top-up through an AgentBudget it
configures the wallet as the operator does (``budgets.Wallets.apply``).

What it may not do: hold state between calls (the hub does), block longer than its timeouts,
or let a Redis exception escape unwrapped (``SourceUnavailable`` says what to do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from redis.typing import EncodableT, FieldT

from a11i.core.errors import WalletUnavailable
from a11i.core.policy import BudgetPolicy, Period
from a11i.dashboard.state import (
    WalletView,
    advance,
    format_cursor,
    id_key,
    parse_cursor,
    wallet_from_fields,
)
from a11i.operator.status import BudgetSpec
from a11i.sidecar.redis_clients import RedisTarget, is_cluster
from a11i.sidecar.telemetry.events import STREAM, STREAMS, stream_key
from a11i.sidecar.wallets.redis import (
    CLUSTER_STOP_KEY,
    UNREACHABLE,
    RedisWallet,
    WalletKeys,
    set_cluster_stop,
    wallet_names,
)

if TYPE_CHECKING:
    from a11i.sidecar.redis_clients import AnyRedis

#: Length the event stream is capped at, as the sidecars cap it.
STREAM_MAX_LENGTH: Final = 100_000

RawEvent = tuple[str, dict[str, str]]
_T = TypeVar("_T")

_UNREACHABLE: tuple[type[BaseException], ...] = (*UNREACHABLE, WalletUnavailable)


class DashboardError(Exception):
    """Root error of the dashboard: carries the HTTP status and what the user should know."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SourceUnavailable(DashboardError):
    """Redis does not answer: the page says so and keeps retrying."""

    status = 503


class UnknownWallet(DashboardError):
    status = 404


@dataclass(frozen=True, slots=True)
class Wallets:
    wallets: list[WalletView]
    cluster_stop: bool


class Source(Protocol):
    """What the hub needs of a backend (Redis now; the embedded sidecar later). ``after`` is a
    cursor's text (``state.parse_cursor``): one id, or one per stream."""

    mode: str

    async def history(self, count: int) -> list[RawEvent]: ...

    async def read(self, after: str, block_ms: int, count: int) -> list[RawEvent]: ...

    async def range_after(self, after: str, count: int) -> list[RawEvent]: ...

    async def wallets(self, now: float) -> Wallets: ...

    async def suspend(self, namespace: str, on: bool) -> None: ...

    async def cluster_stop(self, on: bool) -> None: ...

    async def top_up(self, namespace: str, amount: Decimal) -> None: ...

    async def record(self, event: Mapping[str, str]) -> str: ...

    async def close(self) -> None: ...


class RedisSource:
    """The shared Redis of a cluster (or of a laptop running ``redis-server``)."""

    mode = "redis"

    def __init__(self, client: AnyRedis, *, timeout_s: float = 2.0, poll_s: float = 0.2) -> None:
        self._client = client
        self._timeout = timeout_s
        self._cluster = is_cluster(client)
        #: In a cluster: seconds between reads of the streams while none has news (a blocking
        #: read would wait on one node only).
        self._poll_s = poll_s

    @classmethod
    def from_url(cls, url: str | RedisTarget, *, timeout_s: float = 2.0) -> RedisSource:
        """A source over ``url`` (a plain URL: one Redis server)."""
        target = url if isinstance(url, RedisTarget) else RedisTarget(url)
        client = target.connect(
            decode_responses=True,
            connect_timeout_s=timeout_s,
            # Above the blocking read's wait, so a quiet stream is not taken for a dead socket.
            socket_timeout_s=timeout_s + 5.0,
        )
        return cls(client, timeout_s=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def history(self, count: int) -> list[RawEvent]:
        """The last ``count`` events, oldest first. In a cluster: across every namespace's
        stream, and at least the newest of each, so that the hub's cursor names every one."""
        if not self._cluster:
            reply = await self._call(self._client.xrevrange(STREAM, "+", "-", count=count))
            return list(reversed(_entries(reply)))
        streams = await self._call(self._streams())
        if not streams:
            return []
        pipe = self._client.pipeline(transaction=False)
        for namespace in streams:
            pipe.xrevrange(stream_key(namespace, cluster=True), "+", "-", count=count)
        replies = await self._call(pipe.execute())
        newest: list[RawEvent] = []
        rest: list[RawEvent] = []
        for namespace, reply in zip(streams, replies, strict=True):
            entries = _entries(reply, namespace)
            newest.extend(entries[:1])
            rest.extend(entries[1:])
        rest.sort(key=lambda entry: id_key(entry[0]))
        room = max(count - len(newest), 0)
        kept = newest + (rest[max(len(rest) - room, 0) :] if room else [])
        return sorted(kept, key=lambda entry: id_key(entry[0]))

    async def read(self, after: str, block_ms: int, count: int) -> list[RawEvent]:
        """Events after ``after``, waiting up to ``block_ms`` for the first."""
        wait = self._timeout + block_ms / 1000
        if self._cluster:
            return await self._call(self._poll(after, block_ms / 1000, count), wait)
        reply = await self._call(
            self._client.xread({STREAM: after}, count=count, block=block_ms), wait
        )
        if not reply:
            return []
        # redis-py 8 answers a dict {stream: [entries]} under RESP3, a list under RESP2.
        if isinstance(reply, dict):
            return _entries(reply.get(STREAM, []))
        return _entries(reply[0][1]) if reply else []

    async def range_after(self, after: str, count: int) -> list[RawEvent]:
        """Up to ``count`` events after ``after`` (exclusive), oldest first."""
        if self._cluster:
            return await self._call(self._ranges(after, count))
        reply = await self._call(self._client.xrange(STREAM, f"({after}", "+", count=count))
        return _entries(reply)

    async def _streams(self) -> list[str]:
        """The namespaces with a stream of their own (a cluster's)."""
        names = await self._client.smembers(STREAMS)
        return sorted(name.decode() if isinstance(name, bytes) else name for name in names)

    async def _ranges(self, after: str, count: int) -> list[RawEvent]:
        # A cursor names the streams it has read; any other is read from its start. The first
        # ``count`` of the merge hold a prefix of every stream, so a cursor moved past them
        # skips nothing.
        cursor = parse_cursor(after)
        streams = sorted(set(await self._streams()) | (set(cursor) - {""}))
        if not streams:
            return []
        pipe = self._client.pipeline(transaction=False)
        for namespace in streams:
            position = cursor.get(namespace)
            low = f"({position}" if position else "-"
            pipe.xrange(stream_key(namespace, cluster=True), low, "+", count=count)
        replies = await pipe.execute()
        merged = [
            entry
            for namespace, reply in zip(streams, replies, strict=True)
            for entry in _entries(reply, namespace)
        ]
        merged.sort(key=lambda entry: id_key(entry[0]))
        return merged[:count]

    async def _poll(self, after: str, wait_s: float, count: int) -> list[RawEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            batch = await self._ranges(after, count)
            if batch or loop.time() >= deadline:
                return batch
            await asyncio.sleep(min(self._poll_s, max(deadline - loop.time(), 0)))

    async def wallets(self, now: float) -> Wallets:
        names = await self._call(wallet_names(self._client))
        names = sorted(set(names))
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(WalletKeys.of(name, cluster=self._cluster).wallet)
        pipe.get(CLUSTER_STOP_KEY)
        replies = await self._call(pipe.execute())
        cluster = replies[-1] == "1"
        views = []
        for name, fields in zip(names, replies[:-1], strict=True):
            view = wallet_from_fields(name, fields, cluster, now)
            if view is not None:
                views.append(view)
        return Wallets(views, cluster)

    async def suspend(self, namespace: str, on: bool) -> None:
        await self._wallet(namespace).suspend(on)

    async def cluster_stop(self, on: bool) -> None:
        try:
            await set_cluster_stop(self._client, on, timeout_s=self._timeout)
        except WalletUnavailable as exc:
            raise SourceUnavailable(exc.message) from exc

    async def top_up(self, namespace: str, amount: Decimal) -> None:
        await self._wallet(namespace).top_up(amount)

    async def configure(self, namespace: str, spec: BudgetSpec) -> None:
        """Write an AgentBudget's spec into the namespace's wallet exactly as the operator does
        (``budgets.Wallets.apply``: absolute limit, thresholds, period; the stop left as is), so
        the operator applying the same spec later changes nothing."""
        # Here only (with --agentbudgets): the operator's module imports kopf, an extra.
        from a11i.operator import budgets

        try:
            await budgets.Wallets(self._client, self._timeout).apply(namespace, spec, suspend=False)
        except WalletUnavailable as exc:
            raise SourceUnavailable(exc.message) from exc

    async def record(self, event: Mapping[str, str]) -> str:
        fields: dict[FieldT, EncodableT] = {key: value for key, value in event.items()}
        if not self._cluster:
            reply = await self._call(
                self._client.xadd(STREAM, fields, maxlen=STREAM_MAX_LENGTH, approximate=True)
            )
            return str(reply)
        # The namespace's own stream (the cluster-wide stop's is "*"), listed for the readers.
        namespace = event.get("namespace", "")
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(
            stream_key(namespace, cluster=True),
            fields,
            maxlen=STREAM_MAX_LENGTH,
            approximate=True,
        )
        pipe.sadd(STREAMS, namespace)
        replies = await self._call(pipe.execute())
        return format_cursor(advance({}, [f"{namespace}/{replies[0]}"]))

    async def exists(self, namespace: str) -> bool:
        key = WalletKeys.of(namespace, cluster=self._cluster).wallet
        return bool(await self._call(self._client.exists(key)))

    async def _checked(self, namespace: str) -> None:
        if not await self.exists(namespace):
            raise UnknownWallet(f"there is no wallet for namespace {namespace!r}")

    def _wallet(self, namespace: str) -> _CheckedWallet:
        return _CheckedWallet(self, namespace)

    async def _call(self, awaitable: Awaitable[_T], limit_s: float | None = None) -> _T:
        try:
            async with asyncio.timeout(limit_s or self._timeout):
                return await awaitable
        except _UNREACHABLE as exc:
            raise SourceUnavailable(f"Redis does not answer: {exc!r}") from exc

    def _redis_wallet(self, namespace: str) -> RedisWallet:
        # The wallet's own policy is in Redis; these settings would only fill a wallet that
        # does not exist, which _checked rules out.
        return RedisWallet(
            self._client,
            namespace=namespace,
            agent="a11i-dashboard",
            policy=BudgetPolicy(),
            period=Period.TOTAL,
            timeout_s=self._timeout,
        )


class _CheckedWallet:
    """An action on a wallet that must already exist (the dashboard never creates one)."""

    def __init__(self, source: RedisSource, namespace: str) -> None:
        self._source = source
        self._namespace = namespace

    async def suspend(self, on: bool) -> None:
        await self._source._checked(self._namespace)
        try:
            await self._source._redis_wallet(self._namespace).suspend(on)
        except WalletUnavailable as exc:
            raise SourceUnavailable(exc.message) from exc

    async def top_up(self, amount: Decimal) -> None:
        await self._source._checked(self._namespace)
        try:
            await self._source._redis_wallet(self._namespace).top_up(amount)
        except WalletUnavailable as exc:
            raise SourceUnavailable(exc.message) from exc


def _entries(reply: Sequence[object] | None, namespace: str | None = None) -> list[RawEvent]:
    """Stream entries as (id, fields); the ids of a namespace's own stream as ``<ns>/<id>``."""
    prefix = "" if namespace is None else f"{namespace}/"
    out: list[RawEvent] = []
    for entry in reply or []:
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            continue
        event_id, fields = entry
        if isinstance(fields, dict):
            out.append((f"{prefix}{event_id}", {str(k): str(v) for k, v in fields.items()}))
    return out
