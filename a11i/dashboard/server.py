"""``a11i dashboard``: the aiohttp server of the live dashboard.

Entry point and routes: builds ``DashboardSettings`` once in ``main`` from flags, environment and
token files; serves the page, its static files and a WebSocket that pushes the hub's updates;
turns authenticated, CSRF-checked POSTs into actions on the wallets (emergency stop, resume,
top-up), each recorded as an event with who did it. With ``--kubernetes-auth`` a token that is
not a static one is reviewed by the Kubernetes API (``kube_auth``); with ``--agentbudgets`` a
namespace's top-up raises the limit of its AgentBudget (``agentbudgets``), then its wallet.
Both need the ``a11i[operator]`` extra (the Kubernetes client), imported only when one is on:
``a11i up`` and a dashboard without them run on the base distribution.

What it may not do: read settings outside ``main``, answer anything but the login page to a
visitor without a session, or let a viewer act. Routes parse input, call the hub or the source
once, and apply the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from a11i.core import variables as var
from a11i.core.errors import ConfigurationError
from a11i.dashboard.auth import (
    COOKIE,
    CSRF_HEADER,
    Authenticator,
    AuthSettings,
    FailureLimiter,
    Identity,
    KubernetesAuthSettings,
    Principal,
    SessionTooLarge,
    settings_from_env,
)
from a11i.dashboard.hub import Hub, HubSettings, Outgoing, dumps
from a11i.dashboard.source import DashboardError, RedisSource, Source
from a11i.dashboard.state import CLUSTER, DashboardState, StateSettings, action_event
from a11i.operator.status import money
from a11i.sidecar.redis_clients import RedisTarget

if TYPE_CHECKING:
    # The operator extra's modules (kopf, kubernetes): imported at run time only where
    # --kubernetes-auth or --agentbudgets is on (``_operator_extra``).
    from a11i.dashboard.agentbudgets import AgentBudgets
    from a11i.dashboard.kube_auth import KubernetesReviewer
    from a11i.operator.kube import KubeClient

log = logging.getLogger("a11i.dashboard")

STATIC: Final = Path(__file__).parent / "static"
VENDOR_SCRIPT: Final = STATIC / "vendor" / "uPlot.iife.min.js"
#: Largest single top-up accepted from the page (a typo guard, not a policy).
MAX_TOP_UP: Final = Decimal(1_000_000)
#: A wallet name: a Kubernetes namespace, optionally ``/agent`` (an agent's own wallet).
_WALLET_NAME: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9_.]{0,251}[a-z0-9])?(/[-A-Za-z0-9_.]{1,253})?$"
)
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

_HUB: Final = web.AppKey("hub", Hub)
_AUTH: Final = web.AppKey("auth", Authenticator)

#: What the page says about top-ups without ``--agentbudgets``.
TOP_UP_NOTE: Final = (
    "Top-ups raise the wallet's limit in Redis directly. With the operator running, the "
    "AgentBudget's limit is the source of truth and the operator sets the wallet back to it "
    "when the AgentBudget changes: raise the AgentBudget too, or run the dashboard with "
    "--agentbudgets."
)
#: What the page says about top-ups with ``--agentbudgets``.
TOP_UP_NOTE_AGENTBUDGETS: Final = (
    "Top-ups raise spec.limit of the namespace's AgentBudget (the oldest one without an "
    "agentSelector) and set its wallet to the same limit at once; the operator keeps it. A "
    "namespace without such an AgentBudget, and an agent's own wallet, are topped up in Redis "
    "directly."
)
#: What the event of a top-up says it went through.
VIA_WALLET: Final = "wallet"


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Everything ``a11i dashboard`` is configured with."""

    #: Address to listen on (``--host``; loopback by default).
    host: str = "127.0.0.1"
    #: Port to listen on (``--port``).
    port: int = 11080
    #: The shared Redis (``--redis`` or ``A11I_REDIS_URL``).
    redis_url: str | None = None
    #: Seconds any single Redis call may take.
    redis_timeout_s: float = 2.0
    #: How ``redis_url`` is reached (``A11I_REDIS_MODE``, ``A11I_REDIS_MASTER``,
    #: ``A11I_REDIS_SENTINEL_PASSWORD``); None: one Redis server.
    redis: RedisTarget | None = None
    #: Tokens and sessions.
    auth: AuthSettings = field(default_factory=lambda: AuthSettings(insecure_no_auth=True))
    #: Origins allowed to act and to open the WebSocket besides the page's own
    #: (``A11I_DASHBOARD_ORIGINS``, comma-separated; e.g. the address of an ingress).
    allowed_origins: tuple[str, ...] = ()
    #: How Kubernetes users are reviewed (when ``auth.kubernetes``).
    kubernetes: KubernetesAuthSettings = field(default_factory=KubernetesAuthSettings)
    #: Top-ups go through the namespace's AgentBudget (``--agentbudgets``,
    #: ``A11I_DASHBOARD_AGENTBUDGETS``); needs Kubernetes credentials and the shared Redis.
    agentbudgets: bool = False
    #: Seconds any single Kubernetes API call may take.
    kube_timeout_s: float = 5.0
    hub: HubSettings = field(default_factory=HubSettings)
    state: StateSettings = field(default_factory=StateSettings)

    @property
    def uses_kubernetes(self) -> bool:
        return self.auth.kubernetes or self.agentbudgets


