"""The hub: follows the event stream, folds it into the state, and fans it out to the pages.

One follower task reads the stream after the last id it saw (history first, on start; in a Redis
Cluster every namespace's stream, after a cursor of one id per stream), one
publisher task re-reads the wallets and pushes the view when it changed. Each page has a bounded
queue; a page too slow to keep up is disconnected (it reconnects and resumes from its last id,
so it loses nothing). Replays for a resuming page come from a bounded buffer of recent events,
or from the stream itself when the page is further behind.

What it may not do: talk to Redis except through its ``Source``, or block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from a11i.dashboard.source import DashboardError, RawEvent, Source, Wallets
from a11i.dashboard.state import (
    DashboardState,
    Event,
    JSONView,
    advance,
    format_cursor,
    id_key,
    id_stream,
    is_after,
    parse_cursor,
    parse_event,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubSettings:
    """How the hub follows the stream and feeds the pages."""

    #: Events folded from the stream's history when the dashboard starts.
    history: int = 10_000
    #: Recent events kept for pages that resume after a short disconnection.
    replay_buffer: int = 5_000
    #: Most events replayed to one resuming page (more: it is told it missed some).
    max_replay: int = 10_000
    #: Seconds a blocking read of the stream waits for new events.
    block_s: float = 1.0
    #: Seconds between reads of the wallets.
    wallet_poll_s: float = 0.5
    #: Seconds between checks whether the view changed (the page's latency for wallets).
    publish_s: float = 0.2
    #: Messages queued per page before it counts as too slow and is disconnected.
    page_queue: int = 1_000
    #: Longest wait between attempts while Redis is away.
    max_backoff_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for the pages, serialized once however many pages get it."""

    #: The message's ``type`` (``events``, ``view``), or ``closing`` / ``socket-closed``.
    kind: str
    #: The JSON text sent as is ("" for the two signals).
    text: str = ""


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(slots=True, eq=False)
class Page:
    """One connected page: its queue, and whether it fell behind."""

    queue: asyncio.Queue[Outgoing] = field(default_factory=lambda: asyncio.Queue(1_000))
    overflowed: bool = False
    #: The hub's cursor when the page attached: its replay reaches there, its queue goes on.
    cursor: str | None = None


@dataclass(slots=True)
class SourceStatus:
    ok: bool = False
    detail: str = "connecting"


