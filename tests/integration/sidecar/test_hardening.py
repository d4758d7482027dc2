"""What a misbehaving provider can do to a running sidecar, and what it cannot (issue 18).

The upstream here is a tiny aiohttp server written to lie: it reports usage no request can
have used, echoes the credential it received in its bodies, headers and stream chunks.
Wallets are the real SQLite file and a real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from a11i.core.meter import UsageSource
from tests.integration.conftest import SidecarFactory
from tests.support.redis_server import RedisServer

HELD = "sk-held-by-the-sidecar-0123456789"

CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Which pods are failing?"}],
}


@dataclass
class LyingUpstream:
    """An OpenAI-compatible server that answers with whatever usage it is told to, and can
    echo the credential it received (as some gateways' 401 bodies do)."""

    usage: dict[str, object] = field(
        default_factory=lambda: {"prompt_tokens": 10, "completion_tokens": 2}
    )
    #: Answer 401 echoing the Authorization header in the body, a header and the message.
    echo_key: bool = False
    url: str = ""
    seen_keys: list[str] = field(default_factory=list)
    #: Streams: keep the connection open after [DONE] until this is set (a stalling server).
    release: asyncio.Event | None = None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.seen_keys.append(auth)
        body = await request.json()
        if self.echo_key:
            key = auth.removeprefix("Bearer ")
            error = {
                "error": {
                    "message": f"Incorrect API key provided: {key}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
            return web.json_response(error, status=401, headers={"x-echo-key": key})
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            key = auth.removeprefix("Bearer ")
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": f"ok {key} ok"}}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            last = {**chunk, "choices": [], "usage": self.usage}
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            if self.release is not None:
                await self.release.wait()
            await response.write_eof()
            return response
        answer = {
            "id": "c1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "two words"},
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage,
        }
        return web.json_response(answer)

    async def models(self, request: web.Request) -> web.StreamResponse:
        """A free call whose answer echoes the key, streamed in two chunks that split it."""
        self.seen_keys.append(request.headers.get("Authorization", ""))
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        text = b'{"object": "list", "data": [], "seen": "' + key + b'"}'
        await response.write(text[:45])
        await response.write(text[45:])
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[LyingUpstream]:
    lying = LyingUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", lying.chat)
    app.router.add_get("/v1/models", lying.models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    lying.url = f"http://{host}:{port}"
    yield lying
    await runner.cleanup()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


async def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer agent"}
        ) as answer,
    ):
        return answer.status, dict(answer.headers), await answer.read()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"prompt_tokens": 10**30, "completion_tokens": 2}, id="huge-prompt"),
        pytest.param(
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 100_000_000},
            },
            id="cached-beyond-prompt",
        ),
        pytest.param({"prompt_tokens": 10, "completion_tokens": 10**40}, id="huge-output"),
    ],
)
async def test_an_absurd_usage_is_settled_at_the_sidecars_own_count(
    start_sidecar: SidecarFactory,
    upstream: LyingUpstream,
    redis_server: RedisServer,
    tmp_path: Path,
    store: str,
    usage: dict[str, object],
) -> None:
    upstream.usage = usage
    wallet = (
        {"A11I_WALLET_FILE": str(tmp_path / "wallet.db")}
        if store == "sqlite"
        else {"A11I_REDIS_URL": redis_server.url, "A11I_NAMESPACE": f"bounded-{id(usage)}"}
    )
    running = await start_sidecar(
        A11I_OPENAI_BASE=upstream.url, A11I_BUDGET_USD="1", A11I_REDIS_TIMEOUT="2", **wallet
    )
    for stream in (False, True):
        status, headers, _ = await _post(running.url, {**CHAT, "stream": stream})
        # The provider's good answer reaches the agent: never a 500 for what it reported.
        assert status == 200
        if not stream:
            assert Decimal(headers["x-a11i-cost-usd"]) < Decimal("0.0001")
    records = await running.settled(2)
    assert [r.settlement.source for r in records if r.settlement] == [UsageSource.BOUNDED] * 2
    budget = await _budget(running.url)
    assert budget["calls"]["bounded_usage"] == 2
    # The wallet is charged what the call can have cost, and still has money for the next one.
    assert Decimal(budget["spent_usd"]) < Decimal("0.001")
    status, _, _ = await _post(running.url, CHAT)
    assert status == 200


