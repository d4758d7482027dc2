"""The metered journey on pods (tests/support/journey.py sets it up once for the module): the
agent's calls metered by its injected sidecar reach the stand-in provider pod and the spend shows
in the AgentBudget's status; the emergency stop and resume; a top-up from the dashboard pod; the
proxy container killed and the operator, webhook and Redis pods deleted, with nothing settled
lost; a TelemetryPolicy's traces at a collector and a PII-rules edit applied live; Pod Security
``restricted`` on the agents' namespace.

Needs root and the node (``make node-system``), the cluster binaries and the images (``make
images``). On a failure the message carries the pod's events and the kubelet's log tail.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.support.cluster import ControlPlaneError
from tests.support.images import BUSYBOX_IMAGE, ImageError
from tests.support.journey import (
    AGENTS,
    ENCODINGS,
    RELEASE,
    SIDECAR_BUDGET,
    STANDIN_NAMESPACE,
    STANDIN_URL,
    SYSTEM,
    Journey,
    running_journey,
)
from tests.support.otelcol import OtelCollector, Span

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="a node needs root (containerd, runc, netns)"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    failure = ""
    try:
        with running_journey() as journey:
            yield journey
        return
    except (ImageError, ControlPlaneError) as error:
        failure = str(error)
    # Outside the except block: the message alone, without a chained traceback.
    pytest.fail(failure, pytrace=False)


def test_the_agents_metered_calls_reach_the_standin_pod_and_its_budget_shows_the_spend(
    journey: Journey,
) -> None:
    plane = journey.plane
    # Exact counts: the image's verified encodings, not the stand-in's estimate.
    listed = plane.kubectl(
        "exec", "-n", STANDIN_NAMESPACE, "deploy/standin", "--", "ls", ENCODINGS, check=True,
    ).stdout.split()  # fmt: skip
    assert {"cl100k_base.tiktoken", "o200k_base.tiktoken"} <= set(listed), listed

    pod = journey.get("pod", journey.agent_pod, "-n", AGENTS)
    (proxy,) = pod["spec"]["initContainers"]
    assert (proxy["name"], proxy["restartPolicy"]) == ("a11i-proxy", "Always")
    proxy_env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert proxy_env["A11I_OPENAI_BASE"] == STANDIN_URL
    assert proxy_env["A11I_ANTHROPIC_BASE"] == STANDIN_URL
    # The image's sidecar counts exactly, with the compact tokenizer (a11i_bpe) it carries.
    status_code, text = journey.fetch("http://127.0.0.1:11000/a11i/readyz")
    ready = json.loads(text)
    assert status_code == 200, text
    assert (ready["exact_token_counts"], ready["tokenizer"]) == (True, "compact"), ready

    # The agent's calls, metered by its sidecar, reach the stand-in with the held key.
    deadline = time.monotonic() + 120
    calls: list[dict[str, Any]] = []
    while not calls and time.monotonic() < deadline:
        calls = [r for r in journey.standin_requests() if r["path"] == "/v1/chat/completions"]
        time.sleep(1)
    agent_log = plane.kubectl("logs", "-n", AGENTS, journey.agent_pod, "-c", "agent").stdout
    assert calls, f"no call reached the stand-in\nagent:\n{agent_log}\n{journey.node.logs()}"
    assert calls[0]["headers"]["authorization"] == "Bearer sk-replace-with-your-openai-key"
    assert calls[0]["json"]["model"] == "gpt-4o-mini"
    assert "turn 1: decision=" in agent_log, agent_log
    assert "cost_usd=" in agent_log, agent_log

    # The operator reads the namespace's wallet in Redis into the AgentBudget's status.
    def spent() -> dict[str, Any] | None:
        status = journey.budget_status()
        return status if Decimal(status.get("spent") or "0") > 0 else None

    status = journey.wait_for("the AgentBudget's status to show spend", spent, 90)
    assert Decimal(status["remaining"]) < Decimal("250")
    columns = plane.kubectl("get", "agentbudget", "default", "-n", AGENTS, check=True).stdout
    assert str(status["spent"]) in columns, columns


def test_suspend_stops_the_running_agents_next_call_and_resume_lets_it_through(
    journey: Journey,
) -> None:
    """The agent calls every 0.1 s while the AgentBudget is patched: the sidecar refuses the
    next call with 403 emergency_stop, and the one after ``suspend: false`` goes through."""
    if not journey.agent_pod:
        pytest.fail("the agent did not run (see the test before)", pytrace=False)
    patched: list[float] = []

    def patch(suspend: bool) -> Callable[[], None]:
        def run() -> None:
            body = json.dumps({"spec": {"suspend": suspend}})
            journey.plane.kubectl(
                "patch", "agentbudget", "default", "-n", AGENTS, "--type=merge", "-p", body,
                check=True,
            )  # fmt: skip
            patched.append(time.time())

        return run

    stopped = journey.probe(403, 60, patch(True))
    assert (stopped["status"], stopped["code"]) == (403, "emergency_stop"), stopped
    assert stopped["before"] is not None, "the calls had started before the patch"
    resumed = journey.probe(200, 60, patch(False))
    assert resumed["status"] == 200, resumed
    # Reported, not asserted (the call in flight when the patch returned bounds the figure).
    print(
        f"\nemergency stop: first 403 {stopped['at'] - patched[0]:+.2f} s after the patch "
        f"returned (the call before it answered at {stopped['before'] - patched[0]:+.2f} s); "
        f"resume: first 200 {resumed['at'] - patched[1]:+.2f} s after"
    )


def test_a_top_up_from_the_dashboard_pod_raises_the_limit(journey: Journey) -> None:
    """The dashboard's top-up API through its Service, called from the agent's pod with the
    chart's generated admin token: the AgentBudget's limit rises, then the wallet's."""
    secret = journey.get("secret", f"{RELEASE}-dashboard", "-n", SYSTEM)
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    before = Decimal(journey.get("agentbudget", "default", "-n", AGENTS)["spec"]["limit"])
    url = f"http://{RELEASE}-dashboard.{SYSTEM}.svc.cluster.local/api/namespaces/{AGENTS}/top-up"
    status, text = journey.fetch(url, token, json.dumps({"amount_usd": "5"}))
    assert status == 200, text
    answer = json.loads(text)
    assert answer["via"] == "agentbudget/default", answer
    assert Decimal(answer["limit_usd"]) == before + 5, answer
    raised = journey.get("agentbudget", "default", "-n", AGENTS)["spec"]["limit"]
    assert Decimal(raised) == before + 5
    journey.wait_for(
        f"the sidecar's wallet to have the limit {before + 5}",
        lambda: True if Decimal(journey.sidecar_budget()["limit_usd"]) == before + 5 else None,
        30,
        journey.operator_log,
    )
    # Without the token: refused, nothing changed.
    status, text = journey.fetch(url, "", json.dumps({"amount_usd": "5"}))
    assert status == 401, (status, text)
    assert Decimal(journey.get("agentbudget", "default", "-n", AGENTS)["spec"]["limit"]) == (
        before + 5
    )


