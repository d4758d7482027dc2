"""Real servers for the integration tests: the stand-in provider and a running sidecar.

Both listen on free loopback ports; the official SDKs talk to them over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from a11i.core.meter import Meter
from a11i.core.tokens.counter import TokenCounter
from a11i.sidecar import fastpath
from a11i.sidecar.app import wallet_for
from a11i.sidecar.meter import effective_rate_card, load_meter
from a11i.sidecar.proxy import CallRecord, Sidecar, build_app
from a11i.sidecar.settings import from_env
from tests.support.redis_server import RedisClusterServers
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves an asyncio task behind."""
    before = asyncio.all_tasks()
    yield
    leaked: list[asyncio.Task[object]] = []
    for _ in range(50):
        # Servers shut down by fixtures cancel their handlers; give those a moment to finish.
        await asyncio.sleep(0.02)
        leaked = [
            task
            for task in asyncio.all_tasks() - before
            if task is not asyncio.current_task() and not task.done()
        ]
        if not leaked:
            break
    assert not leaked, f"the test left tasks running: {leaked}"


@pytest.fixture
async def sidecars() -> AsyncIterator[Sidecars]:
    """``a11i sidecar`` processes a test starts (``await sidecars.start(**env)``), stopped
    after it."""
    running = Sidecars()
    yield running
    await running.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """A 3-primary Redis Cluster (``redis-server --cluster-enabled yes``) for one module."""
    servers = RedisClusterServers(primaries=3)
    servers.start()
    yield servers
    servers.close()


#: Debian's Chromium, which Playwright drives in the dashboard's browser tests.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def token_counter() -> TokenCounter:
    """One counter for the session: loading the encodings takes about a second."""
    return load_meter().counter


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    yield server
    await server.stop()


@dataclass
class RunningSidecar:
    """A sidecar serving on a loopback port, with every call it metered."""

    url: str
    sidecar: Sidecar
    #: The fast path in front of its aiohttp application (None with A11I_FAST_PATH=false).
    fast: fastpath.FastPaths | None = None
    records: list[CallRecord] = field(default_factory=list)

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    async def settled(self, count: int) -> list[CallRecord]:
        """The records once ``count`` calls have ended: a streaming client may finish reading
        before the sidecar has closed the stream and settled it."""
        for _ in range(500):
            if len(self.records) >= count:
                break
            await asyncio.sleep(0.01)
        return self.records


SidecarFactory = Callable[..., Awaitable[RunningSidecar]]


@pytest.fixture
async def start_sidecar(
    standin: StandIn, token_counter: TokenCounter
) -> AsyncIterator[SidecarFactory]:
    """Start sidecars with extra ``A11I_*`` settings, pointed at the stand-in provider."""
    runners: list[web.AppRunner] = []

    async def start(*, keepalive_s: float = 75.0, **env: str) -> RunningSidecar:
        assert standin.url is not None
        settings = from_env(
            {
                "A11I_OPENAI_BASE": standin.url,
                "A11I_ANTHROPIC_BASE": standin.url,
                "A11I_NAMESPACE": "team-a",
                "A11I_AGENT": "sre-bot",
                "A11I_WALLET_FILE": ":memory:",
                **env,
            }
        )
        wallet = wallet_for(settings)
        meter = Meter(token_counter, effective_rate_card(settings.rate_card_path))
        sidecar = Sidecar(settings, meter, wallet)
        # Served as ``a11i sidecar`` serves it: the fast path in front of aiohttp (unless the
        # test turns it off with A11I_FAST_PATH=false).
        app = build_app(sidecar)
        fastpath.install(app, sidecar, keepalive_timeout_s=keepalive_s, shutdown_timeout_s=1.0)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = fastpath.site(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        running = RunningSidecar(
            url=f"http://{host}:{port}", sidecar=sidecar, fast=fastpath.paths_of(app)
        )
        sidecar.observers.append(running.records.append)
        return running

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> RunningSidecar:
    """A sidecar with no budget limit."""
    return await start_sidecar()
