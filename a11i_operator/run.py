"""Run the operator: settings from the environment, kopf configured, the handlers registered.

The one place that configures kopf: progress and diff-base storage as annotations under the
``a11i.io`` prefix (nothing of kopf's in the status the CRD validates), the ``a11i.io/finalizer``
finalizer, Kubernetes Events for what the handlers post, and peering, so that one replica
reconciles at a time while others stand by.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import kopf

from a11i_operator import (
    budgets,
    policies,  # noqa: F401  (registers its handlers on import)
)
from a11i_operator.settings import OperatorSettings, SettingsError

PREFIX = "a11i.io"
FINALIZER = "a11i.io/finalizer"


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
    config.peering.standalone = settings.peering is None
    config.peering.name = settings.peering or "default"
    config.peering.clusterwide = settings.clusterwide
    config.peering.stealth = True
    # A crashed handler is retried, but not in a storm.
    config.execution.max_workers = 20
    return config


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="a11i operator",
        description=(
            "Reconcile AgentBudgets into the namespaces' shared wallets in Redis and report "
            "their spend in the status, and TelemetryPolicies into the sidecars' generated "
            "configuration. Configured by environment variables (docs/operator.md): "
            "A11I_REDIS_URL (required), A11I_OPERATOR_STATUS_INTERVAL, A11I_OPERATOR_NAMESPACES, "
            "A11I_OPERATOR_PEERING, A11I_REDIS_TIMEOUT; the cluster from KUBECONFIG or the "
            "in-cluster service account."
        ),
    )
    parser.add_argument("--verbose", action="store_true", help="log what kopf does, too")
    parser.add_argument("--debug", action="store_true", help="log everything")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``a11i operator``: run until SIGINT or SIGTERM; 2 for bad settings."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = OperatorSettings.from_env(os.environ if env is None else env)
    except SettingsError as error:
        print(f"a11i operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, debug=args.debug)
    budgets.register(settings)
    kopf.run(
        settings=kopf_settings(settings),
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
    )
    return 0
