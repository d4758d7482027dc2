"""The dashboard's page without its chart library: a real dashboard on a real Redis, asked over
real HTTP, with the server's vendor path pointed at a temporary folder.

The shared checkout's ``static/vendor/`` is never touched (other tests serve it meanwhile):
only the module's ``VENDOR_SCRIPT`` is patched, and the file is created there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from a11i.dashboard import server
from a11i.dashboard.auth import AuthSettings
from a11i.dashboard.server import DashboardSettings, build_app
from a11i.dashboard.source import RedisSource
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    redis = RedisServer()
    redis.start()
    yield redis
    redis.close()


@pytest.fixture
async def dashboard_url(redis_server: RedisServer) -> AsyncIterator[str]:
    settings = DashboardSettings(auth=AuthSettings(admin_token=ADMIN))
    runner = web.AppRunner(
        build_app(settings, RedisSource.from_url(redis_server.url)),
        access_log=None,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_without_the_chart_library_the_page_says_to_build_it(
    dashboard_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor_script = tmp_path / "vendor" / "uPlot.iife.min.js"
    monkeypatch.setattr(server, "VENDOR_SCRIPT", vendor_script)
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(dashboard_url, headers=bearer) as client:
        async with client.get("/") as response:
            assert response.status == 503
            assert response.content_type == "text/html"
            assert "Content-Security-Policy" in response.headers
            body = await response.text()
        assert "chart library is not installed" in body
        assert "build-assets.sh" in body
        assert "app.js" not in body

        # The API still answers meanwhile.
        async with client.get("/api/session") as response:
            assert response.status == 200
            assert (await response.json())["role"] == "admin"
        async with client.get("/api/view") as response:
            assert response.status == 200
            assert (await response.json())["type"] == "view"

        # Once the library is there, the page is served (no restart needed).
        vendor_script.parent.mkdir()
        vendor_script.write_text("/* uPlot */\n", encoding="utf-8")
        async with client.get("/") as response:
            assert response.status == 200
            body = await response.text()
        assert '<script type="module" src="/static/app.js"></script>' in body
        assert "/static/vendor/uPlot.iife.min.js" in body
