"""The sidecar's wiring: settings in, the proxy's state and aiohttp application out.

``a11i sidecar`` serves what ``sidecar_app`` builds and ``a11i up`` embeds it beside the dashboard;
the backends (wallet, events) are chosen here from the settings, once. What it may not do: read
the environment itself (entry points hand it theirs) or import the operator or the dashboard.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from a11i import __version__
from a11i.core.headers import KeyCustody
from a11i.core.model import Provider
from a11i.core.policy import BudgetPolicy
from a11i.sidecar import contract, fastpath
from a11i.sidecar.meter import load_meter
from a11i.sidecar.proxy import Sidecar, build_app
from a11i.sidecar.redis_clients import connect
from a11i.sidecar.settings import SidecarSettings, from_env
from a11i.sidecar.telemetry.events import EventRing, EventSink, RedisEventStream
from a11i.sidecar.telemetry.traces import ScrubbingFilter
from a11i.sidecar.wallets.base import Wallet
from a11i.sidecar.wallets.journal import SpendJournal, journal_path
from a11i.sidecar.wallets.memory import MemoryWallet
from a11i.sidecar.wallets.nested import NestedWallet
from a11i.sidecar.wallets.sqlite import SQLiteWallet, wallet_path

if TYPE_CHECKING:
    from a11i.sidecar.redis_clients import AnyRedis

#: Seconds ``a11i sidecar`` keeps an idle agent connection open (aiohttp's ``web.run_app``'s).
_KEEPALIVE_S: Final = 75.0
#: Connections each Redis client of a sidecar opens at most; more concurrent calls wait for one.
REDIS_CONNECTIONS: Final = 64

log = logging.getLogger("a11i")


def serve(env: Mapping[str, str]) -> int:
    """``a11i sidecar``: serve the proxy until SIGINT/SIGTERM; 2 when it cannot listen (the
    port is taken, ``A11I_HOST`` is no address of this machine)."""
    settings, _sidecar, app = sidecar_app(env)
    app.on_startup.append(freeze_heap)
    try:
        # keepalive_timeout_s: aiohttp's web.run_app's, which served the sidecar before the
        # fast path.
        asyncio.run(
            serve_until_stopped(
                [(app, settings.host, settings.port)], keepalive_timeout_s=_KEEPALIVE_S
            )
        )
    except OSError as error:
        print(
            f"a11i sidecar: cannot listen on {settings.host}:{settings.port} "
            f"(A11I_HOST, A11I_PORT): {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    return 0


async def serve_until_stopped(
    apps: list[tuple[web.Application, str, int]],
    ready: Callable[[], None] | None = None,
    *,
    keepalive_timeout_s: float | None = None,
) -> None:
    """Start every app (all or none; a sidecar's with its fast path in front,
    ``fastpath.site``), call ``ready``, then wait for SIGINT/SIGTERM and clean up in reverse
    order: each port closes, the calls in flight end (up to 60 s), the wallet and telemetry
    are flushed and closed. ``keepalive_timeout_s`` is aiohttp's for idle connections (its
    own default when None). ``a11i sidecar`` serves one app with it, ``a11i up`` two."""
    options: dict[str, Any] = {}
    if keepalive_timeout_s is not None:
        options["keepalive_timeout"] = keepalive_timeout_s
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for app, host, port in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False, **options)
            await runner.setup()
            runners.append(runner)
            await fastpath.site(runner, host, port).start()
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def freeze_heap(_app: web.Application) -> None:
    """``freeze`` as the application's startup hook."""
    freeze()


def freeze() -> None:
    """Once the sidecar has started: the objects alive now (~50,000: the modules, the rate
    card, the telemetry SDKs) live as long as the process, so the cycle collector is told to
    leave them be (``gc.freeze``). A full collection otherwise walks them all every few
    thousand calls, a pause of 30-120 ms for the call it lands on; it now walks only what
    calls made since. Only a11i's own processes do this (``a11i sidecar``, ``a11i up``),
    never a process a11i is a guest in (library mode, the tests)."""
    gc.collect()
    gc.freeze()


def sidecar_app(env: Mapping[str, str]) -> tuple[SidecarSettings, Sidecar, web.Application]:
    """The sidecar's settings, state and application from the environment, logging configured
    (every line through the PII scrubber): what ``a11i sidecar`` serves and ``a11i up``
    embeds."""
    settings = from_env(env)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    meter = load_meter(
        encodings_dir=settings.encodings_dir,
        rate_card_path=settings.rate_card_path,
        tokenizer=settings.tokenizer,
    )
    wallet = wallet_for(settings)
    # The OTLP exporters log every retry of every failed batch; a11i logs export failures
    # itself, once a minute per signal, with the count (and counts them in /a11i/metrics).
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    sidecar = Sidecar(settings, meter, wallet, events_for(settings))
    # Every line the sidecar logs passes the PII scrubber (and never carries a held key).
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter(sidecar.telemetry.scrub_log))
    app = build_app(sidecar)
    fastpath.install(app, sidecar)
    if settings.telemetry.metrics_port is not None:
        app.cleanup_ctx.append(metrics_listener(sidecar, settings))
    log.info(
        "a11i sidecar %s on http://%s:%d (OpenAI %s, Anthropic %s, budget %s, keys held: %s)",
        __version__,
        settings.host,
        settings.port,
        settings.upstream.openai_base,
        settings.upstream.anthropic_base,
        settings.budget.limit_usd if settings.budget.limit_usd is not None else "unlimited",
        held_providers(settings.custody),
    )
    return settings, sidecar, app


