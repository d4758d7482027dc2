"""The embedded wallet: one SQLite file, shared by every process on the machine that opens it.

Adapter: stores each wallet's state (``a11i.core.wallets.WalletBook``) as one row and applies
the pure rules in a transaction that holds the write lock, so a reservation is atomic across
processes (several sidecars on a laptop, and the ``a11i wallet`` command). A transaction runs on
the event loop when the file is free and on a dedicated thread when it must wait for another
process: the event loop never waits for a lock. WAL journal with
``synchronous=NORMAL``: a crash of the process loses nothing committed (a power cut may lose the
last transactions). What it may not do: talk to the network; Redis is a separate backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import NamedTuple, TypeVar

from a11i.core.errors import WalletUnavailable
from a11i.core.policy import BudgetPolicy, ExhaustedAction, Period, Verdict
from a11i.core.wallets import (
    Reservation,
    WalletBook,
    WalletSnapshot,
    advance,
    new_book,
    remaining_of,
    reserve,
    settle,
    snapshot_of,
    top_up,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wallets (
    namespace TEXT PRIMARY KEY,
    -- The WalletBook as JSON; money in integer nano-dollars, limits as decimal strings.
    book TEXT NOT NULL,
    -- What was topped up over the configured limit: kept when the limit is configured again.
    topped_up TEXT NOT NULL DEFAULT '0',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stops (
    scope TEXT PRIMARY KEY,   -- 'cluster': the emergency stop of every wallet in the file
    since REAL NOT NULL
);
"""

_UPDATE = "UPDATE wallets SET book = ?, updated_at = ? WHERE namespace = ?"
#: The write of a book computed from the one this wallet last wrote: it changes nothing unless
#: the row still holds that text and the cluster stop is still as it was (0 rows changed).
_UPDATE_UNCHANGED = (
    "UPDATE wallets SET book = ?, updated_at = ? WHERE namespace = ? AND book = ? "
    "AND EXISTS (SELECT 1 FROM stops WHERE scope = 'cluster') = ?"
)


#: The wallet's clock, read once per transaction: ``datetime.now(UTC)`` without a frame of ours.
_utc_now = partial(datetime.now, UTC)


class _Written(NamedTuple):
    """What a transaction of this wallet committed last: the row's text, its book, and
    whether the cluster stop was on."""

    text: str
    book: WalletBook
    stopped: bool


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/a11i`` (``~/.local/state/a11i`` when unset): a11i's files on a laptop."""
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "a11i"


def default_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/a11i/wallets.sqlite`` (``~/.local/state`` when unset)."""
    return state_dir(env) / "wallets.sqlite"


def wallet_path(wallet_file: str | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The file ``A11I_WALLET_FILE`` names (the default when unset); None for ``:memory:``."""
    if wallet_file == ":memory:":
        return None
    return Path(wallet_file) if wallet_file else default_path(env)


