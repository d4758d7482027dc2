"""The metered pipeline: one LLM call planned, decided, forwarded, relayed, settled, observed.

Shared by both modes of a11i: the proxy (``a11i.sidecar.proxy``, over aiohttp) and library mode
(``a11i.library``, over the SDKs' httpx transports) run every metered call through
``Pipeline.metered_call``. It knows no HTTP library: the request comes in as an ``Inbound``
(route, headers, body), the provider is reached through an ``Upstream`` the adapter provides
(whose errors it wraps in ``UpstreamError``), and the answer goes back as an ``Answer``: whole
bytes, or a ``Relay`` of chunks that settles the call when it ends, however it ends. Refusals and
failures are raised as ``A11iError``; ``error_answer`` shapes them in the request's dialect.
What it may not do: import aiohttp or httpx, or read the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Final, Protocol, TypeVar

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from a11i.core.analysis import ResponseFacts, ToolCall, answer_text, response_facts, tool_calls
from a11i.core.capping import CapFit, fit_output_cap
from a11i.core.dialects import error_body, parse_json_body, usage_from_body
from a11i.core.errors import (
    A11iError,
    BudgetExceeded,
    EmergencyStop,
    MethodNotAllowed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from a11i.core.headers import downstream_headers, upstream_headers
from a11i.core.meter import CallPlan, Meter, OutputHistory, Settlement, UsageSource
from a11i.core.model import Dialect, JSONObject, JSONValue, Provider, Usage, usd
from a11i.core.optimizer import (
    CacheContext,
    CacheMemory,
    CachePrices,
    Prints,
    cached_tokens_after,
    check_rewrite,
    estimated_cost,
    has_breakpoints,
    optimize,
    prefix_prints,
    validate_conversation,
)
from a11i.core.policy import Decision, Verdict, WalletState
from a11i.core.pricing import RateCard, RateCardError
from a11i.core.redaction import Redactor
from a11i.core.routes import Route
from a11i.core.streaming import SSEEvent, SSEParser, StreamTracker
from a11i.core.wallets import Reservation
from a11i.sidecar.admission import AdmissionQueue
from a11i.sidecar.call import Call, CallOrigin, CallRecord, Optimization
from a11i.sidecar.config import (
    ConfigError,
    OptimizerConfig,
    TelemetryConfig,
    load_config,
    optimizer_config,
)
from a11i.sidecar.keys import watch_key_files
from a11i.sidecar.meter import effective_rate_card
from a11i.sidecar.settings import SidecarSettings
from a11i.sidecar.telemetry.attributes import scrub_event
from a11i.sidecar.telemetry.events import EventRing, EventSink, call_event
from a11i.sidecar.telemetry.metrics import Metrics
from a11i.sidecar.telemetry.traces import Telemetry, otlp_metric_readers
from a11i.sidecar.wallets.base import Wallet, event_wallet
from a11i.sidecar.wallets.nested import NestedWallet

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: A body key the agent did not send.
_ABSENT: Final = object()

#: Bodies larger than this are counted on a worker thread, off the event loop.
_OFFLOAD_BYTES: Final = 128 * 1024
#: While calls keep ending, the telemetry thread looks for their records this often instead of
#: being woken for each one: a wake-up per call (the thread's, the GIL handed to it and back)
#: cost ~40 us of CPU, half of what observing the call costs. A record waits this long at most
#: (and for the records before it); the first after a quiet spell wakes the thread at once.
_GATHER_S: Final = 0.01

H_DECISION: Final = "x-a11i-decision"
H_INPUT_TOKENS: Final = "x-a11i-input-tokens"
H_TOKEN_COUNT: Final = "x-a11i-token-count"
H_PROJECTED: Final = "x-a11i-projected-cost-usd"
H_COST: Final = "x-a11i-cost-usd"
H_REMAINING: Final = "x-a11i-budget-remaining-usd"
H_PRICING: Final = "x-a11i-pricing"
H_SATURATION: Final = "x-a11i-context-saturation"
H_OPTIMIZED: Final = "x-a11i-optimized"
H_OUTPUT_CAP: Final = "x-a11i-output-cap"
H_WAITED: Final = "x-a11i-admission-wait-ms"


Observer = Callable[[CallRecord], None]


class UpstreamError(Exception):
    """The provider could not be reached, did not answer in time (``timeout``), or cut its
    answer: raised by an ``Upstream`` adapter from its HTTP library's error."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class StreamCut(Exception):
    """The provider cut a streamed answer: the call is settled from what arrived; the adapter
    passes the cut on, so the agent's SDK raises as it would have without a11i."""


class UpstreamAnswer(Protocol):
    """The provider's answer as an ``Upstream`` adapter hands it over."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    def header_items(self) -> Iterable[tuple[str, str]]: ...

    async def read(self) -> bytes:
        """The whole body (``UpstreamError`` when it cannot be read)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (``UpstreamError`` when the provider cuts it)."""
        ...

    async def close(self) -> None:
        """Release the connection (an unread body is dropped)."""
        ...


class Upstream(Protocol):
    """How the pipeline reaches the provider: the proxy's HTTP/1.1 client
    (``a11i.sidecar.upstream``), or the transport of an SDK's own client in library mode."""

    async def post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> UpstreamAnswer:
        """Send the call; ``UpstreamError`` when the provider cannot be reached in time."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """A metered request as the adapter received it."""

    route: Route
    #: Where the call goes: the provider's URL, already percent-encoded.
    url: str
    #: The provider's base as configured, for messages (never a credential).
    base: str
    #: The request's headers (a case-insensitive mapping).
    headers: Mapping[str, str]
    body: bytes
    #: ``time.perf_counter()`` and wall-clock ns when the request arrived.
    started: float
    started_ns: int
    #: Whether the agent has gone away (a call waiting for money stops waiting).
    hung_up: Callable[[], bool]


@dataclass(slots=True)
class Answer:
    """What goes back to the agent: status, headers, and the whole ``body`` or a ``stream``."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: Relay | None = None


