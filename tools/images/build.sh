#!/usr/bin/env bash
# Build the project's images without Docker, for the test node: buildah (Debian) builds
# Dockerfile.sidecar and Dockerfile.operator as written, on a base made here, and saves each as an
# archive that `ctr images import` takes, under the chart's default names.
#
#   tools/images/build.sh            build what is missing, print the archive directory
#   tools/images/build.sh --check    exit 3 (and say what) when something would be built
#
# Docker Hub cannot be reached, so the base is Debian bookworm with Debian's python3 (3.11, the
# line the Dockerfiles' python:3.11.x-slim-bookworm carries), made by mmdebstrap from the apt
# mirror this machine uses and passed as --build-arg BASE_IMAGE. The builder stage needs PyPI and
# the npm registry, through this machine's pip configuration and CA bundle (mounted read-only
# into the build, never into the image).
#
# Each archive's name carries a hash of its inputs (the Debian images' recipes and package lists;
# the Dockerfile, the files the build context lets in and the base's hash), so a warm run only
# hashes a few hundred files. Besides the two images: the base under the python image name
# examples/agent-deployment.yaml uses, Debian's redis-server under the chart's Redis name, and
# an agent image for the end-to-end tests: the base with the official openai SDK (the version
# the example pins) preinstalled in /opt/agent, since pods cannot reach PyPI to install it.
# Archives go to ${A11I_CACHE:-~/.cache/a11i}/images/. See docs/images.md.
set -euo pipefail

check_only=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${A11I_CACHE:-$HOME/.cache/a11i}/images"
# The chart's defaults (values.yaml image.*.repository, tag = Chart.yaml appVersion).
version="$(awk -F'"' '/^appVersion:/ { print $2 }' "$root/charts/a11i/Chart.yaml")"
SIDECAR_IMAGE="ghcr.io/a11i/sidecar:${version}"
OPERATOR_IMAGE="ghcr.io/a11i/operator:${version}"
# Bump when the recipe below changes.
RECIPE=1
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
MIRROR="${A11I_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

hash_text() { sha256sum | cut -c1-16; }
base_hash="$(printf '%s\n' "$RECIPE" "$SUITE" "$BASE_PACKAGES" | hash_text)"
BASE_IMAGE="localhost/a11i-base:${SUITE}-${base_hash}"
# What the build context lets in (.dockerignore is an allow-list of these), tracked by git or
# not, in a stable order.
context_hash() { # dockerfile
  (
    cd "$root"
    {
      printf '%s\n' "$RECIPE" "$base_hash" "$version"
      sha256sum "$1" .dockerignore pyproject.toml README.md docker/install.sh
      "$root/tools/native/build.sh" --hash # the compact tokenizer's source, as its wheel is keyed
      find a11i -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
        ! -path 'a11i/sidecar/data/encodings/*' ! -path 'a11i/dashboard/static/vendor/*' \
        ! -path 'a11i/dashboard/.assets/*' -print0 | sort -z | xargs -0 sha256sum
    } | hash_text
  )
}
# The base also stands in for the python image examples/agent-deployment.yaml names.
PYTHON_IMAGE="docker.io/library/python:3.11-slim-bookworm"
python_archive="$out/python-${base_hash}.tar"
# The chart's bundled Redis (values.yaml redis.image): Debian's redis-server (7.0) on bookworm,
# under the name the chart's default names; it runs `redis-server` from PATH like the official
# image's entry point would.
REDIS_IMAGE="docker.io/library/redis:7.4"
REDIS_PACKAGES=redis-server
redis_hash="$(printf '%s\n' "$RECIPE" "$SUITE" "$REDIS_PACKAGES" | hash_text)"
redis_archive="$out/redis-${redis_hash}.tar"
# The e2e tests' agent: pods here cannot pip-install the SDK as the example does at start.
OPENAI_VERSION="$(grep -o "openai==[0-9.]*" "$root/examples/agent-deployment.yaml" | head -1 | cut -d= -f3)"
AGENT_IMAGE="a11i.local/agent:openai-${OPENAI_VERSION}"
agent_hash="$(printf '%s\n' "$RECIPE" "$base_hash" "$OPENAI_VERSION" | hash_text)"
agent_archive="$out/agent-${agent_hash}.tar"
# The compact tokenizer's wheel, which docker/install.sh installs into the sidecar from
# native/wheels/ (its source is in the context hash above).
if ((check_only)); then
  "$root/tools/native/build.sh" --check >/dev/null || { echo "$out"; exit 3; }
else
  "$root/tools/native/build.sh" >/dev/null
