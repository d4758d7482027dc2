"""The entry points that run on the base distribution import nothing of the ``a11i[operator]``
extra (kopf, the Kubernetes client, cryptography), even where it is installed.

Each case runs in a fresh interpreter (this one has imported half the package already) and
prints the extra's modules it ended up with.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: a11i's own modules that import the extra.
KUBERNETES_MODULES = (
    "a11i.operator.kube",
    "a11i.operator.budgets",
    "a11i.dashboard.kube_auth",
    "a11i.dashboard.agentbudgets",
)
EXTRA = ("kopf", "kubernetes", "cryptography")
#: redis-py probes for cryptography itself (an optional import in ``redis.utils``), so the
#: entry points that import redis are held to the other two.
EXTRA_BUT_CRYPTOGRAPHY = ("kopf", "kubernetes")

#: What each entry point does before it serves (the sidecar is built as `a11i sidecar` builds
#: it: an in-memory wallet, no Redis; the others are imported), and what it may not import.
CASES = {
    "sidecar": (
        """
        import a11i.cli
        from a11i.sidecar.app import sidecar_app

        sidecar_app({"A11I_WALLET_FILE": ":memory:", "A11I_LOG_LEVEL": "WARNING"})
        """,
        EXTRA,
    ),
    "up": ("import a11i.up", EXTRA_BUT_CRYPTOGRAPHY),
    "dashboard": ("import a11i.dashboard.server", EXTRA_BUT_CRYPTOGRAPHY),
}


@pytest.mark.parametrize(("code", "extra"), CASES.values(), ids=CASES.keys())
def test_an_entry_point_imports_nothing_of_the_operator_extra(
    code: str, extra: tuple[str, ...]
) -> None:
    report = f"""
        import json, sys

        roots, own = {extra!r}, {KUBERNETES_MODULES!r}
        found = [m for m in sys.modules if m.partition(".")[0] in roots or m in own]
        print(json.dumps(sorted(found)))
    """
    script = textwrap.dedent(code) + textwrap.dedent(report)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_extra_is_installed_here() -> None:
    """Else the cases above would pass for want of the modules, not for not importing them."""
    done = subprocess.run(
        [sys.executable, "-c", "import kopf, kubernetes, cryptography"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