class Relay:
    """A streamed answer, relayed chunk by chunk. Iterate it, then always ``aclose()`` it: the
    call is settled and observed when the stream ends, is cut, or is abandoned (even unread).
    Iteration raises ``StreamCut`` when the provider cut the stream."""

    def __init__(
        self, chunks: AsyncGenerator[bytes, None], abandon: Callable[[], Awaitable[None]]
    ) -> None:
        self._chunks = chunks
        self._abandon = abandon
        self._started = False
        self._closed = False

    def __aiter__(self) -> Relay:
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    async def __anext__(self) -> bytes:
        self._started = True
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop relaying (the agent went away, or read all); settles the call if not yet."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._chunks.aclose()
        else:
            # A generator never started runs no finally: settle the call here.
            await self._abandon()


def error_answer(dialect: Dialect | None, error: A11iError) -> Answer:
    """An a11i error as the agent's SDK expects it: its status, the body of its dialect."""
    headers = [("Content-Type", "application/json; charset=utf-8")]
    if isinstance(error, BudgetExceeded | EmergencyStop):
        headers.append((H_DECISION, Decision.BLOCK.value))
    if isinstance(error, MethodNotAllowed):
        headers.append(("Allow", ", ".join(error.allowed)))
    body = json.dumps(error_body(dialect, error)).encode()
    return Answer(status=error.status, headers=headers, body=body)


@dataclass
class Reloads:
    """How often a watched file was applied again, and how often it was refused."""

    done: int = 0
    errors: int = 0

    def as_json(self) -> dict[str, int]:
        return {"reloads": self.done, "reload_errors": self.errors}


@dataclass
class Counters:
    """Totals since start, for ``/a11i/budget`` and the logs."""

    metered_calls: int = 0
    passthrough_calls: int = 0
    #: Unmetered calls refused because the sidecar holds the provider key.
    refused_unmetered_calls: int = 0
    blocked_calls: int = 0
    upstream_errors: int = 0
    fallback_priced_calls: int = 0
    #: Calls whose provider-reported usage was out of bounds (settled at the sidecar's count).
    bounded_usage_calls: int = 0
    #: Metered calls the proxy's fast path served, and connections it handed to aiohttp.
    fast_path_calls: int = 0
    fast_path_handovers: int = 0
    by_decision: dict[str, int] = field(default_factory=dict)
    rate_card: Reloads = field(default_factory=Reloads)
    config: Reloads = field(default_factory=Reloads)


