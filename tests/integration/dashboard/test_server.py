"""The dashboard against real parts: a real redis-server, real sidecars writing the event stream,
the official openai SDK, and Debian's Chromium driven by Playwright.

aiohttp-level tests check access (login, roles, CSRF, Origin) and the WebSocket's resume; the
browser scenario follows one operator through spend, emergency stop, resume, top-up and a lost
WebSocket, taking screenshots (A11I_UPDATE_SCREENSHOTS=1 copies one to docs/dashboard.png); two
more browser tests take Redis away under a live page, and look at the page at narrow and wide
widths as a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest
from aiohttp import web
from redis.asyncio import Redis

from a11i.core.meter import Meter
from a11i.core.tokens.counter import TokenCounter
from a11i.dashboard.auth import AuthError, AuthSettings
from a11i.dashboard.hub import HubSettings
from a11i.dashboard.server import DashboardSettings, build_app, main
from a11i.dashboard.source import RedisSource
from a11i.sidecar.app import events_for, wallet_for
from a11i.sidecar.meter import effective_rate_card
from a11i.sidecar.proxy import Sidecar
from a11i.sidecar.proxy import build_app as build_sidecar_app
from a11i.sidecar.settings import from_env
from a11i.sidecar.telemetry.events import STREAM
from tests.support.paths import ROOT
from tests.support.redis_server import RedisServer, free_port
from tests.support.standin import StandIn

if TYPE_CHECKING:
    from playwright.async_api import Error, Page

pytestmark = pytest.mark.integration

ADMIN = "admin-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
DOCS = ROOT / "docs"
MESSAGES = [{"role": "user", "content": "Is the checkout service healthy?"}]


# --- real parts ---------------------------------------------------------------------------------


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    # Indirect parametrization may ask for RedisServer options: {"appendonly": True} keeps the
    # data across a stop and start, as a deployed Redis with persistence does.
    server = RedisServer(**getattr(request, "param", {}))
    server.start()
    yield server
    server.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


StartSidecar = Callable[..., Awaitable[str]]


@pytest.fixture
async def redis_sidecar(
    standin: StandIn, token_counter: TokenCounter, redis_server: RedisServer
) -> AsyncIterator[StartSidecar]:
    """Sidecars sharing the Redis wallet and writing the Redis event stream, as deployed."""
    runners: list[web.AppRunner] = []

    async def start(namespace: str, agent: str, budget: str) -> str:
        assert standin.url is not None
        settings = from_env(
            {
                "A11I_OPENAI_BASE": standin.url,
                "A11I_NAMESPACE": namespace,
                "A11I_AGENT": agent,
                "A11I_BUDGET_USD": budget,
                "A11I_REDIS_URL": redis_server.url,
            }
        )
        meter = Meter(token_counter, effective_rate_card(settings.rate_card_path))
        sidecar = Sidecar(settings, meter, wallet_for(settings), events_for(settings))
        runner = web.AppRunner(build_sidecar_app(sidecar), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class Dashboard:
    settings: DashboardSettings
    redis_url: str
    hub_settings: HubSettings
    port: int
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        source = RedisSource.from_url(self.redis_url)
        self.runner = web.AppRunner(
            build_app(self.settings, source), access_log=None, shutdown_timeout=0.5
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


StartDashboard = Callable[..., Awaitable[Dashboard]]


@pytest.fixture
async def start_dashboard(redis_server: RedisServer) -> AsyncIterator[StartDashboard]:
    started: list[Dashboard] = []

    async def start(**hub: Any) -> Dashboard:
        hub_settings = HubSettings(**hub)
        settings = DashboardSettings(
            auth=AuthSettings(admin_token=ADMIN, viewer_token=VIEWER),
            hub=hub_settings,
        )
        dashboard = Dashboard(settings, redis_server.url, hub_settings, free_port())
        await dashboard.start()
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        await dashboard.stop()


async def wallet_of(redis: Redis, namespace: str) -> None:
    await redis.hset(
        f"a11i:wallet:{namespace}",
        mapping={
            "limit_nanos": str(10 * 10**9),
            "warn_at": "75",
            "optimize_at": "90",
            "when_exhausted": "Block",
            "period": "Total",
            "period_start": repr(time.time()),
            "origin": repr(time.time()),
            "spent_nanos": "0",
            "suspended": "0",
        },
    )


def session(url: str) -> aiohttp.ClientSession:
    # unsafe: keep cookies set by an IP address (the dashboard listens on 127.0.0.1).
    return aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(client: aiohttp.ClientSession, token: str) -> str:
    """Log in through the form; returns the session's CSRF token."""
    async with client.post("/login", data={"token": token}, allow_redirects=False) as response:
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
    async with client.get("/api/session") as response:
        assert response.status == 200
        body = await response.json()
    csrf = body["csrf"]
    assert isinstance(csrf, str)
    return csrf


