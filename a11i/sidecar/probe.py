"""``a11i probe``: exit 0 when the local sidecar answers ready (a kubelet exec probe).

The sidecar listens on the pod's loopback only, which the kubelet's HTTP probes cannot reach, so
the injector probes it with this command. Standard library only: it starts in a few milliseconds.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from a11i.core import variables as var
from a11i.sidecar import contract


def run(path: str, timeout_s: float, env: Mapping[str, str]) -> int:
    """GET ``path`` of the sidecar on ``127.0.0.1:$A11I_PORT``: exit 0 on HTTP 200, else 1."""
    url = f"http://127.0.0.1:{var.port(env, contract.PORT, contract.DEFAULT_PORT)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, TimeoutError) as error:
        print(f"a11i probe: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"a11i probe: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0
