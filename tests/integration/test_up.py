"""``a11i up`` on a laptop: the sidecar and the dashboard in one real process, no Redis.

The process is the real command line; agents are the official openai SDK against the stand-in;
the dashboard is read over its real HTTP API and WebSocket, and in Debian's Chromium. A second
``a11i sidecar`` process sharing the wallet file shows that the embedded dashboard sees (and
stops) every sidecar on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.redis_server import free_port
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Summarise the incident in one line."}]


@dataclass
class Process:
    """A real ``a11i`` process, its log kept in a file (a pipe could fill and stall it)."""

    process: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 20)


@dataclass
class Laptop:
    """``a11i up`` and what it is reached by."""

    state: Path
    port: int
    dashboard_port: int
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def token_file(self) -> Path:
        return self.state / "a11i" / "dashboard-admin-token"

    def token(self) -> str:
        return self.token_file.read_text(encoding="utf-8").strip()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    async def run(self, *args: str, env: dict[str, str] | None = None, name: str = "up") -> Process:
        log = self.state / f"{name}-{len(self.processes)}.log"
        handle = log.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a11i.cli",
            *args,
            env=env or self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
        )
        handle.close()
        started = Process(process, log)
        self.processes.append(started)
        return started

    async def up(self) -> Process:
        process = await self.run(
            "up", "--port", str(self.port), "--dashboard-port", str(self.dashboard_port)
        )
        await until_serving(process, self.dashboard + "/healthz")
        await until_serving(process, f"http://127.0.0.1:{self.port}/a11i/readyz")
        return process


async def until_serving(process: Process, url: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as client:
        while True:
            assert process.process.returncode is None, process.output()
            try:
                async with client.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, process.output()
            await asyncio.sleep(0.1)


@pytest.fixture
async def laptop(standin: StandIn, tmp_path: Path) -> AsyncIterator[Laptop]:
    assert standin.url is not None
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("A11I_", "OTEL_")) and key != "XDG_STATE_HOME"
    }
    env.update(
        {
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "A11I_OPENAI_BASE": standin.url,
            "A11I_NAMESPACE": "laptop",
            "A11I_AGENT": "my-agent",
            "A11I_BUDGET_USD": "0.0001",
        }
    )
    (tmp_path / "state").mkdir()
    machine = Laptop(tmp_path / "state", free_port(), free_port(), env)
    yield machine
    for process in machine.processes:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


async def chat(client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=20,
    )


async def spend_all(client: openai.AsyncOpenAI) -> None:
    for _ in range(50):
        await chat(client)


async def act(laptop: Laptop, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(laptop.dashboard) as client,
        client.post(path, json=body, headers=laptop.headers()) as response,
    ):
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer


async def view(laptop: Laptop) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(laptop.dashboard) as client,
        client.get("/api/view", headers=laptop.headers()) as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def wallet(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    found = [w for w in body["namespaces"] if w["namespace"] == namespace]
    assert found, body["namespaces"]
    return found[0]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 5) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def spent_shows(laptop: Laptop) -> dict[str, Any]:
    """The view once the wallet's spend shows (wallets are re-read every half second)."""
    body: dict[str, Any] = {}

    async def spent() -> bool:
        nonlocal body
        body = await view(laptop)
        return float(wallet(body, "laptop")["spent_usd"]) > 0

    await eventually(spent, "the spend shows in the wallet")
    return body


# --- the laptop ---------------------------------------------------------------------------------