def _proxy_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("initContainerStatuses", [])
    found: dict[str, Any] = next((s for s in statuses if s["name"] == "a11i-proxy"), {})
    return found


def test_a_killed_proxy_container_restarts_and_the_wallet_keeps_every_settled_call(
    journey: Journey,
) -> None:
    """SIGKILL to the a11i-proxy container (through the node's containerd): the kubelet
    restarts it in the same pod, and the wallet holds exactly what was settled before."""
    settled = journey.quiesce()
    pod = journey.get("pod", journey.agent_pod, "-n", AGENTS)
    before = _proxy_status(pod)
    container = str(before["containerID"]).removeprefix("containerd://")
    journey.node.ctr("tasks", "kill", "--signal", "SIGKILL", container)

    def restarted() -> dict[str, Any] | None:
        status = _proxy_status(journey.get("pod", journey.agent_pod, "-n", AGENTS))
        restarts = status.get("restartCount", 0)
        return status if restarts > before["restartCount"] and status.get("ready") else None

    after = journey.wait_for(
        "a11i-proxy to restart and turn ready", restarted, 90, journey.describe_agent
    )
    assert after["containerID"] != before["containerID"]
    budget = journey.sidecar_budget()
    assert Decimal(budget["spent_usd"]) == settled, (budget, settled)
    assert budget["state"] == "Suspended", budget
    journey.resume_and_add(settled)


def test_a_deleted_operator_pod_comes_back_and_reports_the_spend_it_did_not_see(
    journey: Journey,
) -> None:
    settled = journey.quiesce()
    journey.plane.kubectl(
        "delete", "pod", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator",
        "--timeout=60s", check=True, timeout=75,
    )  # fmt: skip
    journey.rollout(SYSTEM, f"deploy/{RELEASE}-operator")
    assert Decimal(journey.sidecar_budget()["spent_usd"]) == settled
    # Spend the new operator has not seen before reaches the AgentBudget's status.
    journey.resume_and_add(settled)


