"""Library mode: the sidecar's metered pipeline in-process, for the official openai and anthropic
SDKs (``import a11i; a11i.instrument()``).

Adapter over ``a11i.sidecar.pipeline``: one ``Pipeline`` (the same wallet, meter, optimizer and
telemetry as the proxy's, from the same ``A11I_*``/``OTEL_*`` settings) runs on an event loop
thread that library mode owns, because the wallet and the admission queue are bound to one loop.
Each SDK client's httpx transport is wrapped (``MeteredTransport``, ``AsyncMeteredTransport``): a
metered call is handed to the pipeline, whose upstream is the client's own transport (its base
URL, TLS, proxies and timeouts apply): a sync transport is driven on worker threads, an async one
on the caller's event loop. Everything else passes through untouched. Refusals come back as the
provider's error answer (402/403, dialect-shaped), so the SDK raises its own ``APIStatusError``.
What it may not do: patch an SDK's or httpx's methods (it wraps the SDK clients' constructors and
swaps the transports of their httpx clients), or fail the host application's call because
metering failed (see ``fail_open``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol, TypeVar, runtime_checkable

import httpx2
from opentelemetry import metrics, trace

from a11i.core.errors import A11iError, InternalError
from a11i.core.routes import Access, route
from a11i.sidecar.app import events_for, wallet_for
from a11i.sidecar.meter import load_meter
from a11i.sidecar.pipeline import (
    Answer,
    Inbound,
    Pipeline,
    Relay,
    StreamCut,
    UpstreamError,
    error_answer,
)
from a11i.sidecar.settings import SidecarSettings, from_env
from a11i.sidecar.wallets.nested import NestedWallet

log = logging.getLogger("a11i.library")

_T = TypeVar("_T")

_SSE: Final = "text/event-stream"

#: The SDK client classes whose constructors library mode wraps (module, class name).
SDK_CLIENTS: Final = (
    ("openai", "OpenAI"),
    ("openai", "AsyncOpenAI"),
    ("anthropic", "Anthropic"),
    ("anthropic", "AsyncAnthropic"),
)


class LibraryError(RuntimeError):
    """Library mode is not in the state the call needs (not instrumented, say)."""


# -- the engine: one pipeline on its own event loop thread ----------------------------------


class Engine:
    """The pipeline and the event loop thread it runs on."""

    def __init__(
        self,
        settings: SidecarSettings,
        *,
        fail_open: bool,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        #: An internal error in metering forwards the call unmetered (else: a 500 answer).
        self.fail_open = fail_open
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="a11i-library", daemon=True)
        #: Streams being ended without a wait (kept: a dropped future could cancel nothing,
        #: but its task must stay referenced until it has run).
        self._closing: set[concurrent.futures.Future[None]] = set()
        meter = load_meter(
            encodings_dir=settings.encodings_dir,
            rate_card_path=settings.rate_card_path,
            tokenizer=settings.tokenizer,
        )
        self.pipeline = Pipeline(
            settings,
            meter,
            wallet_for(settings),
            events_for(settings),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        try:
            self.call(self.pipeline.open())
        except BaseException:
            # What did start (the wallet's thread, the exporters) stops again.
            with contextlib.suppress(Exception):
                self.call(self.pipeline.close())
            self._end_loop()
            raise

    async def _close(self) -> None:
        # Streams still ending are settled before the wallet closes.
        ending = [asyncio.wrap_future(future) for future in self._closing]
        await asyncio.gather(*ending, return_exceptions=True)
        await self.pipeline.close()

    def stop(self) -> None:
        try:
            self.call(self._close())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        try:
            self.call(self.loop.shutdown_default_executor())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()

    def call(self, coroutine: Coroutine[object, object, _T]) -> _T:
        """Run ``coroutine`` on the engine's loop from any other thread; wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close_relay(self, relay: Relay) -> None:
        """End a relayed stream without waiting for it: a sync stream's ``close()`` may run
        from a garbage collection on any thread (the engine's own, a worker holding the
        connection pool's lock that the end needs), where waiting could deadlock."""
        if relay.closed or self.loop.is_closed():
            return
        closing = relay.aclose()
        try:
            future = asyncio.run_coroutine_threadsafe(closing, self.loop)
        except RuntimeError:  # the loop closed meanwhile: nothing left to end
            closing.close()
            return
        self._closing.add(future)
        future.add_done_callback(self._closing.discard)

    async def acall(self, coroutine: Coroutine[object, object, _T]) -> _T:
        """Run ``coroutine`` on the engine's loop; await it from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))


async def _next_chunk(relay: Relay) -> bytes | None:
    """The relay's next chunk, None at its end (a future cannot carry StopAsyncIteration)."""
    try:
        return await relay.__anext__()
    except StopAsyncIteration:
        return None


