"""The metered journey on pods, for the end-to-end tests and the pod benchmarks: a control plane
and a node, the project's images, the stand-in provider as a pod, ``helm install`` of the chart
with its sidecars' upstreams pointed at the stand-in (and the dashboard on), and the example agent
(examples/, the official openai SDK) running through its injected sidecar.

Two of the example's parts cannot run here as written, and are replaced the least possible:
- the stand-in provider (tests/support/standin.py) runs in the sidecar image, which has the
  Python, aiohttp and the verified tiktoken encodings it needs, from a ConfigMap of its source;
- the agent container pip-installs the SDK at start and pods cannot reach PyPI, so it runs on the
  agent image (tools/images/build.sh: the python base with the SDK version the example pins) and
  the Deployment is the example's with that image and without the ``pip install`` line.

Needs root and the node (``make node-system``), the cluster binaries and the images (``make
images``). Every wait polls with a deadline; on failure the message carries the pod's events
and the kubelet's log tail.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypedDict, TypeVar

import yaml

from tests.support.cluster import ControlPlane
from tests.support.images import agent_image, project_archives
from tests.support.node import Node, start_cluster
from tests.support.paths import ROOT

EXAMPLES = ROOT / "examples"
SIDECAR_IMAGE = "ghcr.io/a11i/sidecar:0.1.0"
STANDIN_NAMESPACE = "standin"
STANDIN_URL = f"http://standin.{STANDIN_NAMESPACE}.svc.cluster.local:8000"
AGENTS = "agents"
AGENT_SELECTOR = "app.kubernetes.io/name=sre-agent"
RELEASE, SYSTEM = "a11i", "a11i-system"
# Where Dockerfile.sidecar's install puts the verified encodings (docker/install.sh).
ENCODINGS = "/opt/a11i/lib/python3.11/site-packages/a11i/sidecar/data/encodings"

STANDIN = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: standin, namespace: {STANDIN_NAMESPACE}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: standin}}}}
  template:
    metadata: {{labels: {{app: standin}}}}
    spec:
      containers:
        - name: standin
          image: {SIDECAR_IMAGE}
          imagePullPolicy: Never
          command: [/opt/a11i/bin/python, -m, tests.support.standin, --host, 0.0.0.0,
                    --port, "8000"]
          env:
            - {{name: PYTHONPATH, value: /standin}}
            - {{name: STANDIN_ENCODINGS_DIR, value: {ENCODINGS}}}
          ports: [{{containerPort: 8000}}]
          readinessProbe:
            httpGet: {{path: /_standin/health, port: 8000}}
            periodSeconds: 1
          volumeMounts: [{{name: source, mountPath: /standin, readOnly: true}}]
      volumes:
        - name: source
          configMap:
            name: standin-source
            items:
              - {{key: init, path: tests/__init__.py}}
              - {{key: init, path: tests/support/__init__.py}}
              - {{key: paths.py, path: tests/support/paths.py}}
              - {{key: standin.py, path: tests/support/standin.py}}
---
apiVersion: v1
kind: Service
metadata: {{name: standin, namespace: {STANDIN_NAMESPACE}}}
spec:
  selector: {{app: standin}}
  ports: [{{port: 8000, targetPort: 8000}}]
"""

# Calls of the SDK through the sidecar, from inside the agent container, one every 0.1 s until one
# answers the wanted status (or time is up): prints "started" after the first answer, then that
# answer's status, error code and time, and the time of the last answer before it.
PROBE = """
import json, sys, time, openai
client = openai.OpenAI(max_retries=0)
until, want, before = time.time() + float(sys.argv[1]), int(sys.argv[2]), None
while True:
    try:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                       messages=[{"role": "user", "content": "ping"}])
        status, code = 200, ""
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        status, code = error.status_code, str(body.get("code", ""))
    if before is None:
        print("started", flush=True)
    if status == want or time.time() > until:
        print(json.dumps({"status": status, "code": code, "at": time.time(), "before": before}))
        break
    before = time.time()
    time.sleep(0.1)
"""


