"""The dashboard's Kubernetes side against the real control plane: Kubernetes auth (TokenReview,
then RBAC decides the role) and top-up through the AgentBudget, with the operator reconciling.

Everything is real: the chart's dashboard RBAC rendered by the real helm and applied with the
real kubectl; the dashboard (``python -m a11i.dashboard.server``) runs as the chart's
ServiceAccount (a kubeconfig holding a token of it), so a permission the chart lacks fails these
tests; the users are ServiceAccounts with tokens from ``kubectl create token``, bound to the
ClusterRoles of examples/dashboard-rbac.yaml; Redis is a real redis-server; the operator runs as
its own ServiceAccount (tests/e2e/operator.py).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from a11i.core.policy import BudgetPolicy, Period
from a11i.dashboard.agentbudgets import AgentBudgets, BudgetConflict
from a11i.operator.kube import KubeClient, KubeObject
from a11i.sidecar.telemetry.events import STREAM
from a11i.sidecar.wallets.redis import RedisWallet
from tests.e2e.crds import a11i_crds  # noqa: F401  (a fixture)
from tests.e2e.operator import (
    CHART,
    RELEASE,
    SYSTEM_NAMESPACE,
    OperatorProcess,
    reconciling_operator,
    service_account_kubeconfig,
    token_kubeconfig,
)
from tests.support.cluster import ROOT, ControlPlane, free_port
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("a11i_crds")]

DASHBOARD_ACCOUNT = f"{RELEASE}-dashboard"
USER_ROLES = ROOT / "examples" / "dashboard-rbac.yaml"
STATIC_ADMIN = "static-admin-token-0123456789"
SESSION_KEY = "s" * 40
#: The review TTL the dashboard runs with here (60 s by default): revocation within a test.
REVIEW_TTL = 2.0
NANOS = 10**9


# --- processes and clients ------------------------------------------------------------------------


class Dashboard:
    """``a11i dashboard`` as a process with a kubeconfig; stopped with SIGINT."""

    def __init__(self, kubeconfig: Path, redis_url: str, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "A11I_DASHBOARD_ADMIN_TOKEN": STATIC_ADMIN,
            "A11I_DASHBOARD_SESSION_KEY": SESSION_KEY,
            "A11I_DASHBOARD_KUBERNETES_REVIEW_TTL": str(REVIEW_TTL),
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "a11i.dashboard.server", "--port", str(self.port),
                 "--redis", redis_url, "--kubernetes-auth", "--agentbudgets"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the dashboard did not start:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        opener: urllib.request.OpenerDirector | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, JSON answer or text) of one request with a bearer token."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=15) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def dashboard_rbac(a11i_crds: ControlPlane) -> ControlPlane:  # noqa: F811
    """The chart's dashboard ServiceAccount, ClusterRole and binding, as helm renders them, and
    the example ClusterRoles for dashboard users."""
    plane = a11i_crds
    if plane.kubectl("get", "namespace", SYSTEM_NAMESPACE).returncode != 0:
        plane.create_namespace(SYSTEM_NAMESPACE)
    rendered = plane.helm(
        "template", RELEASE, str(CHART), "--namespace", SYSTEM_NAMESPACE,
        "--set", "dashboard.enabled=true", "--show-only", "templates/dashboard-rbac.yaml",
        check=True,
    ).stdout  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=rendered, check=True)
    plane.kubectl("apply", "-f", str(USER_ROLES), check=True)
    return plane


class Users:
    """ServiceAccounts as dashboard users: admin, viewer, and one bound to nothing."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.namespace = plane.create_namespace(f"dash-users-{uuid.uuid4().hex[:6]}")
        self.tokens: dict[str, str] = {}
        for name, role in (("admin", "a11i-dashboard-admin"), ("viewer", "a11i-dashboard-viewer"),
                           ("nobody", None)):  # fmt: skip
            plane.kubectl("create", "serviceaccount", name, "-n", self.namespace, check=True)
            if role is not None:
                self.bind(name, role)
            self.tokens[name] = plane.kubectl(
                "create", "token", name, "-n", self.namespace, "--duration=1h", check=True
            ).stdout.strip()

    def binding(self, name: str) -> str:
        return f"{self.namespace}-{name}"

    def bind(self, name: str, role: str) -> None:
        self.plane.kubectl(
            "create", "clusterrolebinding", self.binding(name), f"--clusterrole={role}",
            f"--serviceaccount={self.namespace}:{name}", check=True,
        )  # fmt: skip

    def who(self, name: str) -> str:
        return f"k8s:system:serviceaccount:{self.namespace}:{name}"

    def cleanup(self) -> None:
        for name in ("admin", "viewer"):
            self.plane.kubectl("delete", "clusterrolebinding", self.binding(name),
                               "--ignore-not-found")  # fmt: skip
        self.plane.kubectl("delete", "namespace", self.namespace, "--wait=false")


