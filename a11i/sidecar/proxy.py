"""The sidecar's HTTP server: an aiohttp reverse proxy that meters, guards and relays LLM calls.

Adapter: parses the agent's request at the edge and runs metered calls through the shared
pipeline (``a11i.sidecar.pipeline``) with the sidecar's lean HTTP/1.1 client as the upstream
(``a11i.sidecar.upstream``); forwards the free and allowed calls itself, through one aiohttp
client session. Both are closed on shutdown. It never logs or exports a credential,
and telemetry observers can never fail or delay the traffic they observe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from a11i.core.errors import (
    A11iError,
    BadRequest,
    BodyTooLarge,
    InternalError,
    MethodNotAllowed,
    RequestTimeout,
    UnmeteredEndpoint,
    UpgradeRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from a11i.core.headers import downstream_headers, provider_for_unmetered, upstream_headers
from a11i.core.meter import Meter
from a11i.core.model import Dialect, JSONObject, Provider
from a11i.core.policy import Decision, ExhaustedAction, Verdict, WalletState
from a11i.core.routes import Access, Route, allowed_unmetered, route
from a11i.sidecar import contract
from a11i.sidecar.call import CallRecord
from a11i.sidecar.encodings import resolve_tokenizer
from a11i.sidecar.pipeline import (
    H_COST,
    H_DECISION,
    H_INPUT_TOKENS,
    H_OPTIMIZED,
    H_OUTPUT_CAP,
    H_PRICING,
    H_PROJECTED,
    H_REMAINING,
    H_SATURATION,
    H_TOKEN_COUNT,
    H_WAITED,
    Answer,
    Counters,
    Inbound,
    Observer,
    Pipeline,
    Relay,
    Reloads,
    StreamCut,
    error_answer,
)
from a11i.sidecar.settings import SidecarSettings
from a11i.sidecar.telemetry.events import EventRing, EventSink
from a11i.sidecar.upstream import UpstreamClient, default_tls_context
from a11i.sidecar.wallets.base import Wallet
from a11i.sidecar.wallets.nested import NestedWallet

__all__ = [
    "H_COST",
    "H_DECISION",
    "H_INPUT_TOKENS",
    "H_OPTIMIZED",
    "H_OUTPUT_CAP",
    "H_PRICING",
    "H_PROJECTED",
    "H_REMAINING",
    "H_SATURATION",
    "H_TOKEN_COUNT",
    "H_WAITED",
    "CallRecord",
    "Counters",
    "Observer",
    "Reloads",
    "Sidecar",
    "build_app",
]

log = logging.getLogger(__name__)

_READ_CHUNK: Final = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DIALECT_KEY: Final = web.RequestKey("a11i_dialect", Dialect)
_ROUTE_KEY: Final = web.RequestKey("a11i_route", Route)

#: Characters left as they are when a canonical path is encoded again for the provider
#: (RFC 3986 section 3.3: pchar, minus what would change the path's meaning).
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
_MAX_URLS: Final = 256


class Sidecar(Pipeline):
    """The proxy: the pipeline's state, the upstream clients and the HTTP endpoints."""

    def __init__(
        self,
        settings: SidecarSettings,
        meter: Meter,
        wallet: Wallet,
        events: EventSink | None = None,
    ) -> None:
        super().__init__(settings, meter, wallet, events)
        self._session: aiohttp.ClientSession | None = None
        self._upstream: UpstreamClient | None = None
        #: url_for's answers: a few routes and queries, each agent sending the same ones.
        self._urls: dict[tuple[str, str, str], str] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.upstream.connect_timeout_s,
            sock_read=settings.upstream.read_timeout_s,
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, _app: web.Application) -> None:
        await self.open()
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            # The agent's cookies never reach the provider, and the provider's are not kept.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        upstream = self.settings.upstream
        bases = (upstream.openai_base, upstream.anthropic_base)
        # Reading the trust store takes milliseconds: off the loop, and only when TLS is used.
        tls = (
            await asyncio.to_thread(default_tls_context)
            if any(base.lower().startswith("https:") for base in bases)
            else None
        )
        self._upstream = UpstreamClient(
            connect_timeout_s=upstream.connect_timeout_s,
            read_timeout_s=upstream.read_timeout_s,
            tls_context=tls,
        )

    async def stop(self, _app: web.Application) -> None:
        await self.stop_watching()
        if self._session is not None:
            await self._session.close()
        if self._upstream is not None:
            await self._upstream.close()
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the sidecar has not started")
        return self._session

    @property
    def upstream(self) -> UpstreamClient:
        if self._upstream is None:
            raise RuntimeError("the sidecar has not started")
        return self._upstream

    # -- own endpoints -----------------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        missing = self.meter.counter.missing_encodings
        ready = (
            self._session is not None
            and not self._session.closed
            and self._upstream is not None
            and not self._upstream.closed
        )
        body: JSONObject = {
            "status": "ready" if ready else "starting",
            "exact_token_counts": not missing,
            "missing_encodings": list(missing),
            "tokenizer": str(resolve_tokenizer(self.settings.tokenizer)),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def prometheus(self, _request: web.Request) -> web.Response:
        await self._observe_wallets()
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def recent_events(self, request: web.Request) -> web.Response:
        """The embedded event ring after ``?since=<id>`` (the dashboard's feed on a laptop)."""
        if not isinstance(self.events, EventRing):
            raise BadRequest("Events go to the Redis stream a11i:events; read them there.")
        try:
            since = int(request.query.get("since", "0"))
        except ValueError as error:
            raise BadRequest("'since' must be an event id (a whole number).") from error
        body = [{"id": i, **event} for i, event in self.events.since(since)]
        return web.json_response(body)

    async def budget(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.budget_report())

    # -- metered calls -----------------------------------------------------------------------
    async def metered(self, request: web.Request, route: Route) -> web.StreamResponse:
        assert route.dialect is not None  # a metered route has one
        started = time.perf_counter()
        started_ns = time.time_ns()
        raw = await _read_body(
            request, self.settings.max_body_bytes, self.settings.body_read_timeout_s
        )
        provider = route.dialect.provider
        inbound = Inbound(
            route=route,
            url=self.url_for(provider, route, request.rel_url.raw_query_string),
            base=self.base_for(provider),
            headers=request.headers,
            body=raw,
            started=started,
            started_ns=started_ns,
            hung_up=lambda: _hung_up(request),
        )
        answer = await self.metered_call(inbound, self.upstream)
        if answer.stream is None:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        return await _relay(request, answer, answer.stream)

    # -- unmetered calls ---------------------------------------------------------------------
    async def unmetered(self, request: web.Request, route: Route) -> web.StreamResponse:
        """A call a11i cannot meter. Under key custody it is refused unless an operator
        allowed it (A11I_ALLOW_UNMETERED); otherwise it spends the agent's own key and passes,
        except while the emergency stop is on or the wallet is exhausted: it could spend."""
        method = request.method.upper()
        if self.settings.custody.holds_any and not allowed_unmetered(
            method, route.path, self.settings.guard.allow_unmetered
        ):
            self.counters.refused_unmetered_calls += 1
            log.warning("refused unmetered %s %s: the sidecar holds the key", method, route.path)
            raise UnmeteredEndpoint(
                f"a11i cannot meter {method} {route.path}, and the sidecar holds the provider "
                "key: the call is refused so that it cannot spend outside the budget. An "
                f"operator can allow it unmetered with A11I_ALLOW_UNMETERED='{method} "
                f"{route.path}' (docs/security.md)."
            )
        await self._refuse_when_stopped()
        return await self.passthrough(request, route)

    async def _refuse_when_stopped(self) -> None:
        """The emergency stop and an exhausted wallet refuse every call that could spend."""
        snapshots = [await self.wallet.snapshot()]
        if isinstance(self.wallet, NestedWallet):
            snapshots.append(await self.wallet.agent_wallet.snapshot())
        for snapshot in snapshots:
            if snapshot.state is WalletState.SUSPENDED:
                raise self._refusal(Verdict(Decision.BLOCK, WalletState.SUSPENDED, "stopped"))
            blocks = self.settings.budget.when_exhausted is ExhaustedAction.BLOCK
            if snapshot.state is WalletState.EXHAUSTED and blocks:
                self.counters.blocked_calls += 1
                raise self._refusal(
                    Verdict(
                        Decision.BLOCK,
                        WalletState.EXHAUSTED,
                        f"the wallet {snapshot.namespace} is exhausted",
                    )
                )

    async def passthrough(self, request: web.Request, route: Route) -> web.StreamResponse:
        """Forward a free or allowed call as it is, streamed both ways, counted."""
        provider = route.provider or provider_for_unmetered(request.headers)
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise BodyTooLarge(_too_large(self.settings.max_body_bytes))
        url = URL(self.url_for(provider, route, request.rel_url.raw_query_string), encoded=True)
        headers = upstream_headers(
            request.headers.items(), provider, self.settings.custody, azure=route.azure
        )
        data = (
            _limited(request, self.settings.max_body_bytes, self.settings.body_read_timeout_s)
            if request.body_exists
            else None
        )
        self.counters.passthrough_calls += 1
        log.info(
            "%s %s %s passed through to %s", route.access, request.method, route.path, provider
        )
        try:
            async with self.session.request(
                request.method, url, data=data, headers=headers, timeout=self._timeout
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers=self.redactor.headers(downstream_headers(upstream.headers.items())),
                )
                await response.prepare(request)
                relayed = self.redactor.stream()
                async for chunk in upstream.content.iter_any():
                    await _write(response, relayed.feed(chunk))
                await _write(response, relayed.flush())
                await response.write_eof()
                return response
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The provider at {self.base_for(provider)} timed out.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"The provider at {self.base_for(provider)} could not be reached: "
                f"{type(exc).__name__}."
            ) from exc

    # -- helpers -----------------------------------------------------------------------------
    def url_for(self, provider: Provider, route: Route, query: str) -> str:
        """The provider's URL for a request, percent-encoded: its base, the canonical path
        (never the agent's spelling of it) and the query as sent."""
        base = self.base_for(provider)
        key = (base, route.path, query)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            target = base + quote(route.path, safe=_PATH_SAFE)
            url = self._urls[key] = str(URL(f"{target}?{query}" if query else target, encoded=True))
        return url

    def base_for(self, provider: Provider) -> str:
        upstream = self.settings.upstream
        return upstream.anthropic_base if provider is Provider.ANTHROPIC else upstream.openai_base


async def _relay(request: web.Request, answer: Answer, relay: Relay) -> web.StreamResponse:
    """Write a streamed answer to the agent as it comes. The relay settles the call however
    the stream ends: read to the end, the agent hanging up, the provider cutting it (which is
    passed on: the connection is closed, so the agent's SDK raises instead of seeing a clean
    but truncated answer)."""
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    try:
        await response.prepare(request)
        async for data in relay:
            await response.write(data)
    except (ConnectionResetError, StreamCut):
        # Writing to an agent that hung up (aiohttp's reset error), or a cut provider.
        await relay.aclose()
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await relay.aclose()
    try:
        await response.write_eof()
    except ConnectionResetError:
        log.info("the agent closed the stream of a metered call")
    return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    if data:
        await response.write(data)


async def _read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """Read the body, refusing it as soon as it passes ``limit`` bytes (no unbounded buffer)
    or takes longer than ``timeout_s`` (a slow upload would hold a connection for ever)."""
    if request.content_length is not None:
        if request.content_length > limit:
            raise BodyTooLarge(_too_large(limit))
        # The parser delivers at most Content-Length bytes: read them in one go.
        if request.content.is_eof():
            # All of it has arrived (a small body comes with the headers): nothing to wait for,
            # so no timeout to arm, and no coroutine to run for it.
            return request.content.read_nowait()
        try:
            async with asyncio.timeout(timeout_s):
                return await request.content.read()
        except TimeoutError as exc:
            raise RequestTimeout(too_slow(timeout_s)) from exc
    return b"".join([chunk async for chunk in _limited(request, limit, timeout_s)])


async def _limited(request: web.Request, limit: int, timeout_s: float) -> AsyncIterator[bytes]:
    size = 0
    deadline = asyncio.get_running_loop().time() + timeout_s
    chunks = request.content.iter_chunked(_READ_CHUNK).__aiter__()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise RequestTimeout(too_slow(timeout_s)) from exc
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(_too_large(limit))
        yield chunk


def too_slow(timeout_s: float) -> str:
    return f"The request body took longer than {timeout_s:g} s to arrive (A11I_BODY_READ_TIMEOUT)."


def _too_large(limit: int) -> str:
    return (
        f"The request body is larger than the sidecar's limit of {limit} bytes "
        "(A11I_MAX_BODY_BYTES)."
    )


def _hung_up(request: web.Request) -> bool:
    """The agent closed its connection (aiohttp lets a handler run on after that)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _is_upgrade(request: web.Request) -> bool:
    """A WebSocket (or any protocol) upgrade, RFC 9110 section 7.8."""
    connection = request.headers.get("Connection", "").lower()
    return "upgrade" in connection or "Upgrade" in request.headers


def _answering_errors(handler: Handler) -> Handler:
    """``handler`` with every a11i error turned into an answer in the dialect of the request.
    A wrapper of each route's handler rather than an aiohttp middleware: an application with
    middlewares runs two more coroutine layers on every request (its own and aiohttp's, which
    sets the current app), on the path of every metered call."""

    async def answering(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except RequestTimeout as error:
            # Answer, then close at once: aiohttp would otherwise linger reading the slow body
            # for 10 s more, which is what the timeout is there to stop.
            response = _error_response(request, error)
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            if request.transport is not None:
                request.transport.close()
            return response
        except A11iError as error:
            return _error_response(request, error)
        except Exception:
            # A bug in a11i must still answer the agent in its SDK's shape, and be seen in the
            # log.
            log.exception("internal error while handling %s %s", request.method, request.path)
            return _error_response(request, InternalError("a11i failed to handle the request."))

    return answering


def _error_response(request: web.Request, error: A11iError) -> web.Response:
    known = request.get(_ROUTE_KEY)
    dialect = known.dialect if known is not None else None
    if dialect is None:
        provider = known.provider if known is not None else None
        if (provider or provider_for_unmetered(request.headers)) is Provider.ANTHROPIC:
            dialect = Dialect.ANTHROPIC_MESSAGES
    answer = error_answer(dialect, error)
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


def build_app(sidecar: Sidecar) -> web.Application:
    """The aiohttp application of one sidecar."""
    app = web.Application(client_max_size=sidecar.settings.max_body_bytes)
    app.on_startup.append(sidecar.start)
    app.on_cleanup.append(sidecar.stop)
    app.router.add_get(contract.HEALTHZ, _answering_errors(sidecar.healthz))
    app.router.add_get(contract.READYZ, _answering_errors(sidecar.readyz))
    app.router.add_get(contract.BUDGET, _answering_errors(sidecar.budget))
    app.router.add_get(contract.EVENTS, _answering_errors(sidecar.recent_events))
    app.router.add_get(contract.METRICS, _answering_errors(sidecar.prometheus))

    async def guard(request: web.Request) -> web.StreamResponse:
        # Every path, method and spelling an agent can write goes through here: nothing
        # reaches the provider without a route (docs/security.md).
        if request.method in ("CONNECT", "TRACE"):
            raise MethodNotAllowed(
                f"a11i does not forward {request.method} requests.", allowed=("GET", "POST")
            )
        if _is_upgrade(request):
            raise UpgradeRefused(
                "a11i cannot meter WebSocket sessions (OpenAI Realtime, the Responses API's "
                "WebSocket mode) yet: use the HTTP API (streaming works through a11i)."
            )
        found = route(request.method, request.raw_path)
        request[_ROUTE_KEY] = found
        if found.method_not_allowed:
            raise MethodNotAllowed(
                f"{found.path} is metered and takes only {', '.join(found.allowed)}; a11i "
                f"does not forward {request.method} to it.",
                allowed=found.allowed,
            )
        if found.access is Access.METERED:
            assert found.dialect is not None
            request[_DIALECT_KEY] = found.dialect
            return await sidecar.metered(request, found)
        if found.access is Access.FREE:
            return await sidecar.passthrough(request, found)
        return await sidecar.unmetered(request, found)

    app.router.add_route("*", "/{tail:.*}", _answering_errors(guard))
    return app
