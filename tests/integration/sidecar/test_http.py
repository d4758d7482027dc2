"""The sidecar over raw HTTP: bad input, failing providers, its own endpoints, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.paths import ROOT
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

EXAMPLE_AGENT = ROOT / "examples" / "agent_loop.py"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/v1/chat/completions", b"{nope", {}, 400, "not valid JSON"),
        ("/v1/chat/completions", b"[]", {}, 400, "must be a JSON object"),
        ("/v1/chat/completions", b'{"model": "gpt-4o"}', {}, 400, "'messages' is required"),
        (
            "/v1/chat/completions",
            json.dumps({**CHAT, "max_tokens": "lots"}).encode(),
            {},
            400,
            "'max_tokens' must be a positive integer",
        ),
        ("/v1/embeddings", b'{"model": "text-embedding-3-small", "input": {}}', {}, 400, "input"),
        ("/v1/messages", b"not json", ANTHROPIC_HEADERS, 400, "not valid JSON"),
        (
            "/v1/messages",
            b'{"model": "claude-haiku-4-5", "messages": []}',
            ANTHROPIC_HEADERS,
            400,
            "'max_tokens' is required",
        ),
    ],
    ids=[
        "not-json",
        "array",
        "no-messages",
        "wrong-type",
        "embed-shape",
        "anthropic-not-json",
        "anthropic-no-max-tokens",
    ],
)
async def test_bad_input_gets_a_dialect_shaped_400(
    sidecar: RunningSidecar,
    standin: StandIn,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    async with http.post(sidecar.url + path, data=body, headers=headers) as response:
        assert response.status == status
        payload = await response.json()
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
        assert message in payload["error"]["message"]
    else:
        assert payload["error"]["type"] == "invalid_request_error"
        assert message in payload["error"]["message"]
    assert standin.requests == [], "a request that could not be metered was forwarded"


def exploded(_projected: object) -> None:
    """A wallet backend that fails (its reservation made at once, without awaiting)."""
    raise RuntimeError("wallet backend exploded")


async def test_oversized_body_is_413_and_never_forwarded(
    start_sidecar: SidecarFactory, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    small = await start_sidecar(A11I_MAX_BODY_BYTES="2048")
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
    async with http.post(small.url + "/v1/chat/completions", json=big) as response:
        assert response.status == 413
        payload = await response.json()
    assert payload["error"]["code"] == "request_too_large"
    assert "A11I_MAX_BODY_BYTES" in payload["error"]["message"]

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the limit still holds while reading.
        for _ in range(10):
            yield b" " * 1024

    async with http.post(small.url + "/v1/chat/completions", data=chunked()) as response:
        assert response.status == 413
    assert standin.requests == []


async def test_unknown_model_is_priced_at_the_fallback_and_said_so(
    sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    body = {**CHAT, "model": "acme-llm-9000"}
    async with http.post(
        sidecar.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as response:
        assert response.status == 200
        assert response.headers["x-a11i-pricing"] == "fallback; model=acme-llm-9000"
        assert float(response.headers["x-a11i-cost-usd"]) > 0
    assert sidecar.sidecar.counters.fallback_priced_calls == 1


async def test_provider_down_is_502(
    start_sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    down = await start_sidecar(A11I_OPENAI_BASE=f"http://127.0.0.1:{dead}", A11I_BUDGET_USD="1")
    async with http.post(down.url + "/v1/chat/completions", json=CHAT) as response:
        assert response.status == 502
        payload = await response.json()
    assert payload["error"]["code"] == "upstream_unavailable"
    assert f"127.0.0.1:{dead}" in payload["error"]["message"]
    snapshot = await down.sidecar.wallet.snapshot()
    assert (snapshot.spent_usd, snapshot.reserved_usd) == (0, 0)


async def test_provider_timeout_is_504(
    start_sidecar: SidecarFactory, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    slow = await start_sidecar(A11I_UPSTREAM_READ_TIMEOUT="0.3")
    standin.configure(delay_ms=2000)
    async with http.post(
        slow.url + "/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers=ANTHROPIC_HEADERS,
    ) as response:
        assert response.status == 504
        payload = await response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "upstream_timeout"


async def test_agent_hanging_up_mid_stream_still_settles(
    sidecar: RunningSidecar, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    standin.configure(chunk_delay_ms=50)
    body = {**CHAT, "stream": True}
    async with http.post(
        sidecar.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as response:
        assert response.status == 200
        await response.content.readany()
        response.close()
    (record,) = await sidecar.settled(1)
    assert not record.complete
    assert record.settlement is not None
    assert record.settlement.cost_usd > 0
    snapshot = await sidecar.sidecar.wallet.snapshot()
    assert snapshot.reserved_usd == 0
    assert snapshot.spent_usd == record.settlement.cost_usd


async def test_own_endpoints(start_sidecar: SidecarFactory, http: aiohttp.ClientSession) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="5", A11I_BUDGET_PERIOD="Monthly")
    async with http.get(running.url + "/a11i/healthz") as response:
        assert response.status == 200
    async with http.get(running.url + "/a11i/readyz") as response:
        assert response.status == 200
        ready = await response.json()
    assert ready["exact_token_counts"] is True
    async with http.post(
        running.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"}
    ) as response:
        cost = response.headers["x-a11i-cost-usd"]
        remaining = response.headers["x-a11i-budget-remaining-usd"]
    async with http.get(running.url + "/a11i/budget") as response:
        budget = await response.json()
    assert budget["namespace"] == "team-a"
    assert budget["agent"] == "sre-bot"
    assert budget["limit_usd"] == "5"
    assert budget["spent_usd"] == cost
    assert budget["remaining_usd"] == remaining
    assert budget["reserved_usd"] == "0"
    assert budget["period"] == "Monthly"
    assert budget["state"] == "Green"
    assert budget["period_start"].endswith("-01T00:00:00+00:00")
    assert budget["calls"]["metered"] == 1


async def test_the_a11i_command_runs_the_sidecar(standin: StandIn, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert standin.url is not None
    env = {
        **os.environ,
        "A11I_PORT": str(port),
        "A11I_OPENAI_BASE": standin.url,
        "A11I_OPENAI_API_KEY": "sk-secret-never-logged",
        "A11I_BUDGET_USD": "1",
        "A11I_WALLET_FILE": str(tmp_path / "wallets.sqlite"),
        "A11I_NAMESPACE": "team-a",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "a11i.cli",
        "sidecar",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/a11i/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT
            ) as response:
                assert response.status == 200
                assert response.headers["x-a11i-decision"] == "allow"
            # The operator's switch, from another process, reaches the very next call.
            stop = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "a11i.cli", "wallet", "stop", env=env
            )
            assert await stop.wait() == 0
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT
            ) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "emergency_stop"
            resume = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "a11i.cli", "wallet", "resume", env=env
            )
            assert await resume.wait() == 0
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT
            ) as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), 15)
    log = output.decode()
    assert "a11i sidecar" in log
    assert "sk-secret-never-logged" not in log
    assert standin.requests[-1].headers["authorization"] == "Bearer sk-secret-never-logged"


def test_cost_command_prices_a_file_offline(tmp_path: Path) -> None:
    import subprocess

    request = tmp_path / "request.json"
    request.write_text(json.dumps({**CHAT, "max_tokens": 100}))
    result = subprocess.run(
        [sys.executable, "-m", "a11i.cli", "cost", str(request), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    priced = json.loads(result.stdout)
    assert priced["dialect"] == "openai.chat"
    assert priced["input_tokens_exact"] is True
    assert priced["input_tokens"] > 0
    assert priced["max_output_tokens"] == 100
    assert float(priced["projected_cost_usd"]) > 0
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    failed = subprocess.run(
        [sys.executable, "-m", "a11i.cli", "cost", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert "not valid JSON" in failed.stderr


async def test_rate_card_file_is_applied_and_reloaded(
    start_sidecar: SidecarFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    card = tmp_path / "rates.yaml"
    card.write_text(
        "models:\n"
        '  acme-llm: {input_per_mtok: "100000", output_per_mtok: "0", context_window: 1000}\n'
    )
    running = await start_sidecar(A11I_RATE_CARD=str(card), A11I_RELOAD_INTERVAL="0.05")
    body = {**CHAT, "model": "acme-llm", "max_tokens": 1}

    async def cost() -> str:
        async with http.post(
            running.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
        ) as response:
            assert response.status == 200
            assert "x-a11i-pricing" not in response.headers
            return response.headers["x-a11i-cost-usd"]

    # $0.10 per token, output free: the cost is a tenth of the provider's prompt_tokens.
    first = Decimal(await cost())
    settled = (await running.settled(1))[-1].settlement
    assert settled is not None
    assert first == Decimal(settled.usage.input_tokens) / 10

    card.write_text(
        "models:\n"
        '  acme-llm: {input_per_mtok: "200000", output_per_mtok: "0", context_window: 1000}\n'
    )
    for _ in range(200):
        if running.sidecar.counters.rate_card.done:
            break
        await asyncio.sleep(0.02)
    assert running.sidecar.counters.rate_card.done == 1
    assert Decimal(await cost()) == 2 * first

    card.write_text("models:\n  acme-llm: {input_per_mtok: lots}\n")
    for _ in range(200):
        if running.sidecar.counters.rate_card.errors:
            break
        await asyncio.sleep(0.02)
    assert running.sidecar.counters.rate_card.errors == 1
    # The broken file is reported; the card in force stays.
    assert Decimal(await cost()) == 2 * first


async def test_the_example_agent_runs_unchanged_behind_the_sidecar(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": sidecar.openai_url, "OPENAI_API_KEY": "sk-example"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE_AGENT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    # Turn 1 calls get_pods, turn 2 reads its result and answers.
    assert "turn 1: decision=allow" in text
    assert "turn 2: decision=allow" in text
    assert "answer: " in text
    assert len(await sidecar.settled(2)) == 2
    assert (await sidecar.settled(2))[1].plan.tool_results[0].tool_call_id.startswith("call_")


async def test_a_failing_observer_never_breaks_the_call(
    sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    def broken(_record: object) -> None:
        raise RuntimeError("exporter down")

    sidecar.sidecar.observers.insert(0, broken)
    async with http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"}
    ) as response:
        assert response.status == 200
    assert len(await sidecar.settled(1)) == 1  # observers after the broken one still ran


async def test_an_internal_failure_is_a_dialect_shaped_500_and_nothing_is_forwarded(
    sidecar: RunningSidecar,
    standin: StandIn,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing_reserve(_projected: object) -> None:
        raise RuntimeError("wallet backend exploded")

    monkeypatch.setattr(sidecar.sidecar.wallet, "reserve", failing_reserve)
    # The embedded wallet's reservation made at once on the loop fails alike.
    monkeypatch.setattr(sidecar.sidecar.wallet, "reserve_now", exploded, raising=False)
    async with http.post(
        sidecar.url + "/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        },
        headers=ANTHROPIC_HEADERS,
    ) as response:
        assert response.status == 500
        payload = await response.json()
    assert payload == {
        "type": "error",
        "error": {"type": "a11i_internal_error", "message": "a11i failed to handle the request."},
    }
    assert standin.requests == []


async def test_every_decision_and_settlement_is_an_event(
    start_sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="0.001")
    headers = {"Authorization": "Bearer k"}
    async with http.post(
        running.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 10}, headers=headers
    ) as response:
        assert response.status == 200
        cost = response.headers["x-a11i-cost-usd"]
    async with http.post(
        running.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 5000}, headers=headers
    ) as response:
        assert response.status == 402
    # Events are made on the telemetry thread after the answer: wait for both calls' records.
    await running.settled(2)
    async with http.get(running.url + "/a11i/events") as response:
        events = await response.json()
    allowed, blocked = events
    assert allowed["namespace"] == "team-a"
    assert allowed["agent"] == "sre-bot"
    assert allowed["model"] == "gpt-4o"
    assert allowed["decision"] == "allow"
    assert allowed["cost_usd"] == cost
    assert int(allowed["input_tokens"]) > 0
    assert blocked["decision"] == "block"
    assert blocked["status"] == "402"
    assert blocked["cost_usd"] == "0"
    async with http.get(running.url + f"/a11i/events?since={allowed['id']}") as response:
        assert [e["id"] for e in await response.json()] == [blocked["id"]]
    async with http.get(running.url + "/a11i/events?since=abc") as response:
        assert response.status == 400


@pytest.mark.parametrize(
    ("host", "said"),
    [("127.0.0.1", "address already in use"), ("no-such-host.invalid", "cannot listen")],
    ids=["busy-port", "unknown-host"],
)
def test_a_sidecar_that_cannot_listen_says_why_and_exits_2(
    host: str, said: str, tmp_path: Path
) -> None:
    """A busy port or an A11I_HOST that is no address here is a configuration error (exit 2,
    one line on standard error), not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **os.environ,
            "A11I_HOST": host,
            "A11I_PORT": str(taken.getsockname()[1]),
            "A11I_WALLET_FILE": str(tmp_path / "wallets.sqlite"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "a11i", "sidecar"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "a11i sidecar: cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr
