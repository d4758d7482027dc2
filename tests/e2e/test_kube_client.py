"""The operator's API client (a11i/operator/kube.py) against the real kube-apiserver, logged in
the ways the hand-written client before it could not: a kubeconfig whose user is an exec
credential plugin (printing a token of the operator's ServiceAccount, from ``kubectl create
token``), and a cluster reached through the kubeconfig's ``proxy-url`` (a CONNECT proxy run
here). Also what the callers rely on: server-side apply as ``a11i-operator``, ``KubeError``'s
status, reason and ``temporary``, and one re-login on a 401.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from a11i.operator.kube import (
    CONFIG_MAPS,
    FIELD_MANAGER,
    TOKEN_REVIEWS,
    KubeClient,
    KubeError,
    kopf_login,
)
from tests.e2e.crds import install_crds
from tests.e2e.operator import SERVICE_ACCOUNT, SYSTEM_NAMESPACE, install_rbac
from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.e2e

EXEC_API = "client.authentication.k8s.io/v1"


class Plugin:
    """An exec credential plugin: prints an ExecCredential with the first line of ``tokens``
    left (the last one once it is alone) and counts its runs."""

    def __init__(self, directory: Path, tokens: list[str]) -> None:
        self.directory = directory
        self.script = directory / "credential-plugin"
        self.tokens = directory / "tokens"
        self.runs_file = directory / "runs"
        self.tokens.write_text("\n".join(tokens), encoding="utf-8")
        self.script.write_text(
            f"#!{sys.executable}\n"
            "import json, pathlib\n"
            f"here = pathlib.Path({str(directory)!r})\n"
            "runs = here / 'runs'\n"
            "runs.write_text(str(int(runs.read_text() if runs.exists() else 0) + 1))\n"
            "tokens = (here / 'tokens').read_text().splitlines()\n"
            "(here / 'tokens').write_text('\\n'.join(tokens[1:] or tokens))\n"
            f"print(json.dumps({{'apiVersion': {EXEC_API!r}, 'kind': 'ExecCredential', "
            "'status': {'token': tokens[0]}}))\n",
            encoding="utf-8",
        )
        self.script.chmod(0o755)

    @property
    def runs(self) -> int:
        return int(self.runs_file.read_text()) if self.runs_file.exists() else 0

    def kubeconfig(self, plane: ControlPlane, proxy_url: str | None = None) -> Path:
        cluster: dict[str, object] = {
            "server": plane.server_url,
            "certificate-authority-data": base64.b64encode(plane.ca_path.read_bytes()).decode(),
        }
        if proxy_url is not None:
            cluster["proxy-url"] = proxy_url
        user = {"exec": {"apiVersion": EXEC_API, "command": str(self.script),
                         "interactiveMode": "Never"}}  # fmt: skip
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "plane", "cluster": cluster}],
            "users": [{"name": "plugin", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "plane", "user": "plugin"}}],
            "current-context": "x",
        }
        path = self.directory / "kubeconfig"
        path.write_text(json.dumps(config), encoding="utf-8")
        return path


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP CONNECT proxy on loopback that records the targets it tunnels to."""

    daemon_threads = True
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.targets: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


class _Tunnel(socketserver.BaseRequestHandler):
    server: ConnectProxy
    request: socket.socket

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.server.targets.append(target)
        host, _, port = target.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pair = {self.request: upstream, upstream: self.request}
            while True:
                readable, _, _ = select.select(list(pair), [], [], 30)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    pair[source].sendall(data)


@pytest.fixture(scope="module")
def operator_token(control_plane: ControlPlane) -> str:
    """A token of the operator's ServiceAccount, with the chart's RBAC (after the CRDs: it
    creates the kopf peering object)."""
    install_crds(control_plane)
    install_rbac(control_plane)
    return control_plane.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE, "--duration=1h", check=True
    ).stdout.strip()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    try:
        yield server
    finally:
        server.close()


def managers(plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    """The field managers of a ConfigMap and their operations."""
    shown = plane.kubectl("get", "configmap", name, "-n", namespace, "-o", "json",
                          "--show-managed-fields", check=True)  # fmt: skip
    found = json.loads(shown.stdout)
    return {entry["manager"]: entry["operation"] for entry in found["metadata"]["managedFields"]}


def config_map(name: str, data: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {"app": "kube-client-test"}}, "data": data}