# --- access -------------------------------------------------------------------------------------


def test_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("A11I_DASHBOARD_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("A11I_DASHBOARD_VIEWER_TOKEN", raising=False)
    with pytest.raises(AuthError, match="insecure-no-auth"):
        AuthSettings()
    with pytest.raises(AuthError, match="at least"):
        AuthSettings(admin_token="short")
    assert main(["--redis", "redis://127.0.0.1:1/0"]) == 2


async def test_a_visitor_without_a_session_gets_only_the_login_page(
    start_dashboard: StartDashboard,
) -> None:
    dashboard = await start_dashboard()
    async with session(dashboard.url) as client:
        async with client.get("/") as response:
            assert response.status == 401
            page = await response.text()
            assert '<form method="post" action="/login">' in page
            assert "app.js" not in page
        for path in ("/api/view", "/api/session", "/static/app.js", "/ws"):
            async with client.get(path) as response:
                assert response.status == 401, path
        async with client.post("/api/cluster/stop") as response:
            assert response.status == 401
        async with client.post("/login", data={"token": ADMIN + "x"}) as response:
            assert response.status == 401
            assert "That token is not valid." in await response.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 401


async def test_a_viewer_sees_but_cannot_act(start_dashboard: StartDashboard, redis: Redis) -> None:
    await wallet_of(redis, "team-a")
    dashboard = await start_dashboard()
    async with session(dashboard.url) as client:
        csrf = await login(client, VIEWER)
        async with client.get("/api/view") as response:
            assert response.status == 200
        headers = {"X-A11I-CSRF": csrf, "Origin": dashboard.url}
        async with client.post("/api/namespaces/team-a/stop", headers=headers) as response:
            assert response.status == 403
            assert "read-only" in (await response.json())["error"]
    assert await redis.hget("a11i:wallet:team-a", "suspended") == "0"


@pytest.mark.parametrize(
    ("csrf", "origin"),
    [
        pytest.param(False, "same", id="csrf-missing"),
        pytest.param("wrong", "same", id="csrf-wrong"),
        pytest.param(True, "http://evil.example", id="bad-origin"),
        pytest.param(True, None, id="origin-missing"),
    ],
)
async def test_an_admin_action_needs_csrf_and_same_origin(
    start_dashboard: StartDashboard, redis: Redis, csrf: bool | str, origin: str | None
) -> None:
    await wallet_of(redis, "team-a")
    dashboard = await start_dashboard()
    async with session(dashboard.url) as client:
        token = await login(client, ADMIN)
        headers = {}
        if csrf:
            headers["X-A11I-CSRF"] = token if csrf is True else "wrong"
        if origin is not None:
            headers["Origin"] = dashboard.url if origin == "same" else origin
        async with client.post("/api/namespaces/team-a/stop", headers=headers) as response:
            assert response.status == 403
    assert await redis.hget("a11i:wallet:team-a", "suspended") == "0"


async def test_an_admin_action_is_applied_and_recorded(
    start_dashboard: StartDashboard, redis: Redis
) -> None:
    await wallet_of(redis, "team-a")
    dashboard = await start_dashboard()
    async with session(dashboard.url) as client:
        csrf = await login(client, ADMIN)
        headers = {"X-A11I-CSRF": csrf, "Origin": dashboard.url}
        async with client.post("/api/namespaces/team-a/stop", headers=headers) as response:
            assert response.status == 200, await response.text()
        assert await redis.hget("a11i:wallet:team-a", "suspended") == "1"
        async with client.post(
            "/api/namespaces/team-a/top-up", headers=headers, json={"amount_usd": "2.50"}
        ) as response:
            assert response.status == 200
        assert await redis.hget("a11i:wallet:team-a", "limit_nanos") == str(12_500_000_000)
        for bad in ("-1", "abc", "1e400", "NaN"):
            async with client.post(
                "/api/namespaces/team-a/top-up", headers=headers, json={"amount_usd": bad}
            ) as response:
                assert response.status == 400, bad
        async with client.post("/api/namespaces/nobody/stop", headers=headers) as response:
            assert response.status == 404
        # A script with the token itself (no cookie, nothing ambient): no CSRF needed.
    async with aiohttp.ClientSession(dashboard.url) as script:
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        async with script.post("/api/namespaces/team-a/resume", headers=bearer) as response:
            assert response.status == 200
    entries = await redis.xrange(STREAM)
    actions = [fields for _id, fields in entries if fields.get("kind") == "action"]
    assert [(a["namespace"], a["action"], a.get("amount_usd")) for a in actions] == [
        ("team-a", "stop", None),
        ("team-a", "top_up", "2.5"),
        ("team-a", "resume", None),
    ]
    assert all(a["actor"].startswith("admin:") and len(a["actor"]) == 14 for a in actions)


async def test_the_websocket_refuses_another_origin(
    start_dashboard: StartDashboard,
) -> None:
    dashboard = await start_dashboard()
    async with session(dashboard.url) as client:
        await login(client, VIEWER)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403


# --- the WebSocket resumes ----------------------------------------------------------------------


async def add_calls(redis: Redis, count: int, namespace: str = "team-a") -> list[str]:
    ids = []
    for _ in range(count):
        fields = {
            "kind": "call",
            "ts": f"{time.time():.3f}",
            "namespace": namespace,
            "agent": "bot",
            "model": "gpt-4o-mini",
            "decision": "allow",
            "status": "200",
            "cost_usd": "0.001",
            "input_tokens": "10",
            "output_tokens": "3",
        }
        ids.append(str(await redis.xadd(STREAM, fields)))  # type: ignore[arg-type]
    return ids


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await ws.receive_str())
            if predicate(message):
                return message  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "buffer", [pytest.param(5_000, id="from-buffer"), pytest.param(2, id="from-stream")]
)
async def test_the_websocket_resumes_from_the_last_id(
    start_dashboard: StartDashboard, redis: Redis, buffer: int
) -> None:
    first = await add_calls(redis, 3)
    dashboard = await start_dashboard(replay_buffer=buffer)
    async with session(dashboard.url) as client:
        await login(client, VIEWER)
        headers = {"Origin": dashboard.url}
        async with client.ws_connect("/ws", headers=headers) as ws:
            await ws.send_json({"type": "resume", "since": None})
            hello = await receive_until(ws, lambda m: m["type"] == "hello")
            assert hello["role"] == "viewer"
            replay = await receive_until(ws, lambda m: m["type"] == "events")
            seen = [e["id"] for e in replay["events"]]
            # A page that connects before the dashboard has read the stream's history gets an
            # empty feed first, then the history as it is read: none lost, none twice.
            while len(seen) < len(first):
                pushed = await receive_until(ws, lambda m: m["type"] == "events")
                seen += [e["id"] for e in pushed["events"]]
            assert seen == first
            live = await add_calls(redis, 1)
            pushed = await receive_until(ws, lambda m: m["type"] == "events")
            assert [e["id"] for e in pushed["events"]] == live
        missed = await add_calls(redis, 4)
        await asyncio.sleep(0.3)  # usually the hub has read them (and, buffer=2, dropped some)
        async with client.ws_connect("/ws", headers=headers) as ws:
            await ws.send_json({"type": "resume", "since": live[-1]})
            replay = await receive_until(ws, lambda m: m["type"] == "events")
            assert replay["truncated"] is False
            seen = [e["id"] for e in replay["events"]]
            # On a loaded machine the hub may not have read them all yet: the rest must then
            # arrive as live pushes, in order, with none lost and none twice.
            while len(seen) < len(missed):
                pushed = await receive_until(ws, lambda m: m["type"] == "events")
                seen += [e["id"] for e in pushed["events"]]
            assert seen == missed


# --- the browser ----------------------------------------------------------------------------------


async def chat(client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=50,
    )


async def test_an_operator_in_the_browser(
    chromium: Path,
    redis_sidecar: StartSidecar,
    start_dashboard: StartDashboard,
    redis: Redis,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright, expect

    team_a = openai.AsyncOpenAI(
        base_url=await redis_sidecar("team-a", "sre-bot", "10"), api_key="sk-a", max_retries=0
    )
    team_b = openai.AsyncOpenAI(
        base_url=await redis_sidecar("team-b", "triage-bot", "0.0001"),
        api_key="sk-b",
        max_retries=0,
    )
    dashboard = await start_dashboard()
    shots = tmp_path / "screenshots"
    shots.mkdir()

    async def spend_all(client: openai.AsyncOpenAI) -> None:
        for _ in range(20):
            await chat(client)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page = await context.new_page()
            page.set_default_timeout(5_000)
            await page.goto(dashboard.url)
            await page.fill("#token", ADMIN)
            await page.click("button[type=submit]")
            await expect(page.locator("#connection")).to_have_text("live")

            # 1. Spend appears within a second of a call.
            await chat(team_a)
            called = time.monotonic()
            agent_row = page.locator('#agents tr[data-agent="sre-bot"]')
            await expect(agent_row).to_have_count(1, timeout=1_000)
            await expect(page.locator('#feed tr[data-kind="call"]')).to_have_count(1, timeout=1_000)
            wallet_a = page.locator('#wallets tr[data-namespace="team-a"]')
            await expect(wallet_a.locator(".spent")).not_to_have_text("$0.00", timeout=1_000)
            assert time.monotonic() - called < 1.5
            await page.screenshot(path=shots / "1-spend.png", full_page=True)

            # 2. Emergency stop of team-a, confirmed in the dialog: the next call gets 403.
            await wallet_a.locator("button.stop").click()
            await expect(page.locator("#confirm")).to_be_visible()
            await page.screenshot(path=shots / "2-confirm.png")
            await page.click("#confirm-ok")
            await expect(wallet_a).to_have_attribute("data-suspended", "true", timeout=1_000)
            await expect(wallet_a.locator(".phase")).to_have_text("Suspended")
            with pytest.raises(openai.PermissionDeniedError) as stopped:
                await chat(team_a)
            assert stopped.value.code == "emergency_stop"
            await page.screenshot(path=shots / "3-stopped.png", full_page=True)

            # 3. Resume: calls pass again.
            await wallet_a.locator("button.resume").click()
            await page.click("#confirm-ok")
            await expect(wallet_a).to_have_attribute("data-suspended", "false", timeout=1_000)
            await chat(team_a)

            # 4. team-b runs out (402); a top-up from the page lets the next call through.
            with pytest.raises(openai.APIStatusError) as exhausted:
                await spend_all(team_b)
            assert exhausted.value.status_code == 402
            wallet_b = page.locator('#wallets tr[data-namespace="team-b"]')
            await expect(wallet_b.locator(".blocked")).not_to_have_text("0", timeout=1_000)
            await wallet_b.locator("button.top-up").click()
            await page.fill("#confirm-amount", "1.00")
            await page.click("#confirm-ok")
            await expect(wallet_b.locator(".limit")).to_have_text("$1.00", timeout=1_000)
            await chat(team_b)
            await expect(page.locator('#feed tr[data-kind="action"]')).to_have_count(3)
            # Newest first: the top-up, saying what it went through (no operator here).
            await expect(page.locator('#feed tr[data-kind="action"]').first).to_contain_text(
                "+$1.00 via wallet"
            )
            await page.screenshot(path=shots / "4-top-up.png", full_page=True)

            # 5. An unauthenticated browser sees only the login page, and no WebSocket.
            stranger = await browser.new_context()
            other = await stranger.new_page()
            response = await other.goto(dashboard.url)
            assert response is not None
            assert response.status == 401
            await expect(other.locator("#token")).to_be_visible()
            assert await other.locator("#wallets").count() == 0
            outcome = await other.evaluate(
                """() => new Promise((resolve) => {
                    const ws = new WebSocket(`ws://${location.host}/ws`);
                    let messages = 0;
                    ws.onmessage = () => { messages += 1; };
                    ws.onopen = () => ws.send('{"type":"resume","since":null}');
                    ws.onclose = () => resolve({ messages, opened: ws.readyState });
                    setTimeout(() => resolve({ messages, timeout: true }), 3000);
                })"""
            )
            assert outcome["messages"] == 0
            assert "timeout" not in outcome
            await stranger.close()

            # 6. The WebSocket drops (the dashboard restarts on its port); calls happen
            #    meanwhile; the page reconnects and shows them (resumed from its last id).
            calls_before = await page.locator('#feed tr[data-kind="call"]').count()
            await dashboard.stop()
            await expect(page.locator("#connection")).to_have_attribute(
                "data-state", "reconnecting"
            )
            length = await redis.xlen(STREAM)
            await chat(team_a)
            await chat(team_a)
            # The sidecar appends each call's event after its answer: wait until both are in
            # the stream, so the dashboard starts with them there to resume from.
            deadline = asyncio.get_running_loop().time() + 10
            while await redis.xlen(STREAM) < length + 2:
                assert asyncio.get_running_loop().time() < deadline, "no events appended"
                await asyncio.sleep(0.05)
            await dashboard.start()
            await expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
            await expect(page.locator('#feed tr[data-kind="call"]')).to_have_count(calls_before + 2)
            await page.screenshot(path=shots / "5-reconnected.png", full_page=True)
        finally:
            await browser.close()
            await team_a.close()
            await team_b.close()
    assert (shots / "4-top-up.png").stat().st_size > 10_000
    # The README's picture is refreshed on request only, so a test run leaves the tree clean.
    if os.environ.get("A11I_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shots / "4-top-up.png", DOCS / "dashboard.png")


@contextlib.asynccontextmanager
async def logged_in(
    chromium: Path, url: str, token: str, width: int = 1400, height: int = 1100
) -> AsyncIterator[Page]:
    """A headless Chromium page logged in to the dashboard, its WebSocket live; the test fails
    if the page's script throws."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            page.set_default_timeout(5_000)
            errors: list[Error] = []
            page.on("pageerror", lambda error: errors.append(error))
            await page.goto(url)
            await page.fill("#token", token)
            await page.click("button[type=submit]")
            await expect(page.locator("#connection")).to_have_text("live")
            yield page
            assert not errors, f"the page's script failed: {errors}"
        finally:
            await browser.close()


@pytest.mark.parametrize(
    "redis_server", [pytest.param({"appendonly": True}, id="persistent")], indirect=True
)
async def test_redis_down_in_the_browser(
    chromium: Path,
    redis_sidecar: StartSidecar,
    start_dashboard: StartDashboard,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Redis goes away under a live page: a banner, the last data kept, an action refused with
    a message; Redis comes back: the banner goes and new spend shows."""
    from playwright.async_api import expect

    team_a = openai.AsyncOpenAI(
        base_url=await redis_sidecar("team-a", "sre-bot", "10"), api_key="sk-a", max_retries=0
    )
    dashboard = await start_dashboard(max_backoff_s=0.5)
    try:
        async with logged_in(chromium, dashboard.url, ADMIN) as page:
            await chat(team_a)
            wallet_a = page.locator('#wallets tr[data-namespace="team-a"]')
            agent = page.locator('#agents tr[data-agent="sre-bot"]')
            await expect(agent.locator(".calls")).to_have_text("1")
            await expect(wallet_a.locator(".spent")).not_to_have_text("$0.00")
            spent = await wallet_a.locator(".spent").inner_text()
            # A single point on the chart: its window is the last minutes, not years.
            await expect(page.locator("#chart")).to_have_attribute(
                "aria-label",
                re.compile(
                    r"^Cumulative spend per namespace from \d{1,2}:\d\d\D* to \d{1,2}:\d\d\D*: "
                    r"team-a \$0\.0"
                ),
            )
            # Updates change the row in place: its Emergency stop is never swapped under a click.
            stop_button = await wallet_a.locator("button.stop").element_handle()
            banner = page.locator("#source-banner")
            await expect(banner).to_be_hidden()

            # 1. Redis stops: the banner says so; the last data stays on the page.
            await asyncio.to_thread(redis_server.stop)
            await expect(banner).to_be_visible(timeout=10_000)
            await expect(banner).to_contain_text("Data source unavailable: Redis does not answer")
            await expect(wallet_a.locator(".spent")).to_have_text(spent)
            await expect(agent.locator(".calls")).to_have_text("1")
            await expect(page.locator('#feed tr[data-kind="call"]')).to_have_count(1)
            await expect(page.locator("#connection")).to_have_text("live")
            await page.screenshot(path=tmp_path / "redis-down.png", full_page=True)

            # 2. An action answers 503: the dialog stays, saying why. Focus starts on Cancel.
            await wallet_a.locator("button.stop").click()
            await expect(page.locator("#confirm button[value=cancel]")).to_be_focused()
            await page.click("#confirm-ok")
            error = page.locator("#confirm-error")
            await expect(error).to_contain_text("Failed: Redis does not answer")
            await expect(error).to_contain_text("(HTTP 503)")
            await expect(page.locator("#confirm")).to_be_visible()
            await page.screenshot(path=tmp_path / "redis-down-action.png")

            # 3. Redis is back while the dialog is open: the banner goes. Escape closes the
            #    dialog without running the action again; the focus returns to the button.
            await asyncio.to_thread(redis_server.start)
            await expect(banner).to_be_hidden(timeout=15_000)
            await page.keyboard.press("Escape")
            await expect(page.locator("#confirm")).to_be_hidden()
            await expect(wallet_a.locator("button.stop")).to_be_focused()

            # 4. New spend shows: the calls pass (team-a was not stopped), the wallet's spend
            #    moves at once, and no event is lost: the sidecar's event writer tries again
            #    when its pooled connection died with the old Redis.
            await chat(team_a)
            await expect(wallet_a.locator(".spent")).not_to_have_text(spent)
            await chat(team_a)
            await expect(agent.locator(".calls")).to_have_text("3")
            await expect(page.locator('#feed tr[data-kind="call"]')).to_have_count(3)
            await expect(wallet_a).to_have_attribute("data-suspended", "false")
            await expect(page.locator('#feed tr[data-kind="action"]')).to_have_count(0)
            assert await stop_button.evaluate("(button) => button.isConnected")
    finally:
        await team_a.close()


async def spread_calls(
    redis: Redis, namespace: str, count: int, over_s: float, cost_usd: str
) -> None:
    """``count`` calls of ``namespace`` spread evenly over the last ``over_s`` seconds."""
    now = time.time()
    for index in range(count):
        fields = {
            "kind": "call",
            "ts": f"{now - over_s + index * over_s / count:.3f}",
            "namespace": namespace,
            "agent": f"{namespace}-bot",
            "model": "gpt-4o-mini",
            "decision": "allow",
            "status": "200",
            "cost_usd": cost_usd,
            "input_tokens": "1234567",
            "output_tokens": "4321",
        }
        await redis.xadd(STREAM, fields)  # type: ignore[arg-type]


async def test_the_page_at_narrow_and_wide_widths(
    chromium: Path, start_dashboard: StartDashboard, redis: Redis, tmp_path: Path
) -> None:
    """A viewer on a narrow window: no action buttons, tables scroll in their own box, the
    page and the chart fit the window; widened, the chart follows. Screenshots of the chart
    at both widths are kept in the test's folder (its time labels must not overlap)."""
    from playwright.async_api import expect

    for namespace, cost in (("team-a", "0.004321"), ("payments-prod-eu-west", "0.0025")):
        await wallet_of(redis, namespace)
        await spread_calls(redis, namespace, 60, 3600, cost)
    dashboard = await start_dashboard()
    fits = """() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"""
    async with logged_in(chromium, dashboard.url, VIEWER, width=700, height=900) as page:
        await expect(page.locator("#agents tbody tr")).to_have_count(2)
        await expect(page.locator("#chart canvas")).to_have_count(1)
        # A viewer is shown no action at all.
        await expect(page.locator("#who")).to_contain_text("viewer")
        await expect(page.locator("#cluster-stop")).to_be_hidden()
        await expect(page.locator("#wallets thead th").last).to_be_hidden()
        await expect(page.locator("#wallets tbody tr")).to_have_count(2)
        assert await page.locator("#wallets button").count() == 0
        # Amounts and counts are grouped: 60 calls of 1,234,567 tokens in.
        agent = page.locator('#agents tr[data-agent="team-a-bot"]')
        await expect(agent.locator("td").nth(3)).to_have_text("74,074,020")
        await expect(agent.locator(".spent")).to_have_text("$0.259260")
        await expect(page.locator("#chart")).to_have_attribute(
            "aria-label", re.compile(r": payments-prod-eu-west \$0\.150000, team-a \$0\.259260$")
        )

        for width in (700, 420):
            await page.set_viewport_size({"width": width, "height": 900})
            await page.wait_for_function(
                "(w) => document.querySelector('#chart .uplot').offsetWidth <= w", arg=width
            )
            assert await page.evaluate(fits), f"the page is wider than a {width} px window"
            chart = await page.locator("#chart").bounding_box()
            plot = await page.locator("#chart .uplot").bounding_box()
            assert chart is not None
            assert plot is not None
            assert plot["x"] + plot["width"] <= chart["x"] + chart["width"] + 1
            await page.locator("#chart").screenshot(path=tmp_path / f"chart-{width}.png")
        # At 420 px the wallets do not fit: their table scrolls in its own box.
        wallets = page.locator("#wallets").locator("xpath=..")
        assert await wallets.evaluate("(box) => box.scrollWidth > box.clientWidth")
        await page.screenshot(path=tmp_path / "page-420.png", full_page=True)

        await page.set_viewport_size({"width": 1400, "height": 900})
        # A function, not an expression: Playwright would eval() an expression while polling,
        # which the page's Content-Security-Policy forbids.
        await page.wait_for_function(
            "() => document.querySelector('#chart .uplot').offsetWidth > 1200"
        )
        assert await page.evaluate(fits)
        await page.locator("#chart").screenshot(path=tmp_path / "chart-1400.png")


async def test_redis_down_is_shown(
    start_dashboard: StartDashboard, redis_server: RedisServer
) -> None:
    dashboard = await start_dashboard(max_backoff_s=0.5)

    async def source_ok(client: aiohttp.ClientSession, ok: bool) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                async with client.get("/api/view") as response:
                    view: dict[str, Any] = await response.json()
                if view["source"]["ok"] is ok:
                    return view
                await asyncio.sleep(0.1)

    async with session(dashboard.url) as client:
        await login(client, VIEWER)
        await source_ok(client, True)
        redis_server.stop()
        down = await source_ok(client, False)
        assert "Redis does not answer" in down["source"]["detail"]
        redis_server.start()
        await source_ok(client, True)