@pytest.fixture(scope="module")
def users(dashboard_rbac: ControlPlane) -> Iterator[Users]:
    found = Users(dashboard_rbac)
    yield found
    found.cleanup()


@pytest.fixture(scope="module")
def dashboard_kubeconfig(
    dashboard_rbac: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    directory = tmp_path_factory.mktemp("dashboard")
    return service_account_kubeconfig(
        dashboard_rbac, directory / "kubeconfig", DASHBOARD_ACCOUNT, SYSTEM_NAMESPACE
    )


@pytest.fixture(scope="module")
def dashboard(
    dashboard_kubeconfig: Path,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    process = Dashboard(
        dashboard_kubeconfig, redis_server.url, tmp_path_factory.mktemp("dash") / "log"
    )
    yield process
    process.stop()
    assert process.process.returncode == 0, process.logs()
    # The chart grants everything the dashboard does: no permission error in its log.
    assert "forbidden" not in process.logs().lower(), process.logs()


@pytest.fixture(scope="module")
def operator(
    dashboard_rbac: ControlPlane,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = reconciling_operator(
        dashboard_rbac, tmp_path_factory.mktemp("operator"), redis_server.url
    )
    yield process
    code = process.stop()
    assert code == 0, f"the operator exited with {code}:\n{process.logs()}"


def budget_manifest(name: str, limit: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "a11i.io/v1alpha1",
            "kind": "AgentBudget",
            "metadata": {"name": name},
            "spec": {"limit": limit, "period": "Monthly", **spec},
        }
    )


def agentbudget(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    got = plane.kubectl("get", "agentbudget", name, "-n", namespace, "-o", "json", check=True)
    loaded: dict[str, Any] = json.loads(got.stdout)
    return loaded


def actions(store: redis.Redis, namespace: str) -> list[dict[str, str]]:
    return [
        fields
        for _, fields in store.xrange(STREAM)
        if fields.get("kind") == "action" and fields.get("namespace") == namespace
    ]


# --- Kubernetes auth ------------------------------------------------------------------------------


def test_chart_grants_the_dashboard_least_privilege(dashboard_rbac: ControlPlane) -> None:
    account = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{DASHBOARD_ACCOUNT}"
    for verb, resource, allowed, *extra in [
        ("create", "tokenreviews.authentication.k8s.io", "yes"),
        ("create", "subjectaccessreviews.authorization.k8s.io", "yes"),
        ("patch", "agentbudgets.a11i.io", "yes"),
        ("list", "agentbudgets.a11i.io", "yes"),
        ("delete", "agentbudgets.a11i.io", "no"),
        ("create", "agentbudgets.a11i.io", "no"),
        ("patch", "agentbudgets.a11i.io", "no", "--subresource=status"),
        ("get", "secrets", "no"),
    ]:
        answer = dashboard_rbac.kubectl(
            "auth", "can-i", verb, resource, *extra, "--all-namespaces", f"--as={account}"
        )
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)


def test_roles_come_from_rbac(dashboard: Dashboard, users: Users) -> None:
    status, session = dashboard.call("GET", "/api/session", users.tokens["admin"])
    assert status == 200, session
    assert (session["role"], session["who"], session["can_act"]) == (
        "admin", users.who("admin"), True,
    )  # fmt: skip
    assert session["top_up_via"] == "agentbudget"
    assert "AgentBudget" in session["top_up_note"]
    status, session = dashboard.call("GET", "/api/session", users.tokens["viewer"])
    assert status == 200, session
    assert (session["role"], session["who"], session["can_act"]) == (
        "viewer", users.who("viewer"), False,
    )  # fmt: skip
    status, refused = dashboard.call("GET", "/api/view", users.tokens["nobody"])
    assert status == 403, refused
    assert "may neither patch (admin) nor list (viewer)" in refused["error"]
    assert users.who("nobody").removeprefix("k8s:") in refused["error"]
    status, refused = dashboard.call("GET", "/api/view", "not-a-token-the-api-server-knows")
    assert status == 401, refused
    # The static token works beside Kubernetes auth.
    status, session = dashboard.call("GET", "/api/session", STATIC_ADMIN)
    assert (status, session["role"]) == (200, "admin")
    assert session["who"].startswith("admin:")


def test_viewer_sees_but_may_not_act(dashboard: Dashboard, users: Users) -> None:
    status, view = dashboard.call("GET", "/api/view", users.tokens["viewer"])
    assert status == 200, view
    assert "namespaces" in view
    for path, body in [
        ("/api/namespaces/team-x/stop", None),
        ("/api/namespaces/team-x/top-up", {"amount_usd": "5"}),
        ("/api/cluster/stop", None),
    ]:
        status, refused = dashboard.call("POST", path, users.tokens["viewer"], body)
        assert status == 403, (path, refused)
        assert "read-only" in refused["error"]
    status, refused = dashboard.call("POST", "/api/cluster/stop", users.tokens["nobody"])
    assert status == 403, refused


def test_browser_session_of_a_kubernetes_user_follows_rbac(
    dashboard: Dashboard, users: Users, store: redis.Redis
) -> None:
    """Login form → cookie holding the identity; actions with CSRF; the binding removed, the
    session loses the role within the review TTL."""
    namespace = f"dash-session-{uuid.uuid4().hex[:6]}"
    wallet_key = f"a11i:wallet:{namespace}"
    store.hset(wallet_key, mapping={"limit_nanos": str(10 * NANOS), "spent_nanos": "0",
                                    "suspended": "0"})  # fmt: skip
    # The admin user of this test only: unbinding it must not disturb the other tests.
    users.plane.kubectl("create", "serviceaccount", "lead", "-n", users.namespace, check=True)
    users.bind("lead", "a11i-dashboard-admin")
    token = users.plane.kubectl(
        "create", "token", "lead", "-n", users.namespace, "--duration=1h", check=True
    ).stdout.strip()
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"token": token}).encode()
    login = urllib.request.Request(dashboard.base + "/login", data=form, method="POST")
    with opener.open(login, timeout=15) as answer:  # follows the 303 to the page
        assert answer.status == 200
    (cookie,) = list(jar)
    assert cookie.value.startswith("k8s.")
    assert token not in cookie.value
    status, session = dashboard.call("GET", "/api/session", opener=opener)
    assert status == 200, session
    assert session["who"] == users.who("lead")
    act = {"X-A11I-CSRF": session["csrf"], "Origin": dashboard.base}
    status, done = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/stop", opener=opener, headers=act
    )
    assert status == 200, done
    assert store.hget(wallet_key, "suspended") == "1"
    assert actions(store, namespace)[-1]["actor"] == users.who("lead")
    status, refused = dashboard.call(
        "POST",
        f"/api/namespaces/{namespace}/resume",
        opener=opener,
        headers={"Origin": dashboard.base},
    )
    assert status == 403, refused  # no CSRF token

    users.plane.kubectl("delete", "clusterrolebinding", users.binding("lead"), check=True)
    time.sleep(REVIEW_TTL + 0.5)
    status, refused = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/resume", opener=opener, headers=act
    )
    assert status == 403, refused
    assert "may neither" in refused["error"]
    assert store.hget(wallet_key, "suspended") == "1"
    status, page = dashboard.call("GET", "/", opener=opener)
    assert status == 403
    assert "may neither" in page


