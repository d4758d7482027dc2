#!/usr/bin/env bash
# Build the test control plane from the Go module proxy with this machine's Go toolchain:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and the node's kubelet and
# kube-proxy at the versions pinned in go.mod beside this script, and helm and coredns at
# HELM_VERSION and COREDNS_VERSION below.
#
# Binaries go to ${A11I_CACHE:-$HOME/.cache/a11i}/bin/k8s-<version>/, outside the checkout, so
# every clone on this machine shares them. A binary is built only when it is absent or was built
# from another pinned version or recipe (a stamp file beside it says which), so a warm run only
# reads a few small files. The bin directory is the one line this script prints on stdout; progress
# and timings go to stderr.
#
#   tools/cluster/build.sh              build what is missing, print the bin directory
#   tools/cluster/build.sh --force      rebuild everything
#   tools/cluster/build.sh --print-dir  print the bin directory, build nothing
#   tools/cluster/build.sh --check      print it, and exit 3 when something would be built
#
# See docs/cluster.md.
set -euo pipefail

# Helm is not part of the module below (its dependency graph would move Kubernetes' own): it is
# built from its own go.mod with `go install`. v3.19 is the Helm line built on the v0.34 client
# libraries, the same minor release as the control plane.
HELM_VERSION=v3.19.5
# Cluster DNS for the test node, built from its own go.mod like Helm: the CoreDNS release kubeadm
# v1.34 deploys (cmd/kubeadm/app/constants: CoreDNSVersion).
COREDNS_VERSION=v1.12.1
# Bump when the way a binary is built changes (flags below): the stamps then no longer match and
# the next run rebuilds everything.
RECIPE=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

force=0
print_only=0
check_only=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-dir) print_only=1 ;;
    --check) check_only=1 ;;
    -h | --help)
      sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "build.sh: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

# The pinned versions, read from go.mod (the single place they are written) without starting Go,
# so that the warm path stays fast.
pinned() {
  awk -v mod="$1" '$1 == mod && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"
}
K8S_VERSION="$(pinned k8s.io/kubernetes)"
ETCD_VERSION="$(pinned go.etcd.io/etcd/server/v3)"
if [[ -z "$K8S_VERSION" || -z "$ETCD_VERSION" ]]; then
  echo "build.sh: cannot read the pinned versions from $here/go.mod" >&2
  exit 1
fi

bin_dir="${A11I_CACHE:-$HOME/.cache/a11i}/bin/k8s-${K8S_VERSION}"
if ((print_only)); then
  echo "$bin_dir"
  exit 0
fi

# name, what it is built from (the stamp's content)
targets=(
  "etcd go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  "kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}"
  "kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager@${K8S_VERSION}"
  "kubectl k8s.io/kubernetes/cmd/kubectl@${K8S_VERSION}"
  "kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler@${K8S_VERSION}"
  "kubelet k8s.io/kubernetes/cmd/kubelet@${K8S_VERSION}"
  "kube-proxy k8s.io/kubernetes/cmd/kube-proxy@${K8S_VERSION}"
  "helm helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  "coredns github.com/coredns/coredns@${COREDNS_VERSION}"
)

stamp_of() { # source
  echo "$1 recipe=$RECIPE"
}
up_to_date() { # name source
  [[ -x "$bin_dir/$1" && -f "$bin_dir/.$1.stamp" && "$(<"$bin_dir/.$1.stamp")" == "$(stamp_of "$2")" ]]
}

find_missing() {
  missing=()
  local target name source
  for target in "${targets[@]}"; do
    read -r name source <<<"$target"
    if ((force)) || ! up_to_date "$name" "$source"; then
      missing+=("$target")
    fi
  done
}
find_missing
if ((${#missing[@]} == 0)); then
  echo "$bin_dir"
  exit 0
fi
if ((check_only)); then
  for target in "${missing[@]}"; do
    echo "build.sh: ${target%% *} is missing or out of date (${target#* })" >&2
  done
  echo "$bin_dir"
  exit 3
fi

command -v go >/dev/null || {
  echo "build.sh: the Go toolchain is needed to build the test control plane (apt-get install golang-go, or https://go.dev/dl)" >&2
  exit 1
}
mkdir -p "$bin_dir"
# One build at a time per cache (make cluster-bins and a test run may race on a clean machine).
exec 9>"$bin_dir/.lock"
flock 9
if ((!force)); then
  find_missing # what the build we waited for left to do
fi

# Static, reproducible binaries like the upstream release builds: no cgo, no local paths, no VCS
# stamp of this checkout, symbols stripped.
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GOWORK=off
build_flags=(-trimpath)

# Without these the servers report v0.0.0-master, and Helm's kubeVersion checks fail against them.
# The source is the module zip, unchanged, so the tree is "clean"; the commit is not known from the
# module proxy and is left empty; the build date is the release's time on the proxy, so that two
# builds of one release are identical.
k8s_release_time="$(cd "$here" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
k8s_minor="${K8S_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
  k8s_ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
  k8s_ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
  k8s_ldflags+=" -X ${pkg}.buildDate=${k8s_release_time}"
done
# etcd's version is a constant in its source; only its commit would need a flag (unknown here).
etcd_ldflags="-s -w"
# What Helm's own Makefile sets: its version, and the Kubernetes version it assumes when it renders
# without a cluster (that of its client libraries, v0.34 → 1.34).
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

echo "build.sh: building into $bin_dir with $(go version)" >&2
total_start=$SECONDS
for target in "${missing[@]}"; do
  read -r name source <<<"$target"
  package="${source%@*}"
  start=$SECONDS
  tmp="$bin_dir/.$name.tmp"
  rm -f "$tmp" "$bin_dir/.$name.stamp"
  case "$name" in
    helm | coredns)
      # `go install pkg@version` builds in the tool's own module; GOBIN must be a directory, so
      # build into a private one and move the binary into place.
      ldflags="$helm_ldflags"
      [[ "$name" == coredns ]] && ldflags="-s -w"
      gobin="$(mktemp -d "$bin_dir/.gobin.XXXXXX")"
      (cd "$bin_dir" && GOBIN="$gobin" go install "${build_flags[@]}" -ldflags "$ldflags" "$source")
      mv "$gobin/$name" "$tmp"
      rmdir "$gobin"
      ;;
    etcd)
      (cd "$here" && go build "${build_flags[@]}" -ldflags "$etcd_ldflags" -o "$tmp" "$package")
      ;;
    *)
      (cd "$here" && go build "${build_flags[@]}" -ldflags "$k8s_ldflags" -o "$tmp" "$package")
      ;;
  esac
  mv -f "$tmp" "$bin_dir/$name"
  stamp_of "$source" >"$bin_dir/.$name.stamp"
  echo "build.sh: $name ($source) built in $((SECONDS - start)) s" >&2
done
echo "build.sh: done in $((SECONDS - total_start)) s" >&2
echo "$bin_dir"