def _close_dropped(engine: Engine, relay: Relay) -> None:
    """A stream the application dropped without closing it still ends its call (settled, the
    provider's connection released) once it is collected."""
    engine.close_relay(relay)


def _transport_error(error: BaseException) -> httpx2.TransportError | None:
    """The httpx error behind an upstream failure, so the SDK sees what it would have seen
    without a11i (and retries it as it would have)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, httpx2.TransportError):
            return cause
        cause = cause.__cause__
    return None


def _content_type(headers: httpx2.Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _inbound(request: httpx2.Request, body: bytes) -> Inbound | None:
    """The request as the pipeline takes it, None when it is not a metered call."""
    found = route(request.method, request.url.raw_path.decode("ascii", "replace"))
    if found.access is not Access.METERED or found.method_not_allowed:
        return None
    return Inbound(
        route=found,
        url=str(request.url),
        base=f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}",
        headers=request.headers,
        body=body,
        started=time.perf_counter(),
        started_ns=time.time_ns(),
        hung_up=lambda: False,
    )


def _outgoing(
    request: httpx2.Request, url: str, headers: list[tuple[str, str]], body: bytes
) -> httpx2.Request:
    # The request's extensions carry the client's timeouts for this call.
    return httpx2.Request(
        "POST", url, headers=headers, content=body, extensions=dict(request.extensions)
    )


def _upstream_error(error: httpx2.TransportError) -> UpstreamError:
    message = str(error) or type(error).__name__
    return UpstreamError(message, timeout=isinstance(error, httpx2.TimeoutException))


# -- the sync side ---------------------------------------------------------------------------


class _SyncChunks:
    def __init__(self, response: httpx2.Response) -> None:
        self._chunks = response.iter_bytes()

    def __aiter__(self) -> _SyncChunks:
        return self

    def _next(self) -> bytes | None:
        return next(self._chunks, None)

    async def __anext__(self) -> bytes:
        try:
            chunk = await asyncio.to_thread(self._next)
        except httpx2.TransportError as error:
            raise _upstream_error(error) from error
        if chunk is None:
            raise StopAsyncIteration
        return chunk


@dataclass
class _Answer:
    """A provider's answer read through an SDK client's transport."""

    response: httpx2.Response

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return _content_type(self.response.headers)

    def header_items(self) -> Iterable[tuple[str, str]]:
        return self.response.headers.multi_items()

    async def read(self) -> bytes:
        # Read where it was sent (a worker thread, the caller's loop), with the answer.
        return self.response.content


class _SyncAnswer(_Answer):
    def chunks(self) -> _SyncChunks:
        return _SyncChunks(self.response)

    async def close(self) -> None:
        if not self.response.is_closed:
            # Off the loop: closing waits for the connection pool's lock.
            await asyncio.to_thread(self.response.close)


class _SyncUpstream:
    """A sync client's own transport, driven on a worker thread."""

    def __init__(self, transport: httpx2.BaseTransport, request: httpx2.Request) -> None:
        self._transport = transport
        self._request = request
        #: The call went to the provider (so it can never be sent a second time).
        self.sent = False

    def _send(self, request: httpx2.Request) -> httpx2.Response:
        response = self._transport.handle_request(request)
        if _content_type(response.headers) != _SSE:
            try:
                response.read()
            finally:
                response.close()
        return response

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> _SyncAnswer:
        self.sent = True
        outgoing = _outgoing(self._request, url, headers, body)
        try:
            return _SyncAnswer(await asyncio.to_thread(self._send, outgoing))
        except httpx2.TransportError as error:
            raise _upstream_error(error) from error


class _SyncRelayStream(httpx2.SyncByteStream):
    def __init__(self, engine: Engine, relay: Relay) -> None:
        self._engine = engine
        self._relay = relay
        weakref.finalize(self, _close_dropped, engine, relay)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._engine.call(_next_chunk(self._relay))
            except StreamCut as cut:
                raise _transport_error(cut) or httpx2.RemoteProtocolError(str(cut)) from cut
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._engine.close_relay(self._relay)


