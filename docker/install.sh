#!/usr/bin/env bash
# Install a11i into a fresh virtual environment: the one install step of both images.
#
#   docker/install.sh PREFIX [--operator] [--encodings] [--dashboard-assets]
#
# Dockerfile.sidecar and Dockerfile.operator run it in their builder stage (PREFIX=/opt/a11i);
# tests/integration/test_images.py runs it the same way into a temporary folder and then starts
# the images' ENTRYPOINT/CMD from the result. It
#   1. stages the source of the wheel (pyproject.toml, README.md, a11i/) from
#      the folder above this script into a scratch folder, without any encoding files or byte
#      code a checkout may hold, so a dev checkout and a Docker build context give the same wheel;
#   2. creates the venv PREFIX with the python3 on PATH (the base image's);
#   3. builds the project's wheel and installs it, without the dev extras; with --operator (the
#      operator image) with the `operator` extra (kopf, cryptography, kubernetes), which the
#      sidecar does without, less the kubernetes client's unused asyncio package;
#   4. with --encodings (the sidecar image): installs the compact tokenizer's wheel from
#      native/wheels/ (tools/native/build.sh builds it; a warning and tiktoken without it), fetches
#      the tiktoken encodings from the pinned litellm wheel on PyPI into the installed package's
#      data folder, verifies their SHA-256 against tiktoken's own, and proves the installed
#      sidecar loads them with no cache and no network;
#   5. with --dashboard-assets (the operator image, which serves `a11i dashboard`): fetches the
#      dashboard's chart library (uPlot, pinned with its hash in package-lock.json) from the npm
#      registry into the installed package, verified (a11i/dashboard/assets.py);
#   6. removes pip and setuptools from PREFIX (nothing at run time installs anything) and makes
#      PREFIX readable, not writable, by the image's non-root user.
# Needs network access to PyPI (the package index pip is configured with) while it runs, never
# afterwards (and to the npm registry with --dashboard-assets). See docs/images.md.
set -euo pipefail

usage() {
  sed -n '4p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}

prefix=""
encodings=0
assets=0
operator=0
for arg in "$@"; do
  case "$arg" in
    --operator) operator=1 ;;
    --encodings) encodings=1 ;;
    --dashboard-assets) assets=1 ;;
    -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option: $arg" >&2; usage ;;
    *) [[ -z "$prefix" ]] || usage; prefix="$arg" ;;
  esac
done
[[ -n "$prefix" ]] || usage
if [[ -e "$prefix" ]]; then
  echo "install.sh: $prefix exists; give a fresh folder" >&2
  exit 1
fi

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

step() { printf 'install.sh: %s\n' "$*" >&2; }

# 1. The wheel's source only. Encoding files in a checkout (make encodings) must not ride along
# in the wheel: the image gets the ones fetched and verified below, every build.
step "staging the source from $src"
mkdir "$scratch/src"
cp -R "$src/pyproject.toml" "$src/README.md" "$src/a11i" "$scratch/src/"
rm -rf "$scratch/src/a11i/sidecar/data/encodings" "$scratch/src/a11i/dashboard/static/vendor" \
  "$scratch/src/a11i/dashboard/.assets"
find "$scratch/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

# 2. The venv. -I below: isolated mode, so neither PYTHON* variables nor the current folder (a
# checkout holds an `a11i` package too) decide what is imported.
step "creating the venv $prefix with $("$python" --version)"
"$python" -m venv "$prefix"
py=("$prefix/bin/python" -I)

# 3. The project, without dev extras; the build dependencies live in pip's isolated build env.
step "building and installing the a11i wheel"
"${py[@]}" -m pip wheel --quiet --no-cache-dir --no-deps --wheel-dir "$scratch/wheels" \
  "$scratch/src"
wheel=("$scratch"/wheels/a11i-*.whl)
if ((operator)); then
  "${py[@]}" -m pip install --quiet --no-cache-dir "${wheel[0]}[operator]"
  # The kubernetes client ships an asyncio twin of its whole API (kubernetes/aio, ~68 MB, more
  # than half the client) that nothing imports: a11i.operator.kube runs the synchronous client
  # off the event loop, and kopf speaks to the API server itself.
  step "removing the kubernetes client's unused asyncio package"
  rm -rf "$prefix"/lib/python*/site-packages/kubernetes/aio
else
  "${py[@]}" -m pip install --quiet --no-cache-dir "${wheel[0]}"
fi

# 4. The encodings, into the installed package (a11i.sidecar.encodings.PACKAGE_DIR), and the
# compact tokenizer that counts with them (native/bpe: a Rust extension, built before the image by
# tools/native/build.sh into native/wheels/; without it the sidecar counts with tiktoken, ~60 MiB
# more per pod). `check` loads them exactly as the sidecar does, with tiktoken's cache folder
# switched off.
if ((encodings)); then
  bpe=("$src"/native/wheels/a11i_bpe-*.whl)
  if [[ -f "${bpe[0]}" ]]; then
    step "installing the compact tokenizer $(basename "${bpe[0]}")"
    "${py[@]}" -m pip install --quiet --no-cache-dir --no-deps --no-index "${bpe[0]}"
  else
    step "WARNING: no native/wheels/a11i_bpe-*.whl (tools/native/build.sh makes it): the sidecar" \
      "will count with tiktoken, ~60 MiB more resident per pod"
  fi
  step "fetching and verifying the tiktoken encodings"
  "${py[@]}" -m a11i.sidecar.encodings fetch --wheel-dir "$scratch/litellm"
  TIKTOKEN_CACHE_DIR="" "${py[@]}" -m a11i.sidecar.encodings check
fi

# 5. The dashboard's chart library, into the installed package, checked against the lock's hash.
if ((assets)); then
  step "fetching and verifying the dashboard's chart library"
  "${py[@]}" -m a11i.dashboard.assets
  "${py[@]}" -m a11i.dashboard.assets --check
fi

# 6. Nothing installs at run time; the image's user reads PREFIX but cannot change it.
step "removing pip and setuptools from the venv"
"${py[@]}" -m pip uninstall --quiet --yes pip setuptools
chmod -R u+rwX,go+rX,go-w "$prefix"
"$prefix/bin/a11i" --version
