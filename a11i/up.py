"""``a11i up``: the sidecar and the dashboard in one process, for a laptop.

Entry point: builds the sidecar from the environment exactly as ``a11i sidecar`` does (embedded
defaults: the SQLite wallet file, the in-process event ring; Redis when ``A11I_REDIS_URL`` is
set) and serves the dashboard beside it, fed by that ring and that wallet file (or by Redis).
Both listen on loopback by default. The dashboard is never open by default here either: without
``A11I_DASHBOARD_*_TOKEN`` and without ``--insecure-no-auth``, an admin token is generated once,
kept in a file only the user can read, and printed to the terminal.

What it may not do: read the environment outside ``main``/``run``, or start serving one half
when the other cannot (a port in use stops both, with a message).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from a11i.core.errors import ConfigurationError
from a11i.dashboard.auth import AuthError, settings_from_env
from a11i.dashboard.embedded import EmbeddedSource, in_process_wallets
from a11i.dashboard.server import DashboardSettings, build_app
from a11i.dashboard.source import DashboardError, RedisSource, Source
from a11i.sidecar.app import freeze, serve_until_stopped, sidecar_app
from a11i.sidecar.proxy import Sidecar
from a11i.sidecar.redis_clients import RedisTarget
from a11i.sidecar.settings import SidecarSettings
from a11i.sidecar.telemetry.events import EventRing
from a11i.sidecar.wallets.sqlite import state_dir, wallet_path

log = logging.getLogger("a11i.up")

TOKEN_FILE_NAME: Final = "dashboard-admin-token"

DESCRIPTION: Final = (
    "Run the metering proxy and the live dashboard in one process on embedded defaults (the "
    "SQLite wallet file, events in memory; Redis when A11I_REDIS_URL is set). The sidecar is "
    "configured by the A11I_* variables of `a11i sidecar` (docs/configuration.md). The "
    "dashboard needs a token: A11I_DASHBOARD_ADMIN_TOKEN[_FILE] / _VIEWER_TOKEN[_FILE], else "
    "one is generated, kept in $XDG_STATE_HOME/a11i/dashboard-admin-token and printed."
)


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="a11i up", description=DESCRIPTION)
    built.add_argument("--host", help="the sidecar's address (A11I_HOST, default 127.0.0.1)")
    built.add_argument("--port", type=int, help="the sidecar's port (A11I_PORT, default 11000)")
    built.add_argument(
        "--dashboard-host", default="127.0.0.1", help="the dashboard's address (127.0.0.1)"
    )
    built.add_argument(
        "--dashboard-port", type=int, default=11080, help="the dashboard's port (11080)"
    )
    built.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no login for the dashboard: any local process or page that reaches the port can "
        "stop the agents (loopback names only)",
    )
    return built


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv), dict(os.environ))


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Serve both until SIGINT or SIGTERM; 2 on a configuration error or a port in use."""
    if args.host:
        env["A11I_HOST"] = args.host
    if args.port:
        env["A11I_PORT"] = str(args.port)
    try:
        settings, sidecar, sidecar_web = sidecar_app(env)
        generated = _ensure_token(env, args.insecure_no_auth)
        dashboard = DashboardSettings(
            host=args.dashboard_host,
            port=args.dashboard_port,
            redis_url=settings.redis_url,
            auth=settings_from_env(env, insecure_no_auth=args.insecure_no_auth),
        )
        dashboard_web = build_app(dashboard, source_for(settings, sidecar))
    except (ConfigurationError, DashboardError, OSError) as exc:
        print(f"a11i up: {exc}", file=sys.stderr)
        return 2
    url = f"http://{_url_host(dashboard.host)}:{dashboard.port}"
    if dashboard.auth.insecure_no_auth:
        log.warning("!!! --insecure-no-auth: any local process can stop the agents at %s !!!", url)
    try:
        # Cleaned up in reverse order: the dashboard before the sidecar whose ring it reads.
        asyncio.run(
            serve_until_stopped(
                [
                    (sidecar_web, settings.host, settings.port),
                    (dashboard_web, dashboard.host, dashboard.port),
                ],
                ready=lambda: _started(settings, url, generated),
            )
        )
    except OSError as exc:
        print(f"a11i up: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0


def source_for(settings: SidecarSettings, sidecar: Sidecar) -> Source:
    """Redis when the sidecar shares it; else the sidecar's own ring and wallet file."""
    if settings.redis_url is not None:
        target = RedisTarget(
            settings.redis_url,
            settings.redis_mode,
            settings.redis_master,
            settings.redis_sentinel_password,
        )
        return RedisSource.from_url(target, timeout_s=settings.redis_timeout_s)
    if not isinstance(sidecar.events, EventRing):
        raise DashboardError("the embedded dashboard needs the sidecar's in-memory event ring")
    wallet_file = wallet_path(settings.wallet_file)
    memory = in_process_wallets(sidecar.wallet) if wallet_file is None else {}
    return EmbeddedSource(sidecar.events, wallet_file=wallet_file, memory_wallets=memory)


def token_file(env: dict[str, str]) -> Path:
    """Beside the wallet file, in a11i's state folder."""
    return state_dir(env) / TOKEN_FILE_NAME


def _ensure_token(env: dict[str, str], insecure: bool) -> Path | None:
    """Without a configured token (and without --insecure-no-auth), the admin token kept in the
    user's state directory, created once (mode 0600); its path, or None when not used."""
    names = ("A11I_DASHBOARD_ADMIN_TOKEN", "A11I_DASHBOARD_VIEWER_TOKEN")
    if insecure or any(env.get(name) or env.get(f"{name}_FILE") for name in names):
        return None
    path = token_file(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise AuthError(f"{path} is readable by others: chmod 600 it or delete it")
    env["A11I_DASHBOARD_ADMIN_TOKEN_FILE"] = str(path)
    return path


def _announce(settings: SidecarSettings, url: str, token_path: Path | None) -> None:
    # Printed, not logged: log lines pass the PII scrubber, which would redact the token.
    lines = [
        f"a11i up: agents call http://{_url_host(settings.host)}:{settings.port} "
        f"(OPENAI_BASE_URL=http://{_url_host(settings.host)}:{settings.port}/v1, "
        f"ANTHROPIC_BASE_URL=http://{_url_host(settings.host)}:{settings.port})",
        f"a11i up: dashboard at {url}",
    ]
    if token_path is not None:
        token = token_path.read_text(encoding="utf-8").strip()
        lines.append(f"a11i up: log in with the admin token {token} (kept in {token_path})")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _started(settings: SidecarSettings, url: str, token_path: Path | None) -> None:
    """Both apps listen: the heap as it stands lives as long as the process (``freeze``)."""
    freeze()
    _announce(settings, url, token_path)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    raise SystemExit(main())
