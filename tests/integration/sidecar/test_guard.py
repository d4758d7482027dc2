"""No way around the guard: an agent that writes its own paths, methods and bodies.

A corpus of requests goes to a running sidecar, with key custody on and off and the emergency
stop on and off; each test asserts on what reached the stand-in provider (path and key), not
only on what the agent was answered: nothing billable ever leaves unmetered.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.standin import StandIn

HELD_OPENAI = "sk-held-by-the-sidecar"
HELD_ANTHROPIC = "sk-ant-held-by-the-sidecar"
AGENT_KEY = "sk-the-agents-own"

CHAT = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
).encode()
MESSAGES = json.dumps(
    {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
).encode()
OPENAI_HEADERS = {"Authorization": f"Bearer {AGENT_KEY}", "Content-Type": "application/json"}
ANTHROPIC_HEADERS = {
    "x-api-key": AGENT_KEY,
    "anthropic-version": "2023-06-01",
    "Content-Type": "application/json",
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    def error_type(self) -> object:
        error = self.json()["error"]
        assert isinstance(error, dict)
        return error["type"]


async def send(
    url: str, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> Answer:
    """One request over a raw socket, the target byte for byte as given (an HTTP library
    would normalise the very spellings under test)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    if found.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return Answer(int(status_line.split()[1]), found, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


@pytest.fixture
async def custody(start_sidecar: SidecarFactory) -> RunningSidecar:
    """A sidecar holding both providers' keys, with a budget."""
    return await start_sidecar(
        A11I_OPENAI_API_KEY=HELD_OPENAI,
        A11I_ANTHROPIC_API_KEY=HELD_ANTHROPIC,
        A11I_BUDGET_USD="5",
        A11I_AZURE_DEPLOYMENTS="prod-4o=gpt-4o",
    )


OPENAI_VARIANTS = [
    "/v1/chat/completions",
    "//v1/chat/completions",
    "/v1//chat/completions",
    "/v1/chat/completions/",
    "/v1/./chat/completions",
    "/v1/batches/../chat/completions",
    "/v1%2Fchat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "/v1%252Fchat%252Fcompletions",
    "/V1/Chat/Completions",
    "/v1\\chat\\completions",
    "/v1/chat/completions?x=1",
    "http://api.openai.com/v1/chat/completions",
]


@pytest.mark.parametrize("target", OPENAI_VARIANTS, ids=range(len(OPENAI_VARIANTS)))
async def test_every_spelling_of_a_metered_path_is_metered_and_forwarded_canonical(
    custody: RunningSidecar, standin: StandIn, target: str
) -> None:
    answer = await send(custody.url, "POST", target, OPENAI_HEADERS, CHAT)
    assert answer.status == 200, answer.body
    assert answer.headers["x-a11i-decision"] == "allow"
    assert "x-a11i-cost-usd" in answer.headers
    [forwarded] = standin.requests
    assert forwarded.path == "/v1/chat/completions"
    assert forwarded.headers["authorization"] == f"Bearer {HELD_OPENAI}"
    [record] = await custody.settled(1)
    assert record.settlement is not None
    assert record.settlement.cost_usd > 0
    if "?" in target:
        assert forwarded.query == "x=1"


@pytest.mark.parametrize("target", ["//v1/messages", "/v1/messages/", "/v1/x/%2e%2e/messages"])
async def test_anthropic_variants_are_metered_with_the_held_key(
    custody: RunningSidecar, standin: StandIn, target: str
) -> None:
    answer = await send(custody.url, "POST", target, ANTHROPIC_HEADERS, MESSAGES)
    assert answer.status == 200, answer.body
    assert answer.headers["x-a11i-decision"] == "allow"
    [forwarded] = standin.requests
    assert forwarded.path == "/v1/messages"
    assert forwarded.headers["x-api-key"] == HELD_ANTHROPIC
    assert "authorization" not in forwarded.headers


REFUSED = [
    ("POST", "/v1/batches"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/messages/batches"),
    ("POST", "//v1//messages/batches/"),
    ("POST", "/v1/chat/completions/../../batches"),
    ("POST", "/v1/files"),
    ("POST", "/v1/fine_tuning/jobs"),
    ("POST", "/v1/realtime/sessions"),
    ("POST", "/openai/deployments/prod-4o/images/generations?api-version=2024-10-21"),
    ("GET", "/v1/files"),
    ("DELETE", "/v1/models/gpt-4o"),
    ("POST", "/v2/chat/completions"),
]


@pytest.mark.parametrize(("method", "target"), REFUSED, ids=range(len(REFUSED)))
async def test_under_custody_what_cannot_be_metered_is_refused_and_never_forwarded(
    custody: RunningSidecar, standin: StandIn, method: str, target: str
) -> None:
    answer = await send(custody.url, method, target, OPENAI_HEADERS, b"{}")
    assert answer.status == 403, answer.body
    assert answer.error_type() == "unmetered_endpoint"
    assert "A11I_ALLOW_UNMETERED" in answer.body.decode()
    assert standin.requests == []


async def test_an_anthropic_shaped_refusal_for_an_anthropic_client(
    custody: RunningSidecar, standin: StandIn
) -> None:
    answer = await send(custody.url, "POST", "/v1/messages/batches", ANTHROPIC_HEADERS, b"{}")
    assert answer.status == 403
    assert answer.json()["type"] == "error"
    assert answer.error_type() == "unmetered_endpoint"
    assert standin.requests == []


WRONG_METHODS = [
    ("PUT", "/v1/chat/completions"),
    ("PATCH", "//v1/chat/completions"),
    ("DELETE", "/v1/responses"),
    ("GET", "/v1/messages"),
    ("PUT", "/v1/embeddings/"),
]


@pytest.mark.parametrize(("method", "target"), WRONG_METHODS, ids=range(len(WRONG_METHODS)))
@pytest.mark.parametrize("held", [True, False], ids=["custody", "own-key"])
async def test_a_metered_path_with_another_method_is_405(
    start_sidecar: SidecarFactory, standin: StandIn, method: str, target: str, held: bool
) -> None:
    keys = {"A11I_OPENAI_API_KEY": HELD_OPENAI} if held else {}
    running = await start_sidecar(**keys)
    answer = await send(running.url, method, target, OPENAI_HEADERS, CHAT)
    assert answer.status == 405, answer.body
    assert answer.headers["allow"] == "POST"
    assert answer.error_type() == "method_not_allowed"
    assert standin.requests == []


async def test_free_calls_pass_with_the_held_key(custody: RunningSidecar, standin: StandIn) -> None:
    models = await send(custody.url, "GET", "//v1/models/", {"Authorization": "Bearer x"})
    assert models.status == 200
    count = await send(
        custody.url, "POST", "/v1/messages/count_tokens", ANTHROPIC_HEADERS, MESSAGES
    )
    assert count.status == 200, count.body
    assert [(r.method, r.path) for r in standin.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/messages/count_tokens"),
    ]
    assert standin.requests[0].headers["authorization"] == f"Bearer {HELD_OPENAI}"
    assert standin.requests[1].headers["x-api-key"] == HELD_ANTHROPIC


async def test_an_operator_can_allow_an_unmetered_path(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(
        A11I_OPENAI_API_KEY=HELD_OPENAI, A11I_ALLOW_UNMETERED="GET /v1/files*, POST /v1/batches"
    )
    listed = await send(running.url, "GET", "/v1//files?limit=2", OPENAI_HEADERS)
    assert listed.status == 404  # the stand-in has no files API: what matters is what it saw
    batch = await send(running.url, "POST", "/v1/batches", OPENAI_HEADERS, b"{}")
    assert batch.status == 404
    refused = await send(running.url, "POST", "/v1/files", OPENAI_HEADERS, b"{}")
    assert refused.status == 403
    assert [(r.method, r.path, r.query) for r in standin.requests] == [
        ("GET", "/v1/files", "limit=2"),
        ("POST", "/v1/batches", ""),
    ]
    assert {r.headers["authorization"] for r in standin.requests} == {f"Bearer {HELD_OPENAI}"}


async def test_the_emergency_stop_refuses_every_path_that_can_spend(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(
        A11I_OPENAI_API_KEY=HELD_OPENAI, A11I_ALLOW_UNMETERED="POST /v1/batches"
    )
    own_key = await start_sidecar()
    for sidecar in (running, own_key):
        await sidecar.sidecar.wallet.suspend(True)  # type: ignore[attr-defined]
    for sidecar in (running, own_key):
        for method, target, headers in (
            ("POST", "//v1/chat/completions", OPENAI_HEADERS),
            ("POST", "/v1/messages", ANTHROPIC_HEADERS),
            ("POST", "/v1/batches", OPENAI_HEADERS),
            ("POST", "/v1/images/generations", OPENAI_HEADERS),
        ):
            if sidecar is running and target == "/v1/images/generations":
                continue  # refused as unmetered under custody (tested above)
            answer = await send(sidecar.url, method, target, headers, CHAT)
            assert answer.status == 403, (target, answer.body)
            assert answer.error_type() == "emergency_stop"
    # What cannot spend still answers: a client can list models while stopped.
    models = await send(running.url, "GET", "/v1/models", OPENAI_HEADERS)
    assert models.status == 200
    assert [r.path for r in standin.requests] == ["/v1/models"]


async def test_without_custody_unmetered_calls_pass_with_the_agents_key_until_exhausted(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    running = await start_sidecar(A11I_BUDGET_USD="0.00001")
    passed = await send(running.url, "POST", "/v1/batches", OPENAI_HEADERS, b"{}")
    assert passed.status == 404
    assert standin.requests[-1].headers["authorization"] == f"Bearer {AGENT_KEY}"
    assert running.sidecar.counters.passthrough_calls == 1
    # Spend the wallet as a metered call would: hold the whole limit, then settle it.
    wallet = running.sidecar.wallet
    _verdict, held = await wallet.reserve(Decimal("0.00001"))
    assert held is not None
    await wallet.settle(held, Decimal("0.00001"))
    standin.clear_requests()
    refused = await send(running.url, "POST", "/v1/batches", OPENAI_HEADERS, b"{}")
    assert refused.status == 402, refused.body
    assert refused.error_type() == "budget_exceeded"
    assert standin.requests == []


async def test_a_websocket_upgrade_is_refused_so_clients_fall_back_to_http(
    custody: RunningSidecar, standin: StandIn
) -> None:
    answer = await send(
        custody.url,
        "GET",
        "/v1/responses",
        {
            **OPENAI_HEADERS,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert answer.status == 426
    assert answer.error_type() == "websocket_unsupported"
    assert standin.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"gpt-4o","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"a","content":"b"}]}',
        b'{"model":"gpt-4o","max_tokens":1,"messages":[{"role":"user","content":"a"}],'
        b'"max_tokens":100000}',
    ],
    ids=["model-twice", "nested-key-twice", "cap-twice"],
)
async def test_a_body_with_a_duplicated_key_is_400_and_never_forwarded(
    custody: RunningSidecar, standin: StandIn, body: bytes
) -> None:
    answer = await send(custody.url, "POST", "/v1/chat/completions", OPENAI_HEADERS, body)
    assert answer.status == 400
    assert "twice" in str(answer.json()["error"])
    assert standin.requests == []


@pytest.mark.parametrize(
    ("target", "body"),
    [
        (
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        ),
        (
            "/openai/v1/chat/completions",
            {"model": "prod-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        ),
    ],
    ids=["deployment-path", "v1-api"],
)
async def test_azure_openai_paths_are_metered_as_the_deployments_model(
    custody: RunningSidecar, standin: StandIn, target: str, body: dict[str, object]
) -> None:
    raw = json.dumps(body).encode()
    answer = await send(
        custody.url, "POST", target, {"api-key": AGENT_KEY, "Content-Type": "application/json"}, raw
    )
    assert answer.status == 200, answer.body
    assert "x-a11i-pricing" not in answer.headers  # gpt-4o is on the rate card
    [forwarded] = standin.requests
    assert forwarded.path == urlsplit(target).path
    assert forwarded.query == urlsplit(target).query
    assert forwarded.headers["api-key"] == HELD_OPENAI
    assert forwarded.body == raw  # the agent's body as written, the model not replaced
    [record] = await custody.settled(1)
    assert record.plan.request.model == "gpt-4o"
    assert record.settlement is not None
    assert record.settlement.cost_usd > 0


async def test_a_background_response_is_charged_at_its_projection(
    custody: RunningSidecar, standin: StandIn
) -> None:
    """Its usage is read later through a free GET: settling by what the answer showed (a
    queued response, no output) would let the model's output go unbilled."""
    body = {"model": "gpt-4o-mini", "input": "hi", "background": True, "max_output_tokens": 500}
    answer = await send(
        custody.url, "POST", "/v1/responses", OPENAI_HEADERS, json.dumps(body).encode()
    )
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "queued"
    [record] = await custody.settled(1)
    assert record.settlement is not None
    assert record.settlement.source == "projection"
    assert record.settlement.cost_usd == record.plan.projected_usd
    assert answer.headers["x-a11i-cost-usd"] == answer.headers["x-a11i-projected-cost-usd"]
