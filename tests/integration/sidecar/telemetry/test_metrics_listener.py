"""The metrics-only listener (``A11I_METRICS_PORT``): what a cluster's Prometheus scrapes, on the
pod's address, while the proxy stays on loopback. Nothing on it can spend."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from a11i.core.errors import SettingsError
from a11i.sidecar.app import metrics_listener
from a11i.sidecar.settings import from_env
from tests.integration.conftest import SidecarFactory
from tests.integration.sidecar.telemetry.test_metrics import total
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


async def test_metrics_on_their_own_listener_and_nothing_else(
    start_sidecar: SidecarFactory,
) -> None:
    port = free_port()
    running = await start_sidecar(
        A11I_BUDGET_USD="5", A11I_METRICS_PORT=str(port), A11I_METRICS_HOST="127.0.0.1"
    )
    # The listener as `a11i sidecar` wires it: a cleanup context of an application (the
    # proxy's there; a bare one here, as the fixture already serves the proxy).
    app = web.Application()
    app.cleanup_ctx.append(metrics_listener(running.sidecar, running.sidecar.settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        async with openai.AsyncOpenAI(
            base_url=running.openai_url, api_key="sk-agent", max_retries=0
        ) as client:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "status?"}]
            )
        (record,) = await running.settled(1)
        assert record.settlement is not None
        metrics = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(metrics + "/a11i/metrics") as response:
                assert response.status == 200
                text = await response.text()
            async with http.get(metrics + "/a11i/healthz") as response:
                assert response.status == 200
            # Nothing that proxies, spends or shows the wallet's details.
            for method, path in (
                ("POST", "/v1/chat/completions"),
                ("POST", "/v1/messages"),
                ("GET", "/v1/models"),
                ("GET", "/a11i/budget"),
                ("GET", "/a11i/events"),
            ):
                async with http.request(method, metrics + path, json={}) as response:
                    assert response.status in (404, 405), (method, path)
    finally:
        await runner.cleanup()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    assert total(samples, "a11i_budget_limit_USD", a11i_wallet="team-a") == 5
    spent = float(record.settlement.cost_usd)
    assert total(samples, "a11i_budget_spent_USD", a11i_wallet="team-a") == pytest.approx(spent)
    assert total(samples, "a11i_budget_remaining_USD") == pytest.approx(5 - spent)
    assert total(samples, "a11i_budget_decisions_total", a11i_decision="allow") == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A11I_METRICS_PORT": "11000"}, "A11I_METRICS_PORT must differ from A11I_PORT"),
        ({"A11I_METRICS_PORT": "http"}, "A11I_METRICS_PORT must be a TCP port"),
    ],
    ids=["same-port", "not-a-port"],
)
def test_metrics_port_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_env(env)


def test_no_metrics_listener_unless_asked() -> None:
    assert from_env({}).telemetry.metrics_port is None
    assert from_env({"A11I_METRICS_PORT": "11090"}).telemetry.metrics_port == 11090
