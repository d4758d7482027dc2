"""An AgentBudget's ``spec.admission`` through to a real sidecar: the env the webhook's pure
injection writes for a pod is the env a sidecar starts with, and the official anthropic SDK
meets the behaviour it asks for (strict: refused; fitting: capped)."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest

from a11i.operator import injection
from a11i.operator.injection import Injection, InjectionSettings
from tests.integration.conftest import SidecarFactory
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

PROMPT = "Fix the failing test in the shop service and explain the change."
SETTINGS = InjectionSettings(image="a11i:test")


def sidecar_env(
    namespace_admission: dict[str, Any], agent_admission: dict[str, Any] | None
) -> dict[str, str]:
    """The admission variables the webhook injects into an ``app: bot`` pod of a namespace
    whose AgentBudget has ``namespace_admission`` (and a per-agent one ``agent_admission``)."""
    wide = injection.namespace_budget(
        {"metadata": {"name": "team", "creationTimestamp": "2026-11-01T00:00:00Z"},
         "spec": {"limit": "0.05", "admission": namespace_admission}}
    )  # fmt: skip
    assert wide is not None
    rules = []
    if agent_admission is not None:
        rule = injection.agent_budget_rule(
            {"metadata": {"name": "bots", "creationTimestamp": "2026-11-01T00:00:00Z"},
             "spec": {"limit": "0.05", "agentSelector": {"matchLabels": {"app": "bot"}},
                      "admission": agent_admission}}
        )  # fmt: skip
        assert rule is not None
        rules.append(rule)
    body = {
        "metadata": {"name": "bot-1", "labels": {"app": "bot"},
                     "annotations": {injection.INJECT: "true"}},
        "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
    }  # fmt: skip
    decision = injection.decide(
        body, namespace="team-a", namespace_labels={}, settings=SETTINGS,
        agent_budgets=rules, namespace_budgets=[wide],
    )  # fmt: skip
    assert isinstance(decision, Injection), decision
    pod = copy.deepcopy(body)
    injection.apply(pod, decision.patch)
    (proxy,) = pod["spec"]["initContainers"]
    return {e["name"]: e["value"] for e in proxy["env"] if e["name"].startswith("A11I_BUDGET_")}


async def coding_turn(url: str) -> anthropic.types.Message:
    """One coding agent turn asking for the model's whole output (64k tokens, ~$0.96)."""
    async with (
        anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-agent", max_retries=0) as client,
        client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64000,
            messages=[{"role": "user", "content": PROMPT}],
        ) as stream,
    ):
        return await stream.get_final_message()


async def test_a_strict_namespace_refuses_instead_of_capping(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    env = sidecar_env({"fitOutputCap": False, "waitSeconds": 0}, None)
    assert env == {"A11I_BUDGET_FIT_OUTPUT_CAP": "off", "A11I_BUDGET_ADMISSION_WAIT": "0"}
    running = await start_sidecar(A11I_BUDGET_USD="0.05", **env)
    with pytest.raises(anthropic.APIStatusError) as refused:
        await coding_turn(running.url)
    assert refused.value.status_code == 402
    assert refused.value.body["error"]["type"] == "budget_exceeded"  # type: ignore[index]
    assert standin.requests == []  # nothing forwarded


async def test_a_per_agent_budget_fits_its_pods_in_a_strict_namespace(
    start_sidecar: SidecarFactory, standin: StandIn
) -> None:
    env = sidecar_env({"fitOutputCap": False, "waitSeconds": 0}, {"fitOutputCap": True})
    assert env["A11I_BUDGET_FIT_OUTPUT_CAP"] == "on"
    running = await start_sidecar(A11I_BUDGET_USD="0.05", **env)
    message = await coding_turn(running.url)
    assert message.stop_reason in ("end_turn", "max_tokens")
    (record,) = await running.settled(1)
    # Forwarded with a cap fitted to the $0.05.
    assert record.output_cap is not None
    assert record.output_cap.asked == 64000
    assert record.output_cap.forwarded < 64000
    assert len(standin.requests) == 1
