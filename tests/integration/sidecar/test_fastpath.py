"""The proxy's fast path against real sockets: metered calls served by it answer exactly as
aiohttp's handler answers them, and every request it is not sure of is aiohttp's, on the same
connection, with the same answer as a sidecar without the fast path.

Each comparison sends the same bytes to two sidecars on the same stand-in, one with the fast path
(as ``a11i sidecar`` serves) and one with ``A11I_FAST_PATH=false``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import aiohttp
import openai
import pytest

from a11i.sidecar import fastpath
from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.sidecar_processes import Sidecars
from tests.support.standin import StandIn

CHAT = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
).encode()
MESSAGES = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello there"}],
    }
).encode()

Response = tuple[int, list[tuple[str, str]], bytes]


def _request(
    body: bytes = CHAT,
    *,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    version: str = "HTTP/1.1",
    headers: Iterable[str] = (),
    length: bool = True,
    host: bool = True,
) -> bytes:
    lines = [
        f"{method} {path} {version}",
        *(["Host: 127.0.0.1"] if host else []),
        "Authorization: Bearer sk-test",
        "Content-Type: application/json",
        *headers,
    ]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _anthropic(body: bytes = MESSAGES, *, headers: Iterable[str] = ()) -> bytes:
    return _request(
        body,
        path="/v1/messages",
        headers=["x-api-key: sk-ant-test", "anthropic-version: 2023-06-01", *headers],
    )


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _response(reader: asyncio.StreamReader) -> Response:
    """One response off the connection (interim 1xx answers skipped)."""
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        if status >= 200:
            break
    headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    named = {name.lower(): value for name, value in headers}
    if "content-length" in named:
        body = await reader.readexactly(int(named["content-length"]))
    elif named.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if size == 0:
                break
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


async def _exchange(url: str, data: bytes) -> Response:
    reader, writer = await _connect(url)
    try:
        writer.write(data)
        return await _response(reader)
    finally:
        writer.close()


def _comparable(response: Response) -> tuple[int, list[tuple[str, str]], object]:
    """A response with what differs from call to call taken out: the Date, the ids and
    timestamps the stand-in numbers."""
    status, headers, body = response
    kept = sorted(
        (name.lower(), value)
        for name, value in headers
        if name.lower() not in {"date", "request-id", "x-request-id"}
    )
    try:
        parsed: object = json.loads(body)
    except ValueError:
        return status, kept, body
    if isinstance(parsed, dict):
        parsed = {k: v for k, v in parsed.items() if k not in {"id", "created", "request_id"}}
    return status, kept, parsed


async def _both(start_sidecar: SidecarFactory, **env: str) -> tuple[RunningSidecar, ...]:
    fast = await start_sidecar(**env)
    plain = await start_sidecar(A11I_FAST_PATH="false", **env)
    assert fast.fast is not None
    assert plain.fast is None
    return fast, plain


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_request(), id="openai-chat"),
        pytest.param(_request(path="/v1/chat/completions?trace=1"), id="query"),
        pytest.param(_anthropic(), id="anthropic-messages"),
        pytest.param(_request(b'{"model": "gpt-4o-mini", "messages": '), id="malformed-json"),
        pytest.param(_request(b"[1, 2]"), id="not-an-object"),
        pytest.param(_request(headers=["x-standin-status: 429"]), id="provider-429"),
        pytest.param(_anthropic(headers=["x-standin-status: 529"]), id="anthropic-529"),
        pytest.param(_request(headers=["Connection: keep-alive"]), id="keep-alive-named"),
        pytest.param(_request(host=False, headers=["Host:"]), id="empty-host"),
        pytest.param(
            _request(json.dumps({"model": "no-such-model", "messages": []}).encode()),
            id="unknown-model",
        ),
    ],
)
async def test_a_metered_call_is_answered_as_aiohttp_answers_it(
    start_sidecar: SidecarFactory, data: bytes
) -> None:
    fast, plain = await _both(start_sidecar)
    through_fast = await _exchange(fast.url, data)
    through_plain = await _exchange(plain.url, data)
    assert _comparable(through_fast) == _comparable(through_plain)
    assert fast.fast is not None
    assert (fast.fast.served, fast.fast.handed_over) == (1, 0)


async def test_a_refusal_is_answered_as_aiohttp_answers_it(start_sidecar: SidecarFactory) -> None:
    fast, plain = await _both(start_sidecar, A11I_BUDGET_USD="0.000001")
    through_fast = await _exchange(fast.url, _request())
    through_plain = await _exchange(plain.url, _request())
    assert through_fast[0] == 402
    assert _comparable(through_fast) == _comparable(through_plain)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /a11i/healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="own-endpoint"),
        pytest.param(_request(host=False), id="no-host"),
        pytest.param(_request(headers=["Host: 127.0.0.2"]), id="two-hosts"),
        pytest.param(_request(b"", method="GET", path="/v1/models"), id="free-path"),
        pytest.param(_request(b"", method="GET"), id="get-on-a-metered-path"),
        pytest.param(
            _request(b"", length=False, headers=["Transfer-Encoding: chunked"])
            + b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT), CHAT),
            id="chunked-upload",
        ),
        pytest.param(_request(headers=["Expect: 100-continue"]), id="expect-continue"),
        pytest.param(_request(headers=["Transfer-Encoding: chunked"]), id="length-and-chunked"),
        pytest.param(_request(headers=[f"Content-Length: {len(CHAT)}"]), id="two-lengths"),
        pytest.param(_request(headers=["Content-Length: 7"]), id="two-different-lengths"),
        pytest.param(_request(headers=["X-Note: a", " folded"]), id="obs-fold"),
        pytest.param(_request(headers=["X-Note: café"]), id="non-ascii-value"),
        pytest.param(_request(headers=["X-Note: " + "n" * 8190]), id="line-over-8190"),
        pytest.param(_request(path="/v1/chat/completions?q=" + "q" * 8190), id="long-target"),
        pytest.param(_request(headers=["X-Note : spaced"]), id="space-before-colon"),
        pytest.param(_request(headers=["Connection: Upgrade", "Upgrade: websocket"]), id="upgrade"),
        pytest.param(_request(version="HTTP/1.0"), id="http-1.0"),
        pytest.param(_request(method="post"), id="lower-case-method"),
        pytest.param(_request(path="http://127.0.0.1/v1/chat/completions"), id="absolute-form"),
        pytest.param(_request(path="/v1/chat/completions#top"), id="fragment"),
        pytest.param(_request(path="/v1/chat/completions?q=<x>"), id="unsafe-target"),
        pytest.param(_request(b"", length=False), id="no-length"),
        pytest.param(_request(b"x" * 2000), id="over-the-size-limit"),
        pytest.param(
            _request().replace(b"Content-Length:", b"Content-Length: +"), id="signed-length"
        ),
    ],
)
async def test_a_request_it_is_not_sure_of_is_aiohttps_with_the_same_answer(
    start_sidecar: SidecarFactory, data: bytes
) -> None:
    fast, plain = await _both(start_sidecar, A11I_MAX_BODY_BYTES="1000")
    through_fast = await _exchange(fast.url, data)
    through_plain = await _exchange(plain.url, data)
    assert _comparable(through_fast) == _comparable(through_plain)
    assert fast.fast is not None
    assert (fast.fast.served, fast.fast.handed_over) == (0, 1)


async def test_a_connection_is_kept_alive_and_handed_over_at_the_first_other_request(
    sidecar: RunningSidecar,
) -> None:
    reader, writer = await _connect(sidecar.url)
    statuses = []
    for data in (
        _request(),
        _anthropic(),
        _request(),
        b"GET /a11i/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        writer.write(data)
        statuses.append((await _response(reader))[0])
    writer.write(_request())  # aiohttp's now, on the same connection
    statuses.append((await _response(reader))[0])
    writer.close()
    assert statuses == [200, 200, 200, 200, 200]
    assert sidecar.fast is not None
    assert (sidecar.fast.served, sidecar.fast.handed_over) == (3, 1)
    assert len(await sidecar.settled(4)) == 4


async def test_pipelined_requests_are_answered_in_order(sidecar: RunningSidecar) -> None:
    reader, writer = await _connect(sidecar.url)
    writer.write(
        _request() + _anthropic() + b"GET /a11i/healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _request()
    )
    answers = [await _response(reader) for _ in range(4)]
    writer.close()
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2])["object"] == "chat.completion"
    assert json.loads(answers[1][2])["type"] == "message"
    assert json.loads(answers[2][2]) == {"status": "ok"}
    assert json.loads(answers[3][2])["object"] == "chat.completion"
    assert sidecar.fast is not None
    assert (sidecar.fast.served, sidecar.fast.handed_over) == (2, 1)


async def test_a_body_that_arrives_in_pieces_is_waited_for(sidecar: RunningSidecar) -> None:
    data = _request()
    head = data.index(b"\r\n\r\n") + 4
    reader, writer = await _connect(sidecar.url)
    for piece in (data[: head - 10], data[head - 10 : head + 5], data[head + 5 : -3], data[-3:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    status, _, body = await _response(reader)
    writer.close()
    assert status == 200
    assert json.loads(body)["usage"]["prompt_tokens"] > 0
    assert sidecar.fast is not None
    assert sidecar.fast.served == 1


async def test_a_slow_body_is_answered_408_and_the_connection_closed(
    start_sidecar: SidecarFactory,
) -> None:
    fast, plain = await _both(start_sidecar, A11I_BODY_READ_TIMEOUT="0.3")
    answers = []
    for running in (fast, plain):
        reader, writer = await _connect(running.url)
        writer.write(_request()[:-10])
        answers.append(await _response(reader))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        writer.close()
    assert answers[0][0] == 408
    assert _comparable(answers[0]) == _comparable(answers[1])
    assert not fast.records  # nothing was forwarded


async def test_connection_close_is_honoured(sidecar: RunningSidecar) -> None:
    reader, writer = await _connect(sidecar.url)
    writer.write(_request(headers=["Connection: close"]))
    status, headers, _ = await _response(reader)
    assert status == 200
    assert ("Connection", "close") in headers
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    start_sidecar: SidecarFactory,
) -> None:
    running = await start_sidecar(keepalive_s=0.2)
    reader, writer = await _connect(running.url)
    writer.write(_request())
    assert (await _response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the sweep closed it
    writer.close()


async def test_an_agent_that_hangs_up_mid_call_is_still_charged(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    standin.configure(delay_ms=300)
    reader, writer = await _connect(sidecar.url)
    writer.write(_request())
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    records = await sidecar.settled(1)
    assert len(records) == 1
    settlement = records[0].settlement
    assert settlement is not None
    assert settlement.cost_usd > 0
    snapshot = await sidecar.sidecar.wallet.snapshot()
    assert snapshot.spent_usd == settlement.cost_usd
    assert snapshot.reserved_usd == 0
    del reader


async def test_a_stream_is_relayed_as_aiohttp_relays_it(start_sidecar: SidecarFactory) -> None:
    fast, plain = await _both(start_sidecar)
    texts = []
    for running in (fast, plain):
        client = openai.AsyncOpenAI(base_url=running.openai_url, api_key="sk-test")
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
        await client.close()
    assert texts[0] == texts[1] != ""
    fast_records, plain_records = await fast.settled(1), await plain.settled(1)
    assert fast_records[0].settlement == plain_records[0].settlement
    assert fast.fast is not None
    assert fast.fast.served == 1


async def test_a_cut_stream_closes_the_agents_connection(
    sidecar: RunningSidecar, standin: StandIn
) -> None:
    standin.configure(cut_after=2)
    client = openai.AsyncOpenAI(base_url=sidecar.openai_url, api_key="sk-test", max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _chunk in stream:
            pass
    await client.close()
    records = await sidecar.settled(1)
    assert records[0].error_type is not None


async def test_a_header_with_a_newline_is_never_written(start_sidecar: SidecarFactory) -> None:
    """An agent's model name travels into a header (the fallback price's): a newline in it
    must not split the answer (a 500, as aiohttp answers)."""
    fast, plain = await _both(start_sidecar)
    body = json.dumps({"model": "x\r\nx-injected: 1", "messages": []}).encode()
    through_fast = await _exchange(fast.url, _request(body))
    through_plain = await _exchange(plain.url, _request(body))
    assert through_fast[0] == through_plain[0]
    assert all(name.lower() != "x-injected" for name, _ in through_fast[1])


async def test_a_stopping_sidecar_ends_the_calls_in_flight(
    sidecars: Sidecars, standin: StandIn
) -> None:
    """``a11i sidecar`` on SIGTERM: the port closes, the call in flight is answered, the
    process exits 0."""
    assert standin.url is not None
    url = await sidecars.start(
        A11I_OPENAI_BASE=standin.url, A11I_ANTHROPIC_BASE=standin.url, A11I_WALLET_FILE=":memory:"
    )
    standin.configure(delay_ms=500)
    reader, writer = await _connect(url)
    idle_reader, idle_writer = await _connect(url)
    writer.write(_request())
    await writer.drain()
    await asyncio.sleep(0.2)
    process = sidecars.processes[-1]
    process.send_signal(signal.SIGTERM)
    status, _, body = await _response(reader)
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # closed, not left hanging
    assert await asyncio.wait_for(process.wait(), 20) == 0
    writer.close()
    idle_writer.close()


#: Bytes a mutation inserts or puts in place of another: the ones HTTP parsers disagree about.
_ODD_BYTES = [b"\r", b"\n", b"\r\n", b"\t", b" ", b":", b",", b"\x00", b"\x7f", b"\x80", b"\xff"]


def _mutated(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one change to its head: a byte inserted, replaced or removed, a line
    repeated, or a name's case changed. The Content-Length's digits are left alone: a shorter
    length leaves the rest of the body as a second request on the connection, which aiohttp
    alone refuses before answering the first (400 for the connection), while the fast path
    answers the first and hands the rest to aiohttp (400 for it): the one known difference,
    the framing being the same (docs/architecture.md)."""
    end = data.index(b"\r\n\r\n") + 4
    head, body = data[:end], data[end:]
    digits = head.index(b"Content-Length: ") + len(b"Content-Length: ")
    kind = rng.randrange(5)
    at = digits
    while digits - 1 <= at <= digits + len(str(len(body))):
        at = rng.randrange(len(head) - 4)
    if kind == 0:
        head = head[:at] + rng.choice(_ODD_BYTES) + head[at:]
    elif kind == 1:
        head = head[:at] + rng.choice(_ODD_BYTES) + head[at + 1 :]
    elif kind == 2:
        head = head[:at] + head[at + 1 :]
    elif kind == 3:
        lines = head.split(b"\r\n")
        line = rng.randrange(1, len(lines) - 2)
        lines.insert(line, lines[line])
        head = b"\r\n".join(lines)
    else:
        head = head[:at] + head[at : at + 1].swapcase() + head[at + 1 :]
    return head + body


async def _outcome(url: str, data: bytes) -> object:
    """The comparable answer, or what became of the connection when there was none."""
    try:
        return _comparable(await asyncio.wait_for(_exchange(url, data), 3))
    except TimeoutError:
        return "no answer"
    except (asyncio.IncompleteReadError, ConnectionError):
        return "closed"


async def test_mutated_heads_are_answered_as_aiohttp_answers_them(
    start_sidecar: SidecarFactory,
) -> None:
    """Random single changes to a metered call's head (seeded): the fast path answers each
    as aiohttp does, serving it or handing it over. A head it frames more loosely than
    aiohttp would show here as a 200 where aiohttp answers 400."""
    fast, plain = await _both(start_sidecar)
    rng = random.Random(19)
    differing = []
    for case in range(150):
        data = _mutated(rng, _anthropic() if case % 3 == 0 else _request())
        through_fast = await _outcome(fast.url, data)
        through_plain = await _outcome(plain.url, data)
        if through_fast != through_plain:
            differing.append((data, through_fast, through_plain))
    for data, through_fast, through_plain in differing[:3]:
        print(data, "\n fast:", through_fast, "\n aiohttp:", through_plain)
    assert not differing
    assert fast.fast is not None
    assert fast.fast.served > 20  # many mutations leave a head the fast path serves
    assert fast.fast.handed_over > 20


async def test_a_stopping_sidecar_settles_a_call_whose_agent_hung_up(
    sidecars: Sidecars, standin: StandIn, tmp_path: Path
) -> None:
    """SIGTERM while a call runs whose agent has already gone: the sidecar waits for the call
    to end and settle before it closes the wallet, so what it spent is in the file."""
    assert standin.url is not None
    env = {
        "A11I_OPENAI_BASE": standin.url,
        "A11I_ANTHROPIC_BASE": standin.url,
        "A11I_WALLET_FILE": str(tmp_path / "wallets.sqlite"),
    }
    url = await sidecars.start(**env)
    standin.configure(delay_ms=600)
    _reader, writer = await _connect(url)
    writer.write(_request())
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()  # the agent goes away
    await asyncio.sleep(0.1)
    process = sidecars.processes[-1]
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    standin.reset_config()
    again = await sidecars.start(**env)
    async with aiohttp.ClientSession() as http, http.get(again + "/a11i/budget") as answer:
        budget = await answer.json()
    assert Decimal(budget["spent_usd"]) > 0
    assert Decimal(budget["reserved_usd"]) == 0


async def test_the_header_lines_kept_are_those_agents_repeat(sidecar: RunningSidecar) -> None:
    """The memo of parsed header lines keeps an agent's repeated lines, never a
    Content-Length (new with each body: it would fill the memo and keep others out) nor a
    credential (no key outlives its request)."""
    reader, writer = await _connect(sidecar.url)
    for words in range(1, 6):
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi " * words}]}
        ).encode()
        writer.write(_request(body, headers=["X-Agent-Note: kept"]))
        assert (await _response(reader))[0] == 200
    writer.close()
    assert "X-Agent-Note: kept" in fastpath._LINES
    kept = [line.lower() for line in fastpath._LINES]
    assert not [line for line in kept if line.startswith(("content-length", "authorization"))]