class Pipeline:
    """The metered pipeline's state: settings, meter, wallet, admission, optimizer, observers.

    Bound to the event loop it is opened on (the wallet and the admission queue are)."""

    def __init__(
        self,
        settings: SidecarSettings,
        meter: Meter,
        wallet: Wallet,
        events: EventSink | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.meter = meter
        self.wallet = wallet
        #: The wallet when its settlements carry the calls' events (Redis), else None.
        self._event_wallet = event_wallet(wallet)
        self.events = events if events is not None else EventRing()
        self.outputs = OutputHistory()
        self.telemetry = Telemetry(
            settings, settings.telemetry_config, tracer_provider=tracer_provider
        )
        self.metrics = Metrics(
            namespace=settings.namespace,
            agent=self.telemetry.scrub_name(settings.agent),
            project=settings.project,
            resource=self.telemetry.resource,
            readers=(
                otlp_metric_readers(settings.telemetry, self.telemetry.stats)
                if meter_provider is None
                else ()
            ),
            scrub=self.telemetry.scrub_name,
            export_stats=self.telemetry.stats,
            semconv=self.telemetry.tagging.semconv,
            meter_provider=meter_provider,
        )
        #: Run in order on the telemetry thread, off the event loop: a slow PII rule or a large
        #: captured prompt never holds up another call or the health probes.
        self.observers: list[Observer] = [
            self._record_event,
            self.metrics.record,
            self.telemetry.record,
        ]
        self.counters = Counters()
        #: Calls that wait for money held by calls in flight, in arrival order.
        self.admission = AdmissionQueue(wallet, wait_s=settings.admission.wait_s)
        self._redactor: tuple[object, Redactor] = (None, Redactor(()))
        self._watchers: list[asyncio.Task[None]] = []
        #: The optimizer in force: a11i.yaml's, reloaded when the file changes.
        self.optimizer = settings.optimizer
        #: What the provider caches of recent conversations (the optimizer's money estimate).
        self.caches = CacheMemory()
        # One worker: counting is CPU-bound and holds the GIL; a second thread would only
        # contend for it. The token cache is shared with the loop thread and is thread-safe.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a11i-count")
        # One thread: the scrubber and the observers' state are used by it alone, in order.
        # A plain queue to it (not an executor: no future, idle semaphore and locks per call);
        # None ends it. Started with the first call.
        self._observing: queue.SimpleQueue[CallRecord | None] = queue.SimpleQueue()
        self._telemetry_thread: threading.Thread | None = None
        self._observing_closed = False
        self._observer_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Start the wallet, the event sink and the watchers of the mounted files."""
        self._loop = asyncio.get_running_loop()
        await self.wallet.start()
        await self.events.start()
        if self.settings.rate_card_path is not None:
            self._watch(
                self.settings.rate_card_path,
                effective_rate_card,
                self._apply_rate_card,
                self.counters.rate_card,
            )
        if self.settings.config_path is not None:
            self._watch(
                self.settings.config_path,
                self._load_config,
                self._apply_config,
                self.counters.config,
            )
        self._watchers.append(asyncio.create_task(watch_key_files(self), name="a11i-watch-keys"))
        if self.settings.telemetry.metrics is not None:
            # OTLP exports the budget gauges from its own thread: keep their snapshot fresh.
            self._watchers.append(
                asyncio.create_task(self._observe_wallets_every(), name="a11i-observe-wallets")
            )

    async def stop_watching(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._watchers.clear()

    async def close(self) -> None:
        """Stop watching, release the calls waiting for money, flush what was observed, and
        close the wallet, the events and the exporters."""
        await self.stop_watching()
        await self.admission.close()
        # The calls observed so far reach their events, metrics and spans first.
        await asyncio.get_running_loop().run_in_executor(None, self._stop_observing)
        await self.wallet.close()
        await self.events.close()
        # Flushing may wait for a slow collector (bounded by the export timeout): off the loop.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.metrics.shutdown)
        await loop.run_in_executor(None, self.telemetry.shutdown)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _watch(
        self,
        path: Path,
        load: Callable[[Path], _T],
        apply: Callable[[_T], str],
        reloads: Reloads,
    ) -> None:
        """Apply a changed mounted file (a ConfigMap update swaps it in place) without a
        restart: ``load`` reads it off the loop, ``apply`` swaps it in on the loop. A broken
        file is reported and what is in force stays: a typo in a ConfigMap never makes calls
        free, unpriceable or unguarded."""

        async def watch() -> None:
            seen = _file_version(path)
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.sleep(self.settings.reload_interval_s)
                version = _file_version(path)
                if version == seen:
                    continue
                seen = version
                try:
                    loaded = await loop.run_in_executor(None, load, path)
                except (RateCardError, ConfigError) as error:
                    reloads.errors += 1
                    log.error("%s not reloaded, what is in force stays: %s", path, error)
                    continue
                reloads.done += 1
                log.info("%s reloaded: %s", path, apply(loaded))

        self._watchers.append(asyncio.create_task(watch(), name=f"a11i-watch-{path.name}"))

    def _apply_rate_card(self, card: RateCard) -> str:
        self.meter = Meter(self.meter.counter, card)
        return f"{len(card.models)} models"

    def _load_config(self, path: Path) -> tuple[OptimizerConfig, TelemetryConfig]:
        env = dict(self.settings.optimizer_env)
        file = load_config(path)
        return optimizer_config(file.optimizer, env, source=str(path)), file.telemetry

    def _apply_config(self, loaded: tuple[OptimizerConfig, TelemetryConfig]) -> str:
        self.optimizer, telemetry = loaded
        return f"optimizer settings and {self.telemetry.apply(telemetry)} applied"

    async def _observe_wallets(self) -> None:
        """Hand the wallets' snapshots to the budget gauges; a wallet that cannot answer now
        (Redis away) leaves its last figures in place."""
        wallets = (
            [self.wallet.namespace_wallet, self.wallet.agent_wallet]
            if isinstance(self.wallet, NestedWallet)
            else [self.wallet]
        )
        try:
            snapshots = [await wallet.snapshot() for wallet in wallets]
        except Exception as error:  # telemetry never fails the scrape
            log.debug("wallet snapshot for the budget gauges failed: %s", error)
            return
        self.metrics.observe_wallets(snapshots, time.monotonic())

    async def _observe_wallets_every(self) -> None:
        while True:
            await self._observe_wallets()
            await asyncio.sleep(self.settings.telemetry.metric_interval_s / 2)

    def _record_output(self, record: CallRecord) -> None:
        settled = record.settlement
        if settled is not None and settled.source is UsageSource.PROVIDER:
            prints = record.cache_prints
            request = record.plan.request
            if prints is None and record.prints_after:
                prints = prefix_prints(request.dialect, request.body)
            if prints is not None:
                self.caches.observe(prints, cached_tokens_after(request.dialect, settled.usage))
        if settled is not None and record.complete and record.plan.output_bound:
            choices = record.plan.request.choices
            self.outputs.observe(record.plan.request.model, settled.usage.output_tokens // choices)

    def _record_event(self, record: CallRecord) -> None:
        """Scrubbed here, on the telemetry thread; stored from here in the embedded ring, appended
        on the loop to any other sink (the sinks' own)."""
        if record.event_sent:
            return
        event = self._event_of(record)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if isinstance(self.events, EventRing):
            # Stored from here: no wake-up of the loop per call (unless a reader waits).
            self.events.add_from_thread(event, loop)
            return
        loop.call_soon_threadsafe(self.events.append, event)

    async def budget_report(self) -> dict[str, object]:
        """The wallet and this process's counters: the body of ``/a11i/budget``."""
        snapshot = await self.wallet.snapshot()
        body: dict[str, object] = dict(snapshot.as_json())
        body["calls"] = {
            "metered": self.counters.metered_calls,
            "passthrough": self.counters.passthrough_calls,
            "refused_unmetered": self.counters.refused_unmetered_calls,
            "blocked": self.counters.blocked_calls,
            "upstream_errors": self.counters.upstream_errors,
            "fallback_priced": self.counters.fallback_priced_calls,
            "bounded_usage": self.counters.bounded_usage_calls,
            "fast_path": self.counters.fast_path_calls,
            "fast_path_handovers": self.counters.fast_path_handovers,
        }
        body["store"] = self.wallet.store()
        body["admission"] = {
            "waiting": self.admission.waiting,
            "waited": self.admission.waited,
            "admitted_after_wait": self.admission.admitted_after_wait,
        }
        if isinstance(self.wallet, NestedWallet):
            body["agent_wallet"] = (await self.wallet.agent_wallet.snapshot()).as_json()
        body["token_estimates"] = {"anthropic": self.meter.conversations.errors().as_json()}
        body["rate_card"] = self.counters.rate_card.as_json()
        body["config"] = self.counters.config.as_json()
        body["telemetry"] = {
            **self.telemetry.stats.as_json(),
            "scrubber": self.telemetry.scrub_stats(),
        }
        return body

    # -- metered calls -----------------------------------------------------------------------
    async def metered_call(self, inbound: Inbound, upstream: Upstream) -> Answer:
        """Run one metered call: plan, decide, optimize, forward through ``upstream``, relay,
        settle. A refusal (and any other a11i error) is raised, for the adapter to shape."""
        route = inbound.route
        assert route.dialect is not None  # a metered route has one
        dialect = route.dialect
        started = inbound.started
        origin = CallOrigin.of(inbound.headers, inbound.started_ns)
        raw = inbound.body
        body = parse_json_body(raw)
        sent_model = body.get("model", _ABSENT)
        if route.azure:
            # Azure OpenAI serves a deployment: the path (or the body's "model") names it, and
            # the deployment's model is what is priced; the body goes on as the agent wrote it.
            deployment = route.deployment or (sent_model if isinstance(sent_model, str) else "")
            body = {**body, "model": self.settings.guard.deployment_model(deployment)}
        plan = await self._plan(dialect, body, len(raw))
        if plan.price.is_fallback:
            self.counters.fallback_priced_calls += 1
            log.warning(
                "model %r is not on the rate card: priced at the fallback price",
                plan.request.model,
            )
        verdict, reservation, waited = await self.admission.reserve(
            plan.projected_usd, gone=inbound.hung_up
        )
        forwarded = False
        try:
            call = Call(
                plan=plan, verdict=verdict, origin=origin, started=started, admission_wait_s=waited
            )
            if self.optimizer.enabled and dialect in _CACHED_DIALECTS:
                if len(raw) >= _PRINTS_INLINE_BYTES or self._should_optimize(
                    verdict, reservation is not None
                ):
                    call.cache_prints = await self._prints(dialect, body, len(raw))
                else:
                    # Only the cache memory needs them: taken after the answer has gone.
                    call.prints_after = True
            # A call that does not fit as asked is tried again smaller: its input made smaller by
            # the optimizer, then its output cap fitted to what is left.
            candidate: tuple[CallPlan, Optimization, Prints] | None = None
            if self._should_optimize(verdict, reservation is not None) and call.cache_prints:
                state = verdict.state if reservation is not None else WalletState.RED
                # Admitted as asked, a rewrite must save money net of the prompt cache; refused,
                # any smaller request that fits is worth more than a 402.
                candidate = await self._optimize(
                    plan, state, len(raw), call.cache_prints, net_of_cache=reservation is not None
                )
                if candidate is not None:
                    if reservation is None:
                        retried, reservation = await self.wallet.reserve(candidate[0].projected_usd)
                        if reservation is not None:
                            call.verdict = retried
                    if reservation is not None:
                        # A kept reservation made for the larger request covers the smaller one;
                        # settlement charges what the provider reports.
                        call.plan, call.optimization, call.cache_prints = candidate
            if reservation is None and self._may_fit_cap(call.verdict):
                smaller_plan = candidate[0] if candidate is not None else plan
                fitted = await self._fit_output_cap(smaller_plan, len(raw))
                if fitted is not None:
                    fit_plan, cap = fitted
                    retried, reservation = await self.wallet.reserve(fit_plan.projected_usd)
                    if reservation is not None:
                        call.verdict, call.plan, call.output_cap = retried, fit_plan, cap
                        if candidate is not None:
                            call.optimization, call.cache_prints = candidate[1], candidate[2]
            self.counters.metered_calls += 1
            decision = call.verdict.decision
            self.counters.by_decision[decision] = self.counters.by_decision.get(decision, 0) + 1
            if reservation is None:
                self.counters.blocked_calls += 1
                refusal = self._refusal(call.verdict)
                call.fail(refusal.status, refusal.kind)
                self._emit(call.record(time.perf_counter()))
                raise refusal
            outbound, strip_usage = _outbound_body(
                call.plan,
                raw,
                rewritten=call.optimization is not None or call.output_cap is not None,
                model=sent_model,
            )
            headers = self._a11i_headers(call.plan, call.verdict)
            if call.optimization is not None:
                headers[H_OPTIMIZED] = call.optimization.header
            if call.output_cap is not None:
                headers[H_OUTPUT_CAP] = call.output_cap.header
            if waited > 0:
                headers[H_WAITED] = f"{waited * 1000:.0f}"
            forwarded = True  # from here on ``_forward`` settles it, however the call ends
            return await self._forward(
                inbound, upstream, call, reservation, outbound, strip_usage, headers
            )
        finally:
            if not forwarded and reservation is not None:
                # Cancelled (the agent hung up while the call was optimized or re-reserved) or
                # failed before it was forwarded: the money held for it is let go now, not
                # when its lease expires.
                await asyncio.shield(self._settle(reservation, None))

    def _may_fit_cap(self, verdict: Verdict) -> bool:
        """Whether a refused call may go on with a lower output cap: not under the emergency
        stop, not when the budget is strict (A11I_BUDGET_FIT_OUTPUT_CAP=off)."""
        admission = self.settings.admission
        return admission.fit_output_cap and verdict.state is not WalletState.SUSPENDED

    async def _fit_output_cap(self, plan: CallPlan, size: int) -> tuple[CallPlan, CapFit] | None:
        """The plan with its output cap lowered to what the wallet has left (as of the refusal
        just made), re-planned; None when no useful answer fits."""
        snapshot = self.wallet.last_snapshot
        if snapshot is None or snapshot.remaining_usd is None:
            return None
        fit = fit_output_cap(
            plan, snapshot.remaining_usd, self.settings.admission.min_output_tokens
        )
        if fit is None:
            return None
        request = plan.request
        fitted = await self._off_loop_if_large(size, self.meter.plan, request.dialect, fit.body)
        return fitted, fit

    def _should_optimize(self, verdict: Verdict, admitted: bool) -> bool:
        if not self.optimizer.enabled or verdict.state is WalletState.SUSPENDED:
            return False
        return not admitted or verdict.decision in (Decision.WARN, Decision.OPTIMIZE)

    async def _prints(self, dialect: Dialect, body: JSONObject, size: int) -> Prints:
        """The request's prefix fingerprints (the optimizer's cache estimate). Paid on every
        chat call while the optimizer is on, so off the loop from a smaller size (~0.5 ms per
        30 KB) than the rest of the planning."""
        if size < _PRINTS_INLINE_BYTES:
            return prefix_prints(dialect, body)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, prefix_prints, dialect, body)

    async def _optimize(
        self, plan: CallPlan, state: WalletState, size: int, prints: Prints, *, net_of_cache: bool
    ) -> tuple[CallPlan, Optimization, Prints] | None:
        """The request made smaller for ``state``, re-counted and re-priced; None when the
        optimizer changed nothing, saved nothing (net of the prompt cache it would lose, when
        ``net_of_cache``), or would break the API's rules."""
        request = plan.request
        expected = self.outputs.estimate(request.model)
        price = plan.price.price
        prices = CachePrices(
            price.input_per_token, price.cached_input_price, price.cache_write_price
        )
        cached = self.caches.state(prints)
        writes = request.dialect is Dialect.ANTHROPIC_MESSAGES and has_breakpoints(request.body)

        def context(tokens: int, of: Prints) -> CacheContext:
            return CacheContext(prices, cached, tokens / max(of.chars[-1], 1), writes)

        def guarded() -> tuple[CallPlan, Optimization, Prints] | None:
            # The optimizer is an economy, never a reason to fail a call: whatever goes wrong
            # in it, the agent's request goes on as it was sent.
            try:
                return run()
            except Exception:
                log.exception(
                    "the optimizer failed on a %s request; sent unchanged", request.dialect
                )
                return None

        def run() -> tuple[CallPlan, Optimization, Prints] | None:
            before_context = context(plan.input.tokens, prints)
            result = optimize(
                request.dialect,
                request.body,
                state,
                self.optimizer.core,
                before_context if net_of_cache else None,
            )
            if not result.changed:
                return None
            before = set(validate_conversation(request.dialect, request.body))
            broken = set(validate_conversation(request.dialect, result.body)) - before
            if broken or check_rewrite(request.dialect, request.body, result.body):
                log.warning(
                    "optimized %s request broke the API's rules; sent unchanged", request.dialect
                )
                return None
            smaller = self.meter.plan(request.dialect, result.body, expected)
            saved = plan.input.tokens - smaller.input.tokens
            if saved <= 0:
                return None
            after = prefix_prints(request.dialect, result.body)
            # The winner's saving from exact counts: what forwarding the agent's request would
            # cost against what the rewrite costs, each net of what the provider has cached.
            usd_saved = estimated_cost(before_context, prints) - estimated_cost(
                context(smaller.input.tokens, after), after
            )
            if net_of_cache and usd_saved <= 0:
                return None
            return (
                smaller,
                Optimization(result.strategies, saved, usd_saved, result.compacted),
                after,
            )

        return await self._off_loop_if_large(size, guarded)

    def _refusal(self, verdict: Verdict) -> A11iError:
        """The error for a call the wallet refused: the emergency stop, or no money left."""
        who = f"{self.settings.namespace}/{self.settings.agent}"
        if verdict.state is WalletState.SUSPENDED:
            return EmergencyStop(
                f"The emergency stop is on for {who}: a11i refuses every LLM call until it is "
                "lifted."
            )
        return BudgetExceeded(f"a11i budget exceeded for {who}: {verdict.reason}.")

    async def _plan(self, dialect: Dialect, body: JSONObject, size: int) -> CallPlan:
        model = body.get("model")
        expected = self.outputs.estimate(model) if isinstance(model, str) else None
        anthropic = dialect.provider is Provider.ANTHROPIC
        if self.meter.counter.builds_encoding(model, anthropic=anthropic):
            # An encoding is built on first use (0.2-0.5 s): never on the event loop.
            size = _OFFLOAD_BYTES
        return await self._off_loop_if_large(size, self.meter.plan, dialect, body, expected)

    async def _off_loop_if_large(self, size: int, function: Callable[..., _T], *args: object) -> _T:
        """Run CPU-bound work on the request inline when the body is small, on the worker
        thread when it is large enough to hold up the event loop."""
        if size < _OFFLOAD_BYTES:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _a11i_headers(self, plan: CallPlan, verdict: Verdict) -> dict[str, str]:
        headers = {
            H_DECISION: verdict.decision.value,
            H_INPUT_TOKENS: str(plan.input.tokens),
            H_TOKEN_COUNT: "exact" if plan.input.exact else "estimate",
            H_PROJECTED: usd(plan.projected_usd),
            H_SATURATION: str(plan.saturation_percent),
        }
        if plan.price.is_fallback:
            headers[H_PRICING] = f"fallback; model={plan.request.model}"
        return headers

    async def _forward(
        self,
        inbound: Inbound,
        upstream: Upstream,
        call: Call,
        reservation: Reservation,
        outbound: bytes,
        strip_usage: bool,
        a11i_headers: dict[str, str],
    ) -> Answer:
        plan = call.plan
        provider = plan.request.dialect.provider
        settled = False
        relayed = False
        #: The parsed answer whose tool calls and facts are read once it has gone to the agent.
        facts: tuple[JSONValue] | None = None
        try:
            headers = upstream_headers(
                inbound.headers.items(), provider, self.settings.custody, azure=inbound.route.azure
            )
            answer = await upstream.post(inbound.url, headers, outbound)
            try:
                call.status = answer.status
                is_sse = answer.content_type == "text/event-stream"
                if plan.request.stream and answer.status < 400 and is_sse:
                    remaining = self._remaining()
                    if remaining is not None:
                        a11i_headers[H_REMAINING] = remaining
                    relay = Relay(
                        self._relay_chunks(answer, call, strip_usage, reservation),
                        lambda: self._abandon(answer, call, reservation),
                    )
                    relayed = True
                    return Answer(
                        status=answer.status,
                        headers=_merge(self._downstream(answer), a11i_headers),
                        stream=relay,
                    )
                payload = await answer.read()
            finally:
                if not relayed:
                    await answer.close()
            parsed = _json_or_none(payload)
            if answer.status < 400:
                usage = usage_from_body(plan.request.dialect, parsed)
                call.output_text = answer_text(plan.request.dialect, parsed)
                if usage is None and plan.request.body.get("background") is True:
                    # The model runs on at the provider and its usage is read elsewhere
                    # (GET /v1/responses/{id}): charge the worst case, never less.
                    call.settlement = self.meter.settle_projected(plan)
                else:
                    call.settlement = self.meter.settle(plan, usage, call.output_text)
                call.complete = True
                a11i_headers[H_COST] = usd(call.settlement.cost_usd)
                if self._event_wallet is not None:
                    # The call's event goes with its settlement, and names its tool calls.
                    _read_facts(call, parsed)
                else:
                    facts = (parsed,)
            else:
                self.counters.upstream_errors += 1
                call.error_type = str(answer.status)
            remaining = await self._settle(reservation, call.settlement, call)
            settled = True
            if remaining is not None:
                a11i_headers[H_REMAINING] = remaining
            return Answer(
                status=answer.status,
                headers=_merge(self._downstream(answer), a11i_headers),
                body=self.redactor.apply(payload),
            )
        except UpstreamError as exc:
            self.counters.upstream_errors += 1
            failure: A11iError
            if exc.timeout:
                failure = UpstreamTimeout(
                    f"The provider at {inbound.base} did not answer within "
                    f"{self.settings.upstream.read_timeout_s:g} s."
                )
            else:
                failure = UpstreamUnavailable(
                    f"The provider at {inbound.base} could not be reached: {exc}."
                )
            call.fail(failure.status, failure.kind)
            raise failure from exc
        except asyncio.CancelledError:
            call.error_type = "cancelled"
            raise
        finally:
            # A relayed stream settles when it ends (Relay); anything else settles here.
            # Settlement must survive the agent hanging up: shield it from cancellation.
            if not relayed:
                if not settled and not call.settled:
                    await asyncio.shield(self._settle(reservation, call.settlement, call))
                # The record is made, and the answer read for what only telemetry needs, once
                # the answer has been written to the agent (which happens before the loop
                # runs the next callback).
                asyncio.get_running_loop().call_soon(
                    self._emit_ended, call, time.perf_counter(), facts
                )

    def _emit_ended(self, call: Call, ended: float, facts: tuple[JSONValue] | None) -> None:
        """``_emit`` for a call that ended at ``ended``, its tool calls and response facts
        read first from ``facts`` (the provider's parsed answer) when it has them."""
        if facts is not None:
            try:
                _read_facts(call, facts[0])
            except Exception:
                dialect = call.plan.request.dialect
                log.exception("reading the tool calls of a %s answer failed", dialect)
        self._emit(call.record(ended))

    async def _relay_chunks(
        self,
        upstream: UpstreamAnswer,
        call: Call,
        strip_usage: bool,
        reservation: Reservation,
    ) -> AsyncGenerator[bytes, None]:
        """Relay an SSE answer chunk by chunk; the call gets its settlement, tool calls and
        text from what the stream reported (or a11i's own count where it was cut). A complete
        stream is settled before its terminal event is relayed: a sidecar killed once the
        agent has the whole answer has already charged it."""
        plan = call.plan
        relayed = self.redactor.stream()
        parser = SSEParser()
        tracker = StreamTracker(plan.request.dialect, strip_usage=strip_usage)
        cut: UpstreamError | None = None
        gone = False
        try:
            try:
                async for chunk in upstream.chunks():
                    # Read, then relay: reading a chunk takes microseconds, and the chunk that
                    # ends the stream waits for the settlement.
                    relays = [_observe(tracker, event) for event in parser.feed(chunk)]
                    if tracker.complete and not call.settled:
                        await self._settle_stream(call, tracker, reservation)
                    if not strip_usage:
                        data = relayed.feed(chunk)
                        if data:
                            yield data
                        continue
                    for relay in relays:
                        if relay and (data := relayed.feed(relay)):
                            yield data
                relays = [_observe(tracker, event) for event in parser.flush()]
                if tracker.complete and not call.settled:
                    await self._settle_stream(call, tracker, reservation)
                for relay in relays:
                    if strip_usage and relay and (data := relayed.feed(relay)):
                        yield data
                if data := relayed.flush():
                    yield data
            except GeneratorExit:
                # The agent went away (its connection closed, its SDK closed the stream).
                gone = True
                log.info("the agent closed the stream of a %s call", plan.request.dialect)
            except UpstreamError as exc:
                # The provider cut the stream: passed on once settled (StreamCut).
                cut = exc
                log.warning("%s stream from the provider was cut: %s", plan.request.dialect, exc)
            self._stream_outcome(call, tracker, cut=gone or cut is not None)
        except asyncio.CancelledError:
            call.error_type = "cancelled"
            raise
        finally:
            await self._abandon(upstream, call, reservation)
        if cut is not None:
            raise StreamCut(str(cut)) from cut

    def _stream_outcome(self, call: Call, tracker: StreamTracker, *, cut: bool) -> None:
        """What the stream told about the call: its settlement, tool calls, text, ending."""
        plan = call.plan
        outcome = tracker.outcome()
        usage = outcome.usage
        reported = usage is not None and usage.input_tokens > 0
        if not outcome.complete:
            usage = _partial_usage(self.meter, plan, usage, outcome.text)
        if call.settled and call.settlement is not None:
            settlement = call.settlement  # what was charged before the last chunk
        else:
            settlement = self.meter.settle(plan, usage, outcome.text, input_reported=reported)
            if not outcome.complete or cut:
                # Part of what was used may never have been reported: the figure is our own.
                settlement = replace(settlement, source=UsageSource.ESTIMATE)
        call.settlement = settlement
        call.tool_calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in outcome.tool_calls)
        call.output_text = outcome.text
        if outcome.finish_reason or outcome.response_id or outcome.response_model:
            call.response = ResponseFacts(
                id=outcome.response_id or "",
                model=outcome.response_model or "",
                finish_reasons=(outcome.finish_reason,) if outcome.finish_reason else (),
            )
        call.complete = outcome.complete and not cut
        if not call.complete:
            call.error_type = "stream_cut"

    async def _abandon(
        self, upstream: UpstreamAnswer, call: Call, reservation: Reservation
    ) -> None:
        """The end of a relayed call: the connection released, the reservation settled (at
        most once, shielded from cancellation), the call observed."""
        try:
            await upstream.close()
        finally:
            if not call.settled:
                call.settled = True
                await asyncio.shield(self._settle(reservation, call.settlement, call))
            self._emit(call.record(time.perf_counter()))

    async def _settle_stream(
        self, call: Call, tracker: StreamTracker, reservation: Reservation
    ) -> None:
        """Settle a stream whose terminal event was read, before it is relayed."""
        outcome = tracker.outcome()
        call.settlement = self.meter.settle(call.plan, outcome.usage, outcome.text)
        # Marked first and shielded: the agent hanging up now neither cancels the charge nor
        # makes the call's end charge it a second time.
        call.settled = True
        await asyncio.shield(self._settle(reservation, call.settlement))

    def _event_of(self, record: CallRecord, *, on_loop: bool = False) -> dict[str, str]:
        scrub = self.telemetry.scrub_value_on_loop if on_loop else self.telemetry.scrub_value
        return scrub_event(call_event(record, self.settings.namespace, self.settings.agent), scrub)

    async def _settle(
        self, reservation: Reservation, settlement: Settlement | None, call: Call | None = None
    ) -> str | None:
        """Settle a reservation (nothing spent when there is no settlement: the provider
        refused the call); returns the remaining budget as a header value, if limited. With
        ``call`` (its record final but for its duration) and a wallet that carries events, the
        call's event goes with the settlement: one round trip to Redis, not two."""
        actual = settlement.cost_usd if settlement is not None else Decimal(0)
        try:
            carrier = self._event_wallet
            if call is not None and carrier is not None:
                event = self._event_of(call.record(time.perf_counter()), on_loop=True)
                # Marked first: a caller cancelled meanwhile (the settlement is shielded) must
                # not hand the same event to the sink too. The wallet keeps it until Redis has it.
                call.event_sent = True
                try:
                    await carrier.settle(reservation, actual, event)
                except Exception:
                    call.event_sent = False
                    raise
            else:
                await self.wallet.settle(reservation, actual)
        finally:
            self.admission.released()
        return self._remaining()

    def _remaining(self) -> str | None:
        """What is left of the wallet as of this sidecar's last wallet operation: no extra
        round trip to the wallet's store on the path of a call."""
        remaining = self.wallet.last_remaining_usd
        return None if remaining is None else usd(remaining)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def redactor(self) -> Redactor:
        """Replaces the held keys in whatever goes back to the agent: a provider that echoes
        the credential it received (a 401 body, a header) must not hand the agent the key
        custody keeps from it. Rebuilt when the keys are rotated."""
        custody = self.settings.custody
        if self._redactor[0] is not custody:
            self._redactor = (custody, Redactor((custody.openai_key, custody.anthropic_key)))
        return self._redactor[1]

    def _downstream(self, upstream: UpstreamAnswer) -> list[tuple[str, str]]:
        return self.redactor.headers(downstream_headers(upstream.header_items()))

    def _emit(self, record: CallRecord) -> None:
        """Hand the record to the observers after the answer is on its way: metrics, events
        and logs never add to the latency of the call they describe, and their scrubbing
        runs on the telemetry thread within one budget per call (``Scrubber.one_call``)."""
        asyncio.get_running_loop().call_soon(self._record_output, record)
        with self._observer_lock:
            if self._observing_closed:
                log.info("a call ended while the sidecar stops: not observed")
                return
            if self._telemetry_thread is None:
                self._telemetry_thread = threading.Thread(
                    target=self._observe_calls, name="a11i-telemetry", daemon=True
                )
                self._telemetry_thread.start()
            self._observing.put(record)

    def _observe_calls(self) -> None:
        """The telemetry thread: every record handed over, in order, until ``None``. Once the
        records handed over are observed, the next ones are gathered for ``_GATHER_S`` before
        it waits to be woken."""
        observing = self._observing
        record = observing.get()
        while record is not None:
            try:
                self._observe_call(record)
            except Exception:
                # Never the end of the thread: the next calls are still observed.
                log.exception("observing a call failed; the call is unaffected")
            try:
                record = observing.get_nowait()
            except queue.Empty:
                time.sleep(_GATHER_S)
                try:
                    record = observing.get_nowait()
                except queue.Empty:
                    record = observing.get()  # idle: the next call wakes it

    def _stop_observing(self) -> None:
        """The records handed over so far observed, then the telemetry thread ended (off the
        loop: it may wait for a slow observer)."""
        with self._observer_lock:
            self._observing_closed = True
            thread = self._telemetry_thread
            if thread is not None:
                self._observing.put(None)
        if thread is not None:
            thread.join()

    def _observe_call(self, record: CallRecord) -> None:
        with self.telemetry.scrubber.one_call():
            for observer in self.observers:
                try:
                    observer(record)
                except Exception:
                    # Telemetry never breaks the traffic it observes.
                    log.exception("a call observer failed; the call is unaffected")
        settled = record.settlement
        if settled is not None and settled.violations:
            self.counters.bounded_usage_calls += 1
            log.warning(
                "the provider reported usage a %s call cannot have used (%s): settled at "
                "a11i's own count",
                record.plan.request.dialect,
                "; ".join(settled.violations),
            )
        if log.isEnabledFor(logging.INFO):  # (its arguments alone cost microseconds a call)
            log.info(
                "%s model=%s decision=%s status=%d input_tokens=%d cost_usd=%s source=%s %.1fms",
                record.plan.request.dialect,
                record.plan.request.model,
                record.verdict.decision,
                record.status,
                record.plan.input.tokens,
                usd(settled.cost_usd) if settled else "0",
                settled.source if settled else "-",
                record.duration_s * 1000,
            )