# --- top-up through the AgentBudget ---------------------------------------------------------------


def test_admin_tops_up_through_the_agentbudget_and_the_operator_keeps_it(
    dashboard: Dashboard,
    operator: OperatorProcess,
    users: Users,
    store: redis.Redis,
    namespace: str,
) -> None:
    plane = users.plane
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=budget_manifest("team", "100"),
                  check=True)  # fmt: skip
    key = f"a11i:wallet:{namespace}"
    operator.wait_for(lambda: store.hget(key, "limit_nanos") == str(100 * NANOS), "limit 100")
    # A younger namespace-wide AgentBudget does not own the wallet: it is not touched.
    time.sleep(1.1)  # creationTimestamp has a resolution of one second
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=budget_manifest("younger", "7"),
                  check=True)  # fmt: skip
    generation = agentbudget(plane, namespace, "team")["metadata"]["generation"]

    status, done = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/top-up", users.tokens["admin"], {"amount_usd": "25.5"}
    )
    assert status == 200, (done, dashboard.logs())
    assert done["via"] == "agentbudget/team"
    assert done["limit_usd"] == "125.5"
    assert done["wallet_updated"] is True
    assert done["recorded"] is True
    # The AgentBudget in the API server, and the wallet at once (not waiting for the operator).
    assert agentbudget(plane, namespace, "team")["spec"]["limit"] == "125.5"
    assert store.hget(key, "limit_nanos") == str(1255 * NANOS // 10)
    assert agentbudget(plane, namespace, "younger")["spec"]["limit"] == "7"
    (event,) = actions(store, namespace)
    assert event["action"] == "top_up"
    assert event["actor"] == users.who("admin")
    assert event["via"] == "agentbudget/team"
    assert event["amount_usd"] == "25.5"
    assert event["limit_usd"] == "125.5"

    # The operator applies the new generation and keeps the limit: no flip-back, no doubling.
    def applied() -> bool:
        status_ = agentbudget(plane, namespace, "team").get("status") or {}
        return (
            status_.get("observedGeneration") == generation + 1
            and status_.get("remaining") == "125.5"
        )

    operator.wait_for(applied, "the operator applied the topped-up AgentBudget")
    # Three status rounds of the operator (one lastSyncTime each, 1 s apart): the topped-up
    # limit stays in the wallet, never put back by a stale spec.
    synced: set[str] = set()
    deadline = time.monotonic() + 20
    while len(synced) < 3:
        assert store.hget(key, "limit_nanos") == str(1255 * NANOS // 10)
        synced.add(
            str((agentbudget(plane, namespace, "team").get("status") or {}).get("lastSyncTime"))
        )
        assert time.monotonic() < deadline, synced
        time.sleep(0.2)

    # A second top-up builds on the AgentBudget's new limit.
    status, done = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/top-up", users.tokens["admin"], {"amount_usd": "4.5"}
    )
    assert (status, done["limit_usd"]) == (200, "130"), done
    assert agentbudget(plane, namespace, "team")["spec"]["limit"] == "130"


def test_namespace_without_an_agentbudget_is_topped_up_in_the_wallet(
    dashboard: Dashboard,
    users: Users,
    redis_server: RedisServer,
    store: redis.Redis,
    namespace: str,
) -> None:
    key = f"a11i:wallet:{namespace}"
    asyncio.run(_standalone_wallet(redis_server.url, namespace))
    status, done = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/top-up", users.tokens["admin"], {"amount_usd": "3"}
    )
    assert status == 200, done
    assert done["via"] == "wallet"
    assert store.hget(key, "limit_nanos") == str(8 * NANOS)
    assert actions(store, namespace)[-1]["via"] == "wallet"
    assert users.plane.kubectl("get", "agentbudgets", "-n", namespace, "-o", "name").stdout == ""


