"""The event stream: one record per decision and settlement, for the dashboard and the operator.

Adapter: turns each ``CallRecord`` into a flat event of strings and appends it to a sink. The
embedded sink is a bounded in-memory ring; the Redis sink appends to a capped stream from a
background task, through a bounded queue, so a slow or absent Redis can never delay a call (events
that cannot be queued are dropped and counted, never waited for). With Redis, the event of a call
that settles a reservation once its record is final skips this sink: the sidecar's Redis wallet
appends it in its settle script (``RedisWallet(events=True)``: one round trip for both, written
exactly once); refused calls and streams settled before their last chunk come here.

Which stream (``stream_key``): one Redis server (standalone, Sentinel) keeps the single stream
``a11i:events`` of earlier releases; a Redis Cluster gets one stream per namespace in the
namespace's slot (``a11i:{<ns>}:events``, beside its wallet), so no primary takes every event of
the fleet, and the namespaces that have one are listed in the set ``a11i:events:namespaces``
(``STREAMS``) for the readers that follow them all (the dashboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from a11i.core.meter import UsageSource
from a11i.core.model import usd
from a11i.sidecar.call import CallRecord
from a11i.sidecar.redis_clients import is_cluster

if TYPE_CHECKING:
    from a11i.sidecar.redis_clients import AnyRedis


log = logging.getLogger(__name__)

STREAM: Final = "a11i:events"
#: In a Redis Cluster: the set of namespaces that have a stream of their own (``stream_key``).
STREAMS: Final = "a11i:events:namespaces"
#: Events written to Redis in one round trip at most.
BATCH: Final = 256
#: Events a stream keeps (approximately: ``XADD MAXLEN ~``), whoever appends them.
MAX_LENGTH: Final = 100_000

Event = Mapping[str, str]


def stream_key(namespace: str, *, cluster: bool) -> str:
    """The stream a namespace's events go to: ``a11i:events`` (one Redis server: every
    namespace's), or ``a11i:{<ns>}:events`` in a Redis Cluster (the namespace's slot, the node
    of its wallet)."""
    if not cluster:
        return STREAM
    if "{" in namespace or "}" in namespace:
        raise ValueError(f"a namespace name may not hold braces: {namespace!r}")
    return f"a11i:{{{namespace}}}:events"


def call_event(record: CallRecord, namespace: str, agent: str) -> dict[str, str]:
    """The event of one metered call: who, what model, what was decided, what it cost."""
    plan = record.plan
    settled = record.settlement
    event = {
        "kind": "call",
        "ts": f"{time.time():.3f}",
        "namespace": namespace,
        "agent": agent,
        "dialect": plan.request.dialect.value,
        "model": plan.request.model,
        "decision": record.verdict.decision.value,
        "state": record.verdict.state.value,
        "status": str(record.status),
        "streamed": "1" if record.streamed else "0",
        "complete": "1" if record.complete else "0",
        "input_tokens": str(settled.usage.input_tokens if settled else plan.input.tokens),
        "output_tokens": str(settled.usage.output_tokens if settled else 0),
        "projected_usd": usd(plan.projected_usd),
        "cost_usd": usd(settled.cost_usd) if settled else "0",
        "usage_source": settled.source.value if settled else UsageSource.ESTIMATE.value,
        "tool_calls": ",".join(call.name for call in record.tool_calls),
        "duration_ms": f"{record.duration_s * 1000:.1f}",
    }
    if settled is not None and settled.charge is not None:
        # How the cost was computed (tier, long-context threshold, items x rates).
        event["cost_basis"] = settled.charge.describe()
    if plan.price.is_fallback:
        event["pricing"] = "fallback"
    if record.optimization is not None:
        event["optimized"] = ",".join(record.optimization.strategies)
        event["tokens_saved"] = str(record.optimization.tokens_saved)
    if record.output_cap is not None:
        event["output_cap"] = record.output_cap.header
    return event


class EventSink(Protocol):
    def append(self, event: Event) -> None:
        """Record an event without blocking the caller."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class EventRing:
    """The embedded sink: the last ``capacity`` events, each with an increasing id, so a
    reader can resume after the last id it saw. Appended to on the event loop's thread
    (``add``) or from the telemetry thread (``add_from_thread``: no hop back to the loop for
    each call); read, and waited for, on the event loop."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._events: deque[tuple[int, Event]] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._waiters: list[asyncio.Future[None]] = []
        # Appends may come from another thread: the ring and its waiters change under it.
        self._lock = threading.Lock()

    @property
    def last_id(self) -> int:
        """The id of the newest event (0 before the first)."""
        with self._lock:
            return self._last_id()

    def _last_id(self) -> int:
        return self._events[-1][0] if self._events else 0

    def append(self, event: Event) -> None:
        self.add(event)

    def add(self, event: Event) -> int:
        """Append and return the event's id (on the event loop)."""
        event_id, _ = self._store(event)
        self._wake()
        return event_id

    def add_from_thread(self, event: Event, loop: asyncio.AbstractEventLoop) -> None:
        """Append from another thread; readers waiting on ``loop`` are woken there (a wake-up
        of the loop only when someone waits)."""
        _, waited = self._store(event)
        if waited:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    def _store(self, event: Event) -> tuple[int, bool]:
        """The event appended: its id, and whether a reader waits for it."""
        with self._lock:
            event_id = next(self._ids)
            self._events.append((event_id, dict(event)))
            return event_id, bool(self._waiters)

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def start(self) -> None:
        """Nothing to start: the ring lives in this process."""

    async def close(self) -> None:
        """Nothing to release."""

    def since(self, last_id: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        """Events after ``last_id``, oldest first (at most ``limit``)."""
        with self._lock:
            if last_id >= self._last_id():
                return []
            # Ids are consecutive: the first wanted event's position is known without a scan.
            first = self._events[0][0]
            start = max(last_id + 1 - first, 0)
            return [
                self._events[index] for index in range(start, min(start + limit, len(self._events)))
            ]

    def latest(self, count: int) -> list[tuple[int, Event]]:
        """The newest ``count`` events, oldest first."""
        return self.since(max(self.last_id - count, 0), count)

    async def wait(self, last_id: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an event after ``last_id``; whether there is one."""
        waiter = asyncio.get_running_loop().create_future()
        with self._lock:
            # Checked and registered at once: an append from another thread sees the waiter.
            if self._last_id() > last_id:
                return True
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.last_id > last_id


class RedisEventStream:
    """Appends events to the capped Redis stream of their namespace (``stream_key``) from a
    background task; in a Redis Cluster also names each namespace in ``STREAMS``, once per
    process (again after Redis was unreachable: it may have come back without its data)."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        max_length: int = MAX_LENGTH,
        queue_size: int = 10_000,
        timeout_s: float = 0.5,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._max_length = max_length
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._cluster = is_cluster(client)
        #: Namespaces this process has written to ``STREAMS`` (cluster only).
        self._listed: set[str] = set()
        self.dropped = 0

    async def drained(self) -> None:
        """Return once every event appended so far is written (or dropped)."""
        await self._queue.join()

    def append(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="a11i-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                # Bounded: a shutdown never hangs on the event writer.
                async with asyncio.timeout(max(self._timeout_s, 1.0)):
                    await self._task
        if self._owns_client:
            await self._client.aclose()

    async def _append(self, events: list[Event]) -> None:
        # One round trip for what queued up meanwhile: Redis pays its per-command I/O once per
        # batch, not once per event (under load, a batch per settle or less). A sidecar's events
        # are its namespace's: in a cluster, one stream on one node.
        keyed = [(self._key(event), event) for event in events]
        unlisted = (
            {event.get("namespace", "") for event in events} - self._listed
            if self._cluster
            else set()
        )
        async with asyncio.timeout(self._timeout_s):
            if len(events) == 1 and not unlisted:
                # Alone: a plain XADD costs Redis less than a pipeline of one.
                key, event = keyed[0]
                await self._client.xadd(
                    key,
                    dict(event),  # type: ignore[arg-type]
                    maxlen=self._max_length,
                    approximate=True,
                )
                return
            pipe = self._client.pipeline(transaction=False)
            for key, event in keyed:
                pipe.xadd(
                    key,
                    dict(event),  # type: ignore[arg-type]
                    maxlen=self._max_length,
                    approximate=True,
                )
            if unlisted:
                pipe.sadd(STREAMS, *sorted(unlisted))
            await pipe.execute()
        self._listed |= unlisted

    def _key(self, event: Event) -> str:
        return stream_key(event.get("namespace", ""), cluster=self._cluster)

    async def _drain(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        failing = False
        this = asyncio.current_task()
        while True:
            if this is not None and this.cancelling():
                # Python 3.11's asyncio.timeout can turn a cancellation that meets its own
                # deadline into a TimeoutError, caught below: never outlive close().
                raise asyncio.CancelledError
            events = [await self._queue.get()]
            while len(events) < BATCH and not self._queue.empty():
                events.append(self._queue.get_nowait())
            try:
                try:
                    await self._append(events)
                except RedisConnectionError:
                    # A pooled connection that died with a restarted Redis fails once, then
                    # the pool connects anew: one more try, so the first events after a
                    # restart are not lost.
                    await self._append(events)
                if failing:
                    log.info("event stream reachable again")
                    failing = False
            except (TimeoutError, OSError, ConnectionError) as error:
                self.dropped += len(events)
                # Redis may come back without its data: list the namespaces again then.
                self._listed.clear()
                if not failing:
                    log.warning("events are being dropped: Redis unreachable (%s)", error)
                    failing = True
            except Exception as error:  # redis.RedisError and friends
                self.dropped += len(events)
                if not failing:
                    log.warning("events are being dropped: %s", error)
                    failing = True
            finally:
                for _ in events:
                    self._queue.task_done()
