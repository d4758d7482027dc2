"""The dashboard's pure core: folding events, burn rate, exhaustion, wallets from Redis fields."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from a11i.core.policy import WalletState
from a11i.dashboard.state import (
    ActionEvent,
    BurnWindow,
    CallEvent,
    DashboardState,
    StateSettings,
    action_event,
    advance,
    burn_rate_per_hour,
    exhaustion_time,
    format_cursor,
    id_key,
    id_stream,
    is_after,
    parse_cursor,
    parse_event,
    wallet_from_fields,
)

NOW = 1_700_000_000.0


def call(
    event_id: str,
    ns: str = "team-a",
    agent: str = "bot",
    cost: str = "0.01",
    decision: str = "allow",
    ts: float = NOW,
    model: str = "gpt-4o-mini",
) -> CallEvent:
    event = parse_event(
        event_id,
        {
            "kind": "call",
            "ts": f"{ts:.3f}",
            "namespace": ns,
            "agent": agent,
            "model": model,
            "decision": decision,
            "status": "200" if decision != "block" else "402",
            "cost_usd": cost,
            "input_tokens": "10",
            "output_tokens": "5",
        },
    )
    assert isinstance(event, CallEvent)
    return event


@pytest.mark.parametrize(
    ("event_id", "key"),
    [
        pytest.param("1700000000000-0", (1700000000000, 0), id="redis"),
        pytest.param("1700000000000-12", (1700000000000, 12), id="redis-seq"),
        pytest.param("42", (42, 0), id="ring"),
        pytest.param("nonsense", (-1, -1), id="malformed"),
    ],
)
def test_id_key(event_id: str, key: tuple[int, int]) -> None:
    assert id_key(event_id) == key


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"kind": "call", "namespace": "a"}, id="no-ts"),
        pytest.param({"kind": "call", "ts": "1"}, id="no-namespace"),
        pytest.param({"kind": "call", "ts": "nan", "namespace": "a"}, id="nan-ts"),
        pytest.param({"kind": "heartbeat", "ts": "1", "namespace": "a"}, id="unknown-kind"),
    ],
)
def test_parse_event_skips_what_it_cannot_show(raw: dict[str, str]) -> None:
    assert parse_event("1-0", raw) is None


def test_parse_event_tolerates_bad_numbers() -> None:
    event = parse_event(
        "1-0",
        {"ts": "1", "namespace": "a", "cost_usd": "-3", "input_tokens": "x", "status": ""},
    )
    assert isinstance(event, CallEvent)
    assert event.cost_usd == 0
    assert event.input_tokens == 0
    assert event.agent == "unknown"


def test_action_event_round_trip() -> None:
    raw = action_event("team-a", "top_up", "admin:1a2b3c4d", NOW, Decimal("10.50"))
    event = parse_event("5-0", raw)
    assert isinstance(event, ActionEvent)
    assert (event.action, event.actor, event.amount_usd) == (
        "top_up",
        "admin:1a2b3c4d",
        Decimal("10.5"),
    )
    assert event.as_json()["amount_usd"] == "10.5"
    assert event.as_json()["via"] == ""  # recorded before top-ups said what they went through
    assert event.as_json()["limit_usd"] is None
    raw.update({"via": "agentbudget/team-a", "limit_usd": "60.50"})
    through = parse_event("6-0", raw)
    assert isinstance(through, ActionEvent)
    assert (through.via, through.limit_usd) == ("agentbudget/team-a", Decimal("60.5"))
    assert through.as_json()["limit_usd"] == "60.5"


def test_fold_aggregates_per_agent_and_namespace() -> None:
    state = DashboardState()
    state.fold_all(
        [
            call("1-0", agent="a", cost="0.02"),
            call("2-0", agent="b", cost="0.05", model="claude-sonnet-4"),
            call("3-0", agent="a", cost="0.01", model="gpt-4o"),
            call("4-0", agent="a", cost="0", decision="block"),
            call("5-0", ns="team-b", agent="c", cost="0.5"),
        ]
    )
    view = state.view([], NOW)
    agents = view["agents"]
    assert isinstance(agents, list)
    # Sorted by spend, highest first.
    assert [(a["namespace"], a["agent"], a["spent_usd"]) for a in agents] == [
        ("team-b", "c", "0.5"),
        ("team-a", "b", "0.05"),
        ("team-a", "a", "0.03"),
    ]
    first_a = agents[2]
    assert (first_a["calls"], first_a["blocked"], first_a["input_tokens"]) == (3, 1, 30)
    assert first_a["models"] == ["gpt-4o-mini", "gpt-4o"]
    namespaces = view["namespaces"]
    assert isinstance(namespaces, list)
    assert [(n["namespace"], n["calls"], n["blocked"], n["has_wallet"]) for n in namespaces] == [
        ("team-a", 4, 1, False),
        ("team-b", 1, 0, False),
    ]


def test_fold_ignores_replayed_ids() -> None:
    state = DashboardState()
    state.fold_all([call("1-0"), call("2-0"), call("2-0"), call("1-5")])
    assert state.folded == 2
    assert state.last_id == "2-0"


def test_memory_is_bounded() -> None:
    settings = StateSettings(
        recent_per_namespace=5,
        feed_size=7,
        max_agents=3,
        max_namespaces=2,
        chart_points=4,
        burn_window_events=6,
        max_models=2,
    )
    state = DashboardState(settings)
    for i in range(1, 101):
        state.fold(
            call(
                f"{i}-0",
                ns=f"ns-{i % 3}",
                agent=f"agent-{i % 5}",
                ts=NOW + i * 60,
                model=f"m{i % 4}",
            )
        )
    view = state.view([], NOW + 6000)
    assert len(view["namespaces"]) == 2  # type: ignore[arg-type]
    assert len(view["agents"]) == 3  # type: ignore[arg-type]
    for agent in view["agents"]:  # type: ignore[attr-defined]
        assert len(agent["models"]) <= 2
    for points in view["series"].values():  # type: ignore[attr-defined]
        assert len(points) <= 4
    recent = state.recent()
    # Namespaces forgotten for the bound take their recent events with them.
    assert 0 < len(recent) <= 7
    assert [e.id for e in recent] == sorted((e.id for e in recent), key=id_key)
    assert recent[-1].id == "100-0"


def test_feed_keeps_the_newest() -> None:
    state = DashboardState(StateSettings(recent_per_namespace=5, feed_size=7))
    state.fold_all(call(f"{i}-0", ns=f"ns-{i % 2}") for i in range(1, 101))
    assert [e.id for e in state.recent()] == [f"{i}-0" for i in range(94, 101)]


def test_recent_merges_namespaces_and_cluster_actions_in_order() -> None:
    state = DashboardState()
    state.fold(call("1-0", ns="a"))
    state.fold(call("2-0", ns="b"))
    cluster = parse_event("3-0", action_event("*", "cluster_stop", "admin:x", NOW))
    assert cluster is not None
    state.fold(cluster)
    state.fold(call("4-0", ns="a"))
    assert [e.id for e in state.recent()] == ["1-0", "2-0", "3-0", "4-0"]
    # A cluster action is not a namespace.
    assert [n["namespace"] for n in state.view([], NOW)["namespaces"]] == ["a", "b"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        pytest.param([], Decimal(0), id="nothing"),
        pytest.param([(NOW - 10, Decimal("0.5"))], Decimal(6), id="half-dollar-in-5min"),
        pytest.param(
            [(NOW - 400, Decimal(100)), (NOW - 100, Decimal(1))], Decimal(12), id="old-dropped"
        ),
        pytest.param([(NOW + 5, Decimal(1))], Decimal(0), id="future-ignored"),
    ],
)
def test_burn_rate(costs: list[tuple[float, Decimal]], expected: Decimal) -> None:
    assert burn_rate_per_hour(costs, NOW, 300) == expected


def test_burn_rate_needs_a_window() -> None:
    with pytest.raises(ValueError, match="positive"):
        burn_rate_per_hour([], NOW, 0)
    with pytest.raises(ValueError, match="positive"):
        BurnWindow(10).rate(NOW, 0)


def test_the_running_burn_window_equals_the_sum_as_time_passes() -> None:
    """The view's running total gives what summing every cost in the window gives, read after
    each of 2,000 calls (in time order) while the window slides; and it stays bounded."""
    window = BurnWindow(capacity=500)
    costs: list[tuple[float, Decimal]] = []
    for index in range(2_000):
        ts = NOW + index * 0.7
        cost = Decimal(index % 7) / Decimal(1000)
        window.add(ts, cost)
        costs.append((ts, cost))
        now = ts + 1.5  # the clock moves forward only (the view reads the wall clock)
        expected = burn_rate_per_hour(costs[-500:], now, 300)
        assert window.rate(now, 300) == expected, index
        assert len(window.costs) <= 500
    # Quiet for longer than the window: nothing left, and no residue in the total.
    assert window.rate(NOW + 10_000, 300) == 0
    assert window.total == 0
    assert not window.costs


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [
        pytest.param(None, Decimal(5), None, id="no-limit"),
        pytest.param(Decimal(0), Decimal(0), NOW, id="exhausted"),
        pytest.param(Decimal(10), Decimal(0), None, id="idle"),
        pytest.param(Decimal(10), Decimal(5), NOW + 7200, id="two-hours"),
        pytest.param(Decimal(10**9), Decimal("0.000001"), None, id="beyond-ten-years"),
    ],
)
def test_exhaustion_time(remaining: Decimal | None, rate: Decimal, expected: float | None) -> None:
    assert exhaustion_time(remaining, rate, NOW) == expected


def test_view_joins_wallets_with_burn_rate() -> None:
    state = DashboardState()
    state.fold(call("1-0", cost="1", ts=NOW - 60))
    wallet = wallet_from_fields("team-a", _fields(limit=10, spent=1), False, NOW)
    assert wallet is not None
    (row,) = state.view([wallet], NOW)["namespaces"]  # type: ignore[misc]
    assert row["has_wallet"] is True
    assert row["burn_usd_per_hour"] == "12"
    assert row["remaining_usd"] == "9"
    assert row["exhausts_at"] == pytest.approx(NOW + 9 / 12 * 3600)
    assert row["phase"] == "Green"


def _fields(
    *,
    limit: int | None = 10,
    spent: float = 0,
    period: str = "Total",
    start: float = NOW - 100,
    suspended: bool = False,
    reserved: float = 0,
) -> dict[str, str]:
    return {
        "reserved_nanos": str(int(reserved * 10**9)),
        "reserved_period": repr(start),
        "limit_nanos": "" if limit is None else str(limit * 10**9),
        "warn_at": "75",
        "optimize_at": "90",
        "when_exhausted": "Block",
        "period": period,
        "period_start": repr(start),
        "origin": repr(NOW - 100),
        "spent_nanos": str(int(spent * 10**9)),
        "suspended": "1" if suspended else "0",
    }


@pytest.mark.parametrize(
    ("fields", "cluster", "phase", "spent", "reserved"),
    [
        pytest.param(_fields(spent=1), False, WalletState.GREEN, "1", "0", id="green"),
        pytest.param(_fields(spent=8), False, WalletState.YELLOW, "8", "0", id="yellow"),
        pytest.param(_fields(spent=10), False, WalletState.EXHAUSTED, "10", "0", id="full"),
        pytest.param(
            _fields(spent=1, suspended=True), False, WalletState.SUSPENDED, "1", "0", id="stop"
        ),
        pytest.param(_fields(spent=1), True, WalletState.SUSPENDED, "1", "0", id="cluster"),
        pytest.param(_fields(spent=1, reserved=2), False, WalletState.GREEN, "1", "2", id="held"),
        pytest.param(
            {**_fields(spent=1, reserved=2), "reserved_period": repr(NOW - 1000)},
            False,
            WalletState.GREEN,
            "1",
            "0",
            id="held-in-an-earlier-period",
        ),
        pytest.param(
            _fields(spent=9, reserved=1, period="Daily", start=NOW - 3 * 86400),
            False,
            WalletState.GREEN,
            "0",
            "0",
            id="period-over-nothing-held",
        ),
        pytest.param(
            _fields(spent=9, period="Daily", start=NOW - 3 * 86400),
            False,
            WalletState.GREEN,
            "0",
            "0",
            id="period-over",
        ),
        pytest.param(
            _fields(limit=None, spent=100), False, WalletState.GREEN, "100", "0", id="no-limit"
        ),
    ],
)
def test_wallet_from_fields(
    fields: dict[str, str],
    cluster: bool,
    phase: WalletState,
    spent: str,
    reserved: str,
) -> None:
    wallet = wallet_from_fields("team-a", fields, cluster, NOW)
    assert wallet is not None
    assert wallet.phase is phase
    assert (wallet.spent_usd, wallet.reserved_usd) == (Decimal(spent), Decimal(reserved))
    if fields["period"] == "Daily":
        day = datetime.fromtimestamp(NOW, tz=UTC).replace(hour=0, minute=0, second=0)
        assert wallet.period_start == day.timestamp()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="empty"),
        pytest.param({**_fields(), "period": "Hourly"}, id="bad-period"),
        pytest.param({**_fields(), "limit_nanos": "ten"}, id="bad-limit"),
    ],
)
def test_wallet_from_fields_rejects_what_is_not_a_wallet(fields: dict[str, str]) -> None:
    assert wallet_from_fields("x", fields, False, NOW) is None


# --- cursors: one position per stream (a Redis Cluster's namespaces) ---------------------------


@pytest.mark.parametrize(
    ("event_id", "stream", "key"),
    [
        pytest.param("1700-3", "", (1700, 3), id="shared-stream"),
        pytest.param("7", "", (7, 0), id="embedded-ring"),
        pytest.param("team-a/1700-3", "team-a", (1700, 3), id="namespace-stream"),
        pytest.param("*/5-0", "*", (5, 0), id="cluster-wide-actions"),
    ],
)
def test_an_id_names_its_stream_and_its_order(
    event_id: str, stream: str, key: tuple[int, int]
) -> None:
    assert id_stream(event_id) == stream
    assert id_key(event_id) == key


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1700-3", id="one-redis-server"),
        pytest.param("team-a/1700-3,team-b/1650-0", id="two-namespaces"),
        pytest.param("0-0,team-a/1-0", id="empty-start-then-a-namespace"),
    ],
)
def test_a_cursor_reads_back_as_written(text: str) -> None:
    assert format_cursor(parse_cursor(text)) == text


def test_a_cursor_moves_each_stream_to_its_own_latest() -> None:
    cursor = parse_cursor("team-a/10-0,team-b/20-0")
    moved = advance(cursor, ["team-b/5-0", "team-a/11-0", "team-c/1-0", "team-a/12-1"])
    assert format_cursor(moved) == "team-a/12-1,team-b/20-0,team-c/1-0"
    # An event of a quiet stream older than a busy stream's position is still new.
    assert is_after("team-b/21-0", moved)
    assert not is_after("team-a/12-1", moved)
    assert is_after("team-d/1-0", moved)


def test_a_late_event_of_another_stream_is_folded_and_a_replay_is_not() -> None:
    state = DashboardState()
    for event_id in ("team-a/20-0", "team-b/10-0", "team-a/21-0"):
        state.fold(call(event_id, ns=event_id.partition("/")[0]))
    state.fold(call("team-b/10-0", ns="team-b"))  # replayed
    assert state.folded == 3
    assert format_cursor(state.cursor) == "team-a/21-0,team-b/10-0"