INJECTABLE = f"""
apiVersion: v1
kind: Pod
metadata:
  name: NAME
  namespace: {AGENTS}
  annotations: {{a11i.io/inject: "true"}}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    seccompProfile: {{type: RuntimeDefault}}
  containers:
    - name: app
      image: {BUSYBOX_IMAGE}
      imagePullPolicy: Never
      command: [sleep, "3600"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {{drop: [ALL]}}
"""


def test_the_webhook_pods_come_back_and_while_none_runs_pods_are_admitted_unchanged(
    journey: Journey,
) -> None:
    plane = journey.plane
    configuration = journey.get("mutatingwebhookconfiguration", f"{RELEASE}-injector")
    assert {w["failurePolicy"] for w in configuration["webhooks"]} == {"Ignore"}

    def admitted(name: str) -> dict[str, Any]:
        # A server-side dry run: the apiserver admits it (webhooks included) and stores nothing.
        created = plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            input=INJECTABLE.replace("NAME", name), check=True,
        )  # fmt: skip
        pod: dict[str, Any] = json.loads(created.stdout)
        return pod

    plane.kubectl(
        "delete", "pod", "-n", SYSTEM, "-l", "app.kubernetes.io/component=webhook",
        "--timeout=60s", check=True, timeout=75,
    )  # fmt: skip
    journey.rollout(SYSTEM, f"deploy/{RELEASE}-webhook")
    injected = admitted("after-restart")
    assert "a11i.io/status" in injected["metadata"]["annotations"], injected["metadata"]
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["a11i-proxy"]

    plane.kubectl("scale", f"deploy/{RELEASE}-webhook", "-n", SYSTEM, "--replicas=0", check=True)
    try:
        journey.wait_for(
            "the webhook's Service to have no endpoint",
            lambda: True
            if not plane.kubectl(
                "get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/component=webhook",
                "-o", "name",
            ).stdout.strip()
            else None,
            90,
        )  # fmt: skip
        # A real pod, created while no webhook answers: admitted as it was asked for.
        plane.kubectl("apply", "-f", "-", input=INJECTABLE.replace("NAME", "unmetered"), check=True)
        pod = journey.get("pod", "unmetered", "-n", AGENTS)
        assert "a11i.io/status" not in pod["metadata"].get("annotations", {}), pod["metadata"]
        assert "initContainers" not in pod["spec"], pod["spec"]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]
        assert "OPENAI_BASE_URL" not in json.dumps(pod["spec"])
    finally:
        plane.kubectl("delete", "pod", "unmetered", "-n", AGENTS, "--wait=false")
        plane.kubectl("scale", f"deploy/{RELEASE}-webhook", "-n", SYSTEM, "--replicas=2")
    journey.rollout(SYSTEM, f"deploy/{RELEASE}-webhook")
    journey.wait_for(
        "the webhook to inject again",
        lambda: (
            True
            if "a11i.io/status" in admitted("back")["metadata"].get("annotations", {})
            else None
        ),
        60,
    )


def test_a_deleted_redis_pod_comes_back_and_nothing_settled_is_lost(journey: Journey) -> None:
    """The bundled Redis keeps its data on an emptyDir (redis.persistence.enabled: false, the
    default): a new pod starts empty, and the sidecar that last saw the wallet recreates it."""
    settled = journey.quiesce()
    journey.plane.kubectl(
        "delete", "pod", f"{RELEASE}-redis-0", "-n", SYSTEM, "--timeout=60s",
        check=True, timeout=75,
    )  # fmt: skip
    journey.rollout(SYSTEM, f"sts/{RELEASE}-redis")

    def recreated() -> dict[str, Any] | None:
        status, text = journey.fetch(SIDECAR_BUDGET)
        return json.loads(text) if status == 200 else None

    budget = journey.wait_for("the sidecar to read its wallet again", recreated, 60)
    assert Decimal(budget["spent_usd"]) == settled, (budget, settled)
    journey.resume_and_add(settled)


PII_RULES = """
pii_rules:
  - name: ticket
    regex: 'TICKET-[0-9]+'
    replacement: '[ticket]'
"""
ORDER_RULE = """
  - name: order
    regex: 'ORDER-[0-9]+'
    replacement: '[order]'
"""


def _policy(endpoint: str) -> str:
    return json.dumps(
        {
            "apiVersion": "a11i.io/v1alpha1",
            "kind": "TelemetryPolicy",
            "metadata": {"name": "default", "namespace": AGENTS},
            "spec": {
                "otlp": {"endpoint": endpoint, "protocol": "http"},
                "sampling": {"ratio": "1.0"},
                "captureContent": True,
                "piiRulesRef": {"name": "pii-rules", "key": "pii_rules.yaml"},
            },
        }
    )


