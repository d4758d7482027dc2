#!/usr/bin/env bash
# Installs the pinned chart library (uPlot, package-lock.json) and copies its dist files into
# static/vendor/, which the dashboard serves. No install scripts run (--ignore-scripts); the
# node_modules folder is kept out of the tree (.assets/, git-ignored like static/vendor/).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$here/.assets"
mkdir -p "$work" "$here/static/vendor"
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
dist="$work/node_modules/uplot/dist"
cp "$dist/uPlot.iife.min.js" "$dist/uPlot.min.css" "$here/static/vendor/"
cp "$work/node_modules/uplot/LICENSE" "$here/static/vendor/uPlot.LICENSE"
echo "uPlot $(node -p "require('$work/node_modules/uplot/package.json').version") -> $here/static/vendor/"