def held_providers(custody: KeyCustody) -> str:
    """The providers whose key the sidecar holds, for a person: ``openai, anthropic`` or
    ``none`` (their names only, never a key)."""
    return ", ".join(provider for provider in Provider if custody.key_for(provider)) or "none"


def metrics_app(sidecar: Sidecar) -> web.Application:
    """The metrics listener's application: the Prometheus exposition and the liveness probe,
    nothing else. It listens beyond the pod's loopback, so nothing on it proxies, spends or
    touches a wallet (reading the wallets' figures for the budget gauges is all it does)."""
    app = web.Application()
    app.router.add_get(contract.METRICS, sidecar.prometheus)
    app.router.add_get(contract.HEALTHZ, sidecar.healthz)
    return app


def metrics_listener(
    sidecar: Sidecar, settings: SidecarSettings
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The second listener of ``A11I_METRICS_PORT`` as a cleanup context of the proxy's
    application: up when the proxy starts, closed when it stops."""
    port = settings.telemetry.metrics_port
    host = settings.telemetry.metrics_host

    async def listen(_app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(metrics_app(sidecar), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("metrics on http://%s:%s%s", host, port, contract.METRICS)
            yield
        finally:
            await runner.cleanup()

    return listen


def events_for(settings: SidecarSettings) -> EventSink:
    """The Redis event stream (``a11i:events``, or one per namespace in a Redis Cluster) with
    Redis, else the in-process ring."""
    if settings.redis_url is None:
        return EventRing()
    return RedisEventStream(redis_client(settings), owns_client=True)


def redis_client(settings: SidecarSettings) -> AnyRedis:
    """A client of ``A11I_REDIS_URL`` in ``A11I_REDIS_MODE`` whose pool makes a call wait for a
    free connection (bounded by ``A11I_REDIS_TIMEOUT``) rather than fail."""
    assert settings.redis_url is not None
    return connect(
        settings.redis_url,
        settings.redis_mode,
        master=settings.redis_master,
        sentinel_password=settings.redis_sentinel_password,
        max_connections=REDIS_CONNECTIONS,
        pool_timeout_s=settings.redis_timeout_s,
    )


def wallet_for(settings: SidecarSettings) -> Wallet:
    """The wallet backend the settings ask for: Redis when ``A11I_REDIS_URL`` is set, else the
    embedded SQLite file (or memory, with ``A11I_WALLET_FILE=:memory:``); nested with the
    agent's own wallet (key ``namespace/agent``) when ``A11I_AGENT_BUDGET_USD`` is set."""
    # The namespace's Redis wallet appends each call's event with its settlement (one round
    # trip); the stream is the one ``events_for`` writes the other events to.
    wallet = _backend(settings, settings.namespace, settings.budget, events=True)
    if settings.agent_budget is None:
        return wallet
    own = _backend(settings, f"{settings.namespace}/{settings.agent}", settings.agent_budget)
    return NestedWallet(wallet, own)


def _journal(settings: SidecarSettings, key: str) -> SpendJournal | None:
    """The spend journal of a Redis wallet: beside the embedded wallet file (the sidecar's
    emptyDir in a cluster); none with ``A11I_WALLET_FILE=:memory:``."""
    path = wallet_path(settings.wallet_file)
    return None if path is None else SpendJournal(journal_path(path.parent, key))


def _backend(
    settings: SidecarSettings, key: str, policy: BudgetPolicy, *, events: bool = False
) -> Wallet:
    if settings.redis_url is not None:
        from a11i.sidecar.wallets.redis import RedisWallet

        return RedisWallet(
            redis_client(settings),
            namespace=key,
            agent=settings.agent,
            policy=policy,
            period=settings.period,
            timeout_s=settings.redis_timeout_s,
            fail_open=settings.redis_fail_open,
            quiet_poll_s=settings.redis_refresh_s,
            owns_client=True,
            zone=settings.timezone,
            journal=_journal(settings, key),
            events=events,
        )
    path = wallet_path(settings.wallet_file)
    if path is None:  # A11I_WALLET_FILE=:memory:
        return MemoryWallet(
            policy,
            namespace=key,
            agent=settings.agent,
            period=settings.period,
            zone=settings.timezone,
        )
    return SQLiteWallet(
        path,
        policy,
        namespace=key,
        agent=settings.agent,
        period=settings.period,
        zone=settings.timezone,
    )
