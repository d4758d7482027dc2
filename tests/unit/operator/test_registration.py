"""Every operator module registers its kopf handlers with ``register(settings, registry)``: none
on import, and each role's registry holds its own handlers and no others."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import kopf
import pytest

from a11i.operator import run
from a11i.operator.settings import OperatorSettings, Role
from tests.support.paths import ROOT

MODULES = ("budgets", "policies", "redis_secret", "webhook", "run", "kube")
ENV = {
    "A11I_REDIS_URL": "redis://127.0.0.1:6379/0",
    "A11I_SIDECAR_IMAGE": "a11i:test",
    "A11I_OPERATOR_SIDECAR_REDIS_SECRET": "a11i-sidecar-redis",
}
RECONCILER = {
    "reconcile_policy",
    "resync_policy",
    "policy_references",
    "policies_by_namespace",
    "wallet-create",
    "a11i-redis-secret-startup",
}
WEBHOOK = {"a11i-inject", "a11i-inject-startup", "a11i-inject-namespaces"}
#: The registries of handlers inside kopf's OperatorRegistry.
KINDS = ("_activities", "_indexing", "_watching", "_spawning", "_changing", "_webhooks")


def handler_ids(registry: kopf.OperatorRegistry) -> set[str]:
    """The ids of every handler in ``registry`` (kopf has no public listing)."""
    return {
        str(handler.id) for kind in KINDS for handler in getattr(registry, kind).get_all_handlers()
    }


def test_importing_the_modules_registers_nothing() -> None:
    # A fresh interpreter: this one has imported the modules already.
    program = (
        "import json, kopf\n"
        # Only kopf imported: this module would import the operator's modules.
        f"{inspect.getsource(handler_ids)}\n"
        f"KINDS = {KINDS!r}\n"
        "before = handler_ids(kopf.get_default_registry())\n"
        f"for name in {MODULES!r}:\n"
        "    __import__(f'a11i.operator.{name}')\n"
        "print(json.dumps(sorted(handler_ids(kopf.get_default_registry()) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("role", "present", "absent"),
    [
        (Role.ALL, RECONCILER | WEBHOOK, set()),
        (Role.RECONCILER, RECONCILER, WEBHOOK),
        (Role.WEBHOOK, WEBHOOK, RECONCILER),
    ],
    ids=["all", "reconciler", "webhook"],
)
def test_each_role_registers_its_own_handlers(
    role: Role, present: set[str], absent: set[str]
) -> None:
    settings = OperatorSettings.from_env(ENV, role)
    ids = handler_ids(run.build_registry(settings))
    assert "a11i-login" in ids
    assert present <= ids
    assert not ids & absent


def test_two_registries_do_not_share_handlers() -> None:
    settings = OperatorSettings.from_env(ENV, Role.RECONCILER)
    first, second = run.build_registry(settings), run.build_registry(settings)
    assert handler_ids(first) == handler_ids(second)
    # Registering again into a fresh registry did not add a second copy to the first.
    assert len(first._changing.get_all_handlers()) == len(second._changing.get_all_handlers())
