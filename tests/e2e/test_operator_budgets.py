"""``a11i operator`` reconciling AgentBudgets: the real kube-apiserver, the real kubectl and helm,
a real redis-server, and the operator as a process authenticated as the chart's ServiceAccount.

Spend reaches the wallet the way a sidecar puts it there: ``RedisWallet.reserve``/``settle`` on
the same namespace's wallet (the same Lua scripts), and call events appended to ``a11i:events``
in the shape ``a11i.sidecar.telemetry.events.call_event`` writes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from a11i.core.policy import BudgetPolicy, Decision, Period, WalletState
from a11i.sidecar.telemetry.events import STREAM
from a11i.sidecar.wallets.redis import RedisWallet
from tests.e2e.crds import a11i_crds  # noqa: F401  (a fixture)
from tests.e2e.operator import SIDECAR_REDIS_SECRET, OperatorProcess, reconciling_operator
from tests.support.cluster import ROOT, ControlPlane
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("a11i_crds")]

EXAMPLE = ROOT / "examples" / "agentbudget.yaml"
NANOS = 10**9
#: The example's timeZone.
BERLIN = "Europe/Berlin"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def operator(
    a11i_crds: ControlPlane,  # noqa: F811
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = reconciling_operator(
        a11i_crds, tmp_path_factory.mktemp("operator"), redis_server.url, free_port()
    )
    yield process
    code = process.stop()
    assert code == 0, f"the operator exited with {code}:\n{process.logs()}"


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


# --- helpers -------------------------------------------------------------------------------------


def budget(plane: ControlPlane, namespace: str, name: str = "default") -> dict[str, Any]:
    result = plane.kubectl("get", "agentbudget", name, "-n", namespace, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def status_of(plane: ControlPlane, namespace: str, name: str = "default") -> dict[str, Any]:
    return budget(plane, namespace, name).get("status") or {}


def ready(status: dict[str, Any]) -> dict[str, Any]:
    for item in status.get("conditions") or ():
        if item["type"] == "Ready":
            return dict(item)
    return {}


def has_phase(plane: ControlPlane, namespace: str, phase: str) -> bool:
    return status_of(plane, namespace).get("phase") == phase


def event_reasons(plane: ControlPlane, namespace: str, name: str = "default") -> list[str]:
    result = plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=AgentBudget", "-o", "json", check=True,
    )  # fmt: skip
    items = sorted(
        json.loads(result.stdout)["items"],
        key=lambda item: item.get("firstTimestamp") or item["metadata"]["creationTimestamp"],
    )
    return [item["reason"] for item in items for _ in range(item.get("count") or 1)]


def apply(plane: ControlPlane, namespace: str, body: dict[str, Any] | None = None) -> None:
    if body is None:
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE), check=True)
    else:
        plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=True)


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "a11i.io/v1alpha1",
        "kind": "AgentBudget",
        "metadata": {"name": name},
        "spec": {"limit": "100", **spec},
    }


def spend(url: str, namespace: str, agent: str, amount: str, zone: str = "UTC") -> None:
    """What a sidecar does for one call of cost ``amount``: reserve, settle, one event. ``zone``
    is the budget's timeZone, which the injector passes to every sidecar (A11I_BUDGET_TIMEZONE):
    the wallet's period starts are computed by whoever runs its scripts."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(url)
        wallet = RedisWallet(
            client,
            namespace=namespace,
            agent=agent,
            policy=BudgetPolicy(limit_usd=Decimal(1)),
            period=Period.MONTHLY,
            timeout_s=2.0,
            zone=zone,
        )
        try:
            await wallet.start()
            verdict, lease = await wallet.reserve(Decimal(amount))
            assert lease is not None, verdict
            await wallet.settle(lease, Decimal(amount))
            await client.xadd(
                STREAM,
                {
                    "kind": "call",
                    "ts": f"{time.time():.3f}",
                    "namespace": namespace,
                    "agent": agent,
                    "decision": verdict.decision.value,
                    "cost_usd": amount,
                },
            )
        finally:
            await wallet.close()
            await client.aclose()

    asyncio.run(run())


