"""A Secret volume laid out as the kubelet's AtomicWriter lays it out, for key-rotation tests.

``<key> -> ..data/<key>``, ``..data -> ..<timestamp>``; an update writes a new timestamped
directory and swaps the ``..data`` symlink atomically (``rename``), which is what a sidecar
sees when a mounted Secret is rotated.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretVolume:
    """A directory written the way the kubelet's AtomicWriter writes a Secret volume."""

    def __init__(self, root: Path, data: dict[str, str]) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()
        self.update(data)
        for key in data:
            (root / key).symlink_to(Path("..data") / key)

    def update(self, data: dict[str, str]) -> None:
        self.generation += 1
        version = self.root / f"..2026_11_01_00_00_0{self.generation}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_text(value)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.root / "..data")
