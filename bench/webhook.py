"""Admission latency of the injection webhook: AdmissionReviews at a paced rate over HTTPS.

Run with ``python -m bench.webhook [--rate 100 --seconds 20]``. Starts the test control plane
(``tests.support.cluster``; the binaries must be built: ``make cluster-bins``) because kopf
discovers the API's resources before it serves admissions, then ``a11i operator --role webhook``
as a process with a certificate from ``a11i.operator.certs`` on loopback, and a baseline: an empty
aiohttp handler (answers ``allowed`` without reading the review) over the same certificate in a
process of its own. Sends, at a fixed pace (open loop, one new review every 1/rate s whatever
the answers do), AdmissionReviews of a pod asking for injection, of a pod not asking, and to the
baseline, over keep-alive connections; prints p50/p99 per path and the ratio to the baseline.
With ``--pods`` (as root; the node, the cluster binaries and the images: ``make images``) it
measures the webhook where it runs in a cluster instead: the chart's two webhook pods behind their
Service on the test node (tests/support/journey.py installs the chart), called by the apiserver.
Server-side dry-run creates (admitted, webhooks called, nothing stored), one at a time over one
keep-alive HTTPS connection to the apiserver, of a pod asking for injection and of the same pod
in a namespace the webhook never sees (the apiserver alone): p50/p99 of each, their difference,
and the apiserver's own histogram of its calls to the webhook
(``apiserver_admission_webhook_admission_duration_seconds``, coarse buckets).

Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from a11i.operator import certs
from tests.support.cluster import ROOT, ControlPlane, free_port
from tests.support.images import BUSYBOX_IMAGE
from tests.support.journey import AGENTS, Journey, running_journey

BASELINE = """
import ssl, sys
from aiohttp import web
context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[2] + "/tls.crt", sys.argv[2] + "/tls.key")
async def allow(request):
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": "", "allowed": True}})
app = web.Application()
app.add_routes([web.post("/{id:.*}", allow)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=context,
            access_log=None, print=None)
"""


PLAIN_NAMESPACE = "bench-plain"
WEBHOOK_HISTOGRAM = "apiserver_admission_webhook_admission_duration_seconds"


def review(annotations: dict[str, str]) -> dict[str, object]:
    """An AdmissionReview of a Deployment's pod (no name yet), as the API server sends it."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "agent-7d9c5b-",
                    "labels": {"app": "agent", "pod-template-hash": "7d9c5b"},
                    "annotations": annotations,
                },
                "spec": {
                    "containers": [
                        {
                            "name": "agent",
                            "image": "agent:1",
                            "env": [{"name": "LOG_LEVEL", "value": "info"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                        }
                    ],
                    "serviceAccountName": "default",
                },
            },
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def paced(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Send ``rate`` reviews per second for ``seconds``; latencies (s) and how many patched."""
    latencies: list[float] = []
    patched = 0
    data = json.dumps(body).encode()

    async def one() -> None:
        nonlocal patched
        started = time.perf_counter()
        async with http.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
            answer = await r.json()
        latencies.append(time.perf_counter() - started)
        if r.status != 200 or not answer["response"]["allowed"]:
            raise SystemExit(f"{url}: unexpected answer {r.status}: {answer}")
        patched += "patch" in answer["response"]

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, patched


async def wait_listening(url: str, context: ssl.SSLContext) -> None:
    timeout = 60.0
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        while True:
            try:
                async with http.post(url, json=review({})) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answered at {url} within {timeout}s")
            await asyncio.sleep(0.3)


async def measure(rate: float, seconds: float, directory: Path, plane: ControlPlane) -> None:
    certificate = certs.self_signed(["127.0.0.1"])
    certs.write(certificate, directory / "tls")
    context = ssl.create_default_context(cadata=certificate.ca_pem.decode())
    webhook_port, baseline_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig_path),
        "A11I_SIDECAR_IMAGE": "a11i:bench",
        "A11I_WEBHOOK_PORT": str(webhook_port),
        "A11I_WEBHOOK_CERT_DIR": str(directory / "tls"),
    }
    env.pop("A11I_REDIS_URL", None)
    log = (directory / "webhook.log").open("wb")
    webhook = subprocess.Popen(  # noqa: ASYNC220  (started once, before anything is timed)
        [sys.executable, "-m", "a11i.operator", "--role", "webhook"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    baseline = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", BASELINE, str(baseline_port), str(directory / "tls")], cwd=ROOT
    )
    try:
        webhook_url = f"https://127.0.0.1:{webhook_port}/a11i-inject"
        baseline_url = f"https://127.0.0.1:{baseline_port}/a11i-inject"
        await wait_listening(webhook_url, context)
        await wait_listening(baseline_url, context)
        paths = {
            "baseline: empty aiohttp handler, same TLS": (baseline_url, review({})),
            "webhook: pod not asking (admitted unchanged)": (webhook_url, review({})),
            "webhook: pod asking (`a11i.io/inject: true`)": (
                webhook_url,
                review({"a11i.io/inject": "true"}),
            ),
        }
        connector = aiohttp.TCPConnector(ssl=context, limit=100)
        async with aiohttp.ClientSession(connector=connector) as http:
            for url, body in paths.values():  # warm-up: connections, first imports
                await paced(http, url, body, rate, 2.0)
            results = {
                name: await paced(http, url, body, rate, seconds)
                for name, (url, body) in paths.items()
            }
    finally:
        for process in (webhook, baseline):
            process.terminate()
            process.wait(20)
        log.close()
    base_p50 = percentile(results[next(iter(results))][0], 50)
    base_p99 = percentile(results[next(iter(results))][0], 99)
    print(f"\n{rate:g} reviews/s for {seconds:g} s per path, HTTPS on loopback, keep-alive\n")
    print("| path | reviews | patched | p50 | p99 | p50 / baseline | p99 / baseline |")
    print("|---|---|---|---|---|---|---|")
    for name, (latencies, patched) in results.items():
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        print(
            f"| {name} | {len(latencies)} | {patched} | {p50 * 1000:.2f} ms | "
            f"{p99 * 1000:.2f} ms | {p50 / base_p50:.1f}x | {p99 / base_p99:.1f}x |"
        )
    print("\nDESIGN §5 target: p99 under 10 ms per admission review.")


class ApiServer:
    """One keep-alive HTTPS connection to the apiserver as its admin (the kubeconfig's
    inline certificates, written to a temporary folder for ``ssl``)."""

    def __init__(self, kubeconfig: Path, directory: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        files = {}
        for key in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
            source = cluster if key.startswith("certificate-authority") else user
            path = directory / key
            path.write_bytes(base64.b64decode(source[key]))
            files[key] = path
        self.context = ssl.create_default_context(cafile=files["certificate-authority-data"])
        self.context.load_cert_chain(files["client-certificate-data"], files["client-key-data"])
        server = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = server.hostname or "127.0.0.1", server.port or 443
        self.connection = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=30
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.connection.request(method, path, body=data, headers=headers)
        answer = self.connection.getresponse()
        text = answer.read()
        if answer.status >= 300:
            raise SystemExit(f"{method} {path}: {answer.status} {text[:500]!r}")
        return text

    def close(self) -> None:
        self.connection.close()


def admission_pod(name: str, namespace: str, *, inject: bool) -> dict[str, Any]:
    """A Deployment-like pod asking for injection or not (never run: dry runs only)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"a11i.io/inject": "true" if inject else "false"},
        },
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                }
            ]
        },
    }