async def test_a_laptop_in_one_process(laptop: Laptop) -> None:
    up = await laptop.up()
    # Never open by default: a token was generated, kept private and printed once.
    assert laptop.token_file.stat().st_mode & 0o777 == 0o600
    assert laptop.token() in up.output()
    async with (
        aiohttp.ClientSession(laptop.dashboard) as client,
        client.get("/api/view") as response,
    ):
        assert response.status == 401
    agent = openai.AsyncOpenAI(base_url=laptop.openai_url, api_key="sk-laptop", max_retries=0)
    try:
        # Spend reaches the page's WebSocket as the call ends.
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(
                f"ws://127.0.0.1:{laptop.dashboard_port}/ws", headers=laptop.headers()
            ) as ws,
        ):
            await ws.send_json({"type": "resume", "since": None})
            kinds = [json.loads((await ws.receive(5)).data)["type"] for _ in range(3)]
            assert kinds == ["hello", "view", "events"]
            await chat(agent)
            called = time.monotonic()
            event = await next_call_event(ws)
            assert time.monotonic() - called < 5
        assert event["namespace"] == "laptop"
        assert event["agent"] == "my-agent"
        assert event["decision"] == "allow"
        assert float(event["cost_usd"]) > 0
        body = await spent_shows(laptop)
        assert body["mode"] == "embedded"
        assert body["source"]["ok"] is True
        assert [a["agent"] for a in body["agents"]] == ["my-agent"]

        # The emergency stop from the dashboard: the next call gets 403; resume lifts it.
        await act(laptop, "/api/namespaces/laptop/stop")
        with pytest.raises(openai.PermissionDeniedError) as stopped:
            await chat(agent)
        assert stopped.value.code == "emergency_stop"
        assert wallet(await view(laptop), "laptop")["phase"] == "Suspended"
        await act(laptop, "/api/namespaces/laptop/resume")
        await chat(agent)

        # The wallet runs out (402); a top-up from the dashboard lets the next call through.
        with pytest.raises(openai.APIStatusError) as exhausted:
            await spend_all(agent)
        assert exhausted.value.status_code == 402

        async def blocked() -> bool:
            return bool(wallet(await view(laptop), "laptop")["blocked"] >= 1)

        await eventually(blocked, "the refused call is counted")  # it did not fit what was left
        before = wallet(await view(laptop), "laptop")
        await act(laptop, "/api/namespaces/laptop/top-up", {"amount_usd": "0.01"})
        after = wallet(await view(laptop), "laptop")
        assert float(after["limit_usd"]) == pytest.approx(float(before["limit_usd"]) + 0.01)
        await chat(agent)

        # The cluster-wide stop covers every wallet in the file.
        await act(laptop, "/api/cluster/stop")
        with pytest.raises(openai.PermissionDeniedError):
            await chat(agent)
        assert (await view(laptop))["cluster_stop"] is True
        await act(laptop, "/api/cluster/resume")
        await chat(agent)

        # Every action is in the ring with who did it; the sidecar's own feed shows them too.
        async with aiohttp.ClientSession() as client:
            url = f"http://127.0.0.1:{laptop.port}/a11i/events"
            async with client.get(url) as response:
                events = await response.json()
        actions = [(e["action"], e["actor"]) for e in events if e["kind"] == "action"]
        assert [a for a, _ in actions] == [
            "stop",
            "resume",
            "top_up",
            "cluster_stop",
            "cluster_resume",
        ]
        assert {actor for _, actor in actions} == {"admin:" + fingerprint(laptop.token())}
    finally:
        await agent.close()
    assert await up.stop() == 0


async def next_call_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        message = json.loads((await ws.receive(5)).data)
        if message["type"] == "events":
            calls = [e for e in message["events"] if e["kind"] == "call"]
            if calls:
                event: dict[str, Any] = calls[-1]
                return event


def fingerprint(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:8]


async def test_the_dashboard_sees_and_stops_every_sidecar_on_the_file(laptop: Laptop) -> None:
    await laptop.up()
    other_port = free_port()
    other = await laptop.run(
        "sidecar",
        "--port",
        str(other_port),
        env={**laptop.env, "A11I_NAMESPACE": "side-project", "A11I_BUDGET_USD": "1"},
        name="sidecar",
    )
    await until_serving(other, f"http://127.0.0.1:{other_port}/a11i/readyz")
    agent = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{other_port}/v1", api_key="sk-side", max_retries=0
    )
    try:
        await chat(agent)

        async def listed() -> bool:
            names = {w["namespace"] for w in (await view(laptop))["namespaces"]}
            return {"laptop", "side-project"} <= names

        await eventually(listed, "the other sidecar's wallet is listed")
        await act(laptop, "/api/namespaces/side-project/stop")
        with pytest.raises(openai.PermissionDeniedError):
            await chat(agent)
        side = wallet(await view(laptop), "side-project")
        assert side["suspended"] is True
        assert float(side["spent_usd"]) > 0
        # A namespace with no wallet is not created by an action.
        async with (
            aiohttp.ClientSession(laptop.dashboard) as client,
            client.post(
                "/api/namespaces/nobody/top-up", json={"amount_usd": "1"}, headers=laptop.headers()
            ) as response,
        ):
            assert response.status == 404
            assert "no wallet" in (await response.json())["error"]
    finally:
        await agent.close()
    assert await other.stop() == 0


async def test_spend_survives_a_restart(laptop: Laptop) -> None:
    up = await laptop.up()
    agent = openai.AsyncOpenAI(base_url=laptop.openai_url, api_key="sk-laptop", max_retries=0)
    try:
        await chat(agent)
        spent = wallet(await spent_shows(laptop), "laptop")["spent_usd"]
        assert await up.stop() == 0
        await laptop.up()
        # The wallet file keeps the spend; the token file keeps the login.
        assert wallet(await view(laptop), "laptop")["spent_usd"] == spent
    finally:
        await agent.close()


async def test_bad_setups_are_refused_with_a_message(laptop: Laptop) -> None:
    # The dashboard's port is taken: neither half serves, exit 2 with the reason.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", laptop.dashboard_port))
        taken.listen()
        process = await laptop.run(
            "up", "--port", str(laptop.port), "--dashboard-port", str(laptop.dashboard_port)
        )
        assert await asyncio.wait_for(process.process.wait(), 30) == 2
    assert "cannot listen" in process.output()
    # A token file others can read is refused rather than used.
    laptop.token_file.chmod(0o644)
    process = await laptop.run("up", "--dashboard-port", str(laptop.dashboard_port))
    assert await asyncio.wait_for(process.process.wait(), 30) == 2
    assert "readable by others" in process.output()
    # A malformed budget is a configuration error before anything listens.
    process = await laptop.run(
        "up",
        "--dashboard-port",
        str(laptop.dashboard_port),
        env={**laptop.env, "A11I_BUDGET_USD": "lots"},
    )
    assert await asyncio.wait_for(process.process.wait(), 30) == 2
    assert "A11I_BUDGET_USD" in process.output()


