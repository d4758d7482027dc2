"""Key custody through a running sidecar: the held key, not the agent's, reaches the provider,
and a rotated Secret's key is used from the next call on, without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.secret_volume import SecretVolume
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the sidecar's key watcher to have done something (its rounds, 50 ms apart)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the key watcher never got there")


async def keys_at_provider(sidecar: RunningSidecar, standin: StandIn) -> tuple[str, str]:
    """One OpenAI and one Anthropic call with the agent's placeholder key; the credentials the
    stand-in provider received."""
    standin.clear_requests()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            sidecar.url + "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": "Bearer held-by-the-a11i-sidecar"},
        ) as response:
            assert response.status == 200, await response.text()
        async with http.post(
            sidecar.url + "/v1/messages",
            json=MESSAGES,
            headers={"x-api-key": "held-by-the-a11i-sidecar", "anthropic-version": "2023-06-01"},
        ) as response:
            assert response.status == 200, await response.text()
    openai, anthropic = standin.requests[-2:]
    return openai.headers["authorization"], anthropic.headers["x-api-key"]


async def test_a_rotated_key_reaches_the_provider_without_a_restart(
    start_sidecar: SidecarFactory,
    standin: StandIn,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    volume = SecretVolume(tmp_path / "keys", {"openai": "sk-one", "anthropic": "sk-ant-one"})
    sidecar = await start_sidecar(
        A11I_OPENAI_API_KEY_FILE=str(volume.root / "openai"),
        A11I_ANTHROPIC_API_KEY_FILE=str(volume.root / "anthropic"),
        A11I_RELOAD_INTERVAL="0.05",
    )
    assert await keys_at_provider(sidecar, standin) == ("Bearer sk-one", "sk-ant-one")

    volume.update({"openai": "sk-two", "anthropic": "sk-ant-two"})
    await until(lambda: sidecar.sidecar.settings.custody.anthropic_key == "sk-ant-two")
    assert await keys_at_provider(sidecar, standin) == ("Bearer sk-two", "sk-ant-two")

    # A key emptied by mistake is not "no custody": the key in force stays (and is not logged).
    caplog.set_level(logging.ERROR, logger="a11i.sidecar.keys")
    volume.update({"openai": "", "anthropic": "sk-ant-two"})
    await until(lambda: "the openai key in force stays" in caplog.text)
    assert "sk-" not in caplog.text
    assert await keys_at_provider(sidecar, standin) == ("Bearer sk-two", "sk-ant-two")


async def models_in_the_event_feed(sidecar: RunningSidecar, *models: str) -> list[str]:
    """One call per model name through the sidecar; the model of each call's event as the
    sidecar's own feed (``/a11i/events``, every value through its scrubber) shows it."""
    async with aiohttp.ClientSession() as http:
        async with http.get(sidecar.url + "/a11i/events") as response:
            before = len(await response.json())
        for model in models:
            async with http.post(
                sidecar.url + "/v1/chat/completions",
                json={**CHAT, "model": model},
                headers={"Authorization": "Bearer held-by-the-a11i-sidecar"},
            ) as response:
                assert response.status == 200, await response.text()
        # Events are written after the answer, off the event loop: wait for them.
        for _ in range(500):
            async with http.get(sidecar.url + "/a11i/events") as response:
                events = await response.json()
            if len(events) >= before + len(models):
                break
            await asyncio.sleep(0.01)
    return [event["model"] for event in events[before : before + len(models)]]


async def test_a_rotated_key_is_scrubbed_from_telemetry_and_so_is_the_old_one(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    # Of no shape the PII rules know (as an Azure key is not): only the held keys catch them.
    old, new = "held-key-one-0123456789", "held-key-two-9876543210"
    volume = SecretVolume(tmp_path / "keys", {"openai": old})
    sidecar = await start_sidecar(
        A11I_OPENAI_API_KEY_FILE=str(volume.root / "openai"), A11I_RELOAD_INTERVAL="0.05"
    )
    # A model name stands for any string that leaves in telemetry. The new key is no key yet,
    # so it shows (and its scrubbed form is cached, as names are).
    assert await models_in_the_event_feed(sidecar, old, new) == ["[REDACTED:secret]", new]

    volume.update({"openai": new})
    await until(lambda: sidecar.sidecar.settings.custody.openai_key == new)
    # The new key is scrubbed from then on, and the old one still is: a line about a call made
    # with it may come after the rotation.
    assert await models_in_the_event_feed(sidecar, new, old) == ["[REDACTED:secret]"] * 2
    assert sidecar.sidecar.telemetry.scrub_log(f"{old} {new}") == (
        "[REDACTED:secret] [REDACTED:secret]"
    )
