"""The dashboard's chart library (uPlot), fetched from the npm registry and verified.

Adapter, standard library only (it runs in the images' builder stage, in ``make assets`` and as a
plain script): reads the version and the ``integrity`` hash pinned in ``package-lock.json`` beside
it, downloads that tarball from the registry (``NPM_CONFIG_REGISTRY``, default
https://registry.npmjs.org), refuses it unless its hash matches, and writes the three files the
page uses into ``static/vendor/`` (``uPlot.iife.min.js``, ``uPlot.min.css``, ``uPlot.LICENSE``).
No npm and no package scripts are involved; nothing else in the tarball is written.

    python -m a11i.dashboard.assets [--into DIR] [--check]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
LOCK: Final = HERE / "package-lock.json"
VENDOR: Final = HERE / "static" / "vendor"
PACKAGE: Final = "uplot"
#: Tarball member -> file written into the vendor folder.
FILES: Final = {
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "uPlot.LICENSE",
}
#: A stamp naming the version and hash the files came from (so a changed lock refetches).
STAMP: Final = ".uplot"


class AssetError(Exception):
    """The pinned library cannot be fetched or does not match its pin."""


def pinned(lock: Path = LOCK) -> tuple[str, str]:
    """The version and integrity (``sha512-<base64>``) of uPlot in the lock file."""
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        entry = data["packages"][f"node_modules/{PACKAGE}"]
        return str(entry["version"]), str(entry["integrity"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"{lock}: no pinned {PACKAGE} version and integrity ({exc})") from exc


def verify(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` has the Subresource-Integrity-style hash ``integrity``."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        raise AssetError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")
    if actual != expected:
        raise AssetError(
            f"{PACKAGE} tarball does not match package-lock.json ({algorithm} {actual[:16]}... "
            f"!= {expected[:16]}...): refusing it"
        )


def unpack(data: bytes) -> dict[str, bytes]:
    """The files the page uses, read from the tarball (nothing is extracted to disk)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            target = FILES.get(member.name)
            if target is None or not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                found[target] = handle.read()
    missing = sorted(set(FILES.values()) - set(found))
    if missing:
        raise AssetError(f"{PACKAGE} tarball lacks {', '.join(missing)}")
    return found


def current(into: Path, version: str, integrity: str) -> bool:
    """Whether ``into`` already holds the pinned version's files."""
    stamp = into / STAMP
    if not stamp.is_file() or not all((into / name).is_file() for name in FILES.values()):
        return False
    return stamp.read_text(encoding="utf-8").strip() == f"{version} {integrity}"


def fetch(into: Path = VENDOR, *, registry: str | None = None, timeout_s: float = 60.0) -> str:
    """Make ``into`` hold the pinned uPlot; returns what was done, for the log."""
    version, integrity = pinned()
    if current(into, version, integrity):
        return f"{PACKAGE} {version} already in {into}"
    base = registry or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org"
    url = f"{base.rstrip('/')}/{PACKAGE}/-/{PACKAGE}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            data = answer.read()
    except OSError as exc:
        raise AssetError(f"cannot download {url}: {exc}") from exc
    verify(data, integrity)
    files = unpack(data)
    into.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        partial = into / f".{name}.partial"
        partial.write_bytes(content)
        partial.replace(into / name)
    (into / STAMP).write_text(f"{version} {integrity}\n", encoding="utf-8")
    return f"{PACKAGE} {version} ({integrity[:19]}..., verified) -> {into}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a11i.dashboard.assets",
        description="Fetch the dashboard's chart library (uPlot, pinned by package-lock.json) "
        "from the npm registry, verify it, and write it into static/vendor/.",
    )
    parser.add_argument("--into", type=Path, default=VENDOR, help="default: static/vendor/")
    parser.add_argument(
        "--check", action="store_true", help="only say whether the pinned files are there"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            version, integrity = pinned()
            ok = current(args.into, version, integrity)
            print(f"{PACKAGE} {version}: {'present' if ok else 'missing'} in {args.into}")
            return 0 if ok else 1
        print(fetch(args.into))
    except AssetError as exc:
        print(f"assets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
