"""Pods on the test node: how long an annotated pod takes from ``kubectl apply`` to its first
metered call, and what the injection webhook adds to a pod's admission when it runs as the
chart's pods behind its Service.

Run as root with ``python -m bench.pods [--pods 5 --reviews 300]``; needs the node's packages
(``make node-system``), the cluster binaries and the images (``make images``). It sets up what
the end-to-end journey does (tests/support/journey.py: control plane, node, images, the stand-in
provider pod, ``helm install``, the example agent), then:

- first call: ``--pods`` times, one after the other, applies a pod annotated
  ``a11i.io/inject: "true"`` on the agent image whose container calls the SDK through its sidecar
  until the first answer (20 ms between refused connections) and prints when; the time from just
  before ``kubectl apply`` to that answer, and to the container's first line (pods share the
  host's clock);
- admission: ``--reviews`` server-side dry-run creates per path, the webhook running as the
  chart's pods behind its Service (``bench.webhook --pods`` alone; its docstring says how).

Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.webhook import measure_behind_service
from tests.support.images import agent_image
from tests.support.journey import AGENTS, Journey, running_journey

# The pod's container: the SDK's first call through the sidecar, retried while the sidecar does
# not listen yet; prints when the container started and when the first answer came.
FIRST_CALL = """
import time
started = time.time()
import json, openai
client = openai.OpenAI(max_retries=0)
tries = 0
while True:
    tries += 1
    try:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                       messages=[{"role": "user", "content": "ping"}])
        break
    except openai.APIConnectionError:
        time.sleep(0.02)
print(json.dumps({"started": started, "answered": time.time(), "tries": tries}))
"""


def pod(name: str, namespace: str, *, inject: bool, command: Sequence[str]) -> dict[str, Any]:
    """A restricted-compliant pod on the agent image, asking for injection or not."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"a11i.io/inject": "true" if inject else "false"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "agent",
                    "image": agent_image(),
                    "imagePullPolicy": "Never",
                    "command": list(command),
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def first_calls(journey: Journey, count: int) -> list[dict[str, float]]:
    """Apply ``count`` annotated pods one after the other; for each, seconds from just before
    ``kubectl apply`` to the container's start and to its first answer."""
    results: list[dict[str, float]] = []
    for n in range(count):
        name = f"bench-first-{n}"
        manifest = json.dumps(pod(name, AGENTS, inject=True, command=["python", "-c", FIRST_CALL]))
        applied = time.time()
        journey.plane.kubectl("apply", "-f", "-", input=manifest, check=True)
        journey.node.wait_pod_phase(AGENTS, name, timeout=180)
        log = journey.plane.kubectl("logs", "-n", AGENTS, name, "-c", "agent", check=True)
        answer = json.loads(log.stdout.strip().splitlines()[-1])
        results.append(
            {
                "to_start": answer["started"] - applied,
                "to_answer": answer["answered"] - applied,
                "tries": answer["tries"],
            }
        )
        journey.plane.kubectl("delete", "pod", name, "-n", AGENTS, "--wait=false")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pods", description=__doc__)
    parser.add_argument("--pods", type=int, default=5, help="annotated pods applied (5)")
    parser.add_argument("--reviews", type=int, default=300, help="dry-run creates per path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="a11i-bench-pods-") as tmp, running_journey() as j:
        firsts = first_calls(j, args.pods)
        print(f"\nFrom `kubectl apply` of an annotated pod to its first metered call ({args.pods})")
        print("\n| pod | container started | first answer | tries |\n|---|---|---|---|")
        for n, first in enumerate(firsts):
            print(
                f"| {n} | {first['to_start']:.2f} s | {first['to_answer']:.2f} s "
                f"| {first['tries']:g} |"
            )
        answers = [first["to_answer"] for first in firsts]
        print(f"\nmedian {statistics.median(answers):.2f} s, max {max(answers):.2f} s")
        measure_behind_service(j, args.reviews, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
