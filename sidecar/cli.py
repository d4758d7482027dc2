"""The ``a11i`` command line: one console script, one subcommand per job.

Entry point: builds settings from the environment once, wires the adapters, runs. Nothing below
it reads the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar import __version__
from sidecar.core.dialects import parse_json_body
from sidecar.core.errors import A11iError
from sidecar.core.model import Dialect, JSONObject, usd
from sidecar.core.policy import BudgetPolicy
from sidecar.core.pricing import RateCardError
from sidecar.settings import SettingsError, SidecarSettings, from_env
from sidecar.wallet import Wallet

if TYPE_CHECKING:
    from aiohttp import web

    from sidecar.events import EventSink
    from sidecar.proxy import Sidecar

log = logging.getLogger("a11i")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # The operator and the dashboard have options of their own (a11i_operator): passed through.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("operator", "dashboard", "up"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except SettingsError as exc:
        print(f"a11i: configuration error: {exc}", file=sys.stderr)
        return 2
    except RateCardError as exc:
        print(f"a11i: {exc}", file=sys.stderr)
        return 2
    except A11iError as exc:
        print(f"a11i: {exc.message}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a11i",
        description="a11i: budget guard and observability for the LLM traffic of AI agents.",
    )
    parser.add_argument("--version", action="version", version=f"a11i {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sidecar = commands.add_parser(
        "sidecar",
        help="run the metering proxy (port 11000)",
        description="Run the metering proxy beside an agent. Configured by A11I_* environment "
        "variables (see docs/configuration.md); flags override them.",
    )
    sidecar.add_argument("--host", help="address to listen on (A11I_HOST, default 127.0.0.1)")
    sidecar.add_argument("--port", type=int, help="port to listen on (A11I_PORT, default 11000)")
    sidecar.set_defaults(run=_run_sidecar)

    cost = commands.add_parser(
        "cost",
        help="price a request body offline",
        description="Count the tokens of a request body (a JSON file, or - for standard "
        "input) and project its cost from the rate card, without calling any provider.",
    )
    cost.add_argument("file", help="request body as JSON; - reads standard input")
    cost.add_argument(
        "--dialect",
        choices=[d.value for d in Dialect],
        help="the API the body is for (default: guessed from its shape)",
    )
    cost.add_argument("--rate-card", type=Path, help="rate card file (A11I_RATE_CARD)")
    cost.add_argument("--json", action="store_true", help="print the result as JSON")
    cost.set_defaults(run=_run_cost)
    wallet = commands.add_parser(
        "wallet",
        help="show a wallet, stop or resume its agents, top it up",
        description="Operate on the wallets the sidecars share: in Redis with --redis or "
        "A11I_REDIS_URL (a stop reaches every sidecar within a second), else in the embedded "
        "SQLite file (A11I_WALLET_FILE, default ~/.local/state/a11i/wallets.sqlite; a stop "
        "takes effect on the next call of every sidecar using the file).",
    )
    wallet.add_argument("action", choices=["show", "stop", "resume", "top-up"])
    wallet.add_argument("amount", nargs="?", help="USD to add, for top-up (e.g. 10.00)")
    wallet.add_argument("--namespace", "-n", help="the wallet (default: A11I_NAMESPACE)")
    wallet.add_argument(
        "--cluster", action="store_true", help="stop/resume: every wallet in the file"
    )
    wallet.add_argument("--file", type=Path, help="the SQLite file (A11I_WALLET_FILE)")
    wallet.add_argument(
        "--redis", help="operate on the shared wallets in this Redis (A11I_REDIS_URL)"
    )
    wallet.add_argument("--json", action="store_true", help="show: print JSON")
    wallet.set_defaults(run=_run_wallet)

    probe = commands.add_parser(
        "probe",
        help="exit 0 when the local sidecar answers ready (a kubelet exec probe)",
        description="GET http://127.0.0.1:$A11I_PORT/a11i/readyz (or --path) with a timeout; "
        "exit 0 on HTTP 200, 1 otherwise. The sidecar listens on the pod's loopback only, "
        "which the kubelet's HTTP probes cannot reach, so the injector uses this as exec probe.",
    )
    probe.add_argument("--path", default="/a11i/readyz", help="default /a11i/readyz")
    probe.add_argument("--timeout", type=float, default=1.0, help="seconds (default 1)")
    probe.set_defaults(run=_run_probe)

    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator (AgentBudget, TelemetryPolicy)",
        description="Reconcile AgentBudgets into the namespaces' shared wallets in Redis and "
        "TelemetryPolicies into the sidecars' configuration. Configured by environment "
        "variables (docs/operator.md): A11I_REDIS_URL (required), A11I_OPERATOR_*; the cluster "
        "from KUBECONFIG or the in-cluster service account. Options: --role "
        "all|reconciler|webhook, --webhook-port, --webhook-cert-dir, --self-signed, --verbose, "
        "--debug (a11i operator --role webhook --help shows them all).",
        add_help=False,
    )
    operator.set_defaults(run=_run_operator)

    dashboard = commands.add_parser(
        "dashboard",
        help="serve the live dashboard (spend per agent, emergency stop, top-up)",
        description="Serve the live dashboard: spend per namespace and agent, the emergency "
        "stop, top-ups (docs/dashboard.md). Needs a token (A11I_DASHBOARD_ADMIN_TOKEN[_FILE], "
        "A11I_DASHBOARD_VIEWER_TOKEN[_FILE]) unless --insecure-no-auth. Options: --host, "
        "--port, --redis, --insecure-no-auth (a11i dashboard --help shows them all).",
        add_help=False,
    )
    dashboard.set_defaults(run=_run_dashboard)

    up = commands.add_parser(
        "up",
        help="run the sidecar and the dashboard in one process (a laptop)",
        description="Run the metering proxy (port 11000) and the live dashboard (port 11080) in "
        "one process on embedded defaults: the SQLite wallet file and events in memory, or "
        "Redis when A11I_REDIS_URL is set. Options: --host, --port, --dashboard-host, "
        "--dashboard-port, --insecure-no-auth (a11i up --help shows them all).",
        add_help=False,
    )
    up.set_defaults(run=_run_up)
    return parser


def _run_dashboard(args: argparse.Namespace) -> int:
    from a11i_operator.dashboard.server import main as run_dashboard

    return run_dashboard(list(args.extra))


def _run_up(args: argparse.Namespace) -> int:
    from a11i_operator.dashboard.up import main as run_up

    return run_up(list(args.extra))


def _run_operator(args: argparse.Namespace) -> int:
    from a11i_operator.run import main as run_operator

    return run_operator(list(args.extra))


def _run_probe(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    raw = os.environ.get("A11I_PORT", "").strip() or "11000"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"A11I_PORT must be a TCP port (1-65535), not {raw!r}")
    url = f"http://127.0.0.1:{int(raw)}{args.path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, TimeoutError) as error:
        print(f"a11i probe: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"a11i probe: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


def _run_wallet(args: argparse.Namespace) -> int:
    from sidecar import sqlite_wallet

    settings = from_env(dict(os.environ))
    redis_url = args.redis or (None if args.file else settings.redis_url)
    if redis_url:
        return asyncio.run(_redis_wallet_command(args, redis_url, settings))
    path = args.file or (
        Path(settings.wallet_file) if settings.wallet_file else sqlite_wallet.default_path()
    )
    namespace = args.namespace or settings.namespace
    if args.action in ("stop", "resume") and args.cluster:
        sqlite_wallet.set_cluster_stop(path, args.action == "stop")
        print(f"cluster emergency stop {'on' if args.action == 'stop' else 'off'} ({path})")
        return 0
    if args.action == "show":
        snapshots = sqlite_wallet.read_snapshots(path)
        chosen = [s for s in snapshots if args.namespace is None or s.namespace == namespace]
        if not chosen:
            print(f"a11i wallet: no wallet for {namespace!r} in {path}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps([s.as_json() for s in chosen], indent=2))
        for snapshot in [] if args.json else chosen:
            print(_wallet_line(snapshot.as_json()))
        return 0
    if not sqlite_wallet.exists(path, namespace):
        print(f"a11i wallet: no wallet for {namespace!r} in {path}", file=sys.stderr)
        return 1
    if args.action == "top-up":
        amount = _top_up_amount(args.amount)
        if amount is None:
            return 2
        asyncio.run(sqlite_wallet.administer(path, namespace, top_up=amount))
        print(f"{namespace}: limit raised by ${amount}")
        return 0
    asyncio.run(sqlite_wallet.administer(path, namespace, suspend=args.action == "stop"))
    print(f"{namespace}: emergency stop {'on' if args.action == 'stop' else 'off'}")
    return 0


async def _redis_wallet_command(
    args: argparse.Namespace, url: str, settings: SidecarSettings
) -> int:
    from redis.asyncio import Redis

    from sidecar.redis_wallet import RedisWallet, set_cluster_stop

    namespace = args.namespace or settings.namespace
    client = Redis.from_url(url)
    try:
        if args.action in ("stop", "resume") and args.cluster:
            await set_cluster_stop(client, args.action == "stop")
            print(f"cluster emergency stop {'on' if args.action == 'stop' else 'off'} ({url})")
            return 0
        if not await client.exists(f"a11i:wallet:{namespace}"):
            print(f"a11i wallet: no wallet for {namespace!r} in {url}", file=sys.stderr)
            return 1
        wallet = RedisWallet(
            client,
            namespace=namespace,
            agent="a11i-cli",
            policy=settings.budget,
            period=settings.period,
            timeout_s=max(settings.redis_timeout_s, 2.0),
            zone=settings.timezone,
        )
        if args.action == "show":
            snapshot = (await wallet.snapshot()).as_json()
            print(json.dumps([snapshot], indent=2) if args.json else _wallet_line(snapshot))
        elif args.action == "top-up":
            amount = _top_up_amount(args.amount)
            if amount is None:
                return 2
            await wallet.top_up(amount)
            print(f"{namespace}: limit raised by ${amount}")
        else:
            await wallet.suspend(args.action == "stop")
            print(f"{namespace}: emergency stop {'on' if args.action == 'stop' else 'off'}")
        return 0
    finally:
        await client.aclose()


def _top_up_amount(text: str | None) -> Decimal | None:
    """The amount of a top-up, or None (said on standard error) when it is not a positive one."""
    try:
        amount = Decimal(text or "")
    except InvalidOperation:
        amount = Decimal(0)
    if not amount.is_finite() or amount <= 0:
        print("a11i wallet top-up: give a positive amount of USD, e.g. 10.00", file=sys.stderr)
        return None
    return amount


def _wallet_line(body: dict[str, str | None]) -> str:
    return (
        f"{body['namespace']}: {body['state']}  spent ${body['spent_usd']} of "
        f"${body['limit_usd'] or 'unlimited'}  reserved ${body['reserved_usd']}  "
        f"remaining ${body['remaining_usd'] or '-'}  ({body['period']} since "
        f"{body['period_start']})"
    )


def _run_sidecar(args: argparse.Namespace) -> int:
    from aiohttp import web

    env = dict(os.environ)
    if args.host:
        env["A11I_HOST"] = args.host
    if args.port:
        env["A11I_PORT"] = str(args.port)
    settings, _sidecar, app = sidecar_app(env)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


def sidecar_app(env: dict[str, str]) -> tuple[SidecarSettings, Sidecar, web.Application]:
    """The sidecar's settings, state and application from the environment, logging configured
    (every line through the PII scrubber): what ``a11i sidecar`` serves and ``a11i up``
    embeds."""
    from sidecar.library import load_meter
    from sidecar.proxy import Sidecar, build_app
    from sidecar.telemetry import ScrubbingFilter

    settings = from_env(env)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    meter = load_meter(encodings_dir=settings.encodings_dir, rate_card_path=settings.rate_card_path)
    wallet = wallet_for(settings)
    # The OTLP exporters log every retry of every failed batch; a11i logs export failures
    # itself, once a minute per signal, with the count (and counts them in /a11i/metrics).
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    sidecar = Sidecar(settings, meter, wallet, events_for(settings))
    # Every line the sidecar logs passes the PII scrubber (and never carries a held key).
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter(sidecar.telemetry.scrub_log))
    app = build_app(sidecar)
    log.info(
        "a11i sidecar %s on http://%s:%d (OpenAI %s, Anthropic %s, budget %s, keys held: %r)",
        __version__,
        settings.host,
        settings.port,
        settings.upstream.openai_base,
        settings.upstream.anthropic_base,
        settings.budget.limit_usd if settings.budget.limit_usd is not None else "unlimited",
        settings.custody,
    )
    return settings, sidecar, app


def events_for(settings: SidecarSettings) -> EventSink:
    """The Redis stream ``a11i:events`` with Redis, else the in-process ring."""
    from sidecar.events import EventRing, RedisEventStream

    if settings.redis_url is None:
        return EventRing()
    from redis.asyncio import Redis

    return RedisEventStream(Redis.from_url(settings.redis_url), owns_client=True)


def wallet_for(settings: SidecarSettings) -> Wallet:
    """The wallet backend the settings ask for: Redis when ``A11I_REDIS_URL`` is set, else the
    embedded SQLite file (or memory, with ``A11I_WALLET_FILE=:memory:``); nested with the
    agent's own wallet (key ``namespace/agent``) when ``A11I_AGENT_BUDGET_USD`` is set."""
    from sidecar.wallet import NestedWallet

    wallet = _backend(settings, settings.namespace, settings.budget)
    if settings.agent_budget is None:
        return wallet
    own = _backend(settings, f"{settings.namespace}/{settings.agent}", settings.agent_budget)
    return NestedWallet(wallet, own)