class Forbidden(DashboardError):
    status = 403


class Unauthorized(DashboardError):
    status = 401


class BadRequest(DashboardError):
    status = 400


#: What only the ``a11i[operator]`` extra installs (kopf, cryptography, the Kubernetes client).
EXTRA_MODULES: Final = frozenset({"kopf", "kubernetes", "cryptography"})


class MissingExtra(ConfigurationError):
    """A Kubernetes feature is on (``--kubernetes-auth``, ``--agentbudgets``) but the
    ``a11i[operator]`` extra it needs is not installed."""


@contextlib.contextmanager
def _operator_extra(settings: DashboardSettings) -> Iterator[None]:
    """Around the imports of the Kubernetes features: a module of the extra that is missing
    becomes ``MissingExtra``, naming the features that are on and the extra to install."""
    try:
        yield
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in EXTRA_MODULES:
            raise
        features = [
            flag
            for flag, on in (
                ("--kubernetes-auth", settings.auth.kubernetes),
                ("--agentbudgets", settings.agentbudgets),
            )
            if on
        ]
        verb = "needs" if len(features) == 1 else "need"
        raise MissingExtra(
            f"{' and '.join(features)} {verb} the operator's dependencies ({error.name} is not "
            "installed): pip install 'a11i[operator]'"
        ) from error


class TooManyFailures(DashboardError):
    status = 429


# --- the app ------------------------------------------------------------------------------------


def build_app(
    settings: DashboardSettings, source: Source | None = None, *, kube: KubeClient | None = None
) -> web.Application:
    """The dashboard's application; ``source`` defaults to the Redis of the settings, ``kube``
    (used only with Kubernetes auth or ``agentbudgets``) to a client logged in as the
    dashboard's ServiceAccount or kubeconfig; both are closed with the app."""
    if settings.agentbudgets and source is not None and not isinstance(source, RedisSource):
        raise DashboardError(
            "top-up through the AgentBudget (--agentbudgets) needs the shared Redis the "
            "operator configures, not the embedded wallet"
        )
    reviewer: KubernetesReviewer | None = None
    budgets: AgentBudgets | None = None
    if settings.uses_kubernetes:
        with _operator_extra(settings):
            # Here only: the Kubernetes client is the operator extra, which `a11i up` lacks.
            from a11i.dashboard.agentbudgets import AgentBudgets
            from a11i.dashboard.kube_auth import KubernetesReviewer
            from a11i.operator.kube import KubeClient, KubeSettings
        if kube is None:
            # Lazy: it logs in on its first call, so nothing is open yet.
            kube = KubeClient(
                settings=KubeSettings(
                    timeout_s=settings.kube_timeout_s, user_agent="a11i-dashboard"
                )
            )
        if settings.auth.kubernetes:
            reviewer = KubernetesReviewer(kube, settings.kubernetes)
        if settings.agentbudgets:
            budgets = AgentBudgets(kube)
    if source is None:
        if settings.redis_url is None:
            raise DashboardError("the dashboard needs --redis URL or A11I_REDIS_URL")
        source = RedisSource.from_url(
            settings.redis or settings.redis_url, timeout_s=settings.redis_timeout_s
        )
    app = web.Application(middlewares=[_security_headers, _errors], client_max_size=64 * 1024)
    hub = Hub(source, DashboardState(settings.state), settings.hub)
    app[_HUB] = hub
    app[_AUTH] = Authenticator(settings.auth)
    routes = _Routes(settings, app[_AUTH], hub, _read_login_page(), reviewer, budgets)
    app.router.add_get("/", routes.index)
    app.router.add_get("/login", routes.login_page)
    app.router.add_post("/login", routes.login)
    app.router.add_post("/logout", routes.logout)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/api/session", routes.session)
    app.router.add_get("/api/view", routes.current_view)
    app.router.add_get("/ws", routes.websocket)
    app.router.add_post("/api/cluster/{action}", routes.cluster_action)
    app.router.add_post("/api/namespaces/{namespace:.+}/{action}", routes.namespace_action)
    app.router.add_get("/static/{name:.+}", routes.static)

    async def start(_app: web.Application) -> None:
        await hub.start()

    async def stop(_app: web.Application) -> None:
        await hub.close()
        await hub.source.close()
        if kube is not None:
            await kube.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def _read_login_page() -> str:
    return (STATIC / "login.html").read_text(encoding="utf-8")


class _Routes:
    def __init__(
        self,
        settings: DashboardSettings,
        auth: Authenticator,
        hub: Hub,
        login_html: str,
        reviewer: KubernetesReviewer | None = None,
        budgets: AgentBudgets | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.hub = hub
        self.reviewer = reviewer
        self.budgets = budgets
        self._login_html = login_html
        self._vendor_ready = False
        #: Failed tokens per client address (the login form and Bearer headers alike).
        self.failures = FailureLimiter()

    # -- who is asking -----------------------------------------------------------------------

    async def principal(self, request: web.Request) -> tuple[Principal, bool] | None:
        """The principal and whether it came from ambient credentials (a cookie, or no auth)
        that a cross-site page could ride on, so CSRF and Origin checks apply. A Kubernetes
        user without a dashboard role raises 403, an API server that does not answer 503."""
        self._check_host(request)
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            found = await self.check_token(header[7:], request)
            return (found, False) if found is not None else None
        session = self.auth.session(request.cookies.get(COOKIE), time.time())
        if isinstance(session, Identity):
            if self.reviewer is None:  # pragma: no cover - no key for such cookies then
                return None
            # The role is asked of RBAC again whenever the cached answer expired.
            role = await self.reviewer.role(session)
            return Principal(role, "", session), True
        return (session, True) if session is not None else None

    async def check_token(self, token: str, request: web.Request) -> Principal | None:
        """A static token's principal, else (with Kubernetes auth) the reviewed user's. A
        client with too many failed tokens is refused (429) before its token is looked at."""
        client = request.remote or "unknown"
        if not self.failures.allowed(client):
            raise TooManyFailures(
                "too many wrong tokens from this address; try again in "
                f"{self.failures.retry_after(client)} s"
            )
        found = self.auth.check_token(token)
        if found is None and self.reviewer is not None and token.strip():
            found = await self.reviewer.principal(token.strip())
        if found is None:
            self.failures.failed(client)
        return found

    def _check_host(self, request: web.Request) -> None:
        # Without auth, a DNS-rebinding page could reach a laptop's dashboard under its own
        # name: only loopback names (or the address it listens on) are answered.
        if not self.auth.open:
            return
        host = urlsplit(f"//{request.host}").hostname or ""
        if host not in _LOOPBACK and host != self.settings.host:
            raise Forbidden(f"without auth the dashboard only answers loopback, not {host!r}")

    def same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        allowed = {f"http://{request.host}", f"https://{request.host}"}
        return origin in allowed or origin in self.settings.allowed_origins

    async def actor(self, request: web.Request) -> Principal:
        """An admin allowed to act now: authenticated, and for a browser session, same
        origin with the session's CSRF token."""
        found = await self.principal(request)
        if found is None:
            raise Unauthorized("log in first")
        principal, ambient = found
        origin = request.headers.get("Origin")
        if (ambient or origin is not None) and not self.same_origin(request):
            raise Forbidden("cross-origin requests may not act")
        if ambient and not self.auth.check_csrf(
            request.cookies.get(COOKIE), request.headers.get(CSRF_HEADER)
        ):
            raise Forbidden("missing or wrong CSRF token; reload the page")
        if not principal.can_act:
            raise Forbidden(f"the viewer role is read-only ({principal.who})")
        return principal

    # -- pages -------------------------------------------------------------------------------

    def _login_response(self, status: int, message: str = "") -> web.Response:
        # The message is always one of ours, never user input.
        body = self._login_html.replace("<!--MESSAGE-->", message)
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def index(self, request: web.Request) -> web.StreamResponse:
        try:
            found = await self.principal(request)
        except DashboardError as exc:
            if exc.status not in (403, 503):
                raise
            # A session whose user lost its role, or an API server away: say so on the login.
            return self._login_response(exc.status, html.escape(exc.message))
        if found is None:
            return self._login_response(401)
        if not self._vendor_ready:
            self._vendor_ready = VENDOR_SCRIPT.is_file()
            if not self._vendor_ready:
                return web.Response(
                    status=503,
                    content_type="text/html",
                    text=(
                        "<!doctype html><title>a11i dashboard: assets missing</title>"
                        "<h1>The dashboard's chart library is not installed</h1>"
                        "<p>Run <code>a11i/dashboard/build-assets.sh</code> (needs npm) "
                        "to copy uPlot into <code>static/vendor/</code>, then reload.</p>"
                    ),
                )
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(DashboardError):
            if await self.principal(request) is not None:
                raise web.HTTPSeeOther("/")
        return self._login_response(200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        self._check_host(request)
        origin = request.headers.get("Origin")
        if origin is not None and not self.same_origin(request):
            raise Forbidden("cross-origin login refused")
        form = await request.post()
        token = form.get("token")
        try:
            principal = await self.check_token(token, request) if isinstance(token, str) else None
        except DashboardError as exc:
            if exc.status not in (403, 429, 503):
                raise
            log.warning("dashboard: refused login from %s: %s", request.remote, exc.message)
            return self._login_response(exc.status, html.escape(exc.message))
        if principal is None:
            # A pause per failure makes guessing slow; tokens are long anyway.
            await asyncio.sleep(0.3)
            log.warning("dashboard: failed login from %s", request.remote)
            return self._login_response(401, "That token is not valid.")
        log.info("dashboard: %s logged in from %s", principal.who, request.remote)
        try:
            cookie = self.auth.issue(principal, time.time())
        except SessionTooLarge as exc:
            return self._login_response(400, html.escape(str(exc)))
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=self.auth.session_ttl(principal),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.auth.settings.secure_cookie or request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        try:
            found = await self.principal(request)
        except DashboardError:
            found = None  # logging out needs no role: the cookie goes either way
        ambient = found is not None and found[1]
        if ambient and not (
            self.same_origin(request)
            and self.auth.check_csrf(request.cookies.get(COOKIE), request.headers.get(CSRF_HEADER))
        ):
            raise Forbidden("missing or wrong CSRF token")
        # Ended here too, not only in this browser: a copy of the cookie stops working.
        if self.auth.revoke(request.cookies.get(COOKIE), time.time()):
            log.info("dashboard: %s logged out", found[0].who if found else "a session")
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "source": self.hub.status.ok})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        # The login page needs its style sheet; everything else only after logging in.
        if name != "app.css" and await self.principal(request) is None:
            raise Unauthorized("log in first")
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        if path.suffix not in (".js", ".css") and not path.name.endswith(".LICENSE"):
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    # -- API ---------------------------------------------------------------------------------

    async def session(self, request: web.Request) -> web.Response:
        found = await self.principal(request)
        if found is None:
            raise Unauthorized("log in first")
        principal, _ambient = found
        return web.json_response(
            {
                "role": principal.role.value,
                "who": principal.who,
                "can_act": principal.can_act,
                "csrf": self.auth.csrf_token(request.cookies.get(COOKIE)),
                "mode": self.hub.source.mode,
                "insecure_no_auth": self.auth.open,
                "top_up_note": self.top_up_note,
                "top_up_via": "agentbudget" if self.budgets is not None else VIA_WALLET,
            },
            headers={"Cache-Control": "no-store"},
        )

    @property
    def top_up_note(self) -> str:
        return TOP_UP_NOTE_AGENTBUDGETS if self.budgets is not None else TOP_UP_NOTE

    async def current_view(self, request: web.Request) -> web.Response:
        if await self.principal(request) is None:
            raise Unauthorized("log in first")
        return web.json_response(self.hub.view(), dumps=dumps)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        found = await self.principal(request)
        if found is None:
            raise Unauthorized("log in first")
        principal, ambient = found
        # Cross-site WebSocket hijacking: a browser sends the cookie to any origin's socket.
        if (ambient or "Origin" in request.headers) and not self.same_origin(request):
            raise Forbidden("cross-origin WebSocket refused")
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        since = await _resume_point(ws)
        try:
            page, replay, truncated = await self.hub.attach(since)
        except DashboardError as exc:
            await ws.send_json({"type": "error", "message": exc.message})
            await ws.close(code=1011, message=b"source unavailable")
            return ws
        reader = asyncio.create_task(_drain(ws, page.queue), name="a11i-dashboard-ws-reader")
        try:
            await ws.send_json(
                {"type": "hello", "role": principal.role.value, "who": principal.who}
            )
            await ws.send_json(self.hub.view(), dumps=dumps)
            await ws.send_json(
                {
                    "type": "events",
                    "replay": True,
                    "truncated": truncated,
                    "events": [event.as_json() for event in replay],
                    # Every stream's position (a Redis Cluster has one per namespace).
                    "last_id": page.cursor or (replay[-1].id if replay else since),
                },
                dumps=dumps,
            )
            # A Kubernetes user's socket is closed when its role's review expires: the page
            # reconnects at once and resumes without a gap, and RBAC is asked again.
            revalidate_at = (
                time.monotonic() + self.settings.kubernetes.review_ttl_s
                if principal.identity is not None
                else None
            )
            while not ws.closed:
                wait = None if revalidate_at is None else max(revalidate_at - time.monotonic(), 0)
                try:
                    async with asyncio.timeout(wait):
                        message = await page.queue.get()
                except TimeoutError:
                    await ws.close(code=4001, message=b"re-validate; resume")
                    break
                if page.overflowed or message.kind == "closing":
                    # Too slow: closed so that the page resumes from its last id, gap-free.
                    await ws.close(code=4000, message=b"behind; resume")
                    break
                if message.kind == "socket-closed":
                    break
                await ws.send_str(message.text)
        except ConnectionResetError:
            # The page went away while a message was being sent (a closed tab, a dropped
            # network): the usual end of a page, not an error. It resumes when it comes back.
            log.debug("dashboard: a page's WebSocket was reset by the client")
        except asyncio.CancelledError:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            raise
        finally:
            self.hub.detach(page)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws

    async def cluster_action(self, request: web.Request) -> web.Response:
        principal = await self.actor(request)
        action = request.match_info["action"]
        if action not in ("stop", "resume"):
            raise web.HTTPNotFound()
        on = action == "stop"
        await self.hub.source.cluster_stop(on)
        log.warning("dashboard: cluster-wide emergency stop %s by %s", action, principal.who)
        return await self._done(principal, CLUSTER, f"cluster_{action}", None)

    async def namespace_action(self, request: web.Request) -> web.Response:
        principal = await self.actor(request)
        namespace = request.match_info["namespace"]
        action = request.match_info["action"]
        if not _WALLET_NAME.fullmatch(namespace):
            raise BadRequest("not a namespace name")
        source = self.hub.source
        amount: Decimal | None = None
        details: dict[str, str] = {}
        answer: dict[str, object] = {}
        if action in ("stop", "resume"):
            await source.suspend(namespace, action == "stop")
        elif action == "top-up":
            amount = await _amount(request)
            details, answer = await self._top_up(namespace, amount)
        else:
            raise web.HTTPNotFound()
        log.warning(
            "dashboard: %s %s by %s%s",
            namespace,
            action,
            principal.who,
            f" via {details['via']}" if "via" in details else "",
        )
        return await self._done(
            principal, namespace, action.replace("-", "_"), amount, details, answer
        )

    async def _top_up(
        self, namespace: str, amount: Decimal
    ) -> tuple[dict[str, str], dict[str, object]]:
        """Top up through the namespace's AgentBudget when there is one (and ``--agentbudgets``),
        else the wallet directly; the event's extra fields and the answer's."""
        done = None
        # An agent's own wallet (namespace/agent) is not an AgentBudget's: always direct.
        if self.budgets is not None and "/" not in namespace:
            done = await self.budgets.top_up(namespace, amount)
        if done is None:
            await self.hub.source.top_up(namespace, amount)
            return {"via": VIA_WALLET}, {"via": VIA_WALLET}
        via = f"agentbudget/{done.name}"
        details = {"via": via, "limit_usd": money(done.new_limit)}
        answer: dict[str, object] = {**details, "wallet_updated": True}
        source = self.hub.source
        try:
            if not isinstance(source, RedisSource):  # pragma: no cover - build_app refuses it
                raise DashboardError("top-up through the AgentBudget needs the shared Redis")
            await source.configure(namespace, done.spec)
        except DashboardError as exc:
            # The AgentBudget holds the new limit; the operator writes it into the wallet when
            # Redis answers. Reporting an error would invite a second top-up: say it instead.
            answer["wallet_updated"] = False
            log.error(
                "dashboard: AgentBudget %s/%s raised to %s but the wallet not yet: %s",
                namespace,
                done.name,
                money(done.new_limit),
                exc.message,
            )
        return details, answer

    async def _done(
        self,
        principal: Principal,
        namespace: str,
        action: str,
        amount: Decimal | None,
        details: dict[str, str] | None = None,
        answer: dict[str, object] | None = None,
    ) -> web.Response:
        recorded = True
        event = action_event(namespace, action, principal.who, time.time(), amount)
        event.update(details or {})
        try:
            await self.hub.source.record(event)
        except DashboardError as exc:
            # The action took effect; only its record is missing: say so, do not undo it.
            recorded = False
            log.error(
                "dashboard: %s on %s by %s not recorded: %s",
                action,
                namespace,
                principal.who,
                exc.message,
            )
        await self.hub.refresh()
        return web.json_response(
            {
                "ok": True,
                "namespace": namespace,
                "action": action,
                "recorded": recorded,
                **(answer or {}),
            }
        )