def _file_version(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _observe(tracker: StreamTracker, event: SSEEvent) -> bytes | None:
    try:
        return tracker.observe(event)
    except Exception:
        log.exception("could not read a stream event; relaying it unread")
        return event.raw


#: The dialects whose prompts the optimizer rewrites, so whose prompt cache it estimates.
_CACHED_DIALECTS: Final = frozenset({Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES})
#: Bodies below this size are fingerprinted on the event loop (a few dozen microseconds).
_PRINTS_INLINE_BYTES: Final = 8 * 1024


def _partial_usage(meter: Meter, plan: CallPlan, usage: Usage | None, text: str) -> Usage:
    """Usage of a cut stream: what the provider had reported, raised to the sidecar's own
    count where that is larger, so a cut never settles less than was received."""
    own_output = meter.counter.count_text(plan.request.model, text).tokens
    if usage is None:
        return Usage(input_tokens=plan.input.tokens, output_tokens=own_output)
    # replace(): the cache split, service tier and tool calls reported so far still count.
    return replace(
        usage,
        input_tokens=usage.input_tokens or plan.input.tokens,
        output_tokens=max(usage.output_tokens, own_output),
    )


def _outbound_body(
    plan: CallPlan, raw: bytes, *, rewritten: bool, model: object = None
) -> tuple[bytes, bool]:
    """The body to forward (the agent's bytes unless a11i changed the request), and whether
    a11i added the usage chunk (to strip it again). ``model`` is the body's ``model`` as the
    agent sent it (``_ABSENT`` when it sent none): the planned body may carry the priced model
    instead (an Azure deployment's), which never goes to the provider."""
    request = plan.request
    add_usage = (
        request.dialect in (Dialect.OPENAI_CHAT, Dialect.OPENAI_COMPLETIONS)
        and request.stream
        and not request.stream_usage_requested
    )
    if not add_usage and not rewritten:
        return raw, False
    body: dict[str, JSONValue] = dict(request.body)
    if model is _ABSENT:
        body.pop("model", None)
    elif isinstance(model, str):
        body["model"] = model
    if add_usage:
        options = body.get("stream_options")
        merged: dict[str, JSONValue] = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        body["stream_options"] = merged
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), add_usage
    except UnicodeEncodeError:
        # A lone UTF-16 surrogate (an emoji a JS agent cut in half) has no UTF-8 form; its
        # \uXXXX escape is how the agent sent it and how the provider reads it.
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode(), add_usage


def _read_facts(call: Call, parsed: JSONValue) -> None:
    """The tool calls and response facts of a provider's parsed (non-streamed) answer."""
    dialect = call.plan.request.dialect
    call.tool_calls = tool_calls(dialect, parsed)
    call.response = response_facts(dialect, parsed)


def _json_or_none(payload: bytes) -> JSONValue:
    try:
        value: JSONValue = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return value


def _merge(headers: list[tuple[str, str]], extra: dict[str, str]) -> list[tuple[str, str]]:
    lowered = {name.lower() for name in extra}
    return [(n, v) for n, v in headers if n.lower() not in lowered] + list(extra.items())
