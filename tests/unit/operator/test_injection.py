"""The pure injection decision: a pod, its namespace's labels and the settings to a JSONPatch or
a reason to admit the pod unchanged."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from a11i.operator import injection
from a11i.operator.injection import Injection, InjectionSettings, Skip, apply, decide
from a11i.sidecar.redis_clients import RedisMode
from a11i.sidecar.settings import from_env

SETTINGS = InjectionSettings(image="a11i:test", operator_namespace="a11i-system")
REGULAR = InjectionSettings(image="a11i:test", native_sidecars=False)
SHARED = InjectionSettings(image="a11i:test", redis_url="redis://redis.a11i:6379/0")


def pod(
    annotations: dict[str, str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    name: str | None = "agent",
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name} if name else {"generateName": "agent-"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers or [{"name": "app", "image": "agent"}], **spec},
    }


ASK = {"a11i.io/inject": "true"}


def injected(
    body: dict[str, Any],
    settings: InjectionSettings = SETTINGS,
    namespace: str = "agents",
    labels: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Injection]:
    decision = decide(body, namespace=namespace, namespace_labels=labels or {}, settings=settings)
    assert isinstance(decision, Injection), decision
    result = copy.deepcopy(body)
    apply(result, decision.patch)
    return result, decision


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize(
    ("body", "namespace", "labels", "inject"),
    [
        (pod(ASK), "agents", {}, True),
        (pod({"a11i.io/inject": "false"}), "agents", {}, False),
        (pod(), "agents", {"a11i.io/inject": "enabled"}, True),
        (pod({"a11i.io/inject": "false"}), "agents", {"a11i.io/inject": "enabled"}, False),
        (pod(), "agents", {}, False),
        (pod({"other": "x"}), "agents", {"a11i.io/inject": "disabled"}, False),
        (pod(ASK), "kube-system", {"a11i.io/inject": "enabled"}, False),
        (pod(ASK), "a11i-system", {}, False),
        (pod(ASK, hostNetwork=True), "agents", {}, False),
        (pod({**ASK, "a11i.io/status": "injected"}), "agents", {}, False),
    ],
    ids=[
        "annotation-true",
        "annotation-false",
        "namespace-label",
        "false-wins-over-label",
        "not-asked",
        "label-not-enabled",
        "kube-system-skipped",
        "operator-namespace-skipped",
        "host-network-skipped",
        "already-injected",
    ],
)
def test_who_is_injected(
    body: dict[str, Any], namespace: str, labels: dict[str, str], inject: bool
) -> None:
    decision = decide(body, namespace=namespace, namespace_labels=labels, settings=SETTINGS)
    assert isinstance(decision, Injection) is inject, decision


def test_no_metrics_listener_when_turned_off() -> None:
    result, _ = injected(pod(ASK), InjectionSettings(image="a11i:test", metrics_port=0))
    (proxy,) = result["spec"]["initContainers"]
    assert proxy["ports"] == []
    assert "A11I_METRICS_PORT" not in env_of(proxy)


def test_the_upstreams_reach_the_proxy_alone() -> None:
    settings = InjectionSettings(
        image="a11i:test",
        openai_upstream="http://standin.e2e.svc:8000",
        anthropic_upstream="https://egress.corp.example/anthropic",
    )
    result, _ = injected(pod(ASK), settings)
    (proxy,) = result["spec"]["initContainers"]
    assert env_of(proxy)["A11I_OPENAI_BASE"] == "http://standin.e2e.svc:8000"
    assert env_of(proxy)["A11I_ANTHROPIC_BASE"] == "https://egress.corp.example/anthropic"
    # The app keeps talking to its sidecar; only the sidecar knows the upstream.
    (app,) = result["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == "http://127.0.0.1:11000/v1"
    assert "A11I_OPENAI_BASE" not in env_of(app)


def test_the_injected_pod_is_exactly_as_specified() -> None:
    body = pod(ASK, labels={"a11i.io/project": "research"})
    result, decision = injected(body)
    assert decision.warnings == ()
    assert result["metadata"]["annotations"]["a11i.io/status"] == "injected"
    (proxy,) = result["spec"]["initContainers"]
    assert proxy["name"] == "a11i-proxy"
    assert proxy["restartPolicy"] == "Always"
    assert (proxy["image"], proxy["args"]) == ("a11i:test", ["sidecar"])
    assert env_of(proxy) == {
        "A11I_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "A11I_AGENT": {"fieldRef": {"fieldPath": "metadata.name"}},
        "A11I_PROJECT": "research",
        "A11I_WALLET_FILE": "/var/lib/a11i/wallets.sqlite",
        # Explicit, so a Service named "a11i" (service links: A11I_PORT=tcp://...) cannot
        # override it.
        "A11I_PORT": "11000",
        # The metrics-only listener the chart's PodMonitor scrapes (nothing on it spends).
        "A11I_METRICS_PORT": "11090",
    }
    assert proxy["ports"] == [{"name": "a11i-metrics", "containerPort": 11090, "protocol": "TCP"}]
    assert proxy["envFrom"] == [
        {"configMapRef": {"name": "a11i-sidecar-env", "optional": True}},
        {"secretRef": {"name": "a11i-sidecar-otlp-headers", "optional": True}},
    ]
    assert {"name": "a11i-config", "mountPath": "/etc/a11i", "readOnly": True} in proxy[
        "volumeMounts"
    ]
    assert proxy["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert proxy[probe]["exec"]["command"][:2] == ["a11i", "probe"]
    assert proxy["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["a11i-config"] == {
        "name": "a11i-config",
        "configMap": {"name": "a11i-sidecar-config", "optional": True},
    }
    assert "emptyDir" in volumes["a11i-state"]
    (app,) = result["spec"]["containers"]
    assert env_of(app) == {
        "OPENAI_BASE_URL": "http://127.0.0.1:11000/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:11000",
    }


@pytest.mark.parametrize(
    ("settings", "where"),
    [(SETTINGS, "initContainers"), (REGULAR, "containers")],
    ids=["native-sidecar", "regular-sidecar"],
)
def test_native_or_regular_sidecar(settings: InjectionSettings, where: str) -> None:
    init = [{"name": "migrate", "image": "tool"}]
    result, _ = injected(pod(ASK, initContainers=init), settings)
    names = [c["name"] for c in result["spec"][where]]
    if where == "initContainers":
        assert names == ["a11i-proxy", "migrate"]  # first: the others start after it is ready
    else:
        assert names == ["app", "a11i-proxy"]
        assert "restartPolicy" not in result["spec"]["containers"][1]
        assert [c["name"] for c in result["spec"]["initContainers"]] == ["migrate"]


def test_shared_redis_instead_of_the_embedded_wallet() -> None:
    result, _ = injected(pod(ASK), SHARED)
    proxy = result["spec"]["initContainers"][0]
    assert env_of(proxy)["A11I_REDIS_URL"] == "redis://redis.a11i:6379/0"
    # The state emptyDir stays: the journal of spend settled while Redis is away lives there.
    assert env_of(proxy)["A11I_WALLET_FILE"] == injection.WALLET_FILE
    assert {"name": "a11i-state", "emptyDir": {}} in result["spec"]["volumes"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(RedisMode.STANDALONE, {}, id="standalone-says-nothing"),
        pytest.param(RedisMode.CLUSTER, {"A11I_REDIS_MODE": "cluster"}, id="cluster"),
        pytest.param(
            RedisMode.SENTINEL,
            {"A11I_REDIS_MODE": "sentinel", "A11I_REDIS_MASTER": "a11i"},
            id="sentinel-with-its-master",
        ),
    ],
)
def test_the_redis_mode_is_passed_on(mode: RedisMode, expected: dict[str, str]) -> None:
    settings = replace(SHARED, redis_mode=mode, redis_master="a11i")
    result, _ = injected(pod(ASK), settings)
    env = env_of(result["spec"]["initContainers"][0])
    passed = {name: env[name] for name in ("A11I_REDIS_MODE", "A11I_REDIS_MASTER") if name in env}
    assert passed == expected


def test_the_sentinels_password_comes_from_the_sidecars_secret() -> None:
    settings = replace(SHARED, redis_secret="a11i-sidecar-redis", redis_mode=RedisMode.SENTINEL)
    result, _ = injected(pod(ASK), settings)
    env = env_of(result["spec"]["initContainers"][0])
    assert env["A11I_REDIS_SENTINEL_PASSWORD"] == {
        "secretKeyRef": {
            "name": "a11i-sidecar-redis",
            "key": "A11I_REDIS_SENTINEL_PASSWORD",
            "optional": True,
        }
    }


def test_a_password_protected_redis_comes_from_a_secret() -> None:
    """The URL (with its password) is never in the pod spec, and only the proxy gets it."""
    settings = InjectionSettings(
        image="a11i:test", redis_url="redis://:pw@redis:6379/0", redis_secret="a11i-sidecar-redis"
    )
    result, _ = injected(pod(ASK), settings)
    proxy = result["spec"]["initContainers"][0]
    assert env_of(proxy)["A11I_REDIS_URL"] == {
        "secretKeyRef": {"name": "a11i-sidecar-redis", "key": "A11I_REDIS_URL"}
    }
    assert "pw" not in str(result)
    assert env_of(proxy)["A11I_WALLET_FILE"] == injection.WALLET_FILE
    app = result["spec"]["containers"][0]
    assert "A11I_REDIS_URL" not in env_of(app)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"a11i.io/containers": "agent"}, {"agent"}),
        ({"a11i.io/containers": "agent, tools"}, {"agent", "tools"}),
        ({}, {"agent", "tools", "log-shipper"}),
    ],
    ids=["one-named", "two-named", "all-by-default"],
)
def test_containers_selection(annotations: dict[str, str], expected: set[str]) -> None:
    containers = [{"name": n, "image": "x"} for n in ("agent", "tools", "log-shipper")]
    result, _ = injected(pod({**ASK, **annotations}, containers=containers))
    got = {c["name"] for c in result["spec"]["containers"] if "OPENAI_BASE_URL" in env_of(c)}
    assert got == expected


def test_an_unknown_container_name_is_a_warning() -> None:
    _, decision = injected(pod({**ASK, "a11i.io/containers": "nope"}))
    assert any("nope" in warning for warning in decision.warnings)


@pytest.mark.parametrize(
    ("override", "openai"),
    [(None, "https://mine/v1"), ("true", "http://127.0.0.1:11000/v1")],
    ids=["env-kept", "env-overridden"],
)
def test_env_set_by_the_user(override: str | None, openai: str) -> None:
    annotations = {**ASK, **({"a11i.io/override-env": override} if override else {})}
    app = {
        "name": "app",
        "image": "agent",
        "env": [{"name": "X", "value": "1"}, {"name": "OPENAI_BASE_URL", "value": openai}],
    }
    app["env"][1]["value"] = "https://mine/v1"
    result, decision = injected(pod(annotations, containers=[app]))
    env = env_of(result["spec"]["containers"][0])
    assert env == {
        "X": "1",
        "OPENAI_BASE_URL": openai,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:11000",
    }
    assert bool(decision.warnings) is (override is None)


def test_pods_without_a_name_from_controllers() -> None:
    body = pod(ASK, name=None)
    result, _ = injected(body)
    assert result["metadata"]["generateName"] == "agent-"
    assert "name" not in result["metadata"]


def test_pods_without_annotations_in_a_labelled_namespace() -> None:
    result, _ = injected(pod(), labels={"a11i.io/inject": "enabled"})
    assert result["metadata"]["annotations"] == {"a11i.io/status": "injected"}


def test_a_second_admission_changes_nothing() -> None:
    once, _ = injected(pod(ASK))
    decision = decide(once, namespace="agents", namespace_labels={}, settings=SETTINGS)
    assert isinstance(decision, Skip)
    assert "already injected" in decision.reason
    # Even with the status annotation removed, the proxy is not added twice.
    del once["metadata"]["annotations"]["a11i.io/status"]
    decision = decide(once, namespace="agents", namespace_labels={}, settings=SETTINGS)
    assert isinstance(decision, Skip)


@pytest.mark.parametrize(
    ("annotations", "cpu", "memory"),
    [
        ({"a11i.io/proxy-cpu": "200m", "a11i.io/proxy-memory": "512Mi"}, "200m", "512Mi"),
        ({"a11i.io/proxy-cpu": "lots"}, "50m", None),
    ],
    ids=["resources-from-annotations", "bad-quantity-default"],
)
def test_proxy_resources(annotations: dict[str, str], cpu: str, memory: str | None) -> None:
    result, decision = injected(pod({**ASK, **annotations}))
    resources = result["spec"]["initContainers"][0]["resources"]
    assert resources["requests"]["cpu"] == cpu
    if memory:
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == memory
    else:
        assert any("a11i.io/proxy-cpu" in warning for warning in decision.warnings)


@pytest.mark.parametrize(
    "body",
    [
        "not a pod",
        {"metadata": "x", "spec": {}},
        {"metadata": {"annotations": {"a11i.io/inject": 1}}, "spec": {}},
        {"metadata": {"annotations": ASK}},
        {"metadata": {"annotations": ASK}, "spec": {"containers": "app"}},
        {"metadata": {"annotations": ASK}, "spec": {"containers": []}},
        {"metadata": {"annotations": ASK}, "spec": {"containers": [{"image": "x"}]}},
        pod(ASK, containers=[{"name": "app", "env": {"A": "b"}}]),
        pod(ASK, volumes=[{"name": "a11i-config", "emptyDir": {}}]),
        pod(ASK, initContainers="x"),
    ],
    ids=[
        "not-an-object",
        "metadata-not-object",
        "annotation-not-string",
        "no-spec",
        "containers-not-list",
        "no-containers",
        "container-without-name",
        "env-not-list",
        "volume-name-taken",
        "init-containers-not-list",
    ],
)
def test_malformed_specs_are_admitted_unchanged_with_a_warning(body: object) -> None:
    decision = decide(body, namespace="agents", namespace_labels={}, settings=SETTINGS)
    assert isinstance(decision, Skip)
    assert decision.warnings
    assert "admitted unchanged" in decision.warnings[0]


def test_the_patch_paths_escape_the_annotation_key() -> None:
    _, decision = injected(pod(ASK))
    assert decision.patch[-1] == {
        "op": "add",
        "path": "/metadata/annotations/a11i.io~1status",
        "value": "injected",
    }
    assert injection.SIDECAR == "a11i-proxy"


# --- per-agent budgets --------------------------------------------------------------------------


def budget(
    name: str,
    selector: dict[str, Any] | None,
    *,
    limit: str = "100",
    per_agent: str | None = None,
    created: str = "2026-11-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"limit": limit}
    if selector is not None:
        spec["agentSelector"] = selector
    if per_agent is not None:
        spec["perAgentLimit"] = per_agent
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-02T00:00:00Z"
    return {
        "apiVersion": "a11i.io/v1alpha1",
        "kind": "AgentBudget",
        "metadata": metadata,
        "spec": spec,
    }


def test_only_selective_budgets_become_rules() -> None:
    rule = injection.agent_budget_rule(
        budget("bots", {"matchLabels": {"tier": "bot"}}, per_agent="5")
    )
    assert rule == injection.AgentBudgetRule(
        "bots", "2026-11-01T00:00:00Z", {"matchLabels": {"tier": "bot"}}, "5"
    )
    # Without perAgentLimit, each selected pod gets the budget's limit.
    assert injection.agent_budget_rule(budget("all", {}, limit="7.5")).limit_usd == "7.5"  # type: ignore[union-attr]
    assert injection.agent_budget_rule(budget("namespace-wide", None)) is None
    assert injection.agent_budget_rule(budget("going", {}, deleting=True)) is None
    assert (
        injection.agent_budget_rule(
            {"metadata": {"name": "x"}, "spec": {"agentSelector": {}, "limit": "lots"}}
        )
        is None
    )
    assert injection.agent_budget_rule({"spec": []}) is None


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        pytest.param({}, {}, True, id="empty-selects-all"),
        pytest.param({"matchLabels": {"app": "bot"}}, {"app": "bot", "x": "y"}, True, id="labels"),
        pytest.param({"matchLabels": {"app": "bot"}}, {"app": "other"}, False, id="labels-differ"),
        pytest.param({"matchLabels": {"app": "bot"}}, {}, False, id="labels-missing"),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
            {},
            False,
            id="in-missing",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {},
            True,
            id="notin-missing",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {"tier": "a"},
            False,
            id="notin",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
            {"gpu": ""},
            True,
            id="exists",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]},
            {"gpu": "1"},
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {
                "matchLabels": {"app": "bot"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
            },
            {"app": "bot", "tier": "b"},
            False,
            id="anded",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "x", "operator": "Near"}]},
            {"x": "1"},
            False,
            id="bad-operator",
        ),
        pytest.param({"matchLabels": ["app"]}, {"app": "x"}, False, id="malformed"),
    ],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert injection.selects(selector, labels) is selected


def test_a_selected_pod_gets_its_own_budget() -> None:
    rules = [
        injection.agent_budget_rule(budget("bots", {"matchLabels": {"app": "bot"}}, per_agent="5")),
        injection.agent_budget_rule(
            budget("others", {"matchLabels": {"app": "other"}}, per_agent="1")
        ),
    ]
    body = pod(ASK, labels={"app": "bot"})
    decision = decide(
        body,
        namespace="agents",
        namespace_labels={},
        settings=SETTINGS,
        agent_budgets=[rule for rule in rules if rule is not None],
    )
    assert isinstance(decision, Injection)
    assert decision.warnings == ()
    result = copy.deepcopy(body)
    apply(result, decision.patch)
    sidecar = result["spec"]["initContainers"][0]
    assert env_of(sidecar)["A11I_AGENT_BUDGET_USD"] == "5"
    assert result["metadata"]["annotations"][injection.AGENT_BUDGET] == "bots=$5"
    assert result["metadata"]["annotations"][injection.STATUS] == "injected"

    # Not selected: no budget of its own, no annotation.
    plain, _ = injected(pod(ASK, labels={"app": "cron"}))
    assert "A11I_AGENT_BUDGET_USD" not in env_of(plain["spec"]["initContainers"][0])
    assert injection.AGENT_BUDGET not in plain["metadata"]["annotations"]


def test_selected_by_several_the_smallest_limit_applies() -> None:
    rules = [
        injection.agent_budget_rule(b)
        for b in (
            budget("generous", {}, per_agent="10", created="2026-01-01T00:00:00Z"),
            budget("strict", {"matchLabels": {"app": "bot"}}, per_agent="2.5"),
            budget("tie-newer", {}, per_agent="2.50", created="2026-12-01T00:00:00Z"),
        )
    ]
    body = pod(labels={"app": "bot"})  # no annotations at all: the marks make the map
    decision = decide(
        body,
        namespace="agents",
        namespace_labels={"a11i.io/inject": "enabled"},
        settings=SETTINGS,
        agent_budgets=[rule for rule in rules if rule is not None],
    )
    assert isinstance(decision, Injection)
    result = copy.deepcopy(body)
    apply(result, decision.patch)
    assert env_of(result["spec"]["initContainers"][0])["A11I_AGENT_BUDGET_USD"] == "2.5"
    assert result["metadata"]["annotations"] == {
        injection.STATUS: "injected",
        injection.AGENT_BUDGET: "strict=$2.5",
    }
    assert len(decision.warnings) == 1
    assert "strict" in decision.warnings[0]
    assert "also: tie-newer, generous" in decision.warnings[0]


@pytest.mark.parametrize(
    "settings",
    [
        SETTINGS,
        SHARED,
        InjectionSettings(image="a11i:test", redis_url="redis://r:6379/0", port=12000),
        InjectionSettings(
            image="a11i:test",
            openai_upstream="http://standin.e2e.svc:8000/v1",
            anthropic_upstream="http://standin.e2e.svc:8000",
        ),
    ],
    ids=["embedded", "shared-redis", "other-port", "upstreams"],
)
def test_the_injected_environment_is_what_the_sidecar_reads(settings: InjectionSettings) -> None:
    """The contract both sides import (a11i.sidecar.contract): the sidecar built from the
    environment the webhook writes (the downward API resolved as the kubelet would) is the pod's
    namespace and name, on the port and wallet the webhook chose, with the pod's own budget."""
    rule = injection.agent_budget_rule(
        budget("bots", {"matchLabels": {"app": "bot"}}, per_agent="2.5")
    )
    assert rule is not None
    body = pod(ASK, labels={"app": "bot", "a11i.io/project": "research"}, name="bot-7")
    decision = decide(
        body, namespace="agents", namespace_labels={}, settings=settings, agent_budgets=[rule]
    )
    assert isinstance(decision, Injection)
    result = copy.deepcopy(body)
    apply(result, decision.patch)
    (proxy,) = result["spec"]["initContainers"]
    downward = {"metadata.namespace": "agents", "metadata.name": "bot-7"}
    env: dict[str, str] = {}
    for variable in proxy["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = downward[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    sidecar = from_env(env)
    assert (sidecar.namespace, sidecar.agent, sidecar.project) == ("agents", "bot-7", "research")
    assert sidecar.port == settings.port
    assert sidecar.redis_url == (settings.redis_url or None)
    assert sidecar.wallet_file == injection.WALLET_FILE
    assert sidecar.agent_budget is not None
    assert sidecar.agent_budget.limit_usd == Decimal("2.5")
    # Where the calls go: the chart's sidecar.upstreams, else the providers' public APIs.
    assert sidecar.upstream.openai_base == (
        settings.openai_upstream.removesuffix("/v1") or "https://api.openai.com"
    )
    assert sidecar.upstream.anthropic_base == (
        settings.anthropic_upstream or "https://api.anthropic.com"
    )
    # The app containers are sent to the port the sidecar listens on.
    (app,) = result["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{settings.port}/v1"


# --- key custody --------------------------------------------------------------------------------

CUSTODY = injection.KeyCustodyRef("provider-keys", openai_key="openai", anthropic_key="claude")
HELD = InjectionSettings(image="a11i:test", key_custody=CUSTODY)


def wide(
    name: str, custody: dict[str, Any] | None, *, created: str = "2026-11-01T00:00:00Z"
) -> injection.NamespaceBudget:
    body = budget(name, None, created=created)
    if custody is not None:
        body["spec"]["keyCustody"] = custody
    parsed = injection.namespace_budget(body)
    assert parsed is not None
    return parsed


def custody_decision(
    body: dict[str, Any],
    settings: InjectionSettings = HELD,
    budgets: tuple[injection.NamespaceBudget, ...] = (),
) -> tuple[dict[str, Any], Injection]:
    decision = decide(
        body,
        namespace="agents",
        namespace_labels={},
        settings=settings,
        namespace_budgets=budgets,
    )
    assert isinstance(decision, Injection), decision
    result = copy.deepcopy(body)
    apply(result, decision.patch)
    return result, decision


def test_the_keys_are_files_in_the_sidecar_alone() -> None:
    """The Secret is a read-only volume mounted by the proxy only; the proxy's env names the
    files; no container gets a key as an env value or a secretKeyRef; the pod is marked."""
    containers = [{"name": "agent", "image": "a"}, {"name": "tools", "image": "t"}]
    result, decision = custody_decision(pod(ASK, containers=containers))
    assert decision.warnings == ()
    (proxy,) = result["spec"]["initContainers"]
    assert {"name": "a11i-provider-keys", "mountPath": injection.KEYS_DIR, "readOnly": True} in (
        proxy["volumeMounts"]
    )
    env = env_of(proxy)
    assert env["A11I_OPENAI_API_KEY_FILE"] == f"{injection.KEYS_DIR}/openai"
    assert env["A11I_ANTHROPIC_API_KEY_FILE"] == f"{injection.KEYS_DIR}/anthropic"
    assert "A11I_OPENAI_API_KEY" not in env
    assert "A11I_ANTHROPIC_API_KEY" not in env
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["a11i-provider-keys"] == {
        "name": "a11i-provider-keys",
        "secret": {
            "secretName": "provider-keys",
            "items": [
                {"key": "openai", "path": "openai"},
                {"key": "claude", "path": "anthropic"},
            ],
            "defaultMode": 0o444,
            "optional": False,
        },
    }
    for app in result["spec"]["containers"]:
        mounts = [m["name"] for m in app.get("volumeMounts", [])]
        assert "a11i-provider-keys" not in mounts, app["name"]
        assert env_of(app)["OPENAI_API_KEY"] == injection.PLACEHOLDER_KEY
        assert env_of(app)["ANTHROPIC_API_KEY"] == injection.PLACEHOLDER_KEY
        assert not any("_FILE" in name for name in env_of(app))
    # Nowhere in the pod a secretKeyRef or a secret envFrom to the keys' Secret.
    assert '"provider-keys"' not in json.dumps(
        [c for c in result["spec"]["initContainers"] + result["spec"]["containers"]]
    )
    assert result["metadata"]["annotations"][injection.KEY_CUSTODY] == "openai,anthropic"


def test_with_an_fs_group_the_files_are_not_world_readable() -> None:
    result, _ = custody_decision(pod(ASK, securityContext={"fsGroup": 2000}))
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["a11i-provider-keys"]["secret"]["defaultMode"] == 0o440


def test_only_the_held_provider_gets_a_file_and_a_placeholder() -> None:
    settings = InjectionSettings(
        image="a11i:test", key_custody=injection.KeyCustodyRef("keys", openai_key="openai")
    )
    result, _ = custody_decision(pod(ASK), settings)
    proxy = result["spec"]["initContainers"][0]
    assert "A11I_ANTHROPIC_API_KEY_FILE" not in env_of(proxy)
    volume = next(v for v in result["spec"]["volumes"] if v["name"] == "a11i-provider-keys")
    assert volume["secret"]["items"] == [{"key": "openai", "path": "openai"}]
    app = env_of(result["spec"]["containers"][0])
    assert app["OPENAI_API_KEY"] == injection.PLACEHOLDER_KEY
    assert "ANTHROPIC_API_KEY" not in app
    assert result["metadata"]["annotations"][injection.KEY_CUSTODY] == "openai"


def test_the_namespaces_allowed_unmetered_calls_reach_the_sidecar_alone() -> None:
    allowed = {
        "secretName": "provider-keys",
        "openaiKey": "openai",
        "allowUnmetered": ["GET /v1/files*", "POST /v1/batches"],
    }
    result, _ = custody_decision(pod(ASK), budgets=(wide("team", allowed),))
    proxy = env_of(result["spec"]["initContainers"][0])
    assert proxy["A11I_ALLOW_UNMETERED"] == "GET /v1/files*,POST /v1/batches"
    assert "A11I_ALLOW_UNMETERED" not in env_of(result["spec"]["containers"][0])
    # Without it, nothing is allowed beyond what a11i meters.
    plain, _ = custody_decision(pod(ASK))
    assert "A11I_ALLOW_UNMETERED" not in env_of(plain["spec"]["initContainers"][0])


@pytest.mark.parametrize(
    "patterns",
    [["FETCH /v1/files"], ["GET v1/files"], ["GET /v1/a,b"], ["GET /v1/a b"], "GET /v1/files"],
    ids=["unknown-method", "relative-path", "comma", "blank", "not-a-list"],
)
def test_a_malformed_allow_list_makes_the_custody_invalid(patterns: object) -> None:
    custody = {"secretName": "keys", "openaiKey": "k", "allowUnmetered": patterns}
    assert injection.key_custody_ref(custody) is None


def test_the_sidecar_takes_the_allow_list_the_webhook_writes() -> None:
    """The contract both sides import: the injected value parses in the sidecar's settings."""
    allowed = {"secretName": "k", "openaiKey": "o", "allowUnmetered": ["* /v1/vector_stores/*"]}
    result, _ = custody_decision(pod(ASK), budgets=(wide("team", allowed),))
    proxy = env_of(result["spec"]["initContainers"][0])
    settings = from_env({"A11I_ALLOW_UNMETERED": proxy["A11I_ALLOW_UNMETERED"]})
    assert settings.guard.allow_unmetered == ("* /v1/vector_stores/*",)


def test_without_custody_nothing_about_keys_is_injected() -> None:
    result, _ = injected(pod(ASK))
    assert "a11i-provider-keys" not in {v["name"] for v in result["spec"]["volumes"]}
    assert not any("KEY" in name for name in env_of(result["spec"]["initContainers"][0]))
    assert "OPENAI_API_KEY" not in env_of(result["spec"]["containers"][0])
    assert injection.KEY_CUSTODY not in result["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("container", "placeholder", "warned"),
    [
        pytest.param(
            {"env": [{"name": "OPENAI_API_KEY", "value": "mine"}]}, "mine", False, id="own-value"
        ),
        pytest.param(
            {
                "env": [
                    {
                        "name": "OPENAI_API_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "team-key", "key": "k"}},
                    }
                ]
            },
            {"secretKeyRef": {"name": "team-key", "key": "k"}},
            True,
            id="own-secret-warned",
        ),
        pytest.param(
            {"envFrom": [{"secretRef": {"name": "agent-env"}}]}, None, False, id="env-from-kept"
        ),
        pytest.param(
            {"envFrom": [{"prefix": "APP_", "configMapRef": {"name": "settings"}}]},
            injection.PLACEHOLDER_KEY,
            False,
            id="env-from-other-prefix",
        ),
        pytest.param({}, injection.PLACEHOLDER_KEY, False, id="none-set"),
    ],
)
def test_a_key_the_container_sets_itself_is_kept(
    container: dict[str, Any], placeholder: object, warned: bool
) -> None:
    settings = InjectionSettings(
        image="a11i:test", key_custody=injection.KeyCustodyRef("keys", openai_key="openai")
    )
    result, decision = custody_decision(
        pod(ASK, containers=[{"name": "app", "image": "a", **container}]), settings
    )
    assert env_of(result["spec"]["containers"][0]).get("OPENAI_API_KEY") == placeholder
    assert any("Secret team-key" in w for w in decision.warnings) is warned


def test_containers_left_out_get_no_placeholder() -> None:
    containers = [{"name": "agent", "image": "a"}, {"name": "log-shipper", "image": "l"}]
    result, _ = custody_decision(pod({**ASK, "a11i.io/containers": "agent"}, containers=containers))
    agent, shipper = result["spec"]["containers"]
    assert env_of(agent)["OPENAI_API_KEY"] == injection.PLACEHOLDER_KEY
    assert "env" not in shipper


def test_custody_opt_out_and_idempotence() -> None:
    """inject: false wins (no key volume, nothing); a second admission adds nothing twice."""
    refused = decide(
        pod({"a11i.io/inject": "false"}),
        namespace="agents",
        namespace_labels={"a11i.io/inject": "enabled"},
        settings=HELD,
    )
    assert isinstance(refused, Skip)
    once, _ = custody_decision(pod(ASK))
    again = decide(once, namespace="agents", namespace_labels={}, settings=HELD)
    assert isinstance(again, Skip)
    del once["metadata"]["annotations"]["a11i.io/status"]
    assert isinstance(decide(once, namespace="agents", namespace_labels={}, settings=HELD), Skip)


def test_a_volume_named_like_the_keys_is_a_warning_not_a_half_injection() -> None:
    body = pod(ASK, volumes=[{"name": "a11i-provider-keys", "emptyDir": {}}])
    decision = decide(body, namespace="agents", namespace_labels={}, settings=HELD)
    assert isinstance(decision, Skip)
    assert "a11i-provider-keys" in decision.warnings[0]


def test_shared_process_namespace_is_warned() -> None:
    _, decision = custody_decision(pod(ASK, shareProcessNamespace=True))
    assert any("shareProcessNamespace" in w for w in decision.warnings)


def test_the_namespace_budget_names_the_secret_over_the_default() -> None:
    own = wide("default", {"secretName": "team-keys", "anthropicKey": "anthropic"})
    result, _ = custody_decision(pod(ASK), HELD, (own,))
    volume = next(v for v in result["spec"]["volumes"] if v["name"] == "a11i-provider-keys")
    assert volume["secret"]["secretName"] == "team-keys"
    assert volume["secret"]["items"] == [{"key": "anthropic", "path": "anthropic"}]
    assert result["metadata"]["annotations"][injection.KEY_CUSTODY] == "anthropic"
    # Without keyCustody in the namespace's budget: the cluster-wide default.
    result, _ = custody_decision(pod(ASK), HELD, (wide("default", None),))
    volume = next(v for v in result["spec"]["volumes"] if v["name"] == "a11i-provider-keys")
    assert volume["secret"]["secretName"] == "provider-keys"
    # Neither: no custody.
    result, _ = custody_decision(pod(ASK), SETTINGS, (wide("default", None),))
    assert "a11i-provider-keys" not in {v["name"] for v in result["spec"]["volumes"]}


def test_the_wallet_owner_decides_custody() -> None:
    """The oldest namespace-wide budget owns the wallet (the reconciler's rule); a newer one in
    conflict does not name the Secret, even when the owner names none."""
    older = wide("old", None, created="2026-01-01T00:00:00Z")
    newer = wide("new", {"secretName": "other", "openaiKey": "k"}, created="2026-02-01T00:00:00Z")
    assert injection.key_custody([newer, older], None) is None
    assert injection.key_custody([newer, older], CUSTODY) == CUSTODY
    assert injection.key_custody([newer], None) == injection.KeyCustodyRef("other", "k")


@pytest.mark.parametrize(
    "custody",
    [
        {"secretName": "Bad_Name", "openaiKey": "k"},
        {"secretName": "keys"},
        {"secretName": "keys", "openaiKey": "../etc"},
        {"secretName": "keys", "openaiKey": 1},
        "keys",
    ],
    ids=["bad-secret-name", "no-key", "bad-key", "key-not-string", "not-an-object"],
)
def test_a_malformed_key_custody_is_none(custody: object) -> None:
    assert injection.key_custody_ref(custody) is None


def test_budgets_with_a_selector_or_being_deleted_are_not_namespace_wide() -> None:
    assert injection.namespace_budget(budget("bots", {})) is None
    assert injection.namespace_budget(budget("going", None, deleting=True)) is None
    assert injection.namespace_budget({"metadata": {}, "spec": {}}) is None


def test_the_sidecar_reads_the_keys_the_webhook_mounts(tmp_path: Path) -> None:
    """The contract both sides import: the sidecar built from the injected env, with the Secret's
    files where the kubelet puts them, holds the keys."""
    result, _ = custody_decision(pod(ASK))
    proxy = result["spec"]["initContainers"][0]
    mount = next(m for m in proxy["volumeMounts"] if m["name"] == "a11i-provider-keys")
    volume = next(v for v in result["spec"]["volumes"] if v["name"] == "a11i-provider-keys")
    secret_data = {"openai": "sk-held-openai", "claude": "sk-ant-held"}
    root = tmp_path / mount["mountPath"].lstrip("/")
    root.mkdir(parents=True)
    for item in volume["secret"]["items"]:
        (root / item["path"]).write_text(secret_data[item["key"]])
    env = {
        e["name"]: e["value"].replace(injection.KEYS_DIR, str(root))
        for e in proxy["env"]
        if "value" in e
    }
    sidecar = from_env(env)
    assert sidecar.custody.openai_key == "sk-held-openai"
    assert sidecar.custody.anthropic_key == "sk-ant-held"


# --- admission (spec.admission) -----------------------------------------------------------------

STRICT = {"fitOutputCap": False, "minOutputTokens": 2048, "waitSeconds": 0}


def admitting(
    name: str,
    admission: dict[str, Any] | None,
    *,
    selector: dict[str, Any] | None = None,
    per_agent: str | None = None,
    created: str = "2026-11-01T00:00:00Z",
) -> dict[str, Any]:
    body = budget(name, selector, per_agent=per_agent, created=created)
    if admission is not None:
        body["spec"]["admission"] = admission
    return body


def proxy_env(
    settings: InjectionSettings = SETTINGS,
    *,
    labels: dict[str, str] | None = None,
    namespace_budgets: Sequence[dict[str, Any]] = (),
    agent_budgets: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    wides = [injection.namespace_budget(b) for b in namespace_budgets]
    rules = [injection.agent_budget_rule(b) for b in agent_budgets]
    decision = decide(
        pod(ASK, labels=labels),
        namespace="agents",
        namespace_labels={},
        settings=settings,
        namespace_budgets=[w for w in wides if w is not None],
        agent_budgets=[r for r in rules if r is not None],
    )
    assert isinstance(decision, Injection), decision
    result = copy.deepcopy(pod(ASK, labels=labels))
    apply(result, decision.patch)
    return env_of(result["spec"]["initContainers"][0])


ADMISSION_VARIABLES = (
    "A11I_BUDGET_FIT_OUTPUT_CAP",
    "A11I_BUDGET_MIN_OUTPUT_TOKENS",
    "A11I_BUDGET_ADMISSION_WAIT",
)


def admission_env(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k in ADMISSION_VARIABLES}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (STRICT, injection.AdmissionSpec(False, 2048, 0.0)),
        ({"fitOutputCap": True}, injection.AdmissionSpec(fit_output_cap=True)),
        ({"waitSeconds": 2.5}, injection.AdmissionSpec(wait_s=2.5)),
        ({"minOutputTokens": 10**6, "waitSeconds": 60}, injection.AdmissionSpec(None, 10**6, 60.0)),
        ({}, injection.AdmissionSpec()),
        (None, injection.AdmissionSpec()),
        ("strict", injection.AdmissionSpec()),
        # What the CRD refuses is read as unset, never guessed at.
        ({"fitOutputCap": "false"}, injection.AdmissionSpec()),
        ({"minOutputTokens": 0}, injection.AdmissionSpec()),
        ({"minOutputTokens": 1_000_001}, injection.AdmissionSpec()),
        ({"minOutputTokens": True}, injection.AdmissionSpec()),
        ({"minOutputTokens": 1.5}, injection.AdmissionSpec()),
        ({"waitSeconds": -1}, injection.AdmissionSpec()),
        ({"waitSeconds": 61}, injection.AdmissionSpec()),
        ({"waitSeconds": float("nan")}, injection.AdmissionSpec()),
        ({"waitSeconds": False}, injection.AdmissionSpec()),
    ],
    ids=[
        "strict", "fit-only", "fraction", "maxima", "empty", "absent", "not-an-object",
        "fit-a-string", "tokens-zero", "tokens-too-many", "tokens-bool", "tokens-fraction",
        "wait-negative", "wait-too-long", "wait-nan", "wait-bool",
    ],
)  # fmt: skip
def test_spec_admission_is_parsed_as_the_crd_checks_it(
    value: object, expected: injection.AdmissionSpec
) -> None:
    assert injection.admission_spec(value) == expected


def test_without_any_admission_setting_the_sidecar_keeps_its_defaults() -> None:
    assert admission_env(proxy_env(namespace_budgets=[admitting("default", None)])) == {}


def test_the_namespace_budget_makes_its_sidecars_strict() -> None:
    env = proxy_env(namespace_budgets=[admitting("default", STRICT)])
    assert admission_env(env) == {
        "A11I_BUDGET_FIT_OUTPUT_CAP": "off",
        "A11I_BUDGET_MIN_OUTPUT_TOKENS": "2048",
        "A11I_BUDGET_ADMISSION_WAIT": "0",
    }


def test_fields_fall_through_agent_then_namespace_then_the_default() -> None:
    """Field by field: the per-agent budget that limits the pod, the namespace's wallet owner,
    the chart's default; a budget in conflict (not the owner) decides nothing."""
    default = InjectionSettings(
        image="a11i:test", admission=injection.AdmissionSpec(True, 512, 3.0)
    )
    owner = admitting("old", {"waitSeconds": 1.5}, created="2026-01-01T00:00:00Z")
    conflict = admitting("new", {"fitOutputCap": False}, created="2026-02-01T00:00:00Z")
    bots = admitting(
        "bots", {"fitOutputCap": False}, selector={"matchLabels": {"app": "bot"}}, per_agent="5"
    )
    namespace_budgets = [conflict, owner]
    assert admission_env(proxy_env(default, namespace_budgets=namespace_budgets)) == {
        "A11I_BUDGET_FIT_OUTPUT_CAP": "on",
        "A11I_BUDGET_MIN_OUTPUT_TOKENS": "512",
        "A11I_BUDGET_ADMISSION_WAIT": "1.5",
    }
    selected = proxy_env(
        default, labels={"app": "bot"}, namespace_budgets=namespace_budgets, agent_budgets=[bots]
    )
    assert admission_env(selected) == {
        "A11I_BUDGET_FIT_OUTPUT_CAP": "off",
        "A11I_BUDGET_MIN_OUTPUT_TOKENS": "512",
        "A11I_BUDGET_ADMISSION_WAIT": "1.5",
    }
    assert selected["A11I_AGENT_BUDGET_USD"] == "5"
    # A pod the per-agent budget does not select keeps the namespace's.
    other = proxy_env(
        default, labels={"app": "cron"}, namespace_budgets=namespace_budgets, agent_budgets=[bots]
    )
    assert other["A11I_BUDGET_FIT_OUTPUT_CAP"] == "on"


def test_selected_by_several_the_budget_that_limits_the_pod_decides() -> None:
    """The per-agent budget whose (smallest) limit the pod gets is also the one whose admission
    applies: one budget governs a pod's own wallet."""
    selector = {"matchLabels": {"app": "bot"}}
    tight = admitting("tight", {"waitSeconds": 0}, selector=selector, per_agent="1")
    loose = admitting("loose", {"fitOutputCap": False}, selector=selector, per_agent="9")
    env = proxy_env(labels={"app": "bot"}, agent_budgets=[loose, tight])
    assert env["A11I_AGENT_BUDGET_USD"] == "1"
    assert admission_env(env) == {"A11I_BUDGET_ADMISSION_WAIT": "0"}


@pytest.mark.parametrize(
    ("admission", "fit", "floor", "wait"),
    [
        (STRICT, False, 2048, 0.0),
        ({"fitOutputCap": True, "waitSeconds": 0.25}, True, 1024, 0.25),
        ({"minOutputTokens": 1}, True, 1, 5.0),
        ({}, True, 1024, 5.0),
    ],
    ids=["strict", "fitting-short-wait", "floor-one", "defaults"],
)
def test_the_sidecar_reads_the_admission_the_webhook_writes(
    admission: dict[str, Any], fit: bool, floor: int, wait: float
) -> None:
    """The contract both sides import: the sidecar built from the injected env has the
    AgentBudget's admission; ``fitOutputCap: false`` turns fitting off, ``waitSeconds: 0`` the
    wait."""
    env = proxy_env(namespace_budgets=[admitting("default", admission)])
    settings = from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.admission.fit_output_cap is fit
    assert settings.admission.min_output_tokens == floor
    assert settings.admission.wait_s == wait


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0"), (5.0, "5"), (60.0, "60"), (2.5, "2.5"), (0.1, "0.1"), (1e-7, "1e-07")],
)
def test_seconds_are_written_as_the_sidecar_reads_them(seconds: float, text: str) -> None:
    assert injection.seconds_text(seconds) == text