def _backend(settings: SidecarSettings, key: str, policy: BudgetPolicy) -> Wallet:
    from sidecar.sqlite_wallet import SQLiteWallet, wallet_path
    from sidecar.wallet import MemoryWallet

    if settings.redis_url is not None:
        from redis.asyncio import Redis

        from sidecar.redis_wallet import RedisWallet

        return RedisWallet(
            Redis.from_url(settings.redis_url),
            namespace=key,
            agent=settings.agent,
            policy=policy,
            period=settings.period,
            timeout_s=settings.redis_timeout_s,
            fail_open=settings.redis_fail_open,
            owns_client=True,
            zone=settings.timezone,
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


def _run_cost(args: argparse.Namespace) -> int:
    from sidecar.library import load_meter

    raw = sys.stdin.buffer.read() if args.file == "-" else _read(Path(args.file))
    try:
        body = parse_json_body(raw)
        dialect = Dialect(args.dialect) if args.dialect else guess_dialect(body)
        meter = load_meter(rate_card_path=args.rate_card)
        plan = meter.plan(dialect, body)
    except A11iError as exc:
        print(f"a11i cost: {exc.message}", file=sys.stderr)
        return 1
    result = {
        "dialect": dialect.value,
        "model": plan.request.model,
        "priced_as": plan.price.matched or "fallback",
        "input_tokens": plan.input.tokens,
        "input_tokens_exact": plan.input.exact,
        "max_output_tokens": plan.output_bound,
        "projected_cost_usd": usd(plan.projected_usd),
        "context_saturation_percent": str(plan.saturation_percent),
        "tool_results": len(plan.tool_results),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(key) for key in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        if plan.price.is_fallback:
            print(f"note: {plan.request.model!r} is not on the rate card; fallback price used")
    return 0


def guess_dialect(body: JSONObject) -> Dialect:
    """The dialect a body is most likely for, when the caller did not say."""
    model = str(body.get("model", "")).lower()
    if "messages" in body:
        if "claude" in model or ("max_tokens" in body and "system" in body):
            return Dialect.ANTHROPIC_MESSAGES
        return Dialect.OPENAI_CHAT
    if "embedding" in model:
        return Dialect.OPENAI_EMBEDDINGS
    return Dialect.OPENAI_RESPONSES


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"a11i cost: cannot read {path}: {exc.strerror}") from exc


if __name__ == "__main__":
    raise SystemExit(main())