def _pii_rules(rules: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pii-rules", "namespace": AGENTS},
            "data": {"pii_rules.yaml": rules},
        }
    )


def test_a_telemetry_policy_sends_the_sidecars_traces_to_a_collector_and_pii_edits_apply_live(
    journey: Journey,
) -> None:
    """The tests' collector listens on the host's side of the node's link, which pods reach;
    the policy's OTLP settings are environment, so the agent pod is recreated once; then an
    edit of the PII-rules ConfigMap reaches its running sidecar through the mounted a11i.yaml
    (the kubelet's sync, then the sidecar's reload), with no restart."""
    plane = journey.plane
    with OtelCollector(host=journey.node.network.host_ip) as collector:
        try:
            plane.kubectl("apply", "-f", "-", input=_pii_rules(PII_RULES), check=True)
            plane.kubectl("apply", "-f", "-", input=_policy(collector.http_endpoint), check=True)
            ready = plane.kubectl(
                "wait", "telemetrypolicy/default", "-n", AGENTS, "--for=condition=Ready",
                "--timeout=60s", timeout=75,
            )  # fmt: skip
            assert ready.returncode == 0, journey.operator_log()
            journey.restart_agent()
            pod = journey.get("pod", journey.agent_pod, "-n", AGENTS)
            restarts = _proxy_status(pod)["restartCount"]

            def turn_with(text: str) -> Span | None:
                for span in collector.spans():
                    captured = str(span.attributes.get("gen_ai.input.messages", ""))
                    if span.name == "agent_turn" and text in captured:
                        return span
                return None

            journey.calls(1, "close TICKET-4711 of ORDER-1234")
            span = journey.wait_for(
                "the sidecar's agent_turn span at the collector",
                lambda: turn_with("ORDER-1234"),
                60,
                lambda: f"{collector.log_tail(20)}\n{journey.sidecar_log()}",
            )
            captured = str(span.attributes["gen_ai.input.messages"])
            assert "[ticket]" in captured, captured
            assert "TICKET-4711" not in captured, captured
            assert span.resource.get("k8s.namespace.name") == AGENTS, span.resource

            plane.kubectl("apply", "-f", "-", input=_pii_rules(PII_RULES + ORDER_RULE), check=True)
            # Each try is a new call with a new number: the first one scrubbed by the new rule.
            tries = iter(range(1000, 2000))

            def scrubbed() -> Span | None:
                marker = f"try {next(tries)}"
                journey.calls(1, f"{marker}: close ORDER-{next(tries)}")
                (span,) = collector.wait_for(
                    collector.spans, lambda s: marker in str(s.attributes), timeout=20
                )
                return span if "[order]" in str(span.attributes) else None

            span = journey.wait_for(
                "a turn scrubbed by the added rule", scrubbed, 120, journey.sidecar_log
            )
            assert "ORDER-" not in str(span.attributes["gen_ai.input.messages"])
            after = journey.get("pod", journey.agent_pod, "-n", AGENTS)
            assert _proxy_status(after)["restartCount"] == restarts
        finally:
            plane.kubectl("delete", "telemetrypolicy", "default", "-n", AGENTS)
            plane.kubectl("delete", "configmap", "pii-rules", "-n", AGENTS)


PRIVILEGED = f"""
apiVersion: v1
kind: Pod
metadata:
  name: privileged
  namespace: {AGENTS}
  annotations: {{a11i.io/inject: "false"}}
spec:
  containers:
    - name: app
      image: {BUSYBOX_IMAGE}
      imagePullPolicy: Never
      command: [sleep, "3600"]
      securityContext: {{privileged: true}}
"""


def test_an_injected_pod_runs_in_a_namespace_enforcing_the_restricted_pod_security_standard(
    journey: Journey,
) -> None:
    plane = journey.plane
    label = "pod-security.kubernetes.io/enforce"
    plane.kubectl("label", "namespace", AGENTS, f"{label}=restricted", "--overwrite", check=True)
    try:
        refused = plane.kubectl("apply", "-f", "-", input=PRIVILEGED)
        assert refused.returncode != 0, "the namespace enforces the restricted standard"
        assert "violates PodSecurity" in refused.stderr, refused.stderr
        journey.restart_agent()
        pod = journey.get("pod", journey.agent_pod, "-n", AGENTS)
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["a11i-proxy"]
        assert journey.calls(2) > 0
    finally:
        plane.kubectl("label", "namespace", AGENTS, f"{label}-")