def dry_runs(
    api: ApiServer, namespace: str, body: dict[str, Any], injected: bool, count: int
) -> list[float]:
    """Seconds per server-side dry-run create of ``body`` in ``namespace``, one at a time;
    each answer must be injected (or not) as said."""
    path = f"/api/v1/namespaces/{namespace}/pods?dryRun=All"
    latencies = []
    for n in range(count):
        body["metadata"] = {**body["metadata"], "name": f"bench-admit-{n}", "namespace": namespace}
        started = time.perf_counter()
        created = json.loads(api.request("POST", path, body))
        latencies.append(time.perf_counter() - started)
        if created["metadata"].get("annotations", {}).get("a11i.io/inject") == "false":
            continue
        if ("a11i.io/status" in created["metadata"].get("annotations", {})) != injected:
            raise SystemExit(f"{namespace}: not injected={injected} as expected: {created}")
    return latencies


def as_admitted(created: dict[str, Any]) -> dict[str, Any]:
    """A pod the webhook patched, as a new pod to create: its spec and metadata, with the
    annotation that keeps the webhook away."""
    metadata = created["metadata"]
    annotations = {**metadata.get("annotations", {}), "a11i.io/inject": "false"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": metadata.get("labels", {}), "annotations": annotations},
        "spec": created["spec"],
    }


def webhook_histogram(api: ApiServer) -> dict[float, float]:
    """Cumulative counts per bucket (upper bound in seconds) of the apiserver's calls to a11i's
    webhooks (``pod.inject.a11i.io``, ``namespace.inject.a11i.io``)."""
    buckets: dict[float, float] = {}
    for line in api.request("GET", "/metrics").decode().splitlines():
        if not line.startswith(f"{WEBHOOK_HISTOGRAM}_bucket{{") or "inject.a11i.io" not in line:
            continue
        labels, value = line.rsplit(" ", 1)
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        upper = float("inf") if bound == "+Inf" else float(bound)
        buckets[upper] = buckets.get(upper, 0.0) + float(value)
    return buckets


