"""``a11i wallet``: show a wallet, stop or resume its agents, top it up, copy the wallets into
another Redis.

Operates on the store the sidecars share: the Redis of ``--redis`` / ``A11I_REDIS_URL`` (a stop
reaches every sidecar within a second) or the embedded SQLite file (a stop takes effect on the
next call of every sidecar using it). Prints for a person; the exit code says what happened.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from a11i.sidecar.settings import SidecarSettings, from_env
from a11i.sidecar.wallets import sqlite as sqlite_wallet

if TYPE_CHECKING:
    from a11i.sidecar.redis_clients import AnyRedis


@dataclass(frozen=True, slots=True)
class WalletCommand:
    """One ``a11i wallet`` invocation, as its flags give it."""

    #: show, stop, resume or top-up.
    action: str
    #: USD to add, for top-up.
    amount: str | None = None
    #: The wallet (default: A11I_NAMESPACE).
    namespace: str | None = None
    #: stop/resume: every wallet of the store (the cluster-wide stop).
    cluster: bool = False
    #: The SQLite file (default: A11I_WALLET_FILE, else the state folder's).
    file: Path | None = None
    #: The Redis of the shared wallets (default: A11I_REDIS_URL).
    redis: str | None = None
    #: show: print JSON.
    as_json: bool = False
    #: copy: the Redis every wallet is copied into, and how it is reached.
    to: str | None = None
    to_mode: str = "standalone"


def run(args: WalletCommand, env: Mapping[str, str]) -> int:
    """Run the command against Redis (``--redis`` or ``A11I_REDIS_URL``) or the SQLite file;
    exit 0, 1 when the wallet does not exist, 2 for a bad amount."""
    settings = from_env(env)
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
        if args.as_json:
            print(json.dumps([s.as_json() for s in chosen], indent=2))
        for snapshot in [] if args.as_json else chosen:
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


async def _redis_wallet_command(args: WalletCommand, url: str, settings: SidecarSettings) -> int:
    from a11i.sidecar.redis_clients import connect, is_cluster  # only with Redis
    from a11i.sidecar.wallets.redis import RedisWallet, WalletKeys, set_cluster_stop

    namespace = args.namespace or settings.namespace
    client = connect(
        url,
        settings.redis_mode,
        master=settings.redis_master,
        sentinel_password=settings.redis_sentinel_password,
    )
    try:
        if args.action == "copy":
            return await _copy(client, args, settings)
        if args.action in ("stop", "resume") and args.cluster:
            await set_cluster_stop(client, args.action == "stop")
            print(f"cluster emergency stop {'on' if args.action == 'stop' else 'off'} ({url})")
            return 0
        keys = WalletKeys.of(namespace, cluster=is_cluster(client))
        if not await client.exists(keys.wallet):
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
            print(json.dumps([snapshot], indent=2) if args.as_json else _wallet_line(snapshot))
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


async def _copy(source: AnyRedis, args: WalletCommand, settings: SidecarSettings) -> int:
    """Copy every wallet into ``--to`` (a move to a Redis Cluster, docs/capacity.md)."""
    from a11i.sidecar.redis_clients import RedisMode, connect
    from a11i.sidecar.wallets.redis import copy_wallets

    if not args.to:
        print("a11i wallet copy: --to names the Redis to copy the wallets into", file=sys.stderr)
        return 2
    target = connect(
        args.to,
        RedisMode(args.to_mode),
        master=settings.redis_master,
        sentinel_password=settings.redis_sentinel_password,
    )
    try:
        copied, kept = await copy_wallets(source, target)
    finally:
        await target.aclose()
    for name in copied:
        print(f"{name}: copied")
    for name in kept:
        print(f"{name}: already there, left as it is")
    return 0


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
