"""The Helm chart, rendered by the real helm: lint, every ci/ values file, the schema's refusals.

No cluster: ``helm lint --strict`` and ``helm template`` only (the install is
tests/e2e/test_helm_install.py). Each rendered values file is parsed and its key objects checked:
the two Deployments, the webhook's PodDisruptionBudget and Service, the
MutatingWebhookConfiguration, RBAC without wildcards, security contexts, the TLS material.
helm's cache, config and data live in a temporary directory, never in ``~``.
"""

from __future__ import annotations

import base64
import filecmp
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from a11i.operator.settings import OperatorSettings, Role
from tests.support.cluster import ROOT, binaries_dir

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "a11i"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
NAMESPACE = "a11i-system"
RELEASE = "r"

POD_OPT_IN = "object.metadata.?annotations['a11i.io/inject'].orValue('') == 'true'"
NAMESPACE_OPT_OUT = (
    "!(object.metadata.?annotations['a11i.io/inject'].orValue('') in ['true', 'false'])"
)
NOT_HOST_NETWORK = "!object.spec.?hostNetwork.orValue(false)"
READ_ONLY = {"get", "list", "watch"}

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k) for k in ("CACHE", "CONFIG", "DATA")}}
    env.pop("KUBECONFIG", None)
    return env


def helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries_dir() / "helm"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def render(env: dict[str, str], *args: str) -> list[Manifest]:
    rendered = helm(env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def refused(env: dict[str, str], *args: str) -> str:
    rendered = helm(env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert rendered.returncode != 0, f"rendered although {args} is wrong"
    return rendered.stderr


def only(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def env_of(container: Manifest) -> dict[str, str]:
    """Values, and ``secret:<name>/<key>`` for a value from a Secret."""
    out = {}
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        out[entry["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else entry.get("value", "")
    return out


def values_of(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    assert isinstance(loaded, dict)
    return loaded


# -- the CRDs and lint


def test_chart_crds_are_the_projects_crds() -> None:
    """charts/a11i/crds/ holds copies (Helm installs that folder) of crds/, the single source."""
    source = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == source
    for name in source:
        assert filecmp.cmp(ROOT / "crds" / name, CHART / "crds" / name, shallow=False), (
            f"charts/a11i/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/a11i/crds/"
        )


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_lint_strict(helm_env: dict[str, str], values: Path) -> None:
    linted = helm(helm_env, "lint", "--strict", str(CHART), "--values", str(values))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "[WARNING]" not in linted.stdout, linted.stdout
    assert "[ERROR]" not in linted.stdout, linted.stdout


def test_ci_covers_every_variant() -> None:
    assert {p.stem for p in CI_VALUES} >= {
        "default",
        "redis-bundled",
        "redis-no-auth",
        "external-redis",
        "external-redis-secret",
        "external-redis-cluster",
        "external-redis-sentinel",
        "external-redis-sentinel-auth",
        "cert-manager",
        "webhook-url",
        "fail-policy",
        "no-monitoring",
        "dashboard",
        "key-custody",
    }


# -- what every values file renders


def check_common(manifests: list[Manifest], values: dict[str, Any]) -> None:
    webhook_values = values.get("webhook", {})
    redis_values = values.get("redis", {})
    redis_url = redis_values.get("url") or f"redis://{RELEASE}-redis.{NAMESPACE}.svc:6379/0"
    # A Redis with a password: the URL only ever comes from a Secret (never in a pod spec).
    bundled_auth = redis_values.get("enabled", True) and redis_values.get("auth", {}).get(
        "enabled", True
    )
    url_secret = redis_values.get("existingSecret") or (f"{RELEASE}-redis" if bundled_auth else "")
    operator_redis = (
        {
            "A11I_REDIS_URL": f"secret:{url_secret}/url",
            "A11I_OPERATOR_SIDECAR_REDIS_SECRET": "a11i-sidecar-redis",
        }
        if url_secret
        else {"A11I_REDIS_URL": redis_url}
    )
    mode = redis_values.get("mode", "standalone")
    mode_env = {} if mode == "standalone" else {"A11I_REDIS_MODE": mode}
    if mode == "sentinel":
        mode_env["A11I_REDIS_MASTER"] = redis_values.get("sentinel", {}).get("master", "mymaster")
    sidecar_redis = (
        {"A11I_SIDECAR_REDIS_SECRET": "a11i-sidecar-redis"}
        if url_secret
        else {"A11I_SIDECAR_REDIS_URL": redis_url}
    ) | mode_env

    operator = only(manifests, "Deployment", f"{RELEASE}-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    (reconciler,) = operator["spec"]["template"]["spec"]["containers"]
    assert reconciler["image"] == "ghcr.io/a11i/operator:0.1.0"
    assert reconciler["args"][:3] == ["operator", "--role", "reconciler"]
    assert {
        "A11I_OPERATOR_NAMESPACE": NAMESPACE,
        **operator_redis,
        "A11I_OPERATOR_PEERING": "a11i",
    }.items() <= env_of(reconciler).items()
    if not url_secret:
        assert "A11I_OPERATOR_SIDECAR_REDIS_SECRET" not in env_of(reconciler)
    # kopf's liveness endpoint, served where the probe looks for it.
    assert "--liveness=http://0.0.0.0:8080/healthz" in reconciler["args"]
    assert reconciler["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert reconciler["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-operator"

    upstreams = {
        "openai": "https://api.openai.com",
        "anthropic": "https://api.anthropic.com",
        **values.get("sidecar", {}).get("upstreams", {}),
    }
    upstreams_env = {
        f"A11I_SIDECAR_{provider.upper()}_BASE": url for provider, url in upstreams.items() if url
    }
    custody = values.get("injection", {}).get("keyCustody", {})
    custody_env = (
        {
            "A11I_KEY_CUSTODY_SECRET": custody["secretName"],
            "A11I_KEY_CUSTODY_OPENAI_KEY": custody.get("openaiKey", ""),
            "A11I_KEY_CUSTODY_ANTHROPIC_KEY": custody.get("anthropicKey", ""),
        }
        if custody.get("secretName")
        else {}
    )
    webhook = only(manifests, "Deployment", f"{RELEASE}-webhook")
    replicas = webhook_values.get("replicas", 2)
    assert webhook["spec"]["replicas"] == replicas
    pod = webhook["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == "ghcr.io/a11i/operator:0.1.0"
    assert server["args"][:3] == ["operator", "--role", "webhook"]
    # Found running the chart on the test node: kopf needs a user name (no passwd entry for
    # 65532), and service links would set A11I_WEBHOOK_PORT from the Service a11i-webhook.
    assert pod["enableServiceLinks"] is False
    assert operator["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert env_of(server) == {
        "USER": "a11i",
        "A11I_OPERATOR_NAMESPACE": NAMESPACE,
        "A11I_WEBHOOK_CERT_DIR": "/etc/a11i/webhook-tls",
        "A11I_SIDECAR_IMAGE": "ghcr.io/a11i/sidecar:0.1.0",
        **sidecar_redis,
        **upstreams_env,
        "A11I_NATIVE_SIDECARS": "auto",
        **custody_env,
    }
    assert server["ports"] == [{"name": "https", "containerPort": 9443, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["tcpSocket"] == {"port": "https"}
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/etc/a11i/webhook-tls"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret_name = webhook_values.get("tls", {}).get("secretName") or f"{RELEASE}-webhook-tls"
    assert volume["secret"]["secretName"] == secret_name
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pod_labels = webhook["spec"]["template"]["metadata"]["labels"]

    pdbs = [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    if replicas > 1:
        (pdb,) = pdbs
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    else:
        assert not pdbs

    service = only(manifests, "Service", f"{RELEASE}-webhook")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]

    check_webhook_configuration(manifests, webhook_values)
    check_rbac(manifests)
    check_security_contexts(manifests)

    peering = only(manifests, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "a11i"
    assert peering["apiVersion"] == "kopf.dev/v1"


def check_webhook_configuration(manifests: list[Manifest], webhook_values: dict[str, Any]) -> None:
    configuration = only(manifests, "MutatingWebhookConfiguration", f"{RELEASE}-injector")
    excluded = ["kube-system", NAMESPACE, *webhook_values.get("excludeNamespaces", [])]
    by_name = {w["name"]: w for w in configuration["webhooks"]}
    assert list(by_name) == ["pod.inject.a11i.io", "namespace.inject.a11i.io"]
    for name, hook in by_name.items():
        assert hook["admissionReviewVersions"] == ["v1"], name
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 5
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["failurePolicy"] == webhook_values.get("failurePolicy", "Ignore")
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        expressions = hook["namespaceSelector"]["matchExpressions"]
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": excluded,
        } in expressions
        conditions = {c["name"]: c["expression"] for c in hook["matchConditions"]}
        assert conditions["not-host-network"] == NOT_HOST_NETWORK
        client = hook["clientConfig"]
        if webhook_values.get("url"):
            assert client["url"] == webhook_values["url"]
            assert "service" not in client
        else:
            assert client["service"] == {
                "name": f"{RELEASE}-webhook",
                "namespace": NAMESPACE,
                "path": "/a11i-inject",
                "port": 443,
            }
    pod_hook, namespace_hook = by_name.values()
    assert {c["expression"] for c in pod_hook["matchConditions"]} == {POD_OPT_IN, NOT_HOST_NETWORK}
    assert len(pod_hook["namespaceSelector"]["matchExpressions"]) == 1
    assert {c["expression"] for c in namespace_hook["matchConditions"]} == {
        NAMESPACE_OPT_OUT,
        NOT_HOST_NETWORK,
    }
    assert {
        "key": "a11i.io/inject",
        "operator": "In",
        "values": ["enabled"],
    } in namespace_hook["namespaceSelector"]["matchExpressions"]


def check_rbac(manifests: list[Manifest]) -> None:
    roles = {m["metadata"]["name"]: m for m in manifests if m["kind"] in ("ClusterRole", "Role")}
    dashboard = {f"{RELEASE}-dashboard"} if f"{RELEASE}-dashboard" in roles else set()
    assert set(roles) == {f"{RELEASE}-operator", f"{RELEASE}-webhook", *dashboard}
    for name, role in roles.items():
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (name, rule)
            assert "resourceNames" not in rule or rule["resourceNames"]
    # The webhook reads; it writes Events and nothing else, and never touches Secrets or pods.
    for rule in roles[f"{RELEASE}-webhook"]["rules"]:
        assert "secrets" not in rule["resources"], rule
        assert "pods" not in rule["resources"], rule
        if set(rule["verbs"]) - READ_ONLY:
            assert rule["resources"] == ["events"], rule
            assert set(rule["verbs"]) <= {"create", "patch"}, rule
    # The dashboard: the two reviews, and AgentBudgets read and patched (spec.limit), nothing
    # else (no status, no create or delete, no Secrets).
    if dashboard:
        assert [
            (r["apiGroups"], r["resources"], r["verbs"])
            for r in roles[f"{RELEASE}-dashboard"]["rules"]
        ] == [
            (["authentication.k8s.io"], ["tokenreviews"], ["create"]),
            (["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
            (["a11i.io"], ["agentbudgets"], ["get", "list", "watch", "patch"]),
        ]
    bindings = [m for m in manifests if m["kind"] == "ClusterRoleBinding"]
    assert {(b["roleRef"]["name"], b["subjects"][0]["name"]) for b in bindings} == {
        (f"{RELEASE}-operator", f"{RELEASE}-operator"),
        (f"{RELEASE}-webhook", f"{RELEASE}-webhook"),
        *((name, name) for name in dashboard),
    }
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def check_security_contexts(manifests: list[Manifest]) -> None:
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["runAsNonRoot"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_template(helm_env: dict[str, str], values: Path) -> None:
    manifests = render(
        helm_env,
        "--values",
        str(values),
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
    )
    chosen = values_of(values)
    check_common(manifests, chosen)
    monitoring = chosen.get("monitoring", {})
    shows_dashboards = monitoring.get("grafanaDashboards", {}).get("enabled", True)
    shows_rule = monitoring.get("prometheusRule", {}).get("enabled", True)
    shows_monitor = monitoring.get("podMonitor", {}).get("enabled", True)
    assert ("ConfigMap" in kinds(manifests)) == shows_dashboards
    assert ("PrometheusRule" in kinds(manifests)) == shows_rule
    assert ("PodMonitor" in kinds(manifests)) == shows_monitor
    if shows_monitor:
        monitor = only(manifests, "PodMonitor", f"{RELEASE}-sidecars")
        # Only the metrics listener: never the proxy's port, which can spend.
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("a11i-metrics", "/a11i/metrics")
        assert monitor["spec"]["namespaceSelector"] == {"any": True}
    redis = chosen.get("redis", {})
    if redis.get("enabled", True):
        statefulset = only(manifests, "StatefulSet", f"{RELEASE}-redis")
        (container,) = statefulset["spec"]["template"]["spec"]["containers"]
        assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
        if redis.get("auth", {}).get("enabled", True):
            # The password: generated into the Secret, required by the server, used by the probe.
            assert container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
            secret = only(manifests, "Secret", f"{RELEASE}-redis")
            password = base64.b64decode(secret["data"]["password"]).decode()
            assert len(password) == 40
            assert password.isalnum()
            url = base64.b64decode(secret["data"]["url"]).decode()
            assert url == f"redis://:{password}@{RELEASE}-redis.{NAMESPACE}.svc:6379/0"
            assert env_of(container) == {
                "REDIS_PASSWORD": f"secret:{RELEASE}-redis/password",
                "REDISCLI_AUTH": f"secret:{RELEASE}-redis/password",
            }
            assert not any(password in str(m) for m in manifests if m["kind"] != "Secret")
        else:
            assert "--requirepass" not in container["args"]
        claims = statefulset["spec"].get("volumeClaimTemplates", [])
        persistent = redis.get("persistence", {}).get("enabled", False)
        assert bool(claims) == persistent
        only(manifests, "Service", f"{RELEASE}-redis")
    else:
        assert "StatefulSet" not in kinds(manifests)


# -- TLS


def pem(data: str) -> bytes:
    return base64.b64decode(data)


def test_generated_certificate_is_signed_by_the_ca_bundle_for_the_service(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    manifests = render(helm_env)
    secret = only(manifests, "Secret", f"{RELEASE}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    configuration = only(manifests, "MutatingWebhookConfiguration")
    for hook in configuration["webhooks"]:
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(pem(secret["data"][key]))
    for host in (
        f"{RELEASE}-webhook.{NAMESPACE}.svc",
        f"{RELEASE}-webhook.{NAMESPACE}.svc.cluster.local",
    ):
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"),
             "-purpose", "sslserver", "-verify_hostname", host, str(tmp_path / "tls.crt")],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    # The key belongs to the certificate.
    public = [
        subprocess.run(
            ["openssl", kind, "-in", str(tmp_path / name), *flags],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for kind, name, flags in (
            ("x509", "tls.crt", ["-pubkey", "-noout"]),
            ("pkey", "tls.key", ["-pubout"]),
        )
    ]
    assert public[0] == public[1]


def test_cert_manager_issues_and_injects(helm_env: dict[str, str]) -> None:
    manifests = render(helm_env, "--values", str(CHART / "ci" / "cert-manager.yaml"))
    # No TLS Secret of the chart's own (the only Secret is the bundled Redis's password).
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"] == [
        f"{RELEASE}-redis"
    ]
    certificate = only(manifests, "Certificate", f"{RELEASE}-webhook")
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    issuer = only(manifests, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    configuration = only(manifests, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{RELEASE}-webhook"
    }
    for hook in configuration["webhooks"]:
        assert "caBundle" not in hook["clientConfig"]


def test_cert_manager_with_an_existing_issuer(helm_env: dict[str, str]) -> None:
    manifests = render(
        helm_env,
        "--set", "webhook.certManager.enabled=true",
        "--set", "webhook.certManager.issuerRef.name=corp-ca",
        "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer",
    )  # fmt: skip
    assert "Issuer" not in kinds(manifests)
    assert only(manifests, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_user_provided_secret(helm_env: dict[str, str]) -> None:
    manifests = render(
        helm_env,
        "--set", "webhook.tls.secretName=my-webhook-cert",
        "--set", "webhook.caBundle=Q0E=",
    )  # fmt: skip
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"] == [
        f"{RELEASE}-redis"
    ]
    check_common(manifests, {"webhook": {"tls": {"secretName": "my-webhook-cert"}}})
    for hook in only(manifests, "MutatingWebhookConfiguration")["webhooks"]:
        assert hook["clientConfig"]["caBundle"] == "Q0E="


def test_webhook_url_keeps_the_given_ca_bundle(helm_env: dict[str, str]) -> None:
    values = values_of(CHART / "ci" / "webhook-url.yaml")
    manifests = render(helm_env, "--values", str(CHART / "ci" / "webhook-url.yaml"))
    for hook in only(manifests, "MutatingWebhookConfiguration")["webhooks"]:
        assert hook["clientConfig"] == {
            "url": values["webhook"]["url"],
            "caBundle": values["webhook"]["caBundle"],
        }
    # The in-cluster webhook still gets its certificate.
    only(manifests, "Secret", f"{RELEASE}-webhook-tls")


def test_single_webhook_replica_has_no_disruption_budget(helm_env: dict[str, str]) -> None:
    manifests = render(helm_env, "--set", "webhook.replicas=1")
    check_common(manifests, {"webhook": {"replicas": 1}})


def test_tags_and_extra_settings(helm_env: dict[str, str]) -> None:
    manifests = render(
        helm_env,
        "--set", "image.operator.tag=1.2.3",
        "--set", "image.sidecar.repository=registry.local/a11i/sidecar",
        "--set", "image.sidecar.tag=1.2.4",
        "--set", "injection.nativeSidecars=false",
        "--set", "operator.extraArgs={--verbose}",
        "--set", "operator.peering=a11i-blue",
    )  # fmt: skip
    (reconciler,) = only(manifests, "Deployment", f"{RELEASE}-operator")["spec"]["template"][
        "spec"
    ]["containers"]
    assert reconciler["image"] == "ghcr.io/a11i/operator:1.2.3"
    assert reconciler["args"] == [
        "operator",
        "--role",
        "reconciler",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--verbose",
    ]
    assert env_of(reconciler)["A11I_OPERATOR_PEERING"] == "a11i-blue"
    assert only(manifests, "ClusterKopfPeering")["metadata"]["name"] == "a11i-blue"
    (server,) = only(manifests, "Deployment", f"{RELEASE}-webhook")["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(server)["A11I_SIDECAR_IMAGE"] == "registry.local/a11i/sidecar:1.2.4"
    assert env_of(server)["A11I_NATIVE_SIDECARS"] == "false"


# -- key custody


def test_key_custody_default_reaches_the_webhook_and_no_secret_access(
    helm_env: dict[str, str],
) -> None:
    manifests = render(helm_env, "--values", str(CHART / "ci" / "key-custody.yaml"))
    (server,) = only(manifests, "Deployment", f"{RELEASE}-webhook")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(server)
    assert env["A11I_KEY_CUSTODY_SECRET"] == "a11i-provider-keys"
    assert env["A11I_KEY_CUSTODY_OPENAI_KEY"] == "openai"
    assert env["A11I_KEY_CUSTODY_ANTHROPIC_KEY"] == "anthropic"
    # The webhook names the Secret; it never reads one (least privilege).
    role = only(manifests, "ClusterRole", f"{RELEASE}-webhook")
    assert not [r for r in role["rules"] if "secrets" in r.get("resources", [])]
    # Off by default: no custody variables at all.
    (plain,) = only(render(helm_env), "Deployment", f"{RELEASE}-webhook")["spec"]["template"][
        "spec"
    ]["containers"]
    assert not [name for name in env_of(plain) if name.startswith("A11I_KEY_CUSTODY")]


# -- admission


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (
            ["--set", "injection.admission.fitOutputCap=false",
             "--set", "injection.admission.waitSeconds=0"],
            {"A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP": "false",
             "A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "0"},
        ),
        (
            # From a values file numbers are floats to Helm: the count stays a whole number.
            "admission:\n  fitOutputCap: true\n  minOutputTokens: 1000000\n  waitSeconds: 2.5\n",
            {"A11I_SIDECAR_BUDGET_FIT_OUTPUT_CAP": "true",
             "A11I_SIDECAR_BUDGET_MIN_OUTPUT_TOKENS": "1000000",
             "A11I_SIDECAR_BUDGET_ADMISSION_WAIT": "2.5"},
        ),
    ],
    ids=["set-strict", "values-file"],
)  # fmt: skip
def test_the_admission_default_reaches_the_webhook(
    helm_env: dict[str, str], tmp_path: Path, how: list[str] | str, expected: dict[str, str]
) -> None:
    if isinstance(how, str):
        values = tmp_path / "admission.yaml"
        values.write_text(f"injection:\n{textwrap.indent(how, '  ')}", "utf-8")
        how = ["--values", str(values)]
    (server,) = only(render(helm_env, *how), "Deployment", f"{RELEASE}-webhook")["spec"][
        "template"
    ]["spec"]["containers"]
    env = env_of(server)
    assert {k: v for k, v in env.items() if k.startswith("A11I_SIDECAR_BUDGET_")} == expected
    # What the webhook then reads: the settings accept every value the chart writes.
    settings = OperatorSettings.from_env(env, Role.WEBHOOK)
    assert settings.webhook is not None
    assert settings.webhook.injection.admission.env
    # Empty by default: no variables, each sidecar keeps its own defaults.
    (plain,) = only(render(helm_env), "Deployment", f"{RELEASE}-webhook")["spec"]["template"][
        "spec"
    ]["containers"]
    assert not [name for name in env_of(plain) if name.startswith("A11I_SIDECAR_BUDGET_")]


# -- the sidecars' upstreams


def test_the_upstreams_reach_the_webhook(helm_env: dict[str, str]) -> None:
    def upstreams(*args: str) -> dict[str, str]:
        (server,) = only(render(helm_env, *args), "Deployment", f"{RELEASE}-webhook")["spec"][
            "template"
        ]["spec"]["containers"]
        env = env_of(server)
        # What the webhook then reads: the settings accept every value the chart writes.
        settings = OperatorSettings.from_env(env, Role.WEBHOOK)
        assert settings.webhook is not None
        injected = settings.webhook.injection
        assert (injected.openai_upstream, injected.anthropic_upstream) == (
            env.get("A11I_SIDECAR_OPENAI_BASE", ""),
            env.get("A11I_SIDECAR_ANTHROPIC_BASE", ""),
        )
        return {k: v for k, v in env.items() if k.endswith("_BASE")}

    # By default the providers' public APIs.
    assert upstreams() == {
        "A11I_SIDECAR_OPENAI_BASE": "https://api.openai.com",
        "A11I_SIDECAR_ANTHROPIC_BASE": "https://api.anthropic.com",
    }
    assert upstreams(
        "--set", "sidecar.upstreams.openai=http://standin.e2e.svc.cluster.local:8000/v1",
        "--set", "sidecar.upstreams.anthropic=",
    ) == {"A11I_SIDECAR_OPENAI_BASE": "http://standin.e2e.svc.cluster.local:8000/v1"}  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param("external-redis", {}, id="standalone-says-nothing"),
        pytest.param(
            "external-redis-cluster", {"A11I_REDIS_MODE": "cluster"}, id="cluster-from-a-secret"
        ),
        pytest.param(
            "external-redis-sentinel",
            {"A11I_REDIS_MODE": "sentinel", "A11I_REDIS_MASTER": "a11i"},
            id="sentinel",
        ),
        pytest.param(
            "external-redis-sentinel-auth",
            {"A11I_REDIS_MODE": "sentinel", "A11I_REDIS_MASTER": "a11i"},
            id="sentinel-with-its-own-password",
        ),
    ],
)
def test_the_redis_mode_reaches_the_operator_the_webhook_and_the_sidecars(
    helm_env: dict[str, str], values: str, expected: dict[str, str]
) -> None:
    manifests = render(
        helm_env,
        "--values",
        str(CHART / "ci" / f"{values}.yaml"),
        "--set",
        "dashboard.enabled=true",
    )
    for name in ("operator", "webhook", "dashboard"):
        (container,) = only(manifests, "Deployment", f"{RELEASE}-{name}")["spec"]["template"][
            "spec"
        ]["containers"]
        env = env_of(container)
        assert {k: v for k, v in env.items() if k in ("A11I_REDIS_MODE", "A11I_REDIS_MASTER")} == (
            expected
        ), name
        password = "A11I_REDIS_SENTINEL_PASSWORD"
        if values.endswith("-auth") and name != "webhook":  # the webhook passes a reference
            assert env[password] == "secret:external-redis-sentinel-password/password", name
        else:
            assert password not in env, name
        if name == "webhook":
            # What the webhook then reads and passes on to every sidecar it injects.
            settings = OperatorSettings.from_env(env, Role.WEBHOOK)
            assert settings.webhook is not None
            injection = settings.webhook.injection
            assert injection.redis_mode.value == expected.get("A11I_REDIS_MODE", "standalone")
            assert injection.redis_master == expected.get("A11I_REDIS_MASTER", "mymaster")


# -- the dashboard


def test_dashboard_is_off_by_default(helm_env: dict[str, str]) -> None:
    manifests = render(helm_env)
    assert not [m for m in manifests if m["metadata"]["name"].startswith(f"{RELEASE}-dashboard")]


def test_dashboard_renders_its_deployment_service_and_secret(helm_env: dict[str, str]) -> None:
    values = values_of(CHART / "ci" / "dashboard.yaml")
    manifests = render(helm_env, "--values", str(CHART / "ci" / "dashboard.yaml"))
    name = f"{RELEASE}-dashboard"
    deployment = only(manifests, "Deployment", name)
    assert deployment["spec"]["replicas"] == values["dashboard"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/a11i/operator:0.1.0"  # the operator image
    assert container["args"] == ["dashboard", "--host", "0.0.0.0", "--port", "11080",
                                 "--kubernetes-auth", "--agentbudgets"]  # fmt: skip
    assert env_of(container)["A11I_REDIS_URL"] == f"secret:{RELEASE}-redis/url"
    assert env_of(container)["A11I_DASHBOARD_ORIGINS"] == "https://a11i.example.com"
    assert env_of(container)["A11I_DASHBOARD_SECURE_COOKIE"] == "true"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs.pop("A11I_REDIS_URL") == {"name": f"{RELEASE}-redis", "key": "url"}
    assert refs == {
        "A11I_DASHBOARD_SESSION_KEY": {"name": name, "key": "session-key", "optional": True},
        "A11I_DASHBOARD_ADMIN_TOKEN": {"name": name, "key": "admin-token", "optional": True},
        "A11I_DASHBOARD_VIEWER_TOKEN": {"name": name, "key": "viewer-token", "optional": True},
    }
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    secret = only(manifests, "Secret", name)
    tokens = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(tokens) == {"session-key", "admin-token", "viewer-token"}
    assert all(len(token) == 48 for token in tokens.values())
    assert len(set(tokens.values())) == 3
    service = only(manifests, "Service", name)
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_dashboard_with_an_existing_secret_and_an_external_redis(helm_env: dict[str, str]) -> None:
    manifests = render(
        helm_env,
        "--set", "dashboard.enabled=true",
        "--set", "dashboard.auth.existingSecret=my-dashboard",
        "--set", "dashboard.auth.tokens=false",
        "--set", "dashboard.agentbudgets=false",
        "--set", "dashboard.redisUrl=redis://other:6379/1",
    )  # fmt: skip
    assert "Secret" not in {m["kind"] for m in manifests if "dashboard" in m["metadata"]["name"]}
    (container,) = only(manifests, "Deployment", f"{RELEASE}-dashboard")["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["args"] == ["dashboard", "--host", "0.0.0.0", "--port", "11080",
                                 "--kubernetes-auth"]  # fmt: skip
    assert env_of(container)["A11I_REDIS_URL"] == "redis://other:6379/1"
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert refs == [{"name": "my-dashboard", "key": "session-key", "optional": True}]


# -- refusals: the schema, then the chart's own checks


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.replicas=0", "replicas"),
        ("webhook.url=http://127.0.0.1:9443/a11i-inject", "url"),
        ("redis.url=localhost:6379", "url"),
        ("webhook.failurPolicy=Fail", "failurPolicy"),
        ("injection.nativeSidecars=maybe", "nativeSidecars"),
        ("operator.podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
        ("webhook.caBundle=not base64!", "caBundle"),
        ("dashboard.redisUrl=localhost:6379", "redisUrl"),
        ("dashboard.auth.kubernetes=yes", "kubernetes"),
        ("injection.keyCustody.secretName=Provider_Keys", "secretName"),
        ("injection.keyCustody.openaiKey=open ai", "openaiKey"),
        ("injection.admission.waitSeconds=90", "waitSeconds"),
        ("injection.admission.minOutputTokens=0", "minOutputTokens"),
        ("injection.admission.strict=true", "strict"),
        ("sidecar.upstreams.openai=standin.e2e:8000", "openai"),
        ("sidecar.upstreams.anthropic=https://api.anthropic.com?key=x", "anthropic"),
        ("sidecar.upstreams.azure=https://example.azure.com", "azure"),
        ("redis.mode=replicated", "mode"),
    ],
    ids=[
        "failure-policy",
        "zero-replicas",
        "plain-http-url",
        "redis-url-scheme",
        "typo",
        "native-sidecars",
        "root",
        "ca-bundle",
        "dashboard-redis-url",
        "dashboard-auth-not-bool",
        "key-custody-secret-name",
        "key-custody-key",
        "admission-wait-too-long",
        "admission-floor-zero",
        "admission-unknown-field",
        "upstream-no-scheme",
        "upstream-query",
        "upstream-unknown-provider",
        "redis-mode",
    ],
)
def test_schema_refuses(helm_env: dict[str, str], setting: str, said: str) -> None:
    message = refused(helm_env, "--set", setting)
    assert "values don't meet the specifications of the schema" in message, message
    assert said in message, message


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (["redis.enabled=false"], "a11i needs a Redis"),
        (["redis.url=redis://redis.example:6379/0"], "choose one Redis"),
        (
            ["redis.enabled=false", "redis.url=redis://r:6379/0", "redis.existingSecret=r"],
            "choose one Redis",
        ),
        (
            ["webhook.certManager.enabled=true", "webhook.tls.secretName=mine"],
            "choose one source of the webhook's certificate",
        ),
        (["webhook.tls.secretName=mine"], "webhook.caBundle is empty"),
        (
            [
                "dashboard.enabled=true",
                "dashboard.auth.kubernetes=false",
                "dashboard.auth.tokens=false",
            ],
            "never runs without auth",
        ),
        (
            ["injection.keyCustody.secretName=a11i-provider-keys"],
            "neither openaiKey nor anthropicKey",
        ),
        (["injection.keyCustody.openaiKey=openai"], "secretName is empty"),
        (["redis.mode=cluster"], "redis.mode=cluster needs an external Redis"),
    ],
    ids=[
        "no-redis",
        "two-redis",
        "secret-and-url",
        "two-cert-sources",
        "secret-without-ca",
        "dashboard-no-auth",
        "key-custody-without-a-key",
        "key-custody-without-a-secret",
        "cluster-mode-with-the-bundled-redis",
    ],
)
def test_chart_refuses_with_a_clear_message(
    helm_env: dict[str, str], settings: list[str], said: str
) -> None:
    message = refused(helm_env, *[arg for s in settings for arg in ("--set", s)])
    assert said in message, message
