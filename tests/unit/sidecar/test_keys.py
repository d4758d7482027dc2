"""Held keys re-read from their files when the kubelet swaps in a rotated Secret.

The files are laid out as the kubelet lays out a Secret volume (tests.support.secret_volume).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from a11i.core.errors import SettingsError
from a11i.core.scrub import SECRET_REDACTION
from a11i.sidecar.keys import KeyFiles, watch_key_files
from a11i.sidecar.settings import SidecarSettings, from_env
from a11i.sidecar.telemetry.traces import Telemetry
from tests.support.secret_volume import SecretVolume


def settings_for(volume: SecretVolume) -> SidecarSettings:
    return from_env(
        {
            "A11I_OPENAI_API_KEY_FILE": str(volume.root / "openai"),
            "A11I_ANTHROPIC_API_KEY_FILE": str(volume.root / "anthropic"),
        }
    )


def test_a_rotated_key_is_put_in_force(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "keys", {"openai": "sk-one", "anthropic": "sk-ant-one"})
    settings = settings_for(volume)
    files = KeyFiles()
    assert files.refresh(settings) is None  # the first look reads the files: nothing new
    assert files.refresh(settings) is None  # nothing changed
    volume.update({"openai": "sk-two\n", "anthropic": "sk-ant-one"})
    refreshed = files.refresh(settings)
    assert refreshed is not None
    assert refreshed.custody.openai_key == "sk-two"
    assert refreshed.custody.anthropic_key == "sk-ant-one"
    assert refreshed.key_files == settings.key_files
    assert files.refresh(refreshed) is None  # read once per change


def test_an_emptied_or_missing_key_keeps_the_key_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    volume = SecretVolume(tmp_path / "keys", {"openai": "sk-one", "anthropic": "sk-ant-one"})
    settings = settings_for(volume)
    files = KeyFiles()
    assert files.refresh(settings) is None
    volume.update({"openai": "", "anthropic": "sk-ant-one"})
    with caplog.at_level(logging.ERROR):
        assert files.refresh(settings) is None
    assert "is empty" in caplog.text
    assert "sk-" not in caplog.text  # never a key in a log line
    (volume.root / "openai").unlink()
    assert files.refresh(settings) is None


def test_an_empty_key_file_stops_the_sidecar_at_start(tmp_path: Path) -> None:
    """An empty file must not turn custody off and let the agent's own key through."""
    empty = tmp_path / "openai"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match=r"A11I_OPENAI_API_KEY_FILE names .* which is empty"):
        from_env({"A11I_OPENAI_API_KEY_FILE": str(empty)})


class Holder:
    """What the watcher needs of a sidecar: its settings and its (real) telemetry."""

    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        self.telemetry = Telemetry(settings, settings.telemetry_config)


async def test_the_watcher_swaps_the_settings_of_the_sidecar(tmp_path: Path) -> None:
    # Of no shape the PII rules know: only the held keys' list catches them.
    old, new = "held-openai-one-0123", "held-openai-two-4567"
    volume = SecretVolume(tmp_path / "keys", {"openai": old, "anthropic": "sk-ant-one"})
    holder = Holder(replace(settings_for(volume), reload_interval_s=0.01))
    assert holder.telemetry.scrub_log(new) == new
    watcher = asyncio.create_task(watch_key_files(holder))
    try:
        volume.update({"openai": new, "anthropic": "sk-ant-two"})
        while holder.settings.custody.anthropic_key != "sk-ant-two":
            assert not watcher.done()
            await asyncio.sleep(0.01)
        assert holder.settings.custody.openai_key == new
        # The telemetry scrubs the new key, and the old one still (a late line about it).
        redacted = f"{SECRET_REDACTION} {SECRET_REDACTION}"
        assert holder.telemetry.scrub_log(f"{new} {old}") == redacted
        assert holder.telemetry.scrubber.scrub(f"{old} {new}") == redacted
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_without_key_files_there_is_nothing_to_watch() -> None:
    await asyncio.wait_for(watch_key_files(Holder(from_env({}))), timeout=5)


def test_a_rotation_before_the_first_look_is_not_missed(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "keys", {"openai": "sk-one", "anthropic": "sk-ant-one"})
    settings = settings_for(volume)  # read at start
    volume.update({"openai": "sk-two", "anthropic": "sk-ant-one"})  # before the watcher runs
    refreshed = KeyFiles().refresh(settings)
    assert refreshed is not None
    assert refreshed.custody.openai_key == "sk-two"
