"""The dashboard's pure core: events and wallet fields in, the page's view out.

Folds the flat events of the event streams into per-namespace and per-agent aggregates, computes
burn rates over a sliding window and projected exhaustion times, and turns the raw fields of a
wallet hash into a typed ``WalletView``. Every piece of memory is bounded (recent events and
burn windows per namespace, chart points, the number of agents and namespaces tracked).

What it may not do: any I/O, read a clock (``now`` is always passed in), or import aiohttp,
Redis or the sidecar's adapters. Money is ``Decimal`` and leaves as decimal strings.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final, TypeAlias

from a11i.core.model import usd
from a11i.core.policy import (
    BudgetPolicy,
    ExhaustedAction,
    Period,
    WalletState,
    period_start,
    state_of,
)
from a11i.core.wallets import to_usd

#: The kinds of events the dashboard understands; anything else is kept out of the aggregates.
CALL: Final = "call"
ACTION: Final = "action"
#: The pseudo-namespace of cluster-wide actions.
CLUSTER: Final = "*"

JSONView: TypeAlias = dict[str, object]


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Bounds and windows of the aggregates."""

    #: Recent events kept per namespace (and for cluster-wide actions): the live feed.
    recent_per_namespace: int = 200
    #: Events the live feed shows, newest first, across namespaces.
    feed_size: int = 100
    #: Seconds of spend the burn rate is computed over.
    burn_window_s: float = 300.0
    #: Calls kept per namespace for the burn rate (a bound on memory under a flood).
    burn_window_events: int = 10_000
    #: Seconds per point of the spend chart.
    chart_bucket_s: float = 10.0
    #: Points kept per namespace in the spend chart (360 of 10 s: the last hour).
    chart_points: int = 360
    #: Agents tracked; the one seen longest ago is forgotten first.
    max_agents: int = 2_000
    #: Namespaces tracked; the one seen longest ago is forgotten first.
    max_namespaces: int = 500
    #: Models listed per agent.
    max_models: int = 20


# --- stream ids -------------------------------------------------------------------------------


def id_key(event_id: str) -> tuple[int, int]:
    """Order of a stream id: Redis ``"<ms>-<seq>"``, or the embedded ring's whole numbers; an
    id of a namespace's own stream (a Redis Cluster's) is ``"<ns>/<ms>-<seq>"``."""
    first, _, second = event_id.rpartition("/")[2].partition("-")
    try:
        return int(first), int(second or 0)
    except ValueError:
        return -1, -1


def id_stream(event_id: str) -> str:
    """Which stream an id is of: the namespace of ``"<ns>/<ms>-<seq>"``, "" for the one shared
    stream (``a11i:events``, the embedded ring)."""
    return event_id.rpartition("/")[0]


#: A position in every stream followed: stream ("" for the shared one) to the last id read.
Cursor: TypeAlias = dict[str, str]


def parse_cursor(text: str | None) -> Cursor:
    """A cursor from its text: ids separated by commas, one per stream (one Redis server's
    single stream: a plain id, as in earlier releases)."""
    cursor: Cursor = {}
    for item in (text or "").split(","):
        if item:
            stream, _, position = item.rpartition("/")
            cursor[stream] = position
    return cursor


def format_cursor(cursor: Mapping[str, str]) -> str:
    return ",".join(
        f"{stream}/{position}" if stream else position
        for stream, position in sorted(cursor.items())
    )


def advance(cursor: Mapping[str, str], event_ids: Iterable[str]) -> Cursor:
    """``cursor`` moved past ``event_ids`` (each stream to the latest of its own)."""
    moved = dict(cursor)
    for event_id in event_ids:
        stream = id_stream(event_id)
        known = moved.get(stream)
        if known is None or id_key(event_id) > id_key(known):
            moved[stream] = event_id.rpartition("/")[2]
    return moved


