"""The ``a11i`` command line: one console script, one subcommand per job.

Parsing and dispatch only: each subcommand hands its flags and the environment to the module
that does the job (``a11i.sidecar.app``, ``…wallets.admin``, ``…cost``, ``…probe``,
``a11i.operator.run``, ``a11i.dashboard.server``, ``a11i.up``), imported when chosen, so a probe
never pays for the operator's imports. Nothing below reads the environment; every configuration
error ends here, said on standard error, with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from a11i import __version__
from a11i.core.errors import A11iError, ConfigurationError
from a11i.core.model import Dialect
from a11i.sidecar.contract import READYZ


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # The operator, the dashboard and `up` have options of their own: passed through.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("operator", "dashboard", "up"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except ConfigurationError as exc:
        print(f"a11i: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
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
    wallet.add_argument("action", choices=["show", "stop", "resume", "top-up", "copy"])
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
    wallet.add_argument(
        "--to", help="copy: the Redis to copy every wallet into (e.g. a Redis Cluster's node)"
    )
    wallet.add_argument(
        "--to-mode",
        choices=["standalone", "cluster", "sentinel"],
        default="standalone",
        help="copy: how --to is reached (as A11I_REDIS_MODE)",
    )
    wallet.set_defaults(run=_run_wallet)

    probe = commands.add_parser(
        "probe",
        help="exit 0 when the local sidecar answers ready (a kubelet exec probe)",
        description="GET http://127.0.0.1:$A11I_PORT/a11i/readyz (or --path) with a timeout; "
        "exit 0 on HTTP 200, 1 otherwise. The sidecar listens on the pod's loopback only, "
        "which the kubelet's HTTP probes cannot reach, so the injector uses this as exec probe.",
    )
    probe.add_argument("--path", default=READYZ, help=f"default {READYZ}")
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


def _run_sidecar(args: argparse.Namespace) -> int:
    from a11i.sidecar.app import serve

    env = dict(os.environ)
    if args.host:
        env["A11I_HOST"] = args.host
    if args.port:
        env["A11I_PORT"] = str(args.port)
    return serve(env)


def _run_cost(args: argparse.Namespace) -> int:
    from a11i.sidecar import cost

    return cost.run(
        args.file, dialect_name=args.dialect, rate_card=args.rate_card, as_json=args.json
    )


def _run_wallet(args: argparse.Namespace) -> int:
    from a11i.sidecar.wallets import admin

    command = admin.WalletCommand(
        action=args.action,
        amount=args.amount,
        namespace=args.namespace,
        cluster=args.cluster,
        file=args.file,
        redis=args.redis,
        as_json=args.json,
        to=args.to,
        to_mode=args.to_mode,
    )
    return admin.run(command, os.environ)


def _run_probe(args: argparse.Namespace) -> int:
    from a11i.sidecar import probe

    return probe.run(args.path, args.timeout, os.environ)


def _run_operator(args: argparse.Namespace) -> int:
    try:
        from a11i.operator.run import main as run_operator
    except ModuleNotFoundError as error:
        return _missing_extra(error, "a11i operator")
    return run_operator(list(args.extra))


def _run_dashboard(args: argparse.Namespace) -> int:
    from a11i.dashboard.server import main as run_dashboard

    return run_dashboard(list(args.extra))


def _run_up(args: argparse.Namespace) -> int:
    from a11i.up import main as run_up

    return run_up(list(args.extra))


#: What only the ``operator`` extra installs: a missing one is a missing extra, not a bug.
_EXTRA_MODULES = frozenset({"kopf", "kubernetes", "cryptography"})


def _missing_extra(error: ModuleNotFoundError, command: str) -> int:
    if (error.name or "").partition(".")[0] not in _EXTRA_MODULES:
        raise error
    print(
        f"a11i: {command} needs the operator's dependencies ({error.name} is not installed): "
        "pip install 'a11i[operator]'",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
