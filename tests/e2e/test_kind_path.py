"""The kind-based end-to-end path (tools/kind/e2e.sh, ``make e2e-kind``) as far as it runs here.

This machine has no Docker engine, so the script must say so and step aside with exit code 0;
on a machine with one, the real run is ``make e2e-kind`` (minutes: two image builds and a
cluster), never part of ``make test``, and the skip test is skipped.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.cluster import ROOT

SCRIPT = ROOT / "tools" / "kind" / "e2e.sh"
SKIP_MESSAGE = "skipped: no Docker engine (docker info failed)"


def docker_engine_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        info = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


pytestmark = pytest.mark.e2e


def test_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    docker_engine_available(),
    reason="a Docker engine is available: run the real kind path with `make e2e-kind`",
)
def test_script_skips_without_a_docker_engine() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SKIP_MESSAGE
