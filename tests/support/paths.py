"""Where the tests find the checkout's files: one place, whatever a test module's depth."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The checkout's root folder.
ROOT: Final = Path(__file__).resolve().parents[2]
#: Test data shared by unit, integration and benchmark code (transcripts, price lists, rules).
DATA: Final = ROOT / "tests" / "data"
#: Agent transcripts the optimizer, the scrubber and the metrics are tried on.
TRANSCRIPTS: Final = DATA / "transcripts"
#: The offline tiktoken files ``make encodings`` installs into the package.
ENCODINGS: Final = ROOT / "a11i" / "sidecar" / "data" / "encodings"