def try_call(url: str, namespace: str, zone: str = "UTC") -> tuple[Decision, WalletState]:
    async def run() -> tuple[Decision, WalletState]:
        client = redis.asyncio.Redis.from_url(url)
        wallet = RedisWallet(
            client,
            namespace=namespace,
            agent="probe",
            policy=BudgetPolicy(limit_usd=Decimal(1)),
            period=Period.MONTHLY,
            timeout_s=2.0,
            zone=zone,
        )
        try:
            await wallet.start()
            verdict, lease = await wallet.reserve(Decimal("0.01"))
            if lease is not None:
                await wallet.settle(lease, Decimal(0))
            return verdict.decision, verdict.state
        finally:
            await wallet.close()
            await client.aclose()

    return asyncio.run(run())


def wallet_keys(store: redis.Redis, namespace: str) -> list[str]:
    return sorted(store.scan_iter(match=f"a11i:wallet:{namespace}*"))


# --- tests ---------------------------------------------------------------------------------------


def test_the_liveness_endpoint_answers_while_the_operator_runs(operator: OperatorProcess) -> None:
    """kopf's liveness endpoint (the chart's livenessProbe), as the operator serves it."""
    url = operator.env["A11I_OPERATOR_LIVENESS"]

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    operator.wait_for(answers, f"GET {url} answering 200")


def test_the_sidecars_redis_url_is_kept_where_sidecars_run(
    operator: OperatorProcess,
    a11i_crds: ControlPlane,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    """A namespace with an AgentBudget, and one labelled for injection, get the Secret the
    injected sidecars read A11I_REDIS_URL from; a Secret of that name that is not a11i's is
    left alone; other namespaces get nothing."""
    plane = a11i_crds
    budgeted = plane.create_namespace(f"e2e-secret-{uuid.uuid4().hex[:6]}")
    labelled = plane.create_namespace(f"e2e-secret-{uuid.uuid4().hex[:6]}")
    users = plane.create_namespace(f"e2e-secret-{uuid.uuid4().hex[:6]}")
    bystander = plane.create_namespace(f"e2e-secret-{uuid.uuid4().hex[:6]}")
    plane.kubectl(
        "create", "secret", "generic", SIDECAR_REDIS_SECRET, "-n", users,
        "--from-literal=A11I_REDIS_URL=redis://theirs:6379/0", check=True,
    )  # fmt: skip
    apply(plane, budgeted, manifest("b"))
    apply(plane, users, manifest("b"))
    plane.kubectl("label", "namespace", labelled, "a11i.io/inject=enabled", check=True)

    def url_in(namespace: str) -> str | None:
        found = plane.kubectl("get", "secret", SIDECAR_REDIS_SECRET, "-n", namespace, "-o", "json")
        if found.returncode != 0:
            return None
        return base64.b64decode(json.loads(found.stdout)["data"]["A11I_REDIS_URL"]).decode()

    operator.wait_for(lambda: url_in(budgeted) == redis_server.url, "the Secret in " + budgeted)
    operator.wait_for(lambda: url_in(labelled) == redis_server.url, "the Secret in " + labelled)
    operator.wait_for(lambda: "not a11i's: left alone" in operator.logs(400), "the user's kept")
    assert url_in(users) == "redis://theirs:6379/0"
    assert url_in(bystander) is None
    assert "redis://" not in operator.logs(2000).replace(redis_server.url, "")  # no URL logged


def test_example_budget_configures_the_wallet_and_reports_each_phase(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace)
    key = f"a11i:wallet:{namespace}"
    # configure() writes the policy, then fills the wallet's other fields: wait for both.
    operator.wait_for(
        lambda: (
            store.hget(key, "limit_nanos") == str(250 * NANOS)
            and store.hget(key, "suspended") is not None
        ),
        "limit in Redis",
    )
    wallet = store.hgetall(key)
    assert wallet["warn_at"] == "75"
    assert wallet["optimize_at"] == "90"
    assert wallet["when_exhausted"] == "Block"
    assert wallet["period"] == "Monthly"
    assert wallet["suspended"] == "0"

    status = operator.wait_for(
        lambda: (s := status_of(plane, namespace)).get("phase") == "Green" and s, "phase Green"
    )
    assert isinstance(status, dict)
    assert (status["spent"], status["reserved"], status["remaining"]) == ("0", "0", "250")
    # Monthly in Europe/Berlin: midnight on the 1st there, 22:00 or 23:00 UTC the day before.
    assert status["periodStart"].endswith(("T22:00:00Z", "T23:00:00Z"))
    assert status["observedGeneration"] == 1
    assert ready(status)["status"] == "True"
    assert ready(status)["reason"] == "WalletConfigured"
    assert status["topAgents"] == []
    assert "lastSyncTime" in status

    steps = [
        ("agent-a", "190", "Yellow", "BudgetWarning"),
        ("agent-b", "40", "Red", "BudgetOptimizing"),
        ("agent-a", "20", "Exhausted", "BudgetExhausted"),
    ]
    expected: list[str] = []
    for agent, amount, phase, reason in steps:
        spend(redis_server.url, namespace, agent, amount, BERLIN)
        expected.append(reason)
        shown = list(expected)
        operator.wait_for(partial(has_phase, plane, namespace, phase), phase)
        operator.wait_for(lambda: event_reasons(plane, namespace) == shown, reason)  # noqa: B023
    status = status_of(plane, namespace)
    assert (status["spent"], status["remaining"]) == ("250", "0")
    assert status["topAgents"] == [
        {"agent": "agent-a", "spent": "210"},
        {"agent": "agent-b", "spent": "40"},
    ]
    table = plane.kubectl("get", "ab", "-n", namespace, check=True).stdout
    assert "Exhausted" in table

    # A spec edit reaches Redis; the phase follows and says so.
    plane.kubectl(
        "patch", "agentbudget", "default", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"limit": "1000"}}', check=True,
    )  # fmt: skip
    operator.wait_for(
        lambda: store.hget(key, "limit_nanos") == str(1000 * NANOS), "raised limit in Redis"
    )
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green again")
    status = status_of(plane, namespace)
    assert (status["spent"], status["remaining"], status["observedGeneration"]) == ("250", "750", 2)
    operator.wait_for(
        lambda: event_reasons(plane, namespace) == [*expected, "BudgetGreen"], "BudgetGreen event"
    )
    assert store.hget(key, "spent_nanos") == str(250 * NANOS), "spend survives a spec edit"