fi
sidecar_archive="$out/sidecar-$(context_hash Dockerfile.sidecar).tar"
operator_archive="$out/operator-$(context_hash Dockerfile.operator).tar"

missing=()
[[ -f "$python_archive" ]] || missing+=(python)
[[ -f "$redis_archive" ]] || missing+=(redis)
[[ -f "$sidecar_archive" ]] || missing+=(sidecar)
[[ -f "$operator_archive" ]] || missing+=(operator)
[[ -f "$agent_archive" ]] || missing+=(agent)
if ((${#missing[@]} == 0)); then
  echo "$out"
  exit 0
fi
if ((check_only)); then
  echo "build.sh: image(s) to build: ${missing[*]} (tools/images/build.sh)" >&2
  echo "$out"
  exit 3
fi
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || {
    echo "build.sh: $tool is needed (make node-system)" >&2
    exit 1
  }
done
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

# The builds run as this machine's root with its network (no CNI bridge, no rules left behind)
# and chroot isolation; pip's configuration and the CA bundle it names come in read-only.
mounts=()
for file in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
  [[ -f "$file" ]] && mounts+=(--volume "$file:$file:ro")
done
build_opts=(--isolation chroot --network host --pull=never --layers=false "${mounts[@]}")

debian_image() { # name packages [cmd]
  local start=$SECONDS rootfs container
  buildah inspect --type image "$1" >/dev/null 2>&1 && return 0
  rootfs="$(mktemp "$out/.rootfs.XXXXXX.tar")"
  echo "build.sh: making $1 with mmdebstrap ($SUITE: $2)" >&2
  mmdebstrap --quiet --variant=minbase --include="$2" \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$rootfs" "$MIRROR" >&2
  container="$(buildah from scratch)"
  buildah add --quiet "$container" "$rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 ${3:+--cmd "$3"} "$container"
  buildah commit --quiet --rm "$container" "$1" >/dev/null
  rm -f "$rootfs"
  echo "build.sh: $1 made in $((SECONDS - start)) s" >&2
}
debian_image "$BASE_IMAGE" "$BASE_PACKAGES" python3

save() { # image name archive
  local tmp="$3.tmp"
  rm -f "$tmp"
  buildah push --quiet "$1" "docker-archive:$tmp:$2" >&2
  mv -f "$tmp" "$3"
  # Older archives of this image are stale now.
  find "$out" -maxdepth 1 -name "$(basename "${3%-*}")-*.tar" ! -path "$3" -delete
}
[[ -f "$python_archive" ]] || save "$BASE_IMAGE" "$PYTHON_IMAGE" "$python_archive"
if [[ ! -f "$redis_archive" ]]; then
  debian_image "localhost/a11i-redis:${SUITE}-${redis_hash}" "$REDIS_PACKAGES"
  save "localhost/a11i-redis:${SUITE}-${redis_hash}" "$REDIS_IMAGE" "$redis_archive"
fi

build() { # dockerfile image archive
  local start=$SECONDS
  echo "build.sh: building $2 from $1 on $BASE_IMAGE" >&2
  (cd "$root" && buildah bud --quiet "${build_opts[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "$1" -t "$2" .) >&2
  save "$2" "$2" "$3"
  echo "build.sh: $2 built in $((SECONDS - start)) s ($(du -m "$3" | cut -f1) MiB)" >&2
}
if [[ ! -f "$agent_archive" ]]; then
  start=$SECONDS
  echo "build.sh: building $AGENT_IMAGE (openai==$OPENAI_VERSION) on $BASE_IMAGE" >&2
  container="$(buildah from --quiet --pull=never "$BASE_IMAGE")"
  buildah run --isolation chroot --network host "${mounts[@]}" "$container" -- sh -ec "
    python3 -m venv /opt/agent
    /opt/agent/bin/pip install --quiet --no-cache-dir 'openai==$OPENAI_VERSION'
    /opt/agent/bin/python -c 'import openai'" >&2
  buildah config --env PATH=/opt/agent/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 "$container"
  buildah commit --quiet --rm "$container" "$AGENT_IMAGE" >/dev/null
  save "$AGENT_IMAGE" "$AGENT_IMAGE" "$agent_archive"
  echo "build.sh: $AGENT_IMAGE built in $((SECONDS - start)) s" >&2
fi
[[ -f "$sidecar_archive" ]] || build Dockerfile.sidecar "$SIDECAR_IMAGE" "$sidecar_archive"
[[ -f "$operator_archive" ]] || build Dockerfile.operator "$OPERATOR_IMAGE" "$operator_archive"
echo "$out"
