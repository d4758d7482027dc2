"""The provider keys the sidecar holds, re-read when the kubelet refreshes their Secret.

Under key custody the keys come from files (``A11I_OPENAI_API_KEY_FILE``,
``A11I_ANTHROPIC_API_KEY_FILE``: a Secret mounted into the sidecar alone). When the Secret is
updated, the kubelet swaps the files in place (a new ``..data`` directory behind the same
names) within its sync period; :func:`watch_key_files` notices the swap by the file's identity
(inode, mtime, size) every ``A11I_RELOAD_INTERVAL`` seconds and puts the new key in force
without a restart, and gives it to the telemetry's scrubber (which keeps the old one too). A key
file that cannot be read, or is empty, keeps the key in force.

What it may not do: log or return a key in any form (only the provider's name and the path).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from a11i.core.errors import SettingsError
from a11i.core.headers import KeyCustody
from a11i.core.model import Provider
from a11i.sidecar.settings import SidecarSettings, read_key_file

log = logging.getLogger(__name__)

#: A file's identity: a swap by the kubelet changes the inode, an edit in place the mtime/size.
FileVersion = tuple[int, int, int] | None


class ScrubsKeys(Protocol):
    """What keeps the held keys out of telemetry and logs (the sidecar's ``Telemetry``)."""

    def hold_keys(self, custody: KeyCustody) -> None: ...


class HoldsSettings(Protocol):
    """Whoever serves calls with ``settings`` (the proxy's ``Sidecar``) and scrubs the keys it
    holds from its telemetry."""

    settings: SidecarSettings

    @property
    def telemetry(self) -> ScrubsKeys: ...


def file_version(path: Path) -> FileVersion:
    try:
        stat = path.stat()  # follows the kubelet's symlinks to the file in force
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class KeyFiles:
    """The held keys' files and the version of each that was last read."""

    def __init__(self) -> None:
        # Empty: the first look reads every file once, so a rotation between the start's read
        # and the first look is not missed.
        self._seen: dict[Provider, FileVersion] = {}

    def refresh(self, settings: SidecarSettings) -> SidecarSettings | None:
        """``settings`` holding the keys of the files that changed since the last look, or None
        when none did (or a changed one is unreadable or empty: the key in force stays)."""
        custody = settings.custody
        for provider, path in settings.key_files:
            version = file_version(path)
            if version == self._seen.get(provider):
                continue
            self._seen[provider] = version
            try:
                key = read_key_file(path, f"the {provider} key file")
            except SettingsError as error:
                log.error("%s; the %s key in force stays", error, provider)
                continue
            if key == custody.key_for(provider):
                continue
            field = "anthropic_key" if provider is Provider.ANTHROPIC else "openai_key"
            custody = replace(custody, **{field: key})
            log.info("the %s key held by the sidecar was re-read from %s", provider, path)
        return None if custody is settings.custody else replace(settings, custody=custody)


async def watch_key_files(sidecar: HoldsSettings) -> None:
    """Put rotated keys in force, checking the files every ``reload_interval_s`` seconds; returns
    at once when no key comes from a file. Runs until cancelled."""
    if not sidecar.settings.key_files:
        return
    files = KeyFiles()
    while True:
        await asyncio.sleep(sidecar.settings.reload_interval_s)
        # A stat per file, and a read of a few bytes when one changed: cheap enough on the loop,
        # and the settings are swapped between two calls, never during one.
        refreshed = files.refresh(sidecar.settings)
        if refreshed is not None:
            # Scrubbed before it is used: no line about a call with the new key can carry it.
            sidecar.telemetry.hold_keys(refreshed.custody)
            sidecar.settings = refreshed