async def _amount(request: web.Request) -> Decimal:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest('the body must be JSON: {"amount_usd": "10.00"}') from exc
    text = body.get("amount_usd") if isinstance(body, dict) else None
    try:
        amount = Decimal(str(text)) if isinstance(text, str | int) else Decimal("NaN")
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0 or amount > MAX_TOP_UP:
        raise BadRequest(f"amount_usd must be a positive amount of USD up to {MAX_TOP_UP}")
    return amount


#: A page's cursor: an id, or in a Redis Cluster one per namespace's stream (``<ns>/<id>``).
_POSITION = r"(?:[A-Za-z0-9._*-]{1,253}/)?\d{1,20}(?:-\d{1,20})?"
_CURSOR = re.compile(f"{_POSITION}(?:,{_POSITION})*")


async def _resume_point(ws: web.WebSocketResponse) -> str | None:
    """The last event id the page saw (its first message), None for a fresh page."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            message = await ws.receive()
            if message.type is WSMsgType.TEXT:
                with contextlib.suppress(ValueError):
                    body = json.loads(message.data)
                    since = body.get("since") if isinstance(body, dict) else None
                    if isinstance(since, str) and len(since) <= 60_000 and _CURSOR.fullmatch(since):
                        return since
    return None


async def _drain(ws: web.WebSocketResponse, queue: asyncio.Queue[Outgoing]) -> None:
    """Read (and ignore) what the page sends, so close frames and pings are handled; tell the
    sender when the socket is gone."""
    try:
        async for _message in ws:
            pass
    finally:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(Outgoing("socket-closed"))


# --- middlewares --------------------------------------------------------------------------------

_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DashboardError as exc:
        response = web.json_response({"error": exc.message}, status=exc.status)
        for name, value in (
            ("Content-Security-Policy", _CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
        ):
            response.headers[name] = value
        return response


# --- entry point --------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> DashboardSettings:
    origins = tuple(o.strip() for o in env.get("A11I_DASHBOARD_ORIGINS", "").split(",") if o)
    redis_url = args.redis or env.get("A11I_REDIS_URL") or None
    return DashboardSettings(
        host=args.host,
        port=args.port,
        redis_url=redis_url,
        redis=None if redis_url is None else RedisTarget.from_env(env, redis_url),
        auth=settings_from_env(
            env,
            insecure_no_auth=args.insecure_no_auth,
            kubernetes=getattr(args, "kubernetes_auth", False),
        ),
        allowed_origins=origins,
        agentbudgets=getattr(args, "agentbudgets", False)
        or var.flag(env, "A11I_DASHBOARD_AGENTBUDGETS", default=False),
        kubernetes=KubernetesAuthSettings(
            review_ttl_s=var.seconds(env, REVIEW_TTL_ENV, 60.0, maximum=3600)
        ),
    )


#: Seconds a Kubernetes review is reused (how soon a revoked RoleBinding takes effect).
REVIEW_TTL_ENV: Final = "A11I_DASHBOARD_KUBERNETES_REVIEW_TTL"


DESCRIPTION: Final = (
    "Serve the live dashboard: spend per namespace and agent, the emergency stop, top-ups. "
    "Needs a token (A11I_DASHBOARD_ADMIN_TOKEN[_FILE], A11I_DASHBOARD_VIEWER_TOKEN[_FILE]) "
    "or Kubernetes authentication (--kubernetes-auth), unless --insecure-no-auth."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``a11i dashboard`` (for the top-level command line's subparser too)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=11080, help="port to listen on")
    parser.add_argument("--redis", help="the shared Redis (default: A11I_REDIS_URL)")
    parser.add_argument(
        "--kubernetes-auth",
        action="store_true",
        help="accept Kubernetes bearer tokens: a TokenReview authenticates them, RBAC on "
        "agentbudgets.a11i.io decides the role (patch: admin, list: viewer); also "
        "A11I_DASHBOARD_KUBERNETES_AUTH=true",
    )
    parser.add_argument(
        "--agentbudgets",
        action="store_true",
        help="top up through the namespace's AgentBudget (spec.limit) when it has one, for "
        "clusters where the operator runs; also A11I_DASHBOARD_AGENTBUDGETS=true",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no login at all: anyone who reaches the port can stop every agent (a laptop only)",
    )


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="a11i dashboard", description=DESCRIPTION)
    add_arguments(built)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the dashboard with parsed flags (``a11i dashboard``); blocks until stopped."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args, dict(os.environ))
        if settings.redis_url is None:
            raise DashboardError("give --redis URL or set A11I_REDIS_URL")
        if settings.uses_kubernetes:
            log.info("dashboard: Kubernetes API at %s", _kubernetes_server(settings))
        app = build_app(settings)
    except (ConfigurationError, DashboardError) as exc:
        print(f"a11i dashboard: {exc}", file=sys.stderr)
        return 2
    if settings.auth.kubernetes and settings.auth.session_key is None:
        log.warning(
            "dashboard: no A11I_DASHBOARD_SESSION_KEY: Kubernetes users' sessions are signed "
            "with a key of this process and end when it restarts (and are not shared between "
            "replicas)"
        )
    if settings.auth.insecure_no_auth:
        log.warning(
            "!!! --insecure-no-auth: ANYONE who can reach http://%s:%d can stop every agent "
            "and top up every wallet. Use it on a laptop only. !!!",
            settings.host,
            settings.port,
        )
    log.info(
        "a11i dashboard on http://%s:%d (redis; auth: %s; top-up via %s)",
        settings.host,
        settings.port,
        "none" if settings.auth.insecure_no_auth else _auth_kinds(settings.auth),
        "AgentBudget" if settings.agentbudgets else "wallet",
    )
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


def _kubernetes_server(settings: DashboardSettings) -> str:
    """The API server the dashboard's credentials name: fails at start, not at the first
    login, when the extra or the credentials are missing."""
    with _operator_extra(settings):
        # Here only: the Kubernetes client is the operator extra, which `a11i up` lacks.
        from a11i.operator.kube import KubeError, login
    try:
        return login().server
    except KubeError as exc:
        raise DashboardError(str(exc)) from exc


def _auth_kinds(auth: AuthSettings) -> str:
    kinds = [
        name
        for name, on in (
            ("admin token", auth.admin_token is not None),
            ("viewer token", auth.viewer_token is not None),
            ("Kubernetes", auth.kubernetes),
        )
        if on
    ]
    return ", ".join(kinds)


if __name__ == "__main__":
    raise SystemExit(main())
