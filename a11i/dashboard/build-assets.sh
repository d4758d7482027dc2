#!/usr/bin/env bash
# Fetches the pinned chart library (uPlot: version and integrity hash in package-lock.json) from
# the npm registry, verifies it and writes its dist files into static/vendor/ (git-ignored),
# which the dashboard serves. Python's standard library only: no npm, no package scripts.
# Does nothing when the pinned files are already there. See assets.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/assets.py" "$@"