async def test_a_kubeconfig_with_an_exec_plugin_reads_and_applies(
    control_plane: ControlPlane,
    namespace: str,
    operator_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = Plugin(tmp_path, [operator_token])
    monkeypatch.setenv("KUBECONFIG", str(plugin.kubeconfig(control_plane)))
    client = KubeClient()
    try:
        assert await client.version() >= (1, 29)
        assert await client.get(CONFIG_MAPS, namespace, "generated") is None
        created = await client.apply(
            CONFIG_MAPS, namespace, config_map("generated", {"a": "1", "b": "2"})
        )
        assert created["data"] == {"a": "1", "b": "2"}
        assert managers(control_plane, namespace, "generated") == {FIELD_MANAGER: "Apply"}
        # Server-side apply: what this manager set before and leaves out now goes.
        await client.apply(CONFIG_MAPS, namespace, config_map("generated", {"a": "1"}))
        read = await client.get(CONFIG_MAPS, namespace, "generated")
        assert read is not None
        assert read["data"] == {"a": "1"}
        listed = await client.list(CONFIG_MAPS, namespace)
        assert "generated" in {item["metadata"]["name"] for item in listed}
        assert await client.delete(CONFIG_MAPS, namespace, "generated") is True
        assert await client.delete(CONFIG_MAPS, namespace, "generated") is False
    finally:
        await client.close()
    assert plugin.runs == 1  # one login for every call


async def test_errors_keep_their_status_reason_and_meaning(
    control_plane: ControlPlane,
    namespace: str,
    operator_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = Plugin(tmp_path, [operator_token])
    monkeypatch.setenv("KUBECONFIG", str(plugin.kubeconfig(control_plane)))
    client = KubeClient()
    try:
        created = await client.apply(CONFIG_MAPS, namespace, config_map("cm", {"k": "v"}))
        stale = str(created["metadata"]["resourceVersion"])
        await client.patch(CONFIG_MAPS, namespace, "cm", {"data": {"k": "newer"}})
        conditional = {"metadata": {"resourceVersion": stale}, "data": {"k": "old"}}
        with pytest.raises(KubeError) as conflict:
            await client.patch(CONFIG_MAPS, namespace, "cm", conditional)
        assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")
        assert conflict.value.temporary
        # The chart grants the operator no TokenReviews (the dashboard's ServiceAccount has them).
        with pytest.raises(KubeError) as forbidden:
            await client.create(TOKEN_REVIEWS, None, {"spec": {"token": "x"}})
        assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
        assert not forbidden.value.temporary
        assert "tokenreviews" in str(forbidden.value)
        with pytest.raises(KubeError) as missing:
            await client.patch(CONFIG_MAPS, namespace, "absent", {"data": {"k": "v"}})
        assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    finally:
        await client.close()


async def test_a_rejected_credential_is_fetched_again_once(
    control_plane: ControlPlane,
    namespace: str,
    operator_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first run hands out a token the API server rejects (as an expired one would be).
    plugin = Plugin(tmp_path, ["not-a-valid-token", operator_token])
    monkeypatch.setenv("KUBECONFIG", str(plugin.kubeconfig(control_plane)))
    client = KubeClient()
    try:
        # A 404 (None), not a 401: the second credential was accepted.
        assert await client.get(CONFIG_MAPS, namespace, "absent") is None
    finally:
        await client.close()
    assert plugin.runs == 2


async def test_a_credential_rejected_twice_is_a_401(
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = Plugin(tmp_path, ["not-a-valid-token"])
    monkeypatch.setenv("KUBECONFIG", str(plugin.kubeconfig(control_plane)))
    client = KubeClient()
    try:
        with pytest.raises(KubeError) as rejected:
            await client.get(CONFIG_MAPS, namespace, "anything")
    finally:
        await client.close()
    assert rejected.value.status == 401
    assert not rejected.value.temporary
    assert plugin.runs == 2  # the first login and one more, no loop


async def test_the_kubeconfig_proxy_url_is_used(
    control_plane: ControlPlane,
    namespace: str,
    operator_token: str,
    proxy: ConnectProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = Plugin(tmp_path, [operator_token])
    monkeypatch.setenv("KUBECONFIG", str(plugin.kubeconfig(control_plane, proxy.url)))
    client = KubeClient()
    try:
        await client.apply(CONFIG_MAPS, namespace, config_map("through-proxy", {"k": "v"}))
        assert await client.get(CONFIG_MAPS, namespace, "through-proxy") is not None
    finally:
        await client.close()
    server = control_plane.server_url.removeprefix("https://")
    assert proxy.targets
    assert set(proxy.targets) == {server}
    # kopf is handed the same proxy (and the plugin's token) for its own watches.
    info = kopf_login()
    assert (info.proxy_url, info.token) == (proxy.url, operator_token)
