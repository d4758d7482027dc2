"""The Agent Health dashboard and the alert rules, proven against a real Prometheus.

Static checks of the dashboard JSON, ``promtool check rules`` and ``promtool test rules`` on the
rule file, then a live run: two sidecars metered by the official ``openai`` SDK (one agent
looping over tools of every outcome, one filling its model's context window), scraped by
Debian's Prometheus, which evaluates every query of every panel and every rule: none may come
back empty.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionMessageToolCallParam

from tests.integration.conftest import RunningSidecar, SidecarFactory
from tests.support.cluster import binaries_dir
from tests.support.paths import ROOT
from tests.support.prometheus_server import PrometheusServer, Sample, promtool

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "a11i"
DASHBOARD = CHART / "files" / "dashboards" / "agent-health.json"
RULES = CHART / "files" / "prometheus-rules.yaml"
ALERTS_TEST = ROOT / "tests" / "data" / "prometheus" / "alerts-test.yaml"

MISSION_PANELS = ("Dementia Curve", "Cost Burn Rate", "Tool Success Ratio")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: What Grafana puts in for its built-in variables; 1m covers the whole live test.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*(?P<label>\w+)\)$", re.DOTALL)

#: A model with a small window, so that one prompt fills it past the dashboard's red line.
TINY_WINDOW = 4000
RATE_CARD = f"""
models:
  tiny-ctx:
    input_per_mtok: "3"
    output_per_mtok: "15"
    context_window: {TINY_WINDOW}
    max_output_tokens: 100
    provider: openai
