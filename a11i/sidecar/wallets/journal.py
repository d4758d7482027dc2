"""A durable journal of the spend a Redis wallet settled while Redis was down (fail open).

Without it that spend lives only in the sidecar's memory: a sidecar killed before Redis comes
back would lose it. Each settlement is appended as one JSON line and fsynced before the call
returns; when Redis has taken it (the settle script remembers settled ids, so a replay is never
charged twice), its line is removed. A restarted sidecar replays what it finds.

The file lives beside the embedded wallet file (in a cluster, the sidecar's own emptyDir, which
survives a container restart). Several processes may share a directory: every read and write
holds an exclusive ``flock``, and a process removes only the lines it replayed. Blocking file
I/O: callers on an event loop run it on a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One settlement Redis has not received yet."""

    lease_id: str
    #: None: the current period of a Total wallet this sidecar never saw in Redis.
    period_start: float | None
    nanos: int


def journal_path(directory: Path, wallet_key: str) -> Path:
    """The journal of one wallet (``namespace`` or ``namespace/agent``) in ``directory``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", wallet_key)
    return directory / f"redis-spend-{safe}.jsonl"


class SpendJournal:
    """Append, read and remove settlements in one JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: JournalEntry) -> None:
        with self._locked() as file:
            file.write(_line(entry))
            file.flush()
            os.fsync(file.fileno())

    def entries(self) -> list[JournalEntry]:
        if not self.path.exists():
            return []
        with self._locked() as file:
            return list(_parse(file.read().splitlines()))

    def remove(self, lease_ids: Iterable[str]) -> None:
        """Drop the entries Redis has taken; the others (another process's) stay."""
        done = set(lease_ids)
        if not done or not self.path.exists():
            return
        with self._locked() as file:
            kept = [e for e in _parse(file.read().splitlines()) if e.lease_id not in done]
            file.seek(0)
            file.truncate()
            file.writelines(_line(entry) for entry in kept)
            file.flush()
            os.fsync(file.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                file.seek(0)
                yield file
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _line(entry: JournalEntry) -> str:
    fields = {"id": entry.lease_id, "period_start": entry.period_start, "nanos": entry.nanos}
    return json.dumps(fields) + "\n"


def _parse(lines: Iterable[str]) -> Iterator[JournalEntry]:
    for line in lines:
        try:
            raw = json.loads(line)
            start = raw["period_start"]
            entry = JournalEntry(
                str(raw["id"]), None if start is None else float(start), int(raw["nanos"])
            )
        except (ValueError, KeyError, TypeError):
            # A line cut by a crash mid-write: its settlement had not returned yet.
            log.warning("skipped an unreadable line of a spend journal")
            continue
        yield entry