# --- on the base distribution (without the a11i[operator] extra) --------------------------------

#: What only the ``a11i[operator]`` extra installs.
EXTRA_MODULES = ("kopf", "kubernetes", "cryptography")


def without_operator_extra(laptop: Laptop, folder: Path) -> dict[str, str]:
    """The laptop's environment for an interpreter in which the extra's modules cannot be
    imported: a ``sitecustomize`` that maps each to None in ``sys.modules`` (``import kopf``
    then raises ModuleNotFoundError, as on a plain ``pip install a11i``)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        f"import sys\nfor name in {EXTRA_MODULES!r}:\n    sys.modules[name] = None\n",
        encoding="utf-8",
    )
    paths = [str(folder), *filter(None, [laptop.env.get("PYTHONPATH")])]
    return {**laptop.env, "PYTHONPATH": os.pathsep.join(paths)}


async def test_a_laptop_runs_without_the_operator_extra(laptop: Laptop, tmp_path: Path) -> None:
    env = without_operator_extra(laptop, tmp_path / "no-extra")
    # The interpreter really lacks them.
    for name in EXTRA_MODULES:
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import {name}", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        assert await check.wait() == 1, name
    up = await laptop.run(
        "up", "--port", str(laptop.port), "--dashboard-port", str(laptop.dashboard_port), env=env
    )
    await until_serving(up, f"http://127.0.0.1:{laptop.port}/a11i/healthz")
    await until_serving(up, laptop.dashboard + "/healthz")
    async with (
        aiohttp.ClientSession(laptop.dashboard) as client,
        client.get("/", headers=laptop.headers()) as response,
    ):
        assert response.status == 200, await response.text()
        assert "<html" in await response.text()
    # A metered call goes through and shows on the dashboard.
    agent = openai.AsyncOpenAI(base_url=laptop.openai_url, api_key="sk-laptop", max_retries=0)
    try:
        await chat(agent)
    finally:
        await agent.close()
    assert float(wallet(await spent_shows(laptop), "laptop")["spent_usd"]) > 0
    assert await up.stop() == 0, up.output()
    assert "ModuleNotFoundError" not in up.output()


async def test_kubernetes_features_without_the_operator_extra_name_it(
    laptop: Laptop, tmp_path: Path
) -> None:
    env = without_operator_extra(laptop, tmp_path / "no-extra")
    # Never connected to: the missing extra is said before anything is reached.
    redis = f"redis://127.0.0.1:{free_port()}"
    for flags, named in (
        (["--kubernetes-auth"], "--kubernetes-auth needs"),
        (["--agentbudgets", "--insecure-no-auth"], "--agentbudgets needs"),
    ):
        dashboard = await laptop.run(
            "dashboard", "--redis", redis, "--port", str(laptop.dashboard_port), *flags, env=env
        )
        assert await asyncio.wait_for(dashboard.process.wait(), 30) == 2, dashboard.output()
        output = dashboard.output()
        assert named in output
        assert "pip install 'a11i[operator]'" in output
        assert "Traceback" not in output
    # `a11i up` asked for Kubernetes authentication through the environment: the same answer.
    up = await laptop.run(
        "up",
        "--port",
        str(laptop.port),
        "--dashboard-port",
        str(laptop.dashboard_port),
        env={**env, "A11I_DASHBOARD_KUBERNETES_AUTH": "true"},
    )
    assert await asyncio.wait_for(up.process.wait(), 30) == 2, up.output()
    assert "a11i[operator]" in up.output()
    assert "Traceback" not in up.output()


# --- in the browser -----------------------------------------------------------------------------


async def test_the_laptop_dashboard_in_the_browser(
    chromium: Path, laptop: Laptop, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    laptop.env["A11I_BUDGET_USD"] = "5"
    await laptop.up()
    agent = openai.AsyncOpenAI(base_url=laptop.openai_url, api_key="sk-laptop", max_retries=0)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(10_000)
            await page.goto(laptop.dashboard)
            await page.fill("#token", laptop.token())
            await page.click("button[type=submit]")
            await expect(page.locator("#connection")).to_have_text("live")
            await chat(agent)
            await expect(page.locator('#agents tr[data-agent="my-agent"]')).to_have_count(1)
            row = page.locator('#wallets tr[data-namespace="laptop"]')
            await expect(row.locator(".spent")).not_to_have_text("$0.00")
            await row.locator("button.stop").click()
            await page.click("#confirm-ok")
            await expect(row).to_have_attribute("data-suspended", "true")
            with pytest.raises(openai.PermissionDeniedError):
                await chat(agent)
            await page.screenshot(path=tmp_path / "laptop-stopped.png", full_page=True)
        finally:
            await browser.close()
            await agent.close()
    assert (tmp_path / "laptop-stopped.png").stat().st_size > 10_000