class MeteredTransport(httpx2.BaseTransport):
    """A sync httpx client's transport, wrapped: metered calls go through the pipeline."""

    def __init__(self, wrapped: httpx2.BaseTransport) -> None:
        self.wrapped = wrapped

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        engine = _engine
        if engine is None:
            return self.wrapped.handle_request(request)
        inbound = _inbound(request, request.read())
        if inbound is None:
            return self.wrapped.handle_request(request)
        upstream = _SyncUpstream(self.wrapped, request)
        try:
            answer = engine.call(engine.pipeline.metered_call(inbound, upstream))
        except A11iError as error:
            transport_error = _transport_error(error)
            if transport_error is not None:
                raise transport_error from None
            answer = error_answer(inbound.route.dialect, error)
        except Exception:
            if not upstream.sent and engine.fail_open:
                log.exception("a11i could not meter a call: forwarded unmetered")
                return self.wrapped.handle_request(request)
            log.exception("a11i could not meter a call")
            answer = _internal_error(inbound, sent=upstream.sent)
        stream = None if answer.stream is None else _SyncRelayStream(engine, answer.stream)
        return _response(answer, request, stream)

    def close(self) -> None:
        self.wrapped.close()


# -- the async side --------------------------------------------------------------------------


class _AsyncChunks:
    """The answer's chunks, read on the caller's loop, handed to the engine's."""

    def __init__(self, response: httpx2.Response, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = response.aiter_bytes()
        self._loop = loop

    def __aiter__(self) -> _AsyncChunks:
        return self

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def __anext__(self) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        try:
            chunk = await asyncio.wrap_future(future)
        except httpx2.TransportError as error:
            raise _upstream_error(error) from error
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()


class _AsyncAnswer(_Answer):
    def __init__(self, response: httpx2.Response, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(response)
        self._loop = loop
        self._chunks: _AsyncChunks | None = None

    def chunks(self) -> _AsyncChunks:
        self._chunks = _AsyncChunks(self.response, self._loop)
        return self._chunks

    async def _close(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
        await self.response.aclose()

    async def close(self) -> None:
        if (self.response.is_closed and self._chunks is None) or self._loop.is_closed():
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), self._loop))


class _AsyncUpstream:
    """An async client's own transport, driven on the caller's event loop."""

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport,
        request: httpx2.Request,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._request = request
        self._loop = loop
        self.sent = False

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if _content_type(response.headers) != _SSE:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> _AsyncAnswer:
        self.sent = True
        outgoing = _outgoing(self._request, url, headers, body)
        future = asyncio.run_coroutine_threadsafe(self._send(outgoing), self._loop)
        try:
            return _AsyncAnswer(await asyncio.wrap_future(future), self._loop)
        except httpx2.TransportError as error:
            raise _upstream_error(error) from error


class _AsyncRelayStream(httpx2.AsyncByteStream):
    def __init__(self, engine: Engine, relay: Relay) -> None:
        self._engine = engine
        self._relay = relay
        weakref.finalize(self, _close_dropped, engine, relay)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await self._engine.acall(_next_chunk(self._relay))
            except StreamCut as cut:
                raise _transport_error(cut) or httpx2.RemoteProtocolError(str(cut)) from cut
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        if not self._engine.loop.is_closed():
            await self._engine.acall(self._relay.aclose())


class AsyncMeteredTransport(httpx2.AsyncBaseTransport):
    """An async httpx client's transport, wrapped: metered calls go through the pipeline."""

    def __init__(self, wrapped: httpx2.AsyncBaseTransport) -> None:
        self.wrapped = wrapped

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        engine = _engine
        if engine is None:
            return await self.wrapped.handle_async_request(request)
        inbound = _inbound(request, await request.aread())
        if inbound is None:
            return await self.wrapped.handle_async_request(request)
        upstream = _AsyncUpstream(self.wrapped, request, asyncio.get_running_loop())
        try:
            answer = await engine.acall(engine.pipeline.metered_call(inbound, upstream))
        except A11iError as error:
            transport_error = _transport_error(error)
            if transport_error is not None:
                raise transport_error from None
            answer = error_answer(inbound.route.dialect, error)
        except Exception:
            if not upstream.sent and engine.fail_open:
                log.exception("a11i could not meter a call: forwarded unmetered")
                return await self.wrapped.handle_async_request(request)
            log.exception("a11i could not meter a call")
            answer = _internal_error(inbound, sent=upstream.sent)
        stream = None if answer.stream is None else _AsyncRelayStream(engine, answer.stream)
        return _response(answer, request, stream)

    async def aclose(self) -> None:
        await self.wrapped.aclose()


def _internal_error(inbound: Inbound, *, sent: bool) -> Answer:
    answer = error_answer(
        inbound.route.dialect, InternalError("a11i failed to handle the request.")
    )
    if sent:
        # The provider has the call already: the SDK must not send it again (it retries 5xx).
        answer.headers.append(("x-should-retry", "false"))
    return answer