# ``count`` calls of the SDK through the sidecar, one after the other, each with ``prompt``: each
# answer's status and settled cost (x-a11i-cost-usd), as JSON. An error answer raises.
CALLS = """
import json, sys, openai
client = openai.OpenAI(max_retries=0)
answers = []
for _ in range(int(sys.argv[1])):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": sys.argv[2]}])
    answers.append({"status": raw.status_code, "cost": raw.headers.get("x-a11i-cost-usd")})
print(json.dumps(answers))
"""

# GET (or POST a JSON body to) a URL from inside a pod: the status and the body, as JSON.
FETCH = """
import json, sys, urllib.error, urllib.request
url, token, body = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, data=body.encode() or None, method="POST" if body else "GET")
request.add_header("Content-Type", "application/json")
if token:
    request.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(request, timeout=20) as answer:
        status, text = answer.status, answer.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(json.dumps({"status": status, "body": text}))
"""
SIDECAR_BUDGET = "http://127.0.0.1:11000/a11i/budget"

T = TypeVar("T")


class Answer(TypedDict):
    status: int
    code: str
    at: float
    """When it came (the pods share the host's clock)."""
    before: float | None
    """When the answer before it came."""


class JourneyError(AssertionError):
    """What was awaited did not happen; the message carries the pods' events and logs."""