def webhook_calls(api: ApiServer) -> dict[str, float]:
    """How many calls the apiserver made to each of a11i's webhooks, by its labels (name,
    type: admit, operation, rejected)."""
    calls: dict[str, float] = {}
    for line in api.request("GET", "/metrics").decode().splitlines():
        if line.startswith(f"{WEBHOOK_HISTOGRAM}_count{{") and "inject.a11i.io" in line:
            labels, value = line.rsplit(" ", 1)
            calls[labels.removeprefix(f"{WEBHOOK_HISTOGRAM}_count")] = float(value)
    return calls


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The upper bound of the bucket holding quantile ``q`` of the calls between two reads."""
    deltas = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = deltas[-1][1] if deltas else 0.0
    for bound, cumulative in deltas:
        if total and cumulative >= q * total:
            return f"≤ {bound * 1000:g} ms" if bound != float("inf") else "> the largest bucket"
    return "no calls recorded"


def measure_behind_service(journey: Journey, reviews: int, directory: Path) -> None:
    """The webhook as the chart's pods behind its Service, called by the apiserver: server-side
    dry-run creates of an annotated pod in the agents' namespace (patched by the webhook), of
    the pod the webhook returned and of the plain pod in a namespace it never sees (the
    apiserver's own cost of each); prints p50/p99 of each and the apiserver's histogram."""
    journey.plane.create_namespace(PLAIN_NAMESPACE)
    api = ApiServer(journey.plane.kubeconfig_path, directory)
    asking = admission_pod("bench-admit", AGENTS, inject=True)
    path = f"/api/v1/namespaces/{AGENTS}/pods?dryRun=All"
    patched = as_admitted(json.loads(api.request("POST", path, asking)))
    plain = admission_pod("bench-admit", PLAIN_NAMESPACE, inject=False)
    paths = {
        "annotated pod: the webhook pods behind their Service patch it": (AGENTS, asking, True),
        "the pod as the webhook patched it, where no webhook is called": (
            PLAIN_NAMESPACE,
            patched,
            True,
        ),
        "the plain pod, where no webhook is called": (PLAIN_NAMESPACE, plain, False),
    }
    results: dict[str, list[float]] = {}
    try:
        for namespace, body, injected in paths.values():
            dry_runs(api, namespace, body, injected, 20)  # warm-up: connections, caches
        before, calls_before = webhook_histogram(api), webhook_calls(api)
        for name, (namespace, body, injected) in paths.items():
            results[name] = dry_runs(api, namespace, body, injected, reviews)
        after, calls_after = webhook_histogram(api), webhook_calls(api)
    finally:
        api.close()
    print(f"\nServer-side dry-run pod creates, {reviews} per path, one at a time\n")
    print("| path | p50 | p99 |\n|---|---|---|")
    for name, values in results.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"| {name} | {p50 * 1000:.2f} ms | {p99 * 1000:.2f} ms |")
    webhook, same = list(results.values())[:2]
    added50 = percentile(webhook, 50) - percentile(same, 50)
    added99 = percentile(webhook, 99) - percentile(same, 99)
    print(
        f"\nthe webhook adds {added50 * 1000:.2f} ms at p50, {added99 * 1000:.2f} ms at p99 "
        "(first path minus second: the same pod stored, with and without the call)"
    )
    inf = float("inf")
    calls = after.get(inf, 0.0) - before.get(inf, 0.0)
    print(
        f"apiserver's histogram of its calls to a11i's webhooks: {calls / reviews:.2f} calls per "
        f"annotated pod, p50 {bucket_quantile(before, after, 0.5)}, "
        f"p99 {bucket_quantile(before, after, 0.99)}"
    )
    for labels, count in sorted(calls_after.items()):
        print(f"  {count - calls_before.get(labels, 0.0):g} calls {labels}")
    print("DESIGN §5 target: p99 under 10 ms per admission review.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="reviews per second (100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per path (20)")
    parser.add_argument(
        "--pods",
        action="store_true",
        help="the webhook as the chart's pods behind its Service on the test node (as root)",
    )
    parser.add_argument("--reviews", type=int, default=300, help="with --pods: creates per path")
    args = parser.parse_args(argv)
    if args.pods:
        with (
            tempfile.TemporaryDirectory(prefix="a11i-bench-webhook-") as tmp,
            running_journey() as journey,
        ):
            measure_behind_service(journey, args.reviews, Path(tmp))
        return 0
    with tempfile.TemporaryDirectory(prefix="a11i-bench-webhook-") as tmp, ControlPlane() as plane:
        plane.create_namespace("agents")  # as in a cluster: the pods' namespace exists
        asyncio.run(measure(args.rate, args.seconds, Path(tmp), plane))
    return 0


if __name__ == "__main__":
    sys.exit(main())
