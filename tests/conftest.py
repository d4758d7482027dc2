"""Shared test settings: every test module may rely on the offline tiktoken encodings."""

from __future__ import annotations

import pytest

from tests.support.paths import ENCODINGS


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [
        n for n in ("cl100k_base", "o200k_base") if not (ENCODINGS / f"{n}.tiktoken").is_file()
    ]
    if missing:
        raise pytest.UsageError(
            f"tiktoken encodings {missing} are missing from {ENCODINGS}: "
            "run `make encodings` (python -m a11i.sidecar.encodings fetch) first"
        )