class Journey:
    """The installed cluster as the tests drive it: kubectl, the agent's pod, its sidecar."""

    def __init__(self, plane: ControlPlane, node: Node) -> None:
        self.plane, self.node = plane, node
        self.agent_pod = ""

    def get(self, *args: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.plane.kubectl("get", *args, "-o", "json", check=True).stdout
        )
        return found

    def wait_ready(self, namespace: str, selector: str, timeout: float) -> dict[str, Any]:
        """The first pod matching ``selector`` once every container (and native sidecar) of
        it is ready; fails with the pod's events and the kubelet's log tail."""
        deadline = time.monotonic() + timeout
        pod: dict[str, Any] = {}
        while time.monotonic() < deadline:
            items = self.get("pods", "-n", namespace, "-l", selector)["items"]
            live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
            pod = live[0] if live else {}
            status = pod.get("status", {})
            statuses = status.get("containerStatuses", []) + status.get("initContainerStatuses", [])
            if statuses and all(s.get("ready") for s in statuses):
                return pod
            time.sleep(1)
        name = str(pod.get("metadata", {}).get("name", "")) if pod else ""
        raise JourneyError(
            f"no ready pod {selector} in {namespace} after {timeout:g} s\n"
            + (self.node.describe_failure(namespace, name) if name else self.node.logs())
        )

    def standin_requests(self) -> list[dict[str, Any]]:
        fetched = self.plane.kubectl(
            "exec", "-n", STANDIN_NAMESPACE, "deploy/standin", "--", "/opt/a11i/bin/python",
            "-c", "import urllib.request as u; print(u.urlopen("
            "'http://127.0.0.1:8000/_standin/requests').read().decode())",
            check=True, timeout=30,
        )  # fmt: skip
        requests: list[dict[str, Any]] = json.loads(fetched.stdout)
        return requests

    def probe(
        self, want: int, within: float, meanwhile: Callable[[], None] = lambda: None
    ) -> Answer:
        """Calls from the agent container (PROBE) until one answers ``want`` or ``within``
        seconds pass; ``meanwhile`` runs once the calls have started."""
        command = [
            str(self.plane.bin_dir / "kubectl"), f"--kubeconfig={self.plane.kubeconfig_path}",
            "exec", "-n", AGENTS, self.agent_pod, "-c", "agent", "--", "python", "-c", PROBE,
            str(within), str(want),
        ]  # fmt: skip
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        ) as process:
            assert process.stdout is not None
            # The probe's own deadline bounds these reads.
            first = process.stdout.readline()
            assert first.strip() == "started", first
            meanwhile()
            rest = process.stdout.read()
            assert process.wait(timeout=30) == 0, rest
        answer: Answer = json.loads(rest.strip().splitlines()[-1])
        return answer

    def budget_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get("agentbudget", "default", "-n", AGENTS).get("status", {})
        return status

    def wait_for(
        self,
        what: str,
        check: Callable[[], T | None],
        timeout: float,
        explain: Callable[[], str] = lambda: "",
    ) -> T:
        """Poll ``check`` every half second until it returns something else than None; fails
        after ``timeout`` seconds saying what was awaited and ``explain()`` (or the kubelet's
        log tail)."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        why = explain() or self.node.logs("kubelet", 20)
        raise JourneyError(f"waited {timeout:g} s for {what}\n{why}")

    def events(self, namespace: str) -> str:
        """The namespace's recent events, for failure messages."""
        return self.plane.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp"
        ).stdout[-3000:]

    def exec_python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run ``code`` with the agent container's Python (the openai SDK is there); its output."""
        ran = self.plane.kubectl(
            "exec", "-n", AGENTS, self.agent_pod, "-c", "agent", "--", "python", "-c", code,
            *args, timeout=timeout,
        )  # fmt: skip
        assert ran.returncode == 0, f"{ran.stderr}\n{self.describe_agent()}"
        return ran.stdout

    def fetch(self, url: str, token: str = "", body: str = "") -> tuple[int, str]:
        """An HTTP request from the agent's pod: the answer's status and text."""
        answer = json.loads(self.exec_python(FETCH, url, token, body))
        return int(answer["status"]), str(answer["body"])

    def sidecar_budget(self) -> dict[str, Any]:
        """The agent sidecar's ``/a11i/budget``: the namespace's wallet, read from Redis."""
        status, text = self.fetch(SIDECAR_BUDGET)
        assert status == 200, text
        budget: dict[str, Any] = json.loads(text)
        return budget

    def calls(self, count: int, prompt: str = "ping") -> Decimal:
        """``count`` calls from the agent container; each must answer 200. Their settled cost."""
        answers = json.loads(self.exec_python(CALLS, str(count), prompt))
        assert [a["status"] for a in answers] == [200] * count, answers
        return sum((Decimal(a["cost"]) for a in answers), Decimal(0))

    def suspend(self, on: bool) -> None:
        body = json.dumps({"spec": {"suspend": on}})
        self.plane.kubectl(
            "patch", "agentbudget", "default", "-n", AGENTS, "--type=merge", "-p", body,
            check=True,
        )  # fmt: skip

    def quiesce(self) -> Decimal:
        """Suspend the namespace (the agent's own loop keeps trying and is refused) and wait
        until no call holds a reservation: what is settled then stays so. That spend."""
        self.suspend(True)

        def settled() -> Decimal | None:
            budget = self.sidecar_budget()
            if budget["state"] != "Suspended" or Decimal(budget["reserved_usd"]) != 0:
                return None
            return Decimal(budget["spent_usd"])

        return self.wait_for("the suspended wallet to hold no reservation", settled, 60)

    def resume_and_add(self, settled: Decimal, count: int = 3) -> None:
        """Resume, make ``count`` calls, and check that the wallet and the AgentBudget's status
        hold at least ``settled`` plus their cost (the agent's own loop adds more)."""
        self.suspend(False)
        self.wait_for(
            "the wallet to be resumed",
            lambda: True if self.sidecar_budget()["state"] != "Suspended" else None,
            30,
        )
        added = self.calls(count)
        assert added > 0
        spent = Decimal(self.sidecar_budget()["spent_usd"])
        assert spent >= settled + added, (spent, settled, added)
        self.wait_for(
            f"the AgentBudget's status to show at least {settled + added} spent",
            lambda: (
                True
                if Decimal(self.budget_status().get("spent") or "0") >= settled + added
                else None
            ),
            60,
            self.operator_log,
        )

    def operator_log(self) -> str:
        status = self.budget_status()
        log = self.plane.kubectl("logs", "-n", SYSTEM, "deploy/a11i-operator", "--tail=30")
        return f"status: {status}\noperator log ends with:\n{log.stdout}{log.stderr}"

    def rollout(self, namespace: str, workload: str, timeout: int = 180) -> None:
        """Wait until ``workload`` (deploy/…, sts/…) has every replica updated and ready."""
        done = self.plane.kubectl(
            "rollout", "status", workload, "-n", namespace, f"--timeout={timeout}s",
            timeout=timeout + 15,
        )  # fmt: skip
        pods = self.plane.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
        assert done.returncode == 0, (
            f"{workload} not rolled out: {done.stderr}\n{pods}\n{self.events(namespace)}"
            f"\n{self.node.logs('kubelet', 20)}"
        )

    def restart_agent(self) -> None:
        """A new agent pod (``rollout restart``), ready. The old one is left terminating: the
        example's shell loop ignores SIGTERM, so it takes the grace period (30 s) to go."""
        old = self.agent_pod
        self.plane.kubectl("rollout", "restart", "deploy/sre-agent", "-n", AGENTS, check=True)
        self.rollout(AGENTS, "deploy/sre-agent")

        def new_pod() -> str | None:
            name = str(self.wait_ready(AGENTS, AGENT_SELECTOR, 120)["metadata"]["name"])
            return name if name != old else None

        self.agent_pod = self.wait_for("a new agent pod", new_pod, 60)

    def sidecar_log(self) -> str:
        log = self.plane.kubectl("logs", "-n", AGENTS, self.agent_pod, "-c", "a11i-proxy")
        return f"a11i-proxy log ends with:\n{log.stdout[-3000:]}{log.stderr}"

    def describe_agent(self) -> str:
        return self.node.describe_failure(AGENTS, self.agent_pod) if self.agent_pod else ""


