"""A real ``redis-server`` for the tests: a free loopback port, a temporary directory.

It can be stopped and started again on the same port, which is how the tests take Redis away
from a running sidecar and give it back. No fakes: the Lua scripts run in the real Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process. ``appendonly``: keep the data across a restart, as a
    deployed Redis with persistence does."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        binary: str = "redis-server",
        password: str = "",
        options: Sequence[str] = (),
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeError(f"{binary} is not installed")
        self.binary = found
        self.appendonly = appendonly
        #: Required of every client (``--requirepass``) when set; ``url`` carries it.
        self.password = password
        #: More ``redis-server`` arguments (``--cluster-enabled yes``, ``--replicaof …``).
        self.options = tuple(options)
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="a11i-redis-")
        self.dir = Path(self._dir.name)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.process is not None:
            raise RuntimeError("redis-server is already running")
        # Fsync every write so that a stop right after a write keeps it (appendonly only).
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                *(["--requirepass", self.password] if self.password else []),
                "--dir",
                str(self.dir),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (Redis flushes the append-only file on the way out)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class RedisClusterServers:
    """A real Redis Cluster of ``primaries`` ``redis-server`` processes (no replicas), created
    with ``redis-cli --cluster create``; ``url`` names its first node, as a client is given."""

    def __init__(self, primaries: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed")
        self.nodes = [
            RedisServer(
                options=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    # Chosen here: the default (port + 10000) may lie past 65535.
                    "--cluster-port",
                    str(free_port()),
                )
            )
            for _ in range(primaries)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._create(timeout)
        except BaseException:
            self.close()
            raise

    def _create(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state(node) == "ok" for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster was not ok within {timeout}s")

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    @staticmethod
    def _state(node: RedisServer) -> str:
        reply = subprocess.run(
            ["redis-cli", "-p", str(node.port), "cluster", "info"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in reply.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""


class RedisSentinelServers:
    """A primary, its replica and three sentinels (``redis-server --sentinel``) watching them
    as ``master``; ``url`` names the sentinels, as ``A11I_REDIS_MODE=sentinel`` takes them."""

    def __init__(self, master: str = "mymaster") -> None:
        self.master = master
        self.primary = RedisServer(appendonly=True)
        self.replica = RedisServer(
            appendonly=True, options=("--replicaof", "127.0.0.1", str(self.primary.port))
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="a11i-sentinel-")
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports) + "/0"

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout: float) -> None:
        self.primary.start()
        self.replica.start()
        for index, port in enumerate(self.sentinel_ports):
            folder = Path(self._dir.name) / str(index)
            folder.mkdir()
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {folder}\n"
                f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.master} 1000\n"
                f"sentinel failover-timeout {self.master} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [self.primary.binary, str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._replicated() and all(self._sees_master(port) for port in self.sentinel_ports):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the sentinels did not settle within {timeout}s")

    def primary_port(self) -> int | None:
        """The port of the primary the sentinels name now (None: none answers)."""
        for port in self.sentinel_ports:
            reply = _cli(port, "sentinel", "get-master-addr-by-name", self.master).split()
            if len(reply) == 2 and reply[1].isdigit():
                return int(reply[1])
        return None

    def kill_primary(self) -> None:
        """SIGKILL the primary: no shutdown, no last write to the replica."""
        process, self.primary.process = self.primary.process, None
        if process is not None:
            process.kill()
            process.wait()

    def close(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sentinels = []
        self.primary.close()
        self.replica.close()
        self._dir.cleanup()

    def _replicated(self) -> bool:
        return "master_link_status:up" in _cli(self.replica.port, "info", "replication")

    def _sees_master(self, port: int) -> bool:
        return _cli(port, "sentinel", "get-master-addr-by-name", self.master).split()[-1:] == [
            str(self.primary.port)
        ]


def _cli(port: int, *command: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout
