#!/usr/bin/env bash
# Build the a11i_bpe wheel (native/bpe: the compact tokenizer, Rust) and put it in native/wheels/.
#
#   tools/native/build.sh           build when the source changed, copy the wheel, print its path
#   tools/native/build.sh --check   exit 3 (and say so) when a build would run
#   tools/native/build.sh --hash    print the hash of the crate's source (what a build is keyed by)
#
# Exit 4 when cargo is missing (make install then goes on without the extension, unless
# A11I_REQUIRE_NATIVE is set, as .ci/run does).
#
# One wheel (CPython's stable ABI, 3.11 and up) per hash of the crate's source, kept under
# ${A11I_CACHE:-~/.cache/a11i}/wheels/a11i-bpe-<hash>/, with cargo's build folder beside it
# (cargo-target/), so a warm run builds nothing and every clone shares the build. Needs cargo
# (a recent Rust, 1.95 here; ~/.cargo/bin is searched too) and maturin (the dev extra; $MATURIN, PATH,
# or this checkout's .venv), and crates.io for the first build. make install runs it and installs
# the wheel; tools/images/build.sh runs it and docker/install.sh installs the wheel into the
# sidecar image. docs/images.md, native/bpe/src/lib.rs.
set -euo pipefail

check_only=0
hash_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --hash) hash_only=1 ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
crate="$root/native/bpe"
cache="${A11I_CACHE:-$HOME/.cache/a11i}"
hash="$(cd "$crate" && cat Cargo.toml Cargo.lock pyproject.toml a11i_bpe.pyi src/*.rs | sha256sum | cut -c1-16)"
if ((hash_only)); then
  echo "$hash"
  exit 0
fi
out="$cache/wheels/a11i-bpe-$hash"
dest="$root/native/wheels"

if ! compgen -G "$out/a11i_bpe-*.whl" >/dev/null; then
  if ((check_only)); then
    echo "build.sh: the a11i_bpe wheel for source $hash would be built" >&2
    exit 3
  fi
  if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "build.sh: cargo not found: install Rust (https://rustup.rs) for the compact" \
      "tokenizer; without it the sidecar counts with tiktoken" >&2
    exit 4
  }
  maturin="${MATURIN:-$(command -v maturin || echo "$root/.venv/bin/maturin")}"
  [[ -x "$maturin" ]] || {
    echo "build.sh: maturin not found (pip install maturin, or make install)" >&2
    exit 1
  }
  mkdir -p "$cache/wheels"
  scratch="$(mktemp -d "$cache/wheels/.build.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  echo "build.sh: building the a11i_bpe wheel (source $hash)" >&2
  CARGO_TARGET_DIR="$cache/cargo-target" "$maturin" build --release --locked --quiet \
    --manifest-path "$crate/Cargo.toml" --out "$scratch" >&2
  rm -rf "$out"
  mv "$scratch" "$out"
  trap - EXIT
fi

wheel="$(compgen -G "$out/a11i_bpe-*.whl" | head -n1)"
mkdir -p "$dest"
if ! cmp -s "$wheel" "$dest/$(basename "$wheel")"; then
  rm -f "$dest"/a11i_bpe-*.whl
  cp "$wheel" "$dest/"
fi
echo "$dest/$(basename "$wheel")"
