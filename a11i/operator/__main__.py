"""``python -m a11i.operator``: run the operator (the same as ``a11i operator``)."""

from __future__ import annotations

import sys

from a11i.operator.run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