def _response(
    answer: Answer,
    request: httpx2.Request,
    stream: httpx2.SyncByteStream | httpx2.AsyncByteStream | None,
) -> httpx2.Response:
    if stream is None:
        return httpx2.Response(
            answer.status, headers=answer.headers, content=answer.body, request=request
        )
    return httpx2.Response(answer.status, headers=answer.headers, stream=stream, request=request)


# -- installing the transports ---------------------------------------------------------------

_lock = threading.Lock()
_engine: Engine | None = None
#: The httpx clients whose transports library mode swapped (restored by ``uninstrument``).
_clients: weakref.WeakSet[httpx2.Client | httpx2.AsyncClient] = weakref.WeakSet()
#: The httpx clients left unmetered on purpose (``uninstrument_client``).
_excluded: weakref.WeakSet[httpx2.Client | httpx2.AsyncClient] = weakref.WeakSet()
#: The SDK constructors library mode wrapped, to put back.
_constructors: dict[type, Callable[..., None]] = {}


def _wrap_sync(transport: object) -> object:
    if isinstance(transport, httpx2.BaseTransport) and not isinstance(transport, MeteredTransport):
        return MeteredTransport(transport)
    return transport


def _wrap_async(transport: object) -> object:
    if isinstance(transport, httpx2.AsyncBaseTransport) and not isinstance(
        transport, AsyncMeteredTransport
    ):
        return AsyncMeteredTransport(transport)
    return transport


def _unwrap(transport: object) -> object:
    if isinstance(transport, MeteredTransport | AsyncMeteredTransport):
        return transport.wrapped
    return transport


def _swap(http: httpx2.Client | httpx2.AsyncClient, change: Callable[[object], object]) -> None:
    """Swap an httpx client's transport and its mounted ones (proxies) through ``change``.
    httpx has no public setter for them: these two attributes are what it routes through."""
    http._transport = change(http._transport)  # type: ignore[assignment]
    http._mounts = {  # type: ignore[assignment]
        pattern: None if mounted is None else change(mounted)
        for pattern, mounted in http._mounts.items()
    }


def _http_client(client: object) -> httpx2.Client | httpx2.AsyncClient:
    if isinstance(client, httpx2.Client | httpx2.AsyncClient):
        return client
    # The SDKs keep their httpx client (the default one, or the one given as ``http_client``)
    # in ``_client``: the one attribute of theirs library mode reads.
    inner = getattr(client, "_client", None)
    if isinstance(inner, httpx2.Client | httpx2.AsyncClient):
        return inner
    raise TypeError(f"a11i cannot instrument a {type(client).__name__}: no httpx client")


def instrument_client(client: object) -> None:
    """Meter one SDK client (``openai.OpenAI``/``AsyncOpenAI``, ``anthropic.Anthropic``/
    ``AsyncAnthropic``, or a bare ``httpx2`` client) created before ``instrument()``: its
    httpx client's transports are wrapped. Idempotent; ``instrument()`` does it for every
    client it finds."""
    http = _http_client(client)
    with _lock:
        if http in _excluded:
            return
        _swap(http, _wrap_sync if isinstance(http, httpx2.Client) else _wrap_async)
        _clients.add(http)


def uninstrument_client(client: object) -> None:
    """Give one client its own transports back, unmetered from now on (a client that talks to
    a sidecar, which meters its calls already). It stays so while library mode runs."""
    http = _http_client(client)
    with _lock:
        _swap(http, _unwrap)
        _clients.discard(http)
        _excluded.add(http)


def _sdk_classes() -> list[type]:
    classes = []
    for module_name, name in SDK_CLIENTS:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return classes


def _hook_constructor(cls: type) -> None:
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]

    @functools.wraps(original)
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        if _engine is not None:
            instrument_client(self)

    _constructors[cls] = original
    cls.__init__ = __init__  # type: ignore[misc]


def _settings(overrides: Mapping[str, object], env: Mapping[str, str] | None) -> SidecarSettings:
    """The sidecar's settings from the environment, each keyword ``name=value`` standing for
    ``A11I_<NAME>`` (``budget_usd=5`` is ``A11I_BUDGET_USD=5``)."""
    merged = dict(os.environ if env is None else env)
    for name, value in overrides.items():
        merged[f"A11I_{name.upper()}"] = value if isinstance(value, str) else str(value)
    return from_env(merged)