def agent_deployment() -> str:
    """examples/agent-deployment.yaml on the agent image, without the ``pip install`` line,
    and a short pause between two runs of the loop (the example's is a minute)."""
    deployment = yaml.safe_load((EXAMPLES / "agent-deployment.yaml").read_text("utf-8"))
    (agent,) = deployment["spec"]["template"]["spec"]["containers"]
    agent["image"], agent["imagePullPolicy"] = agent_image(), "Never"
    (script,) = agent["args"]
    lines = [line for line in script.splitlines() if "pip install" not in line]
    assert len(lines) == len(script.splitlines()) - 1, script
    agent["args"] = ["\n".join(lines).replace("sleep 60", "sleep 5")]
    return json.dumps(deployment)


def install(journey: Journey) -> None:
    """The stand-in provider pod, the chart as the README installs it (its sidecars sent to the
    stand-in, the dashboard on), and examples/ as written but for the agent's image; returns
    once the agent's pod is ready."""
    plane = journey.plane
    plane.create_namespace(STANDIN_NAMESPACE)
    support = ROOT / "tests" / "support"
    plane.kubectl(
        "create", "configmap", "standin-source", "-n", STANDIN_NAMESPACE,
        f"--from-file=standin.py={support / 'standin.py'}",
        f"--from-file=paths.py={support / 'paths.py'}", "--from-literal=init=",
        check=True,
    )  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=STANDIN, check=True)
    journey.wait_ready(STANDIN_NAMESPACE, "app=standin", 120)
    installed = plane.helm(
        "install", RELEASE, str(ROOT / "charts" / "a11i"), "--namespace", SYSTEM,
        "--create-namespace", "--wait", "--timeout=240s",
        "--set", f"sidecar.upstreams.openai={STANDIN_URL}",
        "--set", f"sidecar.upstreams.anthropic={STANDIN_URL}",
        "--set", "operator.statusInterval=2",
        "--set", "dashboard.enabled=true",
        timeout=260,
    )  # fmt: skip
    pods = plane.kubectl("get", "pods", "-A", "-o", "wide").stdout
    assert installed.returncode == 0, f"{installed.stderr}\n{pods}\n{journey.node.logs()}"
    plane.kubectl("apply", "-f", str(EXAMPLES / "namespace.yaml"), check=True)
    for name in ("provider-keys-secret", "agentbudget", "agent-loop-configmap"):
        plane.kubectl("apply", "-n", AGENTS, "-f", str(EXAMPLES / f"{name}.yaml"), check=True)
    plane.kubectl("apply", "-n", AGENTS, "-f", "-", input=agent_deployment(), check=True)
    journey.agent_pod = journey.wait_ready(AGENTS, AGENT_SELECTOR, 180)["metadata"]["name"]


@contextlib.contextmanager
def running_journey() -> Iterator[Journey]:
    """A cluster with the project's images and everything ``install`` sets up; torn down on
    every exit. ``ImageError`` or ``ControlPlaneError`` when it cannot start."""
    archives = project_archives()
    plane, node = start_cluster()
    try:
        for archive in archives:
            node.import_image(archive)
        journey = Journey(plane, node)
        install(journey)
        yield journey
    finally:
        node.stop()
        plane.stop()
