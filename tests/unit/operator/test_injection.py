"""The pure injection decision: a pod, its namespace's labels and the settings to a JSONPatch or
a reason to admit the pod unchanged."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from a11i.operator import injection
from a11i.operator.injection import Injection, InjectionSettings, Skip, apply, decide
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
    }
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
    assert "A11I_WALLET_FILE" not in env_of(proxy)
    assert "a11i-state" not in {v["name"] for v in result["spec"]["volumes"]}


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
    assert "A11I_WALLET_FILE" not in env_of(proxy)
    assert "a11i-state" not in {v["name"] for v in result["spec"]["volumes"]}
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
    ],
    ids=["embedded", "shared-redis", "other-port"],
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
    assert sidecar.wallet_file == (None if settings.redis_url else injection.WALLET_FILE)
    assert sidecar.agent_budget is not None
    assert sidecar.agent_budget.limit_usd == Decimal("2.5")
    # The app containers are sent to the port the sidecar listens on.
    (app,) = result["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == f"http://127.0.0.1:{settings.port}/v1"