def is_after(event_id: str, cursor: Mapping[str, str]) -> bool:
    """Whether the event comes after ``cursor`` in its own stream (a stream the cursor does
    not name: yes)."""
    known = cursor.get(id_stream(event_id))
    return known is None or id_key(event_id) > id_key(known)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One metered call (``kind: call``), parsed from the stream's strings."""

    id: str
    ts: float
    namespace: str
    agent: str
    model: str
    decision: str
    status: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int

    @property
    def blocked(self) -> bool:
        return self.decision == "block"

    def as_json(self) -> JSONView:
        return {
            "id": self.id,
            "kind": CALL,
            "ts": self.ts,
            "namespace": self.namespace,
            "agent": self.agent,
            "model": self.model,
            "decision": self.decision,
            "status": self.status,
            "cost_usd": usd(self.cost_usd),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """Something a person did from the dashboard (``kind: action``): who, what, how much."""

    id: str
    ts: float
    namespace: str
    action: str
    actor: str
    amount_usd: Decimal | None
    #: What a top-up went through: ``agentbudget/<name>`` or ``wallet`` ("" before it was said).
    via: str = ""
    #: The limit a top-up through an AgentBudget set.
    limit_usd: Decimal | None = None

    def as_json(self) -> JSONView:
        return {
            "id": self.id,
            "kind": ACTION,
            "ts": self.ts,
            "namespace": self.namespace,
            "action": self.action,
            "actor": self.actor,
            "amount_usd": None if self.amount_usd is None else usd(self.amount_usd),
            "via": self.via,
            "limit_usd": None if self.limit_usd is None else usd(self.limit_usd),
        }


Event: TypeAlias = CallEvent | ActionEvent


def parse_event(event_id: str, raw: Mapping[str, str]) -> Event | None:
    """The typed event, or None for a kind the dashboard does not show or a malformed one
    (a stream is shared: a bad record must not stop the page)."""
    kind = raw.get("kind", CALL)
    ts = _float(raw.get("ts"))
    namespace = raw.get("namespace", "")
    if ts is None or not namespace:
        return None
    if kind == CALL:
        return CallEvent(
            id=event_id,
            ts=ts,
            namespace=namespace,
            agent=raw.get("agent", "") or "unknown",
            model=raw.get("model", "") or "unknown",
            decision=raw.get("decision", ""),
            status=_int(raw.get("status")),
            cost_usd=_money(raw.get("cost_usd")) or Decimal(0),
            input_tokens=_int(raw.get("input_tokens")),
            output_tokens=_int(raw.get("output_tokens")),
        )
    if kind == ACTION:
        return ActionEvent(
            id=event_id,
            ts=ts,
            namespace=namespace,
            action=raw.get("action", ""),
            actor=raw.get("actor", ""),
            amount_usd=_money(raw.get("amount_usd")),
            via=raw.get("via", ""),
            limit_usd=_money(raw.get("limit_usd")),
        )
    return None


def action_event(
    namespace: str, action: str, actor: str, now: float, amount: Decimal | None = None
) -> dict[str, str]:
    """The stream record of a dashboard action (the stream's flat strings)."""
    event = {
        "kind": ACTION,
        "ts": f"{now:.3f}",
        "namespace": namespace,
        "action": action,
        "actor": actor,
    }
    if amount is not None:
        event["amount_usd"] = usd(amount)
    return event


# --- wallets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalletView:
    """A namespace's wallet as the page shows it."""

    namespace: str
    limit_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    period: str
    period_start: float
    phase: WalletState
    suspended: bool

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limit_usd is None:
            return None
        return max(self.limit_usd - self.spent_usd - self.reserved_usd, Decimal(0))


def wallet_from_fields(
    namespace: str,
    fields: Mapping[str, str],
    cluster_stop: bool,
    now: float,
) -> WalletView | None:
    """A wallet from the raw fields of its Redis hash (see ``a11i.sidecar.wallets.redis``),
    read-only: a period that is over shows as empty (what the next call's script will write);
    what calls hold is the wallet's running total (leases past their time stay in it until the
    next call expires them). None when the hash is not a wallet (fields missing or malformed)."""
    try:
        limit_text = fields["limit_nanos"]
        period = Period(fields["period"])
        stored_start = float(fields["period_start"])
        origin = float(fields["origin"])
        spent = int(fields.get("spent_nanos", "0") or "0")
        reserved = int(fields.get("reserved_nanos", "0") or "0")
        reserved_period = float(fields.get("reserved_period", "nan") or "nan")
        policy = BudgetPolicy(
            limit_usd=None if limit_text == "" else to_usd(int(limit_text)),
            warn_at_percent=Decimal(fields.get("warn_at", "75")),
            optimize_at_percent=Decimal(fields.get("optimize_at", "90")),
            when_exhausted=ExhaustedAction(fields.get("when_exhausted", "Block")),
            suspended=fields.get("suspended") == "1" or cluster_stop,
        )
    except (KeyError, ValueError, InvalidOperation):
        return None
    moment = datetime.fromtimestamp(now, tz=UTC)
    current = period_start(period, moment, datetime.fromtimestamp(origin, tz=UTC)).timestamp()
    start = max(stored_start, current)
    if start > stored_start:
        spent = 0
    if reserved_period != start:  # held in an earlier period (nan: never held anything)
        reserved = 0
    spent_usd, reserved_usd = to_usd(spent), to_usd(reserved)
    return WalletView(
        namespace=namespace,
        limit_usd=policy.limit_usd,
        spent_usd=spent_usd,
        reserved_usd=reserved_usd,
        period=period.value,
        period_start=start,
        phase=state_of(policy, spent_usd + reserved_usd),
        suspended=fields.get("suspended") == "1",
    )


# --- burn rate and exhaustion -----------------------------------------------------------------


def burn_rate_per_hour(
    costs: Iterable[tuple[float, Decimal]], now: float, window_s: float
) -> Decimal:
    """USD per hour spent over the last ``window_s`` seconds (the whole window, so a single
    call does not read as a flood)."""
    if window_s <= 0:
        raise ValueError("the burn window must be positive")
    since = now - window_s
    spent = sum((cost for ts, cost in costs if since < ts <= now), Decimal(0))
    return spent * 3600 / Decimal(str(window_s))


@dataclass(slots=True)
class BurnWindow:
    """A namespace's costs of the last window with their running total: the page's view is
    rebuilt up to five times a second, and summing up to 10,000 amounts each time was the
    dashboard's largest cost under load. Equal to ``burn_rate_per_hour`` for events in time
    order; a call stamped in the future (a sidecar's clock ahead) counts at once."""

    capacity: int
    costs: deque[tuple[float, Decimal]] = field(default_factory=deque)
    total: Decimal = Decimal(0)

    def add(self, ts: float, cost: Decimal) -> None:
        if len(self.costs) >= self.capacity:
            _, dropped = self.costs.popleft()
            self.total -= dropped
        self.costs.append((ts, cost))
        self.total += cost

    def rate(self, now: float, window_s: float) -> Decimal:
        """USD per hour over the last ``window_s`` seconds; forgets what fell out of it."""
        if window_s <= 0:
            raise ValueError("the burn window must be positive")
        since = now - window_s
        while self.costs and self.costs[0][0] <= since:
            _, dropped = self.costs.popleft()
            self.total -= dropped
        if not self.costs:
            self.total = Decimal(0)  # no rounding residue carried past an empty window
        return self.total * 3600 / Decimal(str(window_s))


def exhaustion_time(remaining: Decimal | None, per_hour: Decimal, now: float) -> float | None:
    """When the remaining money runs out at the current burn rate (unix seconds): ``now`` when
    nothing is left, None without a limit or without spend."""
    if remaining is None:
        return None
    if remaining <= 0:
        return now
    if per_hour <= 0:
        return None
    hours = remaining / per_hour
    seconds = float(hours * 3600)
    if not math.isfinite(seconds) or seconds > 10 * 365 * 86400:
        return None
    return now + seconds


# --- aggregates -------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentStats:
    namespace: str
    agent: str
    spent_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    blocked: int = 0
    models: OrderedDict[str, int] = field(default_factory=OrderedDict)
    last_ts: float = 0.0

    def as_json(self) -> JSONView:
        return {
            "namespace": self.namespace,
            "agent": self.agent,
            "spent_usd": usd(self.spent_usd),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "calls": self.calls,
            "blocked": self.blocked,
            "models": sorted(self.models, key=lambda name: -self.models[name]),
            "last_ts": self.last_ts,
        }


@dataclass(slots=True)
class NamespaceStats:
    namespace: str
    recent: deque[Event]
    burn: BurnWindow
    #: (bucket start, cumulative spend seen in events up to the end of that bucket)
    series: deque[tuple[float, Decimal]]
    spent_usd: Decimal = Decimal(0)
    calls: int = 0
    blocked: int = 0


class DashboardState:
    """Aggregates of the events folded so far. Not thread-safe; one event loop owns it."""

    def __init__(self, settings: StateSettings | None = None) -> None:
        self.settings = settings or StateSettings()
        self._namespaces: OrderedDict[str, NamespaceStats] = OrderedDict()
        self._agents: OrderedDict[tuple[str, str], AgentStats] = OrderedDict()
        self._cluster_recent: deque[Event] = deque(maxlen=self.settings.recent_per_namespace)
        self.last_id: str | None = None
        #: Where each stream was folded up to: a replay never counts an event twice.
        self.cursor: Cursor = {}
        self.folded = 0

    def fold(self, event: Event) -> None:
        """Add one event (in its stream's order; an id at or before the last one folded of its
        stream is ignored, so a replay after a reconnect never counts twice)."""
        if not is_after(event.id, self.cursor):
            return
        self.last_id = event.id
        self.cursor[id_stream(event.id)] = event.id.rpartition("/")[2]
        self.folded += 1
        if isinstance(event, ActionEvent) and event.namespace == CLUSTER:
            self._cluster_recent.append(event)
            return
        stats = self._namespace(event.namespace)
        stats.recent.append(event)
        if isinstance(event, ActionEvent):
            return
        stats.calls += 1
        stats.blocked += event.blocked
        stats.spent_usd += event.cost_usd
        if event.cost_usd:
            stats.burn.add(event.ts, event.cost_usd)
        self._chart(stats, event.ts)
        agent = self._agent(event.namespace, event.agent)
        agent.spent_usd += event.cost_usd
        agent.input_tokens += event.input_tokens
        agent.output_tokens += event.output_tokens
        agent.calls += 1
        agent.blocked += event.blocked
        agent.last_ts = max(agent.last_ts, event.ts)
        agent.models[event.model] = agent.models.get(event.model, 0) + 1
        agent.models.move_to_end(event.model)
        while len(agent.models) > self.settings.max_models:
            agent.models.popitem(last=False)

    def fold_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.fold(event)

    def recent(self, limit: int | None = None) -> list[Event]:
        """The newest events across namespaces, oldest first (at most ``limit``)."""
        limit = self.settings.feed_size if limit is None else limit
        streams: list[Iterable[Event]] = [stats.recent for stats in self._namespaces.values()]
        streams.append(self._cluster_recent)
        merged = heapq.merge(*streams, key=lambda event: id_key(event.id))
        return list(deque(merged, maxlen=limit))

    def view(self, wallets: Sequence[WalletView], now: float) -> JSONView:
        """What the page shows: wallets with burn rate and exhaustion, agents by spend, the
        spend chart. Namespaces with a wallet come first, then those only seen in events."""
        window = self.settings.burn_window_s
        rows: list[JSONView] = []
        seen: set[str] = set()
        for wallet in sorted(wallets, key=lambda w: w.namespace):
            seen.add(wallet.namespace)
            stats = self._namespaces.get(wallet.namespace)
            rate = stats.burn.rate(now, window) if stats else Decimal(0)
            remaining = wallet.remaining_usd
            rows.append(
                {
                    "namespace": wallet.namespace,
                    "has_wallet": True,
                    "limit_usd": None if wallet.limit_usd is None else usd(wallet.limit_usd),
                    "spent_usd": usd(wallet.spent_usd),
                    "reserved_usd": usd(wallet.reserved_usd),
                    "remaining_usd": None if remaining is None else usd(remaining),
                    "period": wallet.period,
                    "phase": wallet.phase.value,
                    "suspended": wallet.suspended,
                    "burn_usd_per_hour": usd(rate.quantize(Decimal("0.000001"))),
                    "exhausts_at": exhaustion_time(remaining, rate, now),
                    "calls": stats.calls if stats else 0,
                    "blocked": stats.blocked if stats else 0,
                }
            )
        for name, stats in sorted(self._namespaces.items()):
            if name in seen:
                continue
            rate = stats.burn.rate(now, window)
            rows.append(
                {
                    "namespace": name,
                    "has_wallet": False,
                    "limit_usd": None,
                    "spent_usd": usd(stats.spent_usd),
                    "reserved_usd": "0",
                    "remaining_usd": None,
                    "period": None,
                    "phase": None,
                    "suspended": False,
                    "burn_usd_per_hour": usd(rate.quantize(Decimal("0.000001"))),
                    "exhausts_at": None,
                    "calls": stats.calls,
                    "blocked": stats.blocked,
                }
            )
        agents = sorted(self._agents.values(), key=lambda a: (-a.spent_usd, a.namespace, a.agent))
        return {
            "now": now,
            "last_id": self.last_id,
            "namespaces": rows,
            "agents": [agent.as_json() for agent in agents],
            "series": {
                name: [[ts, float(total)] for ts, total in stats.series]
                for name, stats in sorted(self._namespaces.items())
            },
        }

    # -- internals ---------------------------------------------------------------------------

    def _namespace(self, name: str) -> NamespaceStats:
        stats = self._namespaces.get(name)
        if stats is None:
            stats = NamespaceStats(
                namespace=name,
                recent=deque(maxlen=self.settings.recent_per_namespace),
                burn=BurnWindow(self.settings.burn_window_events),
                series=deque(maxlen=self.settings.chart_points),
            )
            self._namespaces[name] = stats
            while len(self._namespaces) > self.settings.max_namespaces:
                self._namespaces.popitem(last=False)
        else:
            self._namespaces.move_to_end(name)
        return stats

    def _agent(self, namespace: str, agent: str) -> AgentStats:
        key = (namespace, agent)
        stats = self._agents.get(key)
        if stats is None:
            stats = AgentStats(namespace, agent)
            self._agents[key] = stats
            while len(self._agents) > self.settings.max_agents:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(key)
        return stats

    def _chart(self, stats: NamespaceStats, ts: float) -> None:
        bucket = self.settings.chart_bucket_s
        start = math.floor(ts / bucket) * bucket
        if stats.series and stats.series[-1][0] >= start:
            # Same bucket (or an event older than the newest point): update the newest point.
            stats.series[-1] = (stats.series[-1][0], stats.spent_usd)
        else:
            stats.series.append((start, stats.spent_usd))


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _money(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None
