"""The sidecar's wiring: what its start line says about the keys it holds."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from a11i import up
from a11i.core.headers import KeyCustody
from a11i.sidecar import app as sidecar_app_module
from a11i.sidecar.app import freeze_heap, held_providers, serve, sidecar_app

OPENAI_KEY = "sk-held-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-held-0123456789abcdef"


@pytest.mark.parametrize(
    ("custody", "said"),
    [
        (KeyCustody(), "none"),
        (KeyCustody(openai_key=OPENAI_KEY), "openai"),
        (KeyCustody(anthropic_key=ANTHROPIC_KEY), "anthropic"),
        (KeyCustody(openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY), "openai, anthropic"),
    ],
    ids=["none", "openai", "anthropic", "both"],
)
def test_the_held_providers_are_named_never_their_keys(custody: KeyCustody, said: str) -> None:
    assert held_providers(custody) == said


@pytest.fixture
def root_handlers_restored() -> Iterator[None]:
    """``sidecar_app`` puts its scrubbing filter on the root logger's handlers, pytest's own
    among them, which outlive the test: their filters are put back as they were."""
    before = {handler: list(handler.filters) for handler in logging.getLogger().handlers}
    yield
    for handler, filters in before.items():
        handler.filters[:] = filters


@pytest.mark.usefixtures("root_handlers_restored")
def test_the_start_line_names_the_held_providers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="a11i")
    sidecar_app(
        {
            "A11I_WALLET_FILE": ":memory:",
            "A11I_OPENAI_API_KEY": OPENAI_KEY,
            "A11I_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        }
    )
    (line,) = [r.getMessage() for r in caplog.records if "a11i sidecar" in r.getMessage()]
    assert line.endswith("keys held: openai, anthropic)")
    assert "KeyCustody" not in line
    assert "held-" not in caplog.text


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("root_handlers_restored")
def test_the_sidecar_process_freezes_its_heap_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[web.Application] = []

    async def serve_at_once(
        apps: list[tuple[web.Application, str, int]], **_options: float | None
    ) -> None:
        served.extend(app for app, _host, _port in apps)

    monkeypatch.setattr(sidecar_app_module, "serve_until_stopped", serve_at_once)
    assert serve({"A11I_WALLET_FILE": ":memory:"}) == 0
    (app,) = served
    # After the sidecar's own start: what it builds at start lives as long as it does.
    assert list(app.on_startup)[-1] is freeze_heap


@pytest.mark.usefixtures("unfrozen")
async def test_a_frozen_heap_still_collects_what_calls_leave_behind() -> None:
    await freeze_heap(web.Application())
    assert gc.get_freeze_count() > 10_000

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2


@pytest.mark.usefixtures("root_handlers_restored", "unfrozen")
def test_a11i_up_freezes_its_heap_once_both_apps_listen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    frozen_at_start: list[int] = []

    async def serve_at_once(
        apps: list[tuple[web.Application, str, int]], ready: Callable[[], None] | None = None
    ) -> None:
        frozen_at_start.append(gc.get_freeze_count())
        assert ready is not None
        ready()

    monkeypatch.setattr(up, "serve_until_stopped", serve_at_once)
    env = {"A11I_WALLET_FILE": ":memory:", "XDG_STATE_HOME": str(tmp_path)}
    before = gc.get_freeze_count()
    assert up.run(up.parser().parse_args(["--port", "0", "--dashboard-port", "0"]), env) == 0
    # Not while starting: once both apps listen (``ready``), what they built is frozen.
    assert frozen_at_start == [before]
    assert gc.get_freeze_count() > before + 10_000