def test_suspend_stops_every_call_and_delete_releases_the_wallet(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace)
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    spend(redis_server.url, namespace, "agent-a", "1.5", BERLIN)
    assert try_call(redis_server.url, namespace, BERLIN)[0] is Decision.ALLOW

    plane.kubectl(
        "patch", "agentbudget", "default", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"suspend": true}}', check=True,
    )  # fmt: skip
    key = f"a11i:wallet:{namespace}"
    operator.wait_for(lambda: store.hget(key, "suspended") == "1", "suspended in Redis")
    assert try_call(redis_server.url, namespace, BERLIN) == (Decision.BLOCK, WalletState.SUSPENDED)
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Suspended", "Suspended")
    operator.wait_for(lambda: "BudgetSuspended" in event_reasons(plane, namespace), "event")

    plane.kubectl(
        "patch", "agentbudget", "default", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"suspend": false}}', check=True,
    )  # fmt: skip
    operator.wait_for(lambda: store.hget(key, "suspended") == "0", "stop lifted in Redis")
    assert try_call(redis_server.url, namespace, BERLIN)[0] is Decision.ALLOW
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    operator.wait_for(lambda: "BudgetResumed" in event_reasons(plane, namespace), "event")
    assert status_of(plane, namespace)["spent"] == "1.5"

    assert wallet_keys(store, namespace)
    plane.kubectl("delete", "agentbudget", "default", "-n", namespace, "--timeout=30s", check=True)
    operator.wait_for(lambda: not wallet_keys(store, namespace), "wallet keys removed")
    time.sleep(2)  # two status intervals: nothing brings the wallet back
    assert wallet_keys(store, namespace) == []