async def _standalone_wallet(url: str, namespace: str) -> None:
    """A wallet a sidecar made from A11I_BUDGET_USD=5 (no AgentBudget)."""
    client = redis.asyncio.Redis.from_url(url)
    wallet = RedisWallet(
        client, namespace=namespace, agent="sidecar", policy=BudgetPolicy(limit_usd=Decimal(5)),
        period=Period.MONTHLY, timeout_s=2.0,
    )  # fmt: skip
    try:
        await wallet.start()
    finally:
        await wallet.close()
        await client.aclose()


def test_top_up_amount_the_agentbudget_cannot_hold_is_refused(
    dashboard: Dashboard, users: Users, namespace: str
) -> None:
    plane = users.plane
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=budget_manifest("b", "10"),
                  check=True)  # fmt: skip
    status, refused = dashboard.call(
        "POST", f"/api/namespaces/{namespace}/top-up", users.tokens["admin"],
        {"amount_usd": "0.0000001"},
    )  # fmt: skip
    assert status == 400, refused
    assert "at most 6 decimals" in refused["error"]
    assert agentbudget(plane, namespace, "b")["spec"]["limit"] == "10"


class _Racing(KubeClient):
    """The dashboard's client, but another writer changes the AgentBudget's limit just before
    each of its first ``races`` patches: the real API server answers 409 Conflict."""

    def __init__(self, plane: ControlPlane, races: int) -> None:
        super().__init__()  # logs in from $KUBECONFIG, set by the test
        self.plane = plane
        self.races = races
        self.patches = 0

    async def patch(self, resource: Any, namespace: str, name: str, body: Any) -> KubeObject:
        self.patches += 1
        if self.patches <= self.races:
            other = json.dumps({"spec": {"limit": str(200 + self.patches)}})
            self.plane.kubectl(
                "patch", "agentbudget", name, "-n", namespace, "--type=merge", "-p", other,
                check=True,
            )  # fmt: skip
        return await super().patch(resource, namespace, name, body)