class SQLiteWallet:
    """One namespace's wallet in a SQLite file (the embedded default)."""

    def __init__(
        self,
        path: Path,
        policy: BudgetPolicy,
        *,
        namespace: str,
        agent: str,
        period: Period = Period.TOTAL,
        lease: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = _utc_now,
        zone: str = "UTC",
    ) -> None:
        self.path = path
        self._zone = zone
        self.namespace = namespace
        self.agent = agent
        self._policy = policy
        self._period = period
        #: How long a reservation holds its money unsettled, in seconds (a reserve's lease).
        self._seconds = lease.total_seconds()
        self._clock = clock
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self):x}-"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a11i-wallet")
        self._local = threading.local()
        self._last_book: WalletBook | None = None
        #: The last commit: the next transaction starts from it while the row is unchanged.
        self._written: _Written | None = None
        #: Another process wrote this wallet after our last commit, when we last looked: it
        #: may be writing in turn (two sidecars sharing a namespace), so read the row first.
        self._read_first = False
        self._writer = _BookWriter()
        # A second connection for the event loop's thread that never waits for a lock.
        self._loop_connection: sqlite3.Connection | None = None
        self._loop_thread: int | None = None
        self._loop_commits = 0
        self._checkpoint: asyncio.Future[None] | None = None

    def store(self) -> dict[str, str | int | bool]:
        return {"kind": "sqlite", "path": str(self.path)}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the file (creating it) and configure this namespace's wallet. An existing
        wallet keeps its spend, reservations, top-ups and emergency stop; its limit, thresholds
        and period follow this process's configuration."""
        await self._run(self._configure)
        try:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            connection.execute("PRAGMA synchronous=NORMAL")
            # Checkpointing the WAL takes milliseconds: never on the loop (see _fast).
            connection.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as error:
            raise self._unusable(error) from error
        self._loop_connection = connection
        self._loop_thread = threading.get_ident()

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        await self._run(self._close_connection)
        if self._loop_connection is not None:
            self._loop_connection.close()
            self._loop_connection = None
        self._executor.shutdown(wait=True)

    # -- the Wallet protocol -----------------------------------------------------------------
    async def reserve(self, projected: Decimal) -> tuple[Verdict, Reservation | None]:
        apply = self._reserving(projected)
        return await self._fast(self._transaction, apply)

    def reserve_now(self, projected: Decimal) -> tuple[Verdict, Reservation | None] | None:
        """``reserve`` done at once on the event loop, when the file is free (the usual case);
        None when another process holds it and the caller must ``reserve`` (and wait).
        Nothing is awaited, so no cancellation can land between the reservation and its
        return to the caller."""
        done = self._now(self._transaction, self._reserving(projected))
        return None if done is None else done[0]

    def _reserving(
        self, projected: Decimal
    ) -> Callable[[WalletBook, datetime], tuple[WalletBook, tuple[Verdict, Reservation | None]]]:
        lease_id = f"{self._prefix}{next(self._ids)}"

        def apply(
            book: WalletBook, now: datetime
        ) -> tuple[WalletBook, tuple[Verdict, Reservation | None]]:
            book, verdict, lease = reserve(book, lease_id, projected, now, self._seconds)
            return book, (verdict, lease)

        return apply

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        def apply(book: WalletBook, now: datetime) -> tuple[WalletBook, bool]:
            return settle(book, reservation, actual, now)

        # _fast inlined: one coroutine fewer on the path of every call.
        if self._now(self._transaction, apply) is None:
            await self._run(self._transaction, apply)

    async def snapshot(self) -> WalletSnapshot:
        def apply(book: WalletBook, now: datetime) -> tuple[WalletBook, WalletBook]:
            book = advance(book, now)
            return book, book

        book = await self._run(self._transaction, apply)
        return snapshot_of(book, self.namespace, self.agent)

    @property
    def last_snapshot(self) -> WalletSnapshot | None:
        book = self._last_book
        return None if book is None else snapshot_of(book, self.namespace, self.agent)

    @property
    def last_remaining_usd(self) -> Decimal | None:
        book = self._last_book
        return None if book is None else remaining_of(book)

    # -- admin -------------------------------------------------------------------------------
    async def suspend(self, on: bool) -> None:
        """The namespace's emergency stop: every call is refused with 403 while it is on."""

        def apply(book: WalletBook, now: datetime) -> tuple[WalletBook, None]:
            return replace(book, policy=replace(book.policy, suspended=on)), None

        await self._run(partial(self._transaction, apply, cluster_stop_applies=False))

    async def top_up(self, amount: Decimal) -> None:
        """Raise the limit by ``amount`` USD; kept across restarts and reconfiguration."""
        if amount <= 0:
            raise ValueError("a top-up must be a positive amount")
        await self._run(self._top_up, amount)

    # -- on the wallet thread ----------------------------------------------------------------
    async def _fast(self, function: Callable[..., T], *args: object) -> T:
        """Run a reserve or settle on the event loop when the file is free at once (a WAL
        transaction without fsync takes ~0.1 ms, less than the hop to a thread and back);
        when another process holds the lock, wait for it on the wallet thread instead."""
        done = self._now(function, *args)
        if done is not None:
            return done[0]
        return await self._run(function, *args)

    def _now(self, function: Callable[..., T], *args: object) -> tuple[T] | None:
        """``function`` run on the event loop's own connection, which never waits for the
        lock: its result (in a 1-tuple), or None when the file is busy (or not open yet)."""
        if self._loop_connection is None:
            return None
        try:
            result = function(*args)
        except (sqlite3.Error, OSError) as error:
            if not _busy(error):
                raise self._unusable(error) from error
            return None
        self._loop_commits += 1
        if self._loop_commits % 500 == 0 and (self._checkpoint is None or self._checkpoint.done()):
            loop = asyncio.get_running_loop()
            self._checkpoint = loop.run_in_executor(self._executor, self._wal_checkpoint)
        return (result,)

    def _wal_checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (sqlite3.Error, OSError) as error:
            raise self._unusable(error) from error

    def _unusable(self, error: Exception) -> WalletUnavailable:
        """A full disk, a path that cannot be created, a file locked past the busy timeout:
        the call is refused rather than let through unaccounted (the file is local)."""
        return WalletUnavailable(f"The wallet file {self.path} cannot be used: {error}.")

    def _connection(self) -> sqlite3.Connection:
        if self._loop_thread == threading.get_ident() and self._loop_connection is not None:
            return self._loop_connection
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            for attempt in itertools.count(1):
                try:
                    # Switching to WAL takes an exclusive lock and does not wait for a busy
                    # file: two processes opening a new file at once must retry.
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=NORMAL")
                    connection.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or attempt >= 50:
                        connection.close()
                        raise
                    time.sleep(0.05)
            self._local.connection = connection
        return connection

    def _close_connection(self) -> None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _transaction(
        self,
        apply: Callable[[WalletBook, datetime], tuple[WalletBook, T]],
        *,
        cluster_stop_applies: bool = True,
        topped_up: Decimal = Decimal(0),
    ) -> T:
        """Load, apply the pure rules, store: one ``BEGIN IMMEDIATE`` transaction, so no other
        process can interleave between the check and the write.

        The rules first run on the book this wallet last committed, and its write is conditional
        on the row still holding that text (and the cluster stop being as it was): when nobody
        else wrote since, which is the usual case, the row is neither read nor parsed. That
        write is one statement in a transaction of its own: SQLite takes the write lock for an
        UPDATE before it reads, as ``BEGIN IMMEDIATE`` does, checks the condition under it and
        commits when the statement ends, so the compare-and-swap is as atomic without the two
        statements around it (whose execution cost more than the swap itself). When the
        condition fails, nothing was written: the row is read and the rules run again on it
        in a ``BEGIN IMMEDIATE`` transaction, and the next transactions read the row first
        until they find it as this wallet left it. Whatever the other connection, thread or
        process did, what is written is computed from what the file holds under the lock."""
        connection = self._connection()
        now = self._clock()
        stamp = now.timestamp()
        last = self._written
        if last is not None and not self._read_first and not topped_up:
            done = self._applied(apply, last.book, last.stopped, now, cluster_stop_applies)
            try:
                cursor = connection.execute(
                    _UPDATE_UNCHANGED,
                    (done[0].text, stamp, self.namespace, last.text, last.stopped),
                )
            except sqlite3.Error as error:
                # Not written (a statement that fails is rolled back whole). Busy: the row is
                # as this wallet left it, for the wait on the wallet thread to swap again.
                if not _busy(error):
                    self._written = None
                raise
            if cursor.rowcount == 1:
                written, self._last_book, result = done
                self._written = written
                return result
            self._read_first = True
        connection.execute("BEGIN IMMEDIATE")
        try:
            book, stopped = self._load(connection, now)
            done = self._applied(apply, book, stopped, now, cluster_stop_applies)
            connection.execute(_UPDATE, (done[0].text, stamp, self.namespace))
            if topped_up:
                row = connection.execute(
                    "SELECT topped_up FROM wallets WHERE namespace = ?", (self.namespace,)
                ).fetchone()
                connection.execute(
                    "UPDATE wallets SET topped_up = ? WHERE namespace = ?",
                    (str(Decimal(str(row[0])) + topped_up), self.namespace),
                )
            connection.execute("COMMIT")
        except BaseException:
            # Nothing of this transaction is kept, not even in memory: the next one reads the row.
            self._written = None
            connection.execute("ROLLBACK")
            raise
        written, self._last_book, result = done
        self._written = written
        return result

    def _applied(
        self,
        apply: Callable[[WalletBook, datetime], tuple[WalletBook, T]],
        book: WalletBook,
        cluster_stopped: bool,
        now: datetime,
        cluster_stop_applies: bool,
    ) -> tuple[_Written, WalletBook, T]:
        """The rules applied to ``book``: what to write, the book as the rules see it (with
        the cluster stop), and the rules' result."""
        if not (cluster_stop_applies and cluster_stopped):
            book, result = apply(book, now)
            return _Written(self._writer.dump(book), book, cluster_stopped), book, result
        # The cluster stop applies to every wallet without being written into each.
        stored_suspension = book.policy.suspended
        seen, result = apply(replace(book, policy=replace(book.policy, suspended=True)), now)
        book = replace(seen, policy=replace(seen.policy, suspended=stored_suspension))
        return _Written(self._writer.dump(book), book, cluster_stopped), seen, result

    def _load(self, connection: sqlite3.Connection, now: datetime) -> tuple[WalletBook, bool]:
        """The stored book (parsed again only when another process changed it) and whether
        the cluster stop is on, in one query."""
        row = connection.execute(
            "SELECT book, EXISTS (SELECT 1 FROM stops WHERE scope = 'cluster') "
            "FROM wallets WHERE namespace = ?",
            (self.namespace,),
        ).fetchone()
        if row is not None:
            text, stopped = str(row[0]), bool(row[1])
            last = self._written
            if last is not None and last.text == text:
                self._read_first = False
                return last.book, stopped
            self._read_first = last is not None
            return load_book(text), stopped
        return self._insert_new(connection, now), self._cluster_stopped(connection)

    def _insert_new(self, connection: sqlite3.Connection, now: datetime) -> WalletBook:
        """A new wallet from this process's configuration, stored."""
        book = new_book(self._policy, self._period, now, self._zone)
        connection.execute(
            "INSERT INTO wallets (namespace, book, updated_at) VALUES (?, ?, ?)",
            (self.namespace, dump_book(book), now.timestamp()),
        )
        return book

    @staticmethod
    def _cluster_stopped(connection: sqlite3.Connection) -> bool:
        return (
            connection.execute("SELECT 1 FROM stops WHERE scope = 'cluster'").fetchone() is not None
        )

    def _configure(self) -> None:
        connection = self._connection()
        now = self._clock()
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(
                "SELECT book, topped_up FROM wallets WHERE namespace = ?", (self.namespace,)
            ).fetchone()
            if row is None:
                self._insert_new(connection, now)
            else:
                book = load_book(str(row[0]))
                topped = Decimal(str(row[1]))
                limit = self._policy.limit_usd
                policy = replace(
                    self._policy,
                    limit_usd=None if limit is None else limit + topped,
                    suspended=book.policy.suspended,
                )
                book = advance(
                    replace(book, policy=policy, period=self._period, zone=self._zone), now
                )
                connection.execute(
                    "UPDATE wallets SET book = ?, updated_at = ? WHERE namespace = ?",
                    (dump_book(book), now.timestamp(), self.namespace),
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        log.info("embedded wallet %s in %s", self.namespace, self.path)

    def _top_up(self, amount: Decimal) -> None:
        def apply(book: WalletBook, now: datetime) -> tuple[WalletBook, None]:
            return top_up(book, amount), None

        self._transaction(apply, topped_up=amount)


def _busy(error: Exception) -> bool:
    """Whether ``error`` is another connection holding the file (not a file that is unusable)."""
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


def exists(path: Path, namespace: str) -> bool:
    if not path.is_file():
        return False
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as connection:
        connection.executescript(_SCHEMA)
        row = connection.execute("SELECT 1 FROM wallets WHERE namespace = ?", (namespace,))
        return row.fetchone() is not None


def read_books(
    path: Path, now: datetime | None = None
) -> tuple[list[tuple[str, WalletBook]], bool]:
    """Every wallet in the file as it stands ``now`` (a period that is over shows as the new,
    empty one), with each wallet's own emergency stop, and whether the cluster stop is on."""
    if not path.is_file():
        return [], False
    moment = now or datetime.now(UTC)
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as connection:
        connection.executescript(_SCHEMA)
        rows = connection.execute("SELECT namespace, book FROM wallets ORDER BY namespace")
        books = [(str(name), advance(load_book(str(text)), moment)) for name, text in rows]
        return books, SQLiteWallet._cluster_stopped(connection)


def read_snapshots(path: Path) -> list[WalletSnapshot]:
    """Every wallet in the file, as it stands now (``a11i wallet show``)."""
    books, stopped = read_books(path)
    snapshots = []
    for namespace, book in books:
        if stopped:
            book = replace(book, policy=replace(book.policy, suspended=True))
        snapshots.append(snapshot_of(book, namespace, "*"))
    return snapshots


async def administer(
    path: Path, namespace: str, *, suspend: bool | None = None, top_up: Decimal | None = None
) -> None:
    """Stop, resume or top up an existing wallet in the file, keeping its configuration."""
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as connection:
        row = connection.execute(
            "SELECT book FROM wallets WHERE namespace = ?", (namespace,)
        ).fetchone()
    if row is None:
        raise KeyError(namespace)
    book = load_book(str(row[0]))
    wallet = SQLiteWallet(
        path, book.policy, namespace=namespace, agent="a11i-cli", period=book.period
    )
    try:
        if suspend is not None:
            await wallet.suspend(suspend)
        if top_up is not None:
            await wallet.top_up(top_up)
    finally:
        await wallet.close()


def set_cluster_stop(path: Path, on: bool) -> None:
    """The emergency stop of every wallet in the file (``a11i wallet stop --cluster``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=5.0, isolation_level=None)) as connection:
        connection.executescript(_SCHEMA)
        if on:
            connection.execute(
                "INSERT OR REPLACE INTO stops (scope, since) VALUES ('cluster', ?)",
                (datetime.now(UTC).timestamp(),),
            )
        else:
            connection.execute("DELETE FROM stops WHERE scope = 'cluster'")


def dump_book(book: WalletBook) -> str:
    return _BookWriter().dump(book)


class _BookWriter:
    """Writes books as the JSON text ``json.dumps`` makes of them (keys in the same order,
    no spaces), with the texts of the parts a reserve or a settle leaves as they were
    remembered while they are the same objects: the policy, period and zone (the policy's
    Decimals and enums cost more to write than the rest of the book together), the period's
    start and origin, and each lease (every call in flight is in every write of the book).
    Identity, not equality, says what is the same: 0.0 equals -0.0 but is written otherwise."""

    __slots__ = ("_around", "_lease_texts", "_leases")

    def __init__(self) -> None:
        #: The policy, period, zone, period's start and origin last written, with the text
        #: before the spend, the text between the spend and the leases, and the period's
        #: start as text (a new lease's, usually the same float): one tuple, replaced whole.
        self._around: tuple[BudgetPolicy, Period, str, float, float, str, str, str] | None = None
        #: The leases last written and their text.
        self._leases: tuple[tuple[Reservation, ...], str] = ((), "")
        #: The text of each lease last written or since added, by id.
        self._lease_texts: dict[str, tuple[Reservation, str]] = {}

    def dump(self, book: WalletBook) -> str:
        around = self._around
        if (
            around is None
            or around[0] is not book.policy
            or around[1] is not book.period
            or around[2] != book.zone
            or around[3] is not book.period_start
            or around[4] is not book.origin
        ):
            start = repr(book.period_start)
            around = self._around = (
                book.policy,
                book.period,
                book.zone,
                book.period_start,
                book.origin,
                f'{self._head_of(book)},"period_start":{start},'
                f'"origin":{book.origin!r},"spent_nanos":',
                f',"zone":{encode_basestring_ascii(book.zone)},"leases":[',
                start,
            )
        leases = book.leases
        last = self._leases
        if leases is last[0]:
            text = last[1]
        else:
            text = self._leases_text(leases, last, around)
            self._leases = (leases, text)
        return f"{around[5]}{book.spent:d}{around[6]}{text}]}}"

    def _leases_text(
        self,
        leases: tuple[Reservation, ...],
        last: tuple[tuple[Reservation, ...], str],
        around: tuple[BudgetPolicy, Period, str, float, float, str, str, str],
    ) -> str:
        """The leases' text: the last one with a lease added after them (a reserve), or
        made again from each lease's text (a settle, an expiry)."""
        before = last[0]
        if len(leases) == len(before) + 1 and all(map(operator.is_, leases, before)):
            added = leases[-1]
            start = around[7] if added.period_start is around[3] else repr(added.period_start)
            text = _lease_text(added, start)
            self._lease_texts[added.id] = (added, text)
            return f"{last[1]},{text}" if before else text
        known = self._lease_texts
        written: dict[str, tuple[Reservation, str]] = {}
        texts = []
        for lease in leases:
            entry = known.get(lease.id)
            if entry is None or entry[0] is not lease:
                entry = (lease, _lease_text(lease, repr(lease.period_start)))
            written[lease.id] = entry
            texts.append(entry[1])
        self._lease_texts = written
        return ",".join(texts)

    @staticmethod
    def _head_of(book: WalletBook) -> str:
        """The text up to the period (its closing brace cut)."""
        policy = book.policy
        head = {
            "limit_usd": _limit_text(policy),
            "warn_at": str(policy.warn_at_percent),
            "optimize_at": str(policy.optimize_at_percent),
            "when_exhausted": policy.when_exhausted.value,
            "suspended": policy.suspended,
            "period": book.period.value,
        }
        return json.dumps(head, separators=(",", ":"))[:-1]


def load_book(text: str) -> WalletBook:
    data = json.loads(text)
    limit = data["limit_usd"]
    policy = BudgetPolicy(
        limit_usd=None if limit is None else Decimal(limit),
        warn_at_percent=Decimal(data["warn_at"]),
        optimize_at_percent=Decimal(data["optimize_at"]),
        when_exhausted=ExhaustedAction(data["when_exhausted"]),
        suspended=bool(data["suspended"]),
    )
    return WalletBook(
        policy=policy,
        period=Period(data["period"]),
        period_start=float(data["period_start"]),
        origin=float(data["origin"]),
        spent=int(data["spent_nanos"]),
        zone=str(data.get("zone", "UTC")),
        leases=tuple(
            Reservation(str(i), int(n), float(e), float(p)) for i, n, e, p in data["leases"]
        ),
    )


def _lease_text(lease: Reservation, start: str) -> str:
    """A lease as JSON, ``start`` the text of its period's start."""
    return f"[{encode_basestring_ascii(lease.id)},{lease.nanos:d},{lease.expires_at!r},{start}]"


def _limit_text(policy: BudgetPolicy) -> str | None:
    return None if policy.limit_usd is None else str(policy.limit_usd)