"""
#: About 3,800 tokens (12 per sentence): 95% of TINY_WINDOW.
LONG_HISTORY = "The agent re-reads its whole history before every step. " * 315

#: Tool results as an agent sends them back, and the outcome the sidecar reads in them.
TOOL_RESULTS = {
    "success": ("kubectl_get", "NAME READY STATUS\napi-7d9f 1/1 Running"),
    "error": ("kubectl_logs", 'Error: pods "api-0" not found'),
    "timeout": ("http_get", "Error: request to http://metrics.internal timed out after 30s"),
    "invalid": ("kubectl_scale", "ValidationError: replicas: Input should be a valid integer"),
}
#: The Budget row's panels.
BUDGET_PANELS = ("Budget Remaining", "Budget Spent vs Limit", "Time to Exhaustion")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded into rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel(board: Mapping[str, Any], title: str) -> dict[str, Any]:
    (found,) = (p for p in panels(board) if p.get("title") == title)
    return found


def queries(board: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    return [(p["title"], target["expr"]) for p in panels(board) for target in p.get("targets", [])]


def interpolate(expr: str, variables: Mapping[str, str]) -> str:
    """Replace ``$var`` / ``${var}`` as Grafana does; an undefined variable is an error."""
    values = {**GRAFANA_BUILTINS, **variables}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"{expr!r} uses ${name}, which the dashboard does not define")
        return values[name]

    return _VARIABLE.sub(value, expr)


# -- the dashboard as Grafana reads it


def test_dashboard_is_the_agent_health_board() -> None:
    board = dashboard()
    assert board["uid"] == "a11i-agent-health"
    assert board["title"] == "Agent Health"
    assert board["schemaVersion"] >= 39
    assert board["id"] is None  # provisioned dashboards get their id from Grafana
    titles = [p["title"] for p in panels(board)]
    assert len(titles) == len(set(titles))
    for title in MISSION_PANELS:
        assert titles.count(title) == 1, title
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "project", "agent"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert _LABEL_VALUES.match(variable["query"]), variable["query"]
        assert variable["includeAll"]
        assert variable["allValue"] == ".*"


def test_every_panel_queries_the_datasource_variable() -> None:
    board = dashboard()
    for p in panels(board):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for target in p["targets"]:
            assert target["datasource"] == DATASOURCE, p["title"]
            assert target["expr"].strip(), p["title"]
            # Every panel is filtered by the three variables.
            for name in ("namespace", "project", "agent"):
                assert f"${name}" in target["expr"], (p["title"], name)


def test_dementia_curve_has_a_red_line_at_90() -> None:
    curve = panel(dashboard(), "Dementia Curve")
    assert curve["type"] == "timeseries"
    defaults = curve["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percent"
    assert defaults["max"] == 100
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    steps = defaults["thresholds"]["steps"]
    assert {"color": "red", "value": 90} in steps
    assert "ai_context_saturation_gauge_percent" in curve["targets"][0]["expr"]


def test_cost_burn_rate_is_usd_per_hour_per_project() -> None:
    burn = panel(dashboard(), "Cost Burn Rate")
    assert burn["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    (target,) = burn["targets"]
    assert "sum by (a11i_project)" in target["expr"]
    assert "rate(ai_cost_estimate_counter_USD_total" in target["expr"]
    assert target["expr"].endswith("* 3600")


def test_tool_success_ratio_splits_the_three_outcomes() -> None:
    ratio = panel(dashboard(), "Tool Success Ratio")
    (target,) = ratio["targets"]
    assert "sum by (a11i_tool_outcome)" in target["expr"]
    assert "increase(ai_tool_result_counter_total" in target["expr"]
    colored = {o["matcher"]["options"] for o in ratio["fieldConfig"]["overrides"]}
    assert colored == set(TOOL_RESULTS)


def test_budget_row_shows_every_wallet() -> None:
    board = dashboard()
    (row,) = [p for p in board["panels"] if p["type"] == "row" and p["title"] == "Budget"]
    below = [p for p in board["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]]
    assert [p["title"] for p in below] == list(BUDGET_PANELS)
    for p in below:
        for target in p["targets"]:
            assert "a11i_wallet" in target["expr"], p["title"]
            assert target["legendFormat"].startswith("{{a11i_wallet}}"), p["title"]
    exhaustion = panel(board, "Time to Exhaustion")
    assert exhaustion["fieldConfig"]["defaults"]["unit"] == "s"
    # Red where the burn alert fires (4 hours).
    steps = exhaustion["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "orange", "value": 4 * 3600} in steps
    (decisions,) = panel(board, "Calls by Decision")["targets"]
    assert "a11i_budget_decisions_total" in decisions["expr"]


# -- the rules, by promtool


def test_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {r["alert"] for group in rule_groups() for r in group["rules"]}
    assert "AgentContextSaturationHigh" in names


def test_saturation_alert_fires_only_after_five_minutes_above_90() -> None:
    tested = promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def test_saturation_alert_says_who_and_how_much() -> None:
    (rule,) = (
        r
        for group in rule_groups()
        for r in group["rules"]
        if r.get("alert") == "AgentContextSaturationHigh"
    )
    assert rule["labels"]["severity"] == "warning"
    assert "90" in rule["expr"]
    for annotation in ("summary", "description"):
        text = rule["annotations"][annotation]
        for shown in ("$labels.a11i_agent", "$labels.gen_ai_request_model", "$value"):
            assert shown in text, (annotation, shown)
    assert rule["annotations"]["runbook_url"].startswith("docs/")


def test_burn_alert_is_relative_and_says_when() -> None:
    (rule,) = (
        r
        for group in rule_groups()
        for r in group["rules"]
        if r.get("alert") == "AgentBudgetBurnFast"
    )
    # Relative to the wallet: what is left over the pace of its spending, never a USD amount.
    assert "a11i_budget_remaining_USD" in rule["expr"]
    assert "deriv(a11i_budget_spent_USD" in rule["expr"]
    assert "4 * 3600" in rule["expr"]
    for annotation in ("summary", "description"):
        text = rule["annotations"][annotation]
        assert "$labels.a11i_wallet" in text
        assert "humanizeDuration" in text


# -- the chart's templates (once helm is built on this machine)


def test_chart_ships_the_dashboard_and_the_rule_unchanged(tmp_path: Path) -> None:
    # The helm built from the Go module proxy with the test control plane (make cluster-bins).
    helm = binaries_dir() / "helm"
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "a11i",
            str(CHART),
            "--namespace",
            "monitoring",
            "--kube-version",
            "1.29.0",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
            "--show-only",
            "templates/grafana-dashboards.yaml",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            **{f"HELM_{kind}_HOME": str(tmp_path / kind) for kind in ("CACHE", "CONFIG", "DATA")},
        },
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = {d["kind"]: d for d in yaml.safe_load_all(rendered.stdout) if d}
    config_map = documents["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["agent-health.json"]) == dashboard()
    assert documents["PrometheusRule"]["spec"] == yaml.safe_load(RULES.read_text())


# -- live: every query returns data


def tool_turn(outcomes: list[str]) -> list[ChatCompletionMessageParam]:
    """One turn of an agent loop: the model called tools, the agent sends their results."""
    calls: list[ChatCompletionMessageToolCallParam] = [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": TOOL_RESULTS[outcome][0], "arguments": "{}"},
        }
        for index, outcome in enumerate(outcomes)
    ]
    results: list[ChatCompletionMessageParam] = [
        {"role": "tool", "tool_call_id": f"call_{index}", "content": TOOL_RESULTS[outcome][1]}
        for index, outcome in enumerate(outcomes)
    ]
    return [
        {"role": "user", "content": "Why is the api deployment failing?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *results,
    ]


async def drive(sre: RunningSidecar, doc: RunningSidecar, tool_turns: list[list[str]]) -> None:
    """sre-bot sends back tool results; doc-bot sends a history that fills its window."""
    async with (
        openai.AsyncOpenAI(base_url=sre.openai_url, api_key="sk-agent", max_retries=0) as sre_ai,
        openai.AsyncOpenAI(base_url=doc.openai_url, api_key="sk-agent", max_retries=0) as doc_ai,
    ):
        for outcomes in tool_turns:
            await sre_ai.chat.completions.create(model="gpt-4o", messages=tool_turn(outcomes))
        answer = await doc_ai.chat.completions.with_raw_response.create(
            model="tiny-ctx",
            messages=[
                {"role": "system", "content": "You summarise incident reports."},
                {"role": "user", "content": LONG_HISTORY},
            ],
        )
        saturation = float(answer.headers["x-a11i-context-saturation"])
        assert 90 < saturation < 100, saturation


def positive(result: list[Sample]) -> bool:
    return any(sample.finite and sample.value > 0 for sample in result)


def by(result: list[Sample], label: str) -> dict[str, float]:
    return {sample.labels.get(label, ""): sample.value for sample in result}


async def test_every_query_returns_data_from_live_sidecars(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(RATE_CARD)
    # sre-bot spends from a small budget: at its pace it is empty within minutes.
    sre = await start_sidecar(A11I_AGENT="sre-bot", A11I_PROJECT="payments", A11I_BUDGET_USD="2")
    doc = await start_sidecar(
        A11I_AGENT="doc-bot", A11I_PROJECT="research", A11I_RATE_CARD=str(card)
    )
    targets = [url.removeprefix("http://") for url in (sre.url, doc.url)]
    async with PrometheusServer(targets, rule_files=[RULES]) as prometheus:
        await prometheus.wait_for("up == 1", accept=lambda result: len(result) == 2)
        # Counters are born at their first increment, which rate() and increase() cannot see:
        # the first round creates the series, the second is what the panels measure.
        await drive(sre, doc, [["success", "error", "timeout", "invalid"]])
        await sre.settled(1)
        await doc.settled(1)
        await prometheus.wait_for(
            "ai_tool_result_counter_total", accept=lambda result: len(result) == 4
        )
        await prometheus.wait_for(
            "ai_cost_estimate_counter_USD_total", accept=lambda result: len(result) == 2
        )
        await drive(sre, doc, [["success", "error", "timeout", "invalid", "error"]] * 2)

        board = dashboard()
        every = {name: ".*" for name in ("namespace", "project", "agent")}
        for title, expr in queries(board):
            # What calls in flight hold is 0 between calls: there only, a 0 is data.
            held = "a11i_budget_reserved_USD" in expr
            result = await prometheus.wait_for(
                interpolate(expr, every), timeout_s=20, accept=bool if held else positive
            )
            assert result, title

        # The variables' values, as Grafana's label_values() would list them.
        listed: dict[str, set[str]] = {}
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            found = _LABEL_VALUES.match(variable["query"])
            assert found is not None
            result = await prometheus.query(interpolate(found["expr"], every))
            listed[variable["name"]] = {s.labels[found["label"]] for s in result}
        assert listed == {
            "namespace": {"team-a"},
            "project": {"payments", "research"},
            "agent": {"sre-bot", "doc-bot"},
        }

        (curve,) = panel(board, "Dementia Curve")["targets"]
        saturation = by(await prometheus.query(interpolate(curve["expr"], every)), "a11i_agent")
        assert saturation["doc-bot"] > 90
        assert saturation["sre-bot"] < 90
        # One agent picked in the variables: only its curve.
        chosen = {"namespace": "team-a", "project": "research", "agent": "doc-bot"}
        only = await prometheus.query(interpolate(curve["expr"], chosen))
        assert [(s.labels["a11i_agent"], s.value > 90) for s in only] == [("doc-bot", True)]

        (ratio,) = panel(board, "Tool Success Ratio")["targets"]
        # Waited for, not queried once: under load a scrape may lag the traffic by seconds.
        outcomes = by(
            await prometheus.wait_for(
                interpolate(ratio["expr"], every),
                timeout_s=20,
                accept=lambda result: len([s for s in result if s.value > 0]) == 4,
            ),
            "a11i_tool_outcome",
        )
        assert set(outcomes) == set(TOOL_RESULTS)
        assert all(count > 0 for count in outcomes.values())
        assert outcomes["error"] > outcomes["success"]

        (burn,) = panel(board, "Cost Burn Rate")["targets"]
        per_hour = by(
            await prometheus.wait_for(
                interpolate(burn["expr"], every),
                timeout_s=20,
                accept=lambda result: len([s for s in result if s.value > 0]) == 2,
            ),
            "a11i_project",
        )
        assert set(per_hour) == {"payments", "research"}
        assert all(usd > 0 for usd in per_hour.values())

        # Every rule's expression has data, and Prometheus evaluates every rule without error.
        for group in rule_groups():
            for rule in group["rules"]:
                result = await prometheus.wait_for(rule["expr"], timeout_s=10)
                assert result, rule.get("alert") or rule.get("record")
        saturated = await prometheus.wait_for(
            'ALERTS{alertname="AgentContextSaturationHigh"}', timeout_s=10
        )
        assert {(s.labels["a11i_agent"], s.labels["alertstate"]) for s in saturated} == {
            ("doc-bot", "pending")
        }
        # The budget gauges of sre-bot's wallet, and its burn alert on the way to firing.
        # (Each sidecar here has an embedded wallet of its own; in a cluster they share one.)
        gauges = {
            name: by(
                await prometheus.query(f'a11i_budget_{name}_USD{{a11i_agent="sre-bot"}}'),
                "a11i_wallet",
            )
            for name in ("limit", "spent", "remaining")
        }
        assert gauges["limit"] == {"team-a": 2.0}
        spent = gauges["spent"]["team-a"]
        assert 0 < spent < 2
        assert gauges["remaining"]["team-a"] == pytest.approx(2 - spent, abs=0.01)
        # doc-bot's wallet has no limit: spent, but no limit and nothing remaining to show.
        assert not await prometheus.query('a11i_budget_limit_USD{a11i_agent="doc-bot"}')
        burning = await prometheus.wait_for('ALERTS{alertname="AgentBudgetBurnFast"}', timeout_s=20)
        assert {(s.labels["a11i_wallet"], s.labels["alertstate"]) for s in burning} == {
            ("team-a", "pending")
        }
        decisions = by(
            await prometheus.query("sum by (a11i_agent) (a11i_budget_decisions_total)"),
            "a11i_agent",
        )
        assert decisions == {"sre-bot": 3, "doc-bot": 2}  # one per metered call of each
        alerts = await prometheus.alerts()
        assert any(
            alert["labels"]["alertname"] == "AgentContextSaturationHigh"
            and alert["labels"]["a11i_agent"] == "doc-bot"
            and alert["annotations"]["summary"].startswith("Agent doc-bot fills 9")
            for alert in alerts
        ), alerts
        loaded = [rule for group in await prometheus.rules() for rule in group["rules"]]
        assert len(loaded) == sum(len(group["rules"]) for group in rule_groups())
        assert all(rule.get("health") == "ok" for rule in loaded), loaded
