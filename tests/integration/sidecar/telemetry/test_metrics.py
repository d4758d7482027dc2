"""The mission's metrics and the GenAI conventions' at /a11i/metrics, after real SDK calls."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import SidecarFactory
from tests.support.paths import TRANSCRIPTS
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

SRE = json.loads((TRANSCRIPTS / "sre_openai.json").read_text())


async def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/a11i/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(key) == wanted for key, wanted in labels.items())
    )


async def test_metrics_follow_the_calls(start_sidecar: SidecarFactory, standin: StandIn) -> None:
    # Red from the first call: the optimizer runs and its savings are counted.
    running = await start_sidecar(
        A11I_BUDGET_USD="100", A11I_BUDGET_WARN_AT="0", A11I_BUDGET_OPTIMIZE_AT="0"
    )
    tool = SRE["tools"][0]["function"]["name"]
    messages = [
        *SRE["messages"],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_m", "type": "function", "function": {"name": tool, "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_m", "content": "Error: connection refused"},
    ]
    async with openai.AsyncOpenAI(
        base_url=running.openai_url, api_key="sk-agent", max_retries=0
    ) as client:
        first = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, tools=SRE["tools"]
        )
        second = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "thanks"}]
        )
    records = await running.settled(2)
    samples = await scrape(running.url)
    settled = [r.settlement for r in records]
    assert all(s is not None for s in settled)
    prompt = sum(s.usage.input_tokens for s in settled if s is not None)
    completion = sum(s.usage.output_tokens for s in settled if s is not None)
    assert total(samples, "ai_token_usage_counter_total", token_type="prompt") == prompt
    assert total(samples, "ai_token_usage_counter_total", token_type="completion") == completion
    cost = sum(float(s.cost_usd) for s in settled if s is not None)
    assert total(samples, "ai_cost_estimate_counter_USD_total") == pytest.approx(cost)
    saved = int(first.headers["x-a11i-optimized"].split("saved=")[1].split(";")[0])
    assert total(samples, "ai_optimizer_tokens_saved_total") == saved
    # Conventions' histogram: one input and one output sample per call.
    assert total(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 2
    assert total(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == completion
    assert total(samples, "gen_ai_client_operation_duration_seconds_count") == 2
    assert (
        total(
            samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="gpt-4o"
        )
        == 2
    )
    assert "ai_context_saturation_gauge_percent" in samples
    assert "ai_loop_velocity_gauge_seconds" in samples
    if SRE["messages"][-1]["role"] == "tool":
        assert (
            total(samples, "ai_tool_error_rate_ratio") > 0
            or total(samples, "ai_tool_error_rate") > 0
        )
    assert (
        total(
            samples,
            "ai_tool_result_counter_total",
            a11i_tool_outcome="error",
            gen_ai_tool_name=tool,
            a11i_project="team-a",
        )
        == 1
    )
    assert total(samples, "ai_tool_result_counter_total", a11i_tool_outcome="success") == 0
    assert second.headers["x-a11i-decision"] == "optimize"
