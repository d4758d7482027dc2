"""``python -m a11i``: the ``a11i`` command."""

from a11i.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
