"""``a11i probe``: the exec probe the injector gives the sidecar, against a real sidecar process
(and against a port nobody listens on)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "A11I_PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "a11i.cli", "probe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_probe_fails_when_nothing_listens() -> None:
    started = time.monotonic()
    result = _probe(_free_port())
    assert result.returncode == 1
    assert "a11i probe" in result.stderr
    assert time.monotonic() - started < 10


def test_probe_passes_against_a_ready_sidecar() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "A11I_PORT": str(port),
        "A11I_WALLET_FILE": ":memory:",
        "A11I_OPENAI_BASE": "http://127.0.0.1:9",
    }
    env.pop("A11I_REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "a11i.cli", "sidecar"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            result = _probe(port)
            if result.returncode == 0:
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)
        assert _probe(port, "--path", "/a11i/healthz").returncode == 0
        missing = _probe(port, "--path", "/a11i/nothing-here")
        assert missing.returncode == 1
        assert "HTTP 502" in missing.stderr  # passed upstream, which is down
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()
