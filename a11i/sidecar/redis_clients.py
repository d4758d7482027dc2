"""Redis clients from a URL and a mode: one server, a Redis Cluster, or a primary found through
Sentinel; the one place that builds them for the sidecar, the operator and the dashboard.

- ``standalone``: ``redis[s]://[user:password@]host:port/db`` (or ``unix://``), one server.
- ``cluster``: the URL names any node of a Redis Cluster; the client learns the others and
  follows slot moves. Keys are hash-tagged per namespace (``WalletKeys``), so each wallet script
  touches one slot.
- ``sentinel``: the URL names the sentinels, comma-separated
  (``redis[s]://[user:password@]sentinel-a:26379,sentinel-b:26379/db``), and ``master`` the
  monitored primary's name; the credentials, database, TLS and redis-py's URL options
  (``?ssl_ca_certs=…``) are the primary's, the TLS options the sentinels' too (sentinels asking
  a password of their own get ``sentinel_password``). After a failover the client asks
  the sentinels for the new primary on its next connection.

What it may not do: import the operator or the dashboard, or log a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from a11i.core import variables as var
from a11i.core.errors import SettingsError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

    #: A client of either kind: both speak the commands a wallet, a stream or a stop needs.
    AnyRedis: TypeAlias = Redis | RedisCluster


class RedisMode(StrEnum):
    """``A11I_REDIS_MODE``: how ``A11I_REDIS_URL`` is reached."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a Redis is and how it is reached: what the sidecar, the operator and the dashboard
    each read from ``A11I_REDIS_URL``, ``A11I_REDIS_MODE``, ``A11I_REDIS_MASTER`` and
    ``A11I_REDIS_SENTINEL_PASSWORD``."""

    url: str
    mode: RedisMode = RedisMode.STANDALONE
    #: With ``sentinel``: the name the sentinels monitor the primary by.
    master: str = "mymaster"
    #: With ``sentinel``: the sentinels' own password (None: they ask none).
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], url: str) -> RedisTarget:
        """The target of ``url`` with the mode variables of ``env``; SettingsError if wrong."""
        mode = var.choice(env, "A11I_REDIS_MODE", RedisMode, RedisMode.STANDALONE)
        if mode is RedisMode.SENTINEL:
            sentinel_addresses(url)
        return cls(
            url=url,
            mode=mode,
            master=var.text(env, "A11I_REDIS_MASTER", "mymaster"),
            sentinel_password=env.get("A11I_REDIS_SENTINEL_PASSWORD") or None,
        )

    def connect(self, **options: Any) -> AnyRedis:
        """A client of this target (``connect``'s options)."""
        return connect(
            self.url,
            self.mode,
            master=self.master,
            sentinel_password=self.sentinel_password,
            **options,
        )


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (its keys must then be hash-tagged)."""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """The sentinels a ``sentinel`` mode URL names; SettingsError when it names none."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    addresses = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        try:
            addresses.append((host.strip("[]"), int(port)))
        except ValueError:
            raise SettingsError(f"A11I_REDIS_URL: {item!r} is not a sentinel's host:port") from None
    if not addresses or not all(host for host, _ in addresses):
        raise SettingsError("A11I_REDIS_URL names no sentinel (host:port,host:port)")
    return addresses


def sentinel_primary_options(url: str) -> dict[str, Any]:
    """The primary's connection options a ``sentinel`` mode URL carries: credentials, database,
    TLS (``rediss://``) and redis-py's URL options (``?ssl_ca_certs=…&ssl_cert_reqs=…``)."""
    from redis.asyncio.connection import SSLConnection, parse_url

    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    first = hosts.split(",")[0].strip()
    try:
        options: dict[str, Any] = dict(
            parse_url(
                parts._replace(netloc=f"{credentials}@{first}" if credentials else first).geturl()
            )
        )
    except ValueError as error:
        raise SettingsError(f"A11I_REDIS_URL: {error}") from None
    options.pop("host", None)
    options.pop("port", None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return options


def connect(
    url: str,
    mode: RedisMode = RedisMode.STANDALONE,
    *,
    master: str = "mymaster",
    sentinel_password: str | None = None,
    max_connections: int = 64,
    pool_timeout_s: float = 1.0,
    decode_responses: bool = False,
    socket_timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
) -> AnyRedis:
    """A client for ``url`` in ``mode``. A standalone client waits up to ``pool_timeout_s``
    for one of its ``max_connections`` rather than fail (redis-py's default pool raises past its
    size, which a wallet would take for Redis going away); redis-py has no such pool for a
    cluster's nodes or a sentinel's primary, whose clients raise past ``max_connections`` (rare:
    a wallet's scripts leave in batches over one connection at a time)."""
    from redis.asyncio import BlockingConnectionPool, Redis  # only with Redis: it costs memory

    if mode is RedisMode.CLUSTER:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            decode_responses=decode_responses,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
        )
    if mode is RedisMode.SENTINEL:
        from redis.asyncio.sentinel import Sentinel

        primary = sentinel_primary_options(url)
        primary.update(decode_responses=decode_responses)
        for name, value in (
            ("socket_timeout", socket_timeout_s),
            ("socket_connect_timeout", connect_timeout_s),
        ):
            if value is not None:
                primary[name] = value
        sentinel_options = {
            name: value
            for name, value in primary.items()
            if name.startswith(("ssl", "socket_"))  # TLS as the primary's, no credentials
        }
        if sentinel_password:
            sentinel_options["password"] = sentinel_password
        sentinel = Sentinel(sentinel_addresses(url), sentinel_kwargs=sentinel_options, **primary)
        client: Redis = sentinel.master_for(master, max_connections=max_connections)
        return client
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=max(pool_timeout_s, 0.05),
        decode_responses=decode_responses,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
    )
    # The client owns its pool: closing the client closes its connections. A client made with
    # ``Redis(connection_pool=...)`` leaves the pool's sockets open when it is closed, for the
    # garbage collector to find (a ResourceWarning, or a file descriptor held until then).
    return Redis.from_pool(pool)


