"""The test node's small images, written here as OCI archives: no registry is reachable.

``pause`` is the pod sandbox (``tools/images/pause.c``, compiled static with gcc) under the name
the node's containerd is configured with; ``busybox`` is Debian's ``busybox-static`` with a link
per applet, for plain pods in the tests. Each archive is one layer, written deterministically
(fixed times and owners), so the same inputs give the same digests; ``ctr images import`` takes
it as it is. The project's own images come from its Dockerfiles through buildah (tools/images).

It may not start anything: it writes files, nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

PAUSE_SOURCE = ROOT / "tools" / "images" / "pause.c"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
"""The sandbox image: the name kubelet v1.34 and the node's containerd config expect."""
BUSYBOX_IMAGE = "a11i.local/busybox:test"
"""Debian's busybox-static, for plain pods (pulled never: it only exists on the node)."""
BUSYBOX_BINARY = Path("/bin/busybox")
AGENT_EXAMPLE = ROOT / "examples" / "agent-deployment.yaml"
BUILD_SCRIPT = ROOT / "tools" / "images" / "build.sh"


class ImageError(RuntimeError):
    """An image could not be made; the message says which input was missing."""


@dataclass(frozen=True)
class LayerFile:
    """One entry of a layer: a regular file (``data``), a directory, or a symlink (``target``)."""

    path: str
    data: bytes | None = None
    mode: int = 0o755
    target: str | None = None


def _layer_tar(entries: Iterable[LayerFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda item: item.path):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, entry.mode
            if entry.target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            elif entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


def write_oci_archive(
    path: Path,
    name: str,
    entries: Sequence[LayerFile],
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    user: str = "",
) -> str:
    """Write a one-layer linux/amd64 image named ``name`` to ``path``; its manifest digest."""
    layer = _layer_tar(entries)
    compressed = gzip.compress(layer, mtime=0)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest, len(data)

    layer_digest, layer_size = blob(compressed)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(entrypoint),
            "Cmd": list(cmd),
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": user,
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
        },
        "history": [{"created_by": "tests/support/images.py"}],
    }
    config_digest, config_size = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                # containerd's importer names the image from this annotation.
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return manifest_digest


def pause_archive(path: Path) -> Path:
    """The sandbox image, compiled from ``tools/images/pause.c`` (needs gcc and glibc's libc.a)."""
    if shutil.which("gcc") is None:
        raise ImageError("gcc is needed to build the pause image (apt-get install gcc libc6-dev)")
    with tempfile.TemporaryDirectory(prefix="a11i-pause-") as tmp:
        binary = Path(tmp) / "pause"
        result = subprocess.run(
            ["gcc", "-Os", "-static", "-s", "-o", str(binary), str(PAUSE_SOURCE)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ImageError(f"gcc could not build the pause program: {result.stderr.strip()}")
        data = binary.read_bytes()
    write_oci_archive(
        path, PAUSE_IMAGE, [LayerFile("pause", data)], entrypoint=["/pause"], user="65535:65535"
    )
    return path


def busybox_archive(path: Path) -> Path:
    """Debian's static busybox with a symlink per applet in /bin, /tmp, and a root passwd."""
    if not BUSYBOX_BINARY.is_file():
        raise ImageError(f"{BUSYBOX_BINARY} is missing (apt-get install busybox-static)")
    data = BUSYBOX_BINARY.read_bytes()
    applets = subprocess.run(
        [str(BUSYBOX_BINARY), "--list"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    entries = [
        LayerFile("bin"),
        LayerFile("tmp", mode=0o1777),
        LayerFile("etc"),
        LayerFile("bin/busybox", data),
        LayerFile("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", mode=0o644),
        LayerFile("etc/group", b"root:x:0:\n", mode=0o644),
    ]
    entries += [
        LayerFile(f"bin/{applet}", target="busybox") for applet in applets if applet != "busybox"
    ]
    write_oci_archive(path, BUSYBOX_IMAGE, entries, entrypoint=[], cmd=["/bin/sh"])
    return path


def agent_image() -> str:
    """The e2e tests' agent: the python base with the openai SDK the example Deployment pins,
    preinstalled in /opt/agent (on PATH); tools/images/build.sh names it the same way."""
    pinned = re.search(r"openai==([0-9][0-9.]*)", AGENT_EXAMPLE.read_text("utf-8"))
    if pinned is None:
        raise ImageError(f"{AGENT_EXAMPLE} pins no openai==<version> to build the agent from")
    return f"a11i.local/agent:openai-{pinned.group(1)}"


def project_archives() -> list[Path]:
    """The archives ``tools/images/build.sh`` made (the sidecar, the operator, the python base
    under the example's name, Debian's Redis under the chart's, the agent with the openai SDK
    preinstalled, ``agent_image()``); fails unless all are there and
    up to date. Never builds: a cold build takes minutes."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--check"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 3:
        raise ImageError(
            f"{result.stderr.strip()}\nThe project's images are not built: run `make images` "
            "(tools/images/build.sh; about five minutes the first time)"
        )
    if result.returncode != 0:
        raise ImageError(f"{BUILD_SCRIPT} --check failed: {result.stderr.strip()}")
    directory = Path(result.stdout.strip().splitlines()[-1])
    return sorted(
        path
        for name in ("python", "redis", "sidecar", "operator", "agent")
        for path in directory.glob(f"{name}-*.tar")
    )
