"""Run the operator: settings from the environment, kopf configured, the handlers registered.

The one place that configures kopf: progress and diff-base storage as annotations under the
``a11i.io`` prefix (nothing of kopf's in the status the CRD validates), the ``a11i.io/finalizer``
finalizer, Kubernetes Events for what the handlers post, and peering, so that one replica
reconciles at a time while others stand by.

``--role`` splits the process: ``reconciler`` runs the AgentBudget and TelemetryPolicy handlers
without a webhook server, ``webhook`` only the injection webhook (no Redis, no peering, every
replica serves), ``all`` both (the webhook only when ``A11I_SIDECAR_IMAGE`` is set). Each role
gets a fresh kopf registry holding only its handlers, which every module registers with its
``register(settings, registry)``; kopf logs in with ``kube.kopf_login``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import kopf

from a11i.core.errors import SettingsError
from a11i.operator import budgets, certs, kube, policies, redis_secret, webhook
from a11i.operator.settings import OperatorSettings, Role

PREFIX = "a11i.io"
FINALIZER = "a11i.io/finalizer"
#: The webhook-only role's: never added (none of its handlers needs one). Were it the
#: reconciler's, the webhook's kopf would strip that finalizer from every AgentBudget it watches
#: ("no handlers requiring it"), so deletions would skip the reconciler's cleanup.
WEBHOOK_FINALIZER = "a11i.io/webhook-finalizer"


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's own settings for the a11i operator."""
    config = kopf.OperatorSettings()
    config.persistence.finalizer = FINALIZER
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    config.posting.enabled = True
    # Events are what the handlers post on purpose (phases, resets, conflicts) and errors;
    # kopf's per-handler "succeeded" lines would bury them every status interval.
    config.posting.level = logging.ERROR
    config.posting.reporting_component = "a11i-operator"
    if settings.webhook is not None:
        config.admission.server = webhook.server(settings.webhook)
        # The chart (or the user) owns the MutatingWebhookConfiguration, with its
        # matchConditions and failure policy; kopf does not manage it.
        config.admission.managed = None
    if not settings.reconciles:
        # Webhook replicas serve side by side: no peering, nothing persisted, and never the
        # reconciler's finalizer (it watches AgentBudgets too).
        config.peering.standalone = True
        config.persistence.finalizer = WEBHOOK_FINALIZER
        return config
    config.peering.standalone = settings.peering is None
    config.peering.name = settings.peering or "default"
    config.peering.clusterwide = settings.clusterwide
    config.peering.stealth = True
    # A crashed handler is retried, but not in a storm.
    config.execution.max_workers = 20
    return config


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the handlers of the role: every module registers its own by
    ``register(settings, registry)`` (none on import), and kopf logs in as ``kube`` does."""
    handlers = kopf.OperatorRegistry()
    kopf.on.login(id="a11i-login", registry=handlers)(kube.kopf_login)
    if settings.reconciles:
        budgets.register(settings, handlers)
        policies.register(settings, handlers)
        redis_secret.register(settings, handlers)
    if settings.webhook is not None:
        webhook.register(settings.webhook, handlers)
    return handlers


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="a11i operator",
        description=(
            "Reconcile AgentBudgets into the namespaces' shared wallets in Redis and report "
            "their spend in the status, and TelemetryPolicies into the sidecars' generated "
            "configuration. Configured by environment variables (docs/operator.md): "
            "A11I_REDIS_URL (required), A11I_OPERATOR_STATUS_INTERVAL, A11I_OPERATOR_NAMESPACES, "
            "A11I_OPERATOR_PEERING, A11I_REDIS_TIMEOUT; the injection webhook by "
            "A11I_SIDECAR_IMAGE, A11I_SIDECAR_REDIS_URL, A11I_OPERATOR_NAMESPACE, "
            "A11I_NATIVE_SIDECARS (docs/injection.md); the cluster from the in-cluster "
            "service account, else KUBECONFIG or ~/.kube/config (as kubectl)."
        ),
    )
    parser.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=Role.ALL.value,
        help="reconciler: the handlers without a webhook server; webhook: only the injection "
        "webhook (no Redis); all (default): both, the webhook when A11I_SIDECAR_IMAGE is set",
    )
    parser.add_argument(
        "--webhook-port", type=int, help="HTTPS port of the webhook (A11I_WEBHOOK_PORT, 9443)"
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness endpoint at this URL, e.g. http://0.0.0.0:8080/healthz "
        "(A11I_OPERATOR_LIVENESS; default: none). It answers 200 while the operator's event "
        "loop runs; Redis or the API server being away does not fail it",
    )
    parser.add_argument(
        "--webhook-cert-dir",
        type=Path,
        help="directory of tls.crt and tls.key, re-read when they change "
        "(A11I_WEBHOOK_CERT_DIR, /etc/a11i/webhook-tls)",
    )
    parser.add_argument(
        "--self-signed",
        action="store_true",
        help="write a fresh self-signed CA (ca.crt) and serving certificate for localhost, "
        "127.0.0.1 and this host into the cert dir first (a laptop)",
    )
    parser.add_argument("--verbose", action="store_true", help="log what kopf does, too")
    parser.add_argument("--debug", action="store_true", help="log everything")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``a11i operator``: run until SIGINT or SIGTERM; 2 for bad settings."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = OperatorSettings.from_env(
            os.environ if env is None else env,
            Role(args.role),
            webhook_port=args.webhook_port,
            webhook_cert_dir=args.webhook_cert_dir,
            self_signed=args.self_signed,
        )
    except SettingsError as error:
        print(f"a11i operator: {error}", file=sys.stderr)
        return 2
    if settings.webhook is not None and settings.webhook.self_signed:
        names = ["localhost", "127.0.0.1", socket.gethostname()]
        certs.write(certs.self_signed(names), settings.webhook.cert_dir)
        print(
            f"a11i operator: self-signed webhook certificate for {', '.join(names)}; "
            f"caBundle: {settings.webhook.cert_dir / certs.CA_FILE}",
            file=sys.stderr,
        )
    environment = os.environ if env is None else env
    liveness = args.liveness or environment.get("A11I_OPERATOR_LIVENESS") or None
    if liveness is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", liveness):
        print(
            f"a11i operator: --liveness must be a URL such as http://0.0.0.0:8080/healthz, "
            f"not {liveness!r}",
            file=sys.stderr,
        )
        return 2
    kopf.configure(verbose=args.verbose, debug=args.debug)
    handlers = build_registry(settings)
    if not settings.reconciles:
        # Only the webhook: no Redis, no peering, every namespace (its own registry, without
        # the reconcilers' handlers).
        kopf.run(
            registry=handlers,
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=True,
            liveness_endpoint=liveness,
        )
        return 0
    kopf.run(
        registry=handlers,
        settings=kopf_settings(settings),
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
    return 0