async def test_a_concurrent_write_is_retried_on_the_new_limit(
    dashboard_kubeconfig: Path, users: Users, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = users.plane
    monkeypatch.setenv("KUBECONFIG", str(dashboard_kubeconfig))
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=budget_manifest("b", "100"),
                  check=True)  # fmt: skip
    client = _Racing(plane, races=1)
    budgets = AgentBudgets(client)
    try:
        done = await budgets.top_up(namespace, Decimal(10))
    finally:
        await budgets.close()
    assert done is not None
    # At least the provoked conflict (the operator, when running, writes the object too).
    assert done.attempts >= 2
    assert client.patches == done.attempts
    # Built on the limit the other writer set (201), not on the one first read (100).
    assert (done.old_limit, done.new_limit) == (Decimal(201), Decimal(211))
    assert agentbudget(plane, namespace, "b")["spec"]["limit"] == "211"
    assert done.spec.policy.limit_usd == Decimal(211)


async def test_a_budget_that_keeps_changing_is_given_up_on(
    dashboard_kubeconfig: Path, users: Users, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = users.plane
    monkeypatch.setenv("KUBECONFIG", str(dashboard_kubeconfig))
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=budget_manifest("b", "100"),
                  check=True)  # fmt: skip
    client = _Racing(plane, races=99)
    budgets = AgentBudgets(client, max_attempts=3)
    try:
        with pytest.raises(BudgetConflict, match="changed 3 times") as caught:
            await budgets.top_up(namespace, Decimal(10))
    finally:
        await budgets.close()
    assert caught.value.status == 409
    # Only the other writer's last limit: the dashboard wrote nothing.
    assert agentbudget(plane, namespace, "b")["spec"]["limit"] == "203"


# --- the API server away --------------------------------------------------------------------------


def test_api_server_unreachable_admits_no_kubernetes_user(
    dashboard_rbac: ControlPlane,
    users: Users,
    redis_server: RedisServer,
    store: redis.Redis,
    tmp_path: Path,
) -> None:
    # The dashboard's credentials, but an address where no API server listens.
    token = dashboard_rbac.kubectl(
        "create", "token", DASHBOARD_ACCOUNT, "-n", SYSTEM_NAMESPACE, check=True
    ).stdout.strip()
    nowhere = f"https://127.0.0.1:{free_port()}"
    kubeconfig = token_kubeconfig(dashboard_rbac, token, tmp_path / "kubeconfig", nowhere)
    away = Dashboard(kubeconfig, redis_server.url, tmp_path / "log")
    try:
        status, refused = away.call("GET", "/api/view", users.tokens["admin"])
        assert status == 503, refused
        assert "does not answer" in refused["error"]
        assert "static tokens still work" in refused["error"]
        form = urllib.parse.urlencode({"token": users.tokens["admin"]}).encode()
        request = urllib.request.Request(away.base + "/login", data=form, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=15)
        assert caught.value.code == 503
        assert "does not answer" in caught.value.read().decode()
        # The static admin is still served, but a top-up through the AgentBudget is not made.
        namespace = f"dash-away-{uuid.uuid4().hex[:6]}"
        key = f"a11i:wallet:{namespace}"
        store.hset(key, mapping={"limit_nanos": str(NANOS), "spent_nanos": "0"})
        status, view = away.call("GET", "/api/view", STATIC_ADMIN)
        assert status == 200, view
        status, refused = away.call(
            "POST", f"/api/namespaces/{namespace}/top-up", STATIC_ADMIN, {"amount_usd": "1"}
        )
        assert status == 503, refused
        assert "was not topped up (nothing changed)" in refused["error"]
        assert store.hget(key, "limit_nanos") == str(NANOS)
        assert actions(store, namespace) == []
    finally:
        away.stop()
