"""Admission latency of the injection webhook: AdmissionReviews at a paced rate over HTTPS.

Run with ``python -m bench.webhook [--rate 100 --seconds 20]``. Starts the test control plane
(``tests.support.cluster``; the binaries must be built: ``make cluster-bins``) because kopf
discovers the API's resources before it serves admissions, then ``a11i operator --role webhook``
as a process with a certificate from ``a11i.operator.certs`` on loopback, and a baseline: an empty
aiohttp handler (answers ``allowed`` without reading the review) over the same certificate in a
process of its own. Sends, at a fixed pace (open loop, one new review every 1/rate s whatever
the answers do), AdmissionReviews of a pod asking for injection, of a pod not asking, and to the
baseline, over keep-alive connections; prints p50/p99 per path and the ratio to the baseline.
Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from a11i.operator import certs
from tests.support.cluster import ROOT, ControlPlane, free_port

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="reviews per second (100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per path (20)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="a11i-bench-webhook-") as tmp, ControlPlane() as plane:
        plane.create_namespace("agents")  # as in a cluster: the pods' namespace exists
        asyncio.run(measure(args.rate, args.seconds, Path(tmp), plane))
    return 0


if __name__ == "__main__":
    sys.exit(main())