def test_a_second_namespace_wide_budget_conflicts_and_takes_over_when_the_first_goes(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace, manifest("first", limit="10"))
    operator.wait_for(lambda: status_of(plane, namespace, "first").get("phase"), "first synced")
    time.sleep(1.1)  # creation timestamps have a resolution of one second
    apply(plane, namespace, manifest("second", limit="20"))
    condition = operator.wait_for(
        lambda: (
            (c := ready(status_of(plane, namespace, "second"))).get("reason") == "Conflict" and c
        ),
        "second in conflict",
    )
    assert isinstance(condition, dict)
    assert condition["status"] == "False"
    assert "'first'" in condition["message"]
    key = f"a11i:wallet:{namespace}"
    assert store.hget(key, "limit_nanos") == str(10 * NANOS), "the owner's limit is kept"
    assert "Conflict" in event_reasons(plane, namespace, "second")
    assert ready(status_of(plane, namespace, "first"))["status"] == "True"

    plane.kubectl("delete", "agentbudget", "first", "-n", namespace, "--timeout=30s", check=True)
    operator.wait_for(
        lambda: store.hget(key, "limit_nanos") == str(20 * NANOS), "the second takes over"
    )
    operator.wait_for(
        lambda: status_of(plane, namespace, "second").get("phase") == "Green", "second Green"
    )
    assert ready(status_of(plane, namespace, "second"))["reason"] == "WalletConfigured"


def test_an_unknown_time_zone_is_reported_not_retried(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace, manifest("default", timeZone="Mars/Olympus_Mons"))
    condition = operator.wait_for(
        lambda: (c := ready(status_of(plane, namespace))).get("reason") == "InvalidTimeZone" and c,
        "InvalidTimeZone",
    )
    assert isinstance(condition, dict)
    assert condition["status"] == "False"
    assert "Mars/Olympus_Mons" in condition["message"]
    assert wallet_keys(store, namespace) == []
    assert event_reasons(plane, namespace).count("InvalidTimeZone") == 1

    # Fixed: the wallet is configured.
    plane.kubectl(
        "patch", "agentbudget", "default", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"timeZone": "America/New_York"}}', check=True,
    )  # fmt: skip
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    assert store.hget(f"a11i:wallet:{namespace}", "limit_nanos") == str(100 * NANOS)


def test_an_operator_restart_loses_nothing(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace, manifest("default", limit="10"))
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    spend(redis_server.url, namespace, "agent-a", "8")
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Yellow", "Yellow")
    operator.wait_for(lambda: event_reasons(plane, namespace) == ["BudgetWarning"], "event")

    assert operator.stop() == 0, operator.logs()
    spend(redis_server.url, namespace, "agent-b", "1.5")  # while no operator runs
    operator.start()
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Red", "Red")
    status = status_of(plane, namespace)
    assert status["spent"] == "9.5"
    assert status["topAgents"] == [
        {"agent": "agent-a", "spent": "8"},
        {"agent": "agent-b", "spent": "1.5"},
    ]
    synced = status["lastSyncTime"]
    operator.wait_for(
        lambda: status_of(plane, namespace)["lastSyncTime"] != synced, "status keeps updating"
    )
    operator.wait_for(
        lambda: event_reasons(plane, namespace) == ["BudgetWarning", "BudgetOptimizing"],
        "one event per transition, none repeated",
    )
    assert store.hget(f"a11i:wallet:{namespace}", "spent_nanos") == str(int(Decimal("9.5") * NANOS))
    annotations = budget(plane, namespace)["metadata"].get("annotations", {})
    assert "a11i.io/last-handled-configuration" in annotations
    assert "a11i.io/finalizer" in budget(plane, namespace)["metadata"]["finalizers"]