class ScriptBatcher:
    """Runs the Lua scripts that concurrent calls of one process send as one pipeline.

    Most of what a script costs Redis is the I/O of its round trip (reading the request,
    writing the answer: a system call each), not the script. One batch is in flight at a time;
    the scripts that arrive meanwhile leave together with the next one, so under load Redis
    pays one round trip per batch, and a lone call leaves at once (no added wait). A caller
    that stops waiting (its timeout) leaves its script in the batch: whether it ran is then
    unknown, as with any lost answer."""

    def __init__(self, client: AnyRedis, *, max_batch: int = 128, timeout_s: float = 1.0) -> None:
        self._client = client
        self._max_batch = max_batch
        self._timeout = timeout_s
        self._queue: list[_Queued] = []
        self._task: asyncio.Task[None] | None = None
        #: Batches sent, and scripts in them (what a benchmark divides).
        self.batches = 0
        self.scripts = 0

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script's reply (its error raised), run in the next batch."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(script, tuple(keys), tuple(args), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send_all(), name="a11i-redis-batch")
        return await future

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()
        self._queue = []

    async def _send_all(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                async with asyncio.timeout(self._timeout):
                    replies, order = await self._send(batch)
            except BaseException as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            # Answered in the order Redis ran them: a caller that keeps the latest state it was
            # told (the wallet's view) must never be told an older state last.
            for index in order:
                item, reply = batch[index], replies[index]
                if item.future.done():
                    continue
                if isinstance(reply, Exception):
                    item.future.set_exception(reply)
                else:
                    item.future.set_result(reply)

    async def _send(self, batch: list[_Queued]) -> tuple[list[Any], list[int]]:
        """The replies, in the batch's order, and the order Redis ran the scripts in."""
        import redis.exceptions
        from redis.exceptions import NoScriptError

        self.batches += 1
        self.scripts += len(batch)
        if len(batch) == 1:  # alone: a plain EVALSHA (redis-py loads a missing script itself)
            item = batch[0]
            try:
                return [await item.script(keys=item.keys, args=item.args)], [0]
            except redis.exceptions.ResponseError as error:  # the script's own error
                return [error], [0]
        replies = await self._pipeline(batch)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if not again:
            return replies, list(range(len(batch)))
        # A Redis that restarted (or a new node) lacks the scripts: load them, run those again.
        # They run after every other script of the batch, whatever their place in it: a
        # snapshot behind a settle that Redis lacked has read the wallet before that settle.
        missing = {batch[i].script.sha: batch[i].script for i in again}
        for script in missing.values():
            await self._client.script_load(script.script)
        for index, reply in zip(
            again, await self._pipeline([batch[i] for i in again]), strict=True
        ):
            replies[index] = reply
        rerun = set(again)
        return replies, [i for i in range(len(batch)) if i not in rerun] + again

    async def _pipeline(self, batch: list[_Queued]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for item in batch:
            pipe.evalsha(item.script.sha, len(item.keys), *item.keys, *item.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


@dataclass(frozen=True, slots=True)
class _Queued:
    script: AsyncScript
    keys: tuple[str, ...]
    args: tuple[str, ...]
    future: asyncio.Future[Any]
