"""The operator's API access: credentials as kubectl loads them (an exec credential plugin and a
proxy-url, which the hand-written client before it ignored), the errors' meaning, and an API
server that does not answer. Against the real API server: tests/e2e/test_kube_client.py."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import kopf
import pytest

from a11i.operator.kube import (
    CONFIG_MAPS,
    KubeClient,
    KubeError,
    KubeSettings,
    kopf_login,
    login,
)

EXEC_API = "client.authentication.k8s.io/v1"


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ServiceAccount and no proxy from the environment: only the kubeconfig counts."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def exec_plugin(directory: Path, token: str) -> Path:
    """A credential plugin (an executable script) that prints an ExecCredential with
    ``token`` and counts its runs in ``runs``."""
    script = directory / "credential-plugin"
    runs = directory / "runs"
    credential = {"apiVersion": EXEC_API, "kind": "ExecCredential", "status": {"token": token}}
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "runs.write_text(str(int(runs.read_text() if runs.exists() else 0) + 1))\n"
        f"print({json.dumps(credential)!r})\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def kubeconfig(path: Path, server: str, user: dict[str, object], **cluster: object) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_exec_plugin_and_a_proxy_url_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = exec_plugin(tmp_path, "token-from-the-plugin")
    user = {"exec": {"apiVersion": EXEC_API, "command": str(plugin), "interactiveMode": "Never"}}
    path = kubeconfig(
        tmp_path / "config", "https://api.example:6443", user, **{
            "proxy-url": "http://proxy.example:3128", "insecure-skip-tls-verify": True,
        },
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = login()
    assert (credentials.server, credentials.source) == (
        "https://api.example:6443",
        f"kubeconfig {path}",
    )
    info = kopf_login()
    assert (info.scheme, info.token) == ("Bearer", "token-from-the-plugin")
    assert info.proxy_url == "http://proxy.example:3128"
    assert info.server == "https://api.example:6443"
    assert info.insecure is True
    assert (tmp_path / "runs").read_text() == "2"  # once per login


def test_kubeconfig_is_read_when_logging_in_not_at_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(tmp_path / "first", "https://first.example", {"token": "a"})
    second = kubeconfig(tmp_path / "second", "https://second.example", {"token": "b"})
    monkeypatch.setenv("KUBECONFIG", str(first))
    assert login().server == "https://first.example"
    monkeypatch.setenv("KUBECONFIG", str(second))
    assert login().server == "https://second.example"


def test_no_credentials_at_all_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(KubeError, match="no usable Kubernetes credentials") as raised:
        login()
    assert str(missing) in str(raised.value)
    with pytest.raises(kopf.LoginError, match=str(missing)):
        kopf_login()


@pytest.mark.parametrize(
    ("status", "temporary"),
    [
        (None, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
    ids=lambda value: str(value),
)
def test_which_errors_are_temporary(status: int | None, temporary: bool) -> None:
    assert KubeError("x", status=status).temporary is temporary


async def test_an_api_server_that_does_not_answer_is_a_temporary_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    path = kubeconfig(
        tmp_path / "config", server, {"token": "t"}, **{"insecure-skip-tls-verify": True}
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    client = KubeClient(settings=KubeSettings(timeout_s=5.0))
    try:
        with pytest.raises(KubeError, match="no answer from the API server") as raised:
            await client.get(CONFIG_MAPS, "default", "anything")
    finally:
        await client.close()
    assert raised.value.status is None
    assert raised.value.temporary
    assert "get configmaps default/anything" in str(raised.value)


async def test_missing_credentials_surface_as_a_kube_error_on_the_first_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    client = KubeClient()
    try:
        with pytest.raises(KubeError, match="no usable Kubernetes credentials"):
            await client.list(CONFIG_MAPS, "default")
    finally:
        await client.close()