def test_redis_down_is_retried_and_recovered(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = a11i_crds
    apply(plane, namespace, manifest("default", limit="10"))
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    spend(redis_server.url, namespace, "agent-a", "2")
    redis_server.stop()
    try:
        condition = operator.wait_for(
            lambda: (
                (c := ready(status_of(plane, namespace))).get("reason") == "WalletUnavailable" and c
            ),
            "WalletUnavailable",
        )
        assert isinstance(condition, dict)
        assert condition["status"] == "False"
        # kopf retries the handlers while Redis is away (each retry logs the temporary error):
        # two more retries, and the operator is still there.
        retries = operator.logs(lines=1_000_000).count("failed temporarily")
        operator.wait_for(
            lambda: operator.logs(lines=1_000_000).count("failed temporarily") >= retries + 2,
            "two more retries while Redis is away",
        )
        assert operator.running, operator.logs()
    finally:
        redis_server.start()
    operator.wait_for(
        lambda: ready(status_of(plane, namespace)).get("reason") == "WalletConfigured",
        "recovered",
    )
    assert status_of(plane, namespace)["spent"] == "2"
    assert operator.running


def test_a_wallet_redis_lost_is_left_to_the_sidecars_that_saw_it(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    """Redis restarted without its data (the chart's Redis pod on an emptyDir, deleted): the
    operator, whose handles have never seen the wallet, does not make it anew from the spec with
    nothing spent, not even for a spec change; a sidecar that saw it recreates it with its spend
    (here: the hash as it was), and the operator carries on from there."""
    plane = a11i_crds
    apply(plane, namespace, manifest("default", limit="10"))
    operator.wait_for(lambda: status_of(plane, namespace).get("phase") == "Green", "Green")
    spend(redis_server.url, namespace, "agent-a", "2")
    operator.wait_for(lambda: status_of(plane, namespace).get("spent") == "2", "spent 2")
    key = f"a11i:wallet:{namespace}"
    seen = {str(field): str(value) for field, value in store.hgetall(key).items()}
    store.delete(*wallet_keys(store, namespace))
    apply(plane, namespace, manifest("default", limit="12"))
    condition = operator.wait_for(
        lambda: (
            (c := ready(status_of(plane, namespace))).get("reason") == "WalletUnavailable"
            and "not in Redis" in c.get("message", "")
            and c
        ),
        "WalletUnavailable: not in Redis",
    )
    assert isinstance(condition, dict)
    assert wallet_keys(store, namespace) == [], "the operator recreated the lost wallet"
    # What a sidecar's next call or poll writes: the wallet as it last saw it.
    for field, value in seen.items():
        store.hset(key, field, value)
    operator.wait_for(
        lambda: (
            ready(status_of(plane, namespace)).get("reason") == "WalletConfigured"
            and store.hget(key, "limit_nanos") == str(12 * NANOS)
        ),
        "the spec change applied to the recreated wallet",
    )
    operator.wait_for(lambda: status_of(plane, namespace).get("spent") == "2", "spent 2 again")
    assert status_of(plane, namespace)["remaining"] == "10"


def test_chart_rbac_is_what_the_operator_runs_with(
    a11i_crds: ControlPlane,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    """The operator's kubeconfig is the ServiceAccount's: it may not do what the chart omits."""
    user = "system:serviceaccount:a11i-system:a11i-operator"
    allowed = [
        ("patch", "agentbudgets.a11i.io/status"),
        ("watch", "clusterkopfpeerings.kopf.dev"),
        ("create", "events"),
    ]
    for verb, resource in allowed:
        result = a11i_crds.kubectl("auth", "can-i", verb, resource, "-A", "--as", user)
        assert result.stdout.strip() == "yes", (verb, resource)
    for verb, resource in [("delete", "secrets"), ("create", "pods"), ("delete", "agentbudgets")]:
        result = a11i_crds.kubectl("auth", "can-i", verb, resource, "-A", "--as", user)
        assert result.stdout.strip() == "no", (verb, resource)
    kubeconfig = json.loads(Path(operator.kubeconfig).read_text(encoding="utf-8"))
    assert "token" in kubeconfig["users"][0]["user"]
