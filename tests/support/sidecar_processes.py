"""``a11i sidecar`` as real processes, for tests that need what only a process shows: signals,
exit codes, several sidecars sharing one wallet."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp

from tests.support.redis_server import free_port


class Sidecars:
    """``a11i sidecar`` processes started with shared settings."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, **env: str) -> str:
        """Start one with ``env`` over this environment; its URL once ``/a11i/readyz`` is 200."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "a11i.cli",
            "sidecar",
            env={**os.environ, "A11I_PORT": str(port), "A11I_LOG_LEVEL": "WARNING", **env},
        )
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(url + "/a11i/readyz") as response:
                        if response.status == 200:
                            return url
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the sidecar did not start")

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()  # a hung sidecar must not outlive its test
                await process.wait()
                raise
