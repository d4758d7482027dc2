"""Dashboard sessions end on logout, and token guessing is slowed per client (issue 18, 6).

A real dashboard over a real Redis; the logout is clicked in real Chromium, and the cookie it
held is then replayed from another client, as a thief with a copy would.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from a11i.dashboard.auth import COOKIE, FailureLimiter
from tests.integration.dashboard.test_server import (
    ADMIN,
    StartDashboard,
    login,
    redis,
    redis_server,
    session,
    start_dashboard,
    wallet_of,
)

__all__ = ["redis", "redis_server", "start_dashboard"]  # fixtures shared with test_server


async def test_a_logout_in_the_browser_ends_the_session_for_every_copy_of_its_cookie(
    chromium: Path, start_dashboard: StartDashboard, redis: Redis
) -> None:
    from playwright.async_api import async_playwright, expect

    await wallet_of(redis, "team-a")
    dashboard = await start_dashboard()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(10_000)
            await page.goto(dashboard.url)
            await page.fill("#token", ADMIN)
            await page.click("button[type=submit]")
            await expect(page.locator("#connection")).to_have_text("live")
            copied = next(c["value"] for c in await context.cookies() if c["name"] == COOKIE)
            # The copy works while the session lives...
            assert await _view_status(dashboard.url, copied) == 200
            await page.click("#logout")
            await expect(page.locator("#token")).to_be_visible()
        finally:
            await browser.close()
    # ...and not after the logout, though the cookie has hours left to run.
    assert await _view_status(dashboard.url, copied) == 401


async def _view_status(url: str, cookie: str) -> int:
    async with (
        aiohttp.ClientSession(url, cookies={COOKIE: cookie}) as client,
        client.get("/api/view") as response,
    ):
        return response.status


async def test_guessing_tokens_is_refused_per_client_and_sessions_keep_working(
    start_dashboard: StartDashboard,
) -> None:
    dashboard = await start_dashboard()
    async with session(dashboard.url) as admin:
        await login(admin, ADMIN)  # the real admin, logged in before the attack
        async with aiohttp.ClientSession(dashboard.url) as guesser:
            statuses = []
            for i in range(12):
                headers = {"Authorization": f"Bearer guess-{i}"}
                async with guesser.get("/api/view", headers=headers) as response:
                    statuses.append(response.status)
            assert statuses[:10] == [401] * 10
            assert statuses[10:] == [429, 429]
            # Refused before the token is looked at: even the right one, from this client.
            headers = {"Authorization": f"Bearer {ADMIN}"}
            async with guesser.get("/api/view", headers=headers) as response:
                assert response.status == 429
            async with guesser.post("/login", data={"token": ADMIN}) as response:
                assert response.status == 429
        # The admin's session is a cookie, not a token: unaffected.
        async with admin.get("/api/view") as response:
            assert response.status == 200
    # Another client address is unaffected too (Linux answers all of 127.0.0.0/8).
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(dashboard.url, connector=connector) as other,
        other.get("/api/view", headers={"Authorization": f"Bearer {ADMIN}"}) as response,
    ):
        assert response.status == 200


def test_failures_refill_with_time() -> None:
    now = [0.0]
    limiter = FailureLimiter(burst=2, refill_s=10.0, clock=lambda: now[0])
    limiter.failed("a")
    limiter.failed("a")
    assert not limiter.allowed("a")
    assert limiter.allowed("b")
    assert limiter.retry_after("a") == 10
    now[0] = 10.0
    assert limiter.allowed("a")