class Hub:
    def __init__(
        self,
        source: Source,
        state: DashboardState | None = None,
        settings: HubSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.state = state or DashboardState()
        self.settings = settings or HubSettings()
        self._clock = clock
        self.status = SourceStatus()
        self.wallets = Wallets([], False)
        self._buffer: deque[Event] = deque(maxlen=self.settings.replay_buffer)
        self._cursor: str | None = None
        self._pages: set[Page] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._last_view: str | None = None
        #: Set by close(): the loops also end on it, because a cancellation that lands while
        #: redis-py's own read timeout expires can be swallowed (Python 3.11).
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # The first page asked for must not show an empty list of wallets: read them once now
        # (bounded by the source's timeout; an unreachable source only sets the status).
        await self._read_wallets()
        self._tasks = [
            asyncio.create_task(self._follow(), name="a11i-dashboard-follow"),
            asyncio.create_task(self._publish(), name="a11i-dashboard-publish"),
        ]

    async def close(self) -> None:
        self._closing = True
        self._dirty.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for page in list(self._pages):
            self._drop(page)

    # -- pages -------------------------------------------------------------------------------

    async def attach(self, since: str | None) -> tuple[Page, list[Event], bool]:
        """Register a page; returns it with the events it missed after ``since`` (the latest
        feed when None) and whether some were too old to replay."""
        missed: list[Event] = []
        truncated = False
        if since is not None and self._behind(parse_cursor(since)):
            # Further behind than the buffer: read the gap from the stream itself.
            raw = await self.source.range_after(since, self.settings.max_replay)
            truncated = len(raw) >= self.settings.max_replay
            missed = [event for event in _parse_all(raw)]
        # No await from here on: nothing can be broadcast between the replay and attaching.
        if since is None:
            replay = self.state.recent()
        else:
            after = advance(parse_cursor(since), (event.id for event in missed))
            replay = missed + [event for event in self._buffer if is_after(event.id, after)]
        page = Page(asyncio.Queue(self.settings.page_queue), cursor=self._cursor)
        self._pages.add(page)
        return page, replay, truncated

    @property
    def cursor(self) -> str | None:
        """Where the hub has read every stream up to (None before the history is read): a
        page that got every event broadcast so far resumes from here."""
        return self._cursor

    def _behind(self, since: dict[str, str]) -> bool:
        """Whether the buffer may lack events of some stream after ``since``: the stream's
        oldest buffered event is after ``since``'s position in it while the hub read further."""
        if self._cursor is None or not self._buffer:
            return False
        oldest: dict[str, str] = {}
        for event in self._buffer:
            oldest.setdefault(id_stream(event.id), event.id)
        for stream, position in parse_cursor(self._cursor).items():
            seen = since.get(stream)
            if seen is not None and id_key(seen) >= id_key(position):
                continue  # nothing new in that stream
            first = oldest.get(stream)
            if first is None or seen is None or id_key(first) > id_key(seen):
                return True
        return False

    def detach(self, page: Page) -> None:
        self._pages.discard(page)

    def view(self) -> JSONView:
        body = self.state.view(self.wallets.wallets, self._clock())
        body["type"] = "view"
        body["cluster_stop"] = self.wallets.cluster_stop
        body["source"] = {"ok": self.status.ok, "detail": self.status.detail}
        body["mode"] = self.source.mode
        return body

    async def refresh(self) -> None:
        """Re-read the wallets and push the view now (after an action)."""
        await self._read_wallets()
        self._push_view(force=True)

    # -- internals ---------------------------------------------------------------------------

    def _broadcast(self, message: JSONView) -> None:
        if not self._pages:
            return
        # One serialization for every page (20 pages at 500 events/s: 20x less JSON work).
        outgoing = Outgoing(str(message.get("type", "")), dumps(message))
        for page in list(self._pages):
            self._offer(page, outgoing)

    def _offer(self, page: Page, outgoing: Outgoing) -> None:
        try:
            page.queue.put_nowait(outgoing)
        except asyncio.QueueFull:
            # Disconnected, not skipped: a gap would go unnoticed; a reconnect resumes.
            page.overflowed = True
            self._drop(page)

    def _drop(self, page: Page) -> None:
        self._pages.discard(page)
        page.overflowed = True
        with contextlib.suppress(asyncio.QueueFull):
            page.queue.put_nowait(Outgoing("closing"))

    def _set_status(self, ok: bool, detail: str) -> None:
        if (ok, detail) != (self.status.ok, self.status.detail):
            if ok:
                log.info("dashboard: %s", detail)
            else:
                log.warning("dashboard: %s", detail)
            self.status = SourceStatus(ok, detail)
            self._dirty.set()

    async def _follow(self) -> None:
        backoff = 0.25
        while not self._closing:
            try:
                if self._cursor is None:
                    history = await self.source.history(self.settings.history)
                    recent = []
                    if self._ingest(history) and self._pages:
                        # Pages that attached before the history was read got an empty feed:
                        # they get its recent part now (no await in between, so none twice).
                        recent = self.state.recent()
                    if self._pages and recent:
                        self._broadcast(
                            {
                                "type": "events",
                                "events": [event.as_json() for event in recent],
                                "last_id": format_cursor(
                                    advance({}, (event_id for event_id, _ in history))
                                ),
                            }
                        )
                    self._cursor = (
                        format_cursor(advance({}, (event_id for event_id, _ in history)))
                        if history
                        else "0-0"
                    )
                batch = await self.source.read(
                    self._cursor, int(self.settings.block_s * 1000), 1_000
                )
                self._set_status(True, f"following the {self.source.mode} event stream")
                backoff = 0.25
                if batch:
                    self._cursor = format_cursor(
                        advance(parse_cursor(self._cursor), (event_id for event_id, _ in batch))
                    )
                    events = self._ingest(batch)
                    if events:
                        self._broadcast(
                            {
                                "type": "events",
                                "events": [event.as_json() for event in events],
                                "last_id": self._cursor,
                            }
                        )
            except DashboardError as exc:
                self._set_status(False, f"{exc.message}; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)
            except Exception:
                # A bug here must not stop the page from updating: logged, retried.
                log.exception("dashboard: following the event stream failed")
                await asyncio.sleep(self.settings.max_backoff_s)

    def _ingest(self, raw: list[RawEvent]) -> list[Event]:
        events = _parse_all(raw)
        for event in events:
            self.state.fold(event)
            self._buffer.append(event)
        if events:
            self._dirty.set()
        return events

    async def _read_wallets(self) -> None:
        try:
            self.wallets = await self.source.wallets(self._clock())
        except DashboardError as exc:
            self._set_status(False, f"{exc.message}; retrying")

    async def _publish(self) -> None:
        next_poll = 0.0
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.publish_s):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.settings.wallet_poll_s
                    await self._read_wallets()
                self._push_view()
            except Exception:
                log.exception("dashboard: publishing the view failed")
                await asyncio.sleep(self.settings.max_backoff_s)

    def _push_view(self, *, force: bool = False) -> None:
        if not self._pages:
            # Nobody to show it to: not built at all (a page gets the current view on attach).
            self._last_view = None
            return
        view = self.view()
        now = view.pop("now")
        # "now" moves on every time; the page only needs a new view when something else did.
        # The text compared is the text sent, "now" added: the view is serialized once.
        key = dumps(view)
        if force or key != self._last_view:
            self._last_view = key
            text = f'{key[:-1]},"now":{dumps(now)}}}'
            for page in list(self._pages):
                self._offer(page, Outgoing("view", text))


def _parse_all(raw: list[RawEvent]) -> list[Event]:
    events = []
    for event_id, fields in raw:
        event = parse_event(event_id, fields)
        if event is not None:
            events.append(event)
    return events