async def _budget(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(url + "/a11i/budget") as answer:
        body: dict[str, object] = await answer.json()
        return body


async def test_the_held_key_never_comes_back_to_the_agent(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(A11I_OPENAI_BASE=upstream.url, A11I_OPENAI_API_KEY=HELD)
    # The stream's chunks carry the key the provider received.
    status, headers, body = await _post(running.url, {**CHAT, "stream": True})
    assert status == 200
    assert b"[REDACTED:secret]" in body
    # A free call relayed as it streams, the key split across its chunks.
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/v1/models", headers={"Authorization": "Bearer x"}) as answer,
    ):
        assert answer.status == 200
        listed = await answer.read()
    assert b"[REDACTED:secret]" in listed
    # A 401 that echoes the credential in its body and in a header.
    upstream.echo_key = True
    status, headers, body = await _post(running.url, CHAT)
    assert status == 401
    assert headers["x-echo-key"] == "[REDACTED:secret]"
    assert "[REDACTED:secret]" in json.loads(body)["error"]["message"]
    everything = body + listed + json.dumps(headers).encode()
    assert HELD.encode() not in everything
    # The provider did get the held key, every time.
    assert upstream.seen_keys == [f"Bearer {HELD}"] * 3


async def test_a_slow_upload_is_answered_408_and_let_go(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(A11I_OPENAI_BASE=upstream.url, A11I_BODY_READ_TIMEOUT="0.3")
    host, port = running.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(CHAT).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    # The rest of the body never comes: the sidecar answers without waiting for ever.
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"A11I_BODY_READ_TIMEOUT" in answer
    assert upstream.seen_keys == []


async def test_a_number_of_thousands_of_digits_is_a_400(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(A11I_OPENAI_BASE=upstream.url)
    raw = json.dumps(CHAT).replace('"max_tokens": 16', '"max_tokens": ' + "9" * 5000)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            running.url + "/v1/chat/completions",
            data=raw,
            headers={"Content-Type": "application/json"},
        ) as answer,
    ):
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert "cannot read" in error["message"]


async def test_agent_and_tool_names_are_scrubbed_in_every_export(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(
        A11I_OPENAI_BASE=upstream.url, A11I_AGENT="bot-of-alice@example.com"
    )
    tool = "mail_bob@example.com"
    body = {
        **CHAT,
        "tools": [{"type": "function", "function": {"name": tool, "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": tool, "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "error: failed"},
        ],
    }
    status, _, _ = await _post(running.url, body)
    assert status == 200
    await running.settled(1)
    async with aiohttp.ClientSession() as session:
        async with session.get(running.url + "/a11i/metrics") as answer:
            metrics = await answer.text()
        async with session.get(running.url + "/a11i/events") as answer:
            events = await answer.text()
    resource = dict(running.sidecar.telemetry.resource.attributes)
    assert "[REDACTED:email]" in metrics
    assert "[REDACTED:email]" in events
    for exported in (metrics, events, json.dumps(resource)):
        assert "@example.com" not in exported


async def test_metrics_keep_a_bounded_set_of_model_labels(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(A11I_OPENAI_BASE=upstream.url)
    for i in range(80):
        status, _, _ = await _post(running.url, {**CHAT, "model": f"made-up-model-{i}"})
        assert status == 200
    await running.settled(80)
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/a11i/metrics") as answer,
    ):
        metrics = await answer.text()
    models = set(re.findall(r'gen_ai_request_model="([^"]*)"', metrics))
    assert len(models) == 65
    assert "other" in models
    assert "made-up-model-79" not in models


async def test_slow_telemetry_never_holds_up_calls_or_probes(
    start_sidecar: SidecarFactory, upstream: LyingUpstream
) -> None:
    running = await start_sidecar(A11I_OPENAI_BASE=upstream.url)
    stuck = threading.Event()
    threads: list[str] = []

    def slow_observer(_record: object) -> None:
        # Stands for a PII rule that backtracks on a 200-message prompt.
        threads.append(threading.current_thread().name)
        stuck.wait()

    running.sidecar.observers.insert(0, slow_observer)
    try:
        for _ in range(2):
            status, _, _ = await _post(running.url, CHAT)
            assert status == 200
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.url + "/a11i/healthz") as answer,
        ):
            assert answer.status == 200
    finally:
        stuck.set()
    assert len(await running.settled(2)) == 2
    assert threads[0].startswith("a11i-telemetry")


async def test_a_stream_is_settled_before_the_agent_has_its_last_chunk(
    start_sidecar: SidecarFactory, upstream: LyingUpstream, tmp_path: Path
) -> None:
    running = await start_sidecar(
        A11I_OPENAI_BASE=upstream.url,
        A11I_BUDGET_USD="1",
        A11I_WALLET_FILE=str(tmp_path / "wallet.db"),
    )
    upstream.release = asyncio.Event()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                running.url + "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers={"Authorization": "Bearer agent"},
            ) as answer,
        ):
            async for line in answer.content:
                if line.strip() == b"data: [DONE]":
                    break
            # The agent has the whole answer; the call is not over (the provider has not
            # closed): a sidecar killed now must already have charged it, durably.
            budget = await _budget(running.url)
            assert Decimal(str(budget["spent_usd"])) > 0
            assert Decimal(str(budget["reserved_usd"])) == 0
            upstream.release.set()
    finally:
        upstream.release.set()
    records = await running.settled(1)
    assert records[0].complete
    assert records[0].settlement is not None
    assert records[0].settlement.cost_usd == Decimal(str(budget["spent_usd"]))