def app_tracer_provider() -> trace.TracerProvider | None:
    """The application's global TracerProvider, if it set one (not OpenTelemetry's default
    proxy or no-op provider)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def app_meter_provider() -> metrics.MeterProvider | None:
    """The application's global MeterProvider, if it set one (not OpenTelemetry's default
    proxy or no-op provider)."""
    provider = metrics.get_meter_provider()
    # The API's default is a proxy with no public name: any provider the API itself defines
    # (the proxy, the no-op) means the application set none.
    if type(provider).__module__.startswith("opentelemetry.metrics"):
        return None
    return provider


def instrument(
    *,
    env: Mapping[str, str] | None = None,
    fail_open: bool | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    **overrides: object,
) -> None:
    """Meter and guard every official openai and anthropic SDK client of this process, those
    made before and after this call. Settings come from ``env`` (default ``os.environ``):
    the sidecar's ``A11I_*`` and ``OTEL_*`` variables, each keyword override standing for
    ``A11I_<NAME>``. ``fail_open`` (default: ``A11I_REDIS_FAILURE``, OPEN) says whether a
    call that a11i failed to meter goes on unmetered (True) or is answered 500 (False).
    Spans go to ``tracer_provider``, else to the application's global one if it set one,
    else to the exporter the ``OTEL_*`` settings name; metrics likewise to ``meter_provider``
    or the application's global MeterProvider, else by the ``OTEL_*`` settings."""
    global _engine
    with _lock:
        if _engine is not None:
            raise LibraryError("a11i is instrumented already: uninstrument() first")
        settings = _settings(overrides, env)
        engine = Engine(
            settings,
            fail_open=settings.redis_fail_open if fail_open is None else fail_open,
            tracer_provider=tracer_provider or app_tracer_provider(),
            meter_provider=meter_provider or app_meter_provider(),
        )
        engine.start()
        _engine = engine
        classes = _sdk_classes()
        for cls in classes:
            _hook_constructor(cls)
    if classes:
        for found in gc.get_objects():
            if isinstance(found, tuple(classes)):
                instrument_client(found)


def uninstrument() -> None:
    """Undo ``instrument()``: the clients get their own transports back, new clients are not
    instrumented, the wallet and the exporters are flushed and closed."""
    global _engine
    with _lock:
        engine, _engine = _engine, None
        for cls, original in _constructors.items():
            cls.__init__ = original  # type: ignore[misc]
        _constructors.clear()
        for http in list(_clients):
            _swap(http, _unwrap)
        _clients.clear()
        _excluded.clear()
    if engine is not None:
        engine.stop()


def _running() -> Engine:
    engine = _engine
    if engine is None:
        raise LibraryError("a11i is not instrumented: call a11i.instrument() first")
    return engine


def budget() -> dict[str, object]:
    """The wallet in the shape of the sidecar's ``/a11i/budget`` (money as decimal strings)."""
    engine = _running()
    return engine.call(engine.pipeline.budget_report())


@runtime_checkable
class _Administered(Protocol):
    async def suspend(self, on: bool) -> None: ...

    async def top_up(self, amount: Decimal) -> None: ...


async def _administer(pipeline: Pipeline, *, suspend: bool | None, top_up: Decimal | None) -> None:
    wallet = pipeline.wallet
    target = wallet.namespace_wallet if isinstance(wallet, NestedWallet) else wallet
    if not isinstance(target, _Administered):
        raise LibraryError(f"the wallet {type(target).__name__} cannot be administered")
    if suspend is not None:
        await target.suspend(suspend)
    if top_up is not None:
        await target.top_up(top_up)
    with contextlib.suppress(Exception):
        await wallet.snapshot()  # the answer headers' "remaining" follows at once


class WalletAdmin:
    """The namespace wallet's emergency stop and top-up (as the dashboard gives them)."""

    def stop(self) -> None:
        """The emergency stop: every call is refused (403 ``emergency_stop``) until resumed."""
        engine = _running()
        engine.call(_administer(engine.pipeline, suspend=True, top_up=None))

    def resume(self) -> None:
        engine = _running()
        engine.call(_administer(engine.pipeline, suspend=False, top_up=None))

    def top_up(self, usd: Decimal | str | int) -> None:
        """Add ``usd`` to the wallet's limit for the current period."""
        engine = _running()
        engine.call(_administer(engine.pipeline, suspend=None, top_up=Decimal(usd)))


wallet = WalletAdmin()


def current_pipeline() -> Pipeline:
    """The pipeline of the running instrumentation (to add an observer, read its counters)."""
    return _running().pipeline
