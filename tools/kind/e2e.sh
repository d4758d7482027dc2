#!/usr/bin/env bash
# The end-to-end path on a real cluster, for machines with a Docker engine (make e2e-kind):
#   1. kind at KIND_VERSION, `go install`ed into ~/.cache/a11i/bin (the Go module proxy);
#   2. a kind cluster from tools/kind/kind-config.yaml;
#   3. both images built with docker (Dockerfile.sidecar, Dockerfile.operator) and `kind load`ed;
#   4. charts/a11i installed with helm, pointed at those images;
#   5. examples/ applied (namespace `agents`, labelled for injection);
#   6. waits until the agent pod runs with two containers (the agent and the injected a11i-proxy)
#      and until the sidecar has metered one of its calls (/a11i/budget through kubectl exec).
# Without a Docker engine it prints "skipped: no Docker engine (docker info failed)" and exits 0.
#
#   tools/kind/e2e.sh              run it; the cluster is deleted at the end
#   A11I_KIND_KEEP=1 tools/kind/e2e.sh   keep the cluster to look around (kind delete cluster --name a11i-e2e)
#
# Settings: A11I_KIND_CLUSTER (a11i-e2e), KIND_NODE_IMAGE (kind's default), A11I_CACHE
# (~/.cache/a11i), A11I_KIND_TIMEOUT (seconds per wait, 300). See docs/e2e-kind.md.
set -euo pipefail

KIND_VERSION=v0.33.0
CLUSTER="${A11I_KIND_CLUSTER:-a11i-e2e}"
WAIT="${A11I_KIND_TIMEOUT:-300}"
TAG=kind
NAMESPACE=agents
RELEASE_NAMESPACE=a11i-system

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${A11I_CACHE:-$HOME/.cache/a11i}"
say() { printf 'e2e-kind: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# 0. A Docker engine, or nothing to do.
if ! command -v docker >/dev/null 2>&1 || ! timeout 20 docker info >/dev/null 2>&1; then
  echo "skipped: no Docker engine (docker info failed)"
  exit 0
fi

# 1. kind, pinned.
kind="$cache/bin/kind"
if ! "$kind" version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
  command -v go >/dev/null 2>&1 || die "Go is needed to install kind $KIND_VERSION"
  say "installing kind $KIND_VERSION into $cache/bin"
  mkdir -p "$cache/bin"
  GOBIN="$cache/bin" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi

# kubectl and helm: on PATH, else the ones tools/cluster/build.sh builds (docs/cluster.md).
if ! command -v kubectl >/dev/null 2>&1 || ! command -v helm >/dev/null 2>&1; then
  say "building kubectl and helm (tools/cluster/build.sh)"
  PATH="$(bash "$root/tools/cluster/build.sh"):$PATH"
fi

# 2. The cluster, deleted on exit unless A11I_KIND_KEEP is set.
kubeconfig="$(mktemp)"
export KUBECONFIG="$kubeconfig"
cleanup() {
  local code=$?
  if ((code != 0)); then
    say "state at failure:"
    kubectl get pods -A -o wide >&2 || true
    kubectl get events -n "$NAMESPACE" --sort-by=.lastTimestamp >&2 || true
  fi
  if [[ -z "${A11I_KIND_KEEP:-}" ]]; then
    "$kind" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    say "kept: KUBECONFIG=$kubeconfig ($kind delete cluster --name $CLUSTER)"
  fi
  [[ -n "${A11I_KIND_KEEP:-}" ]] || rm -f "$kubeconfig"
  exit "$code"
}
trap cleanup EXIT
if ! "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "creating the kind cluster $CLUSTER"
  "$kind" create cluster --name "$CLUSTER" --config "$root/tools/kind/kind-config.yaml" \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait "${WAIT}s"
fi
"$kind" export kubeconfig --name "$CLUSTER" --kubeconfig "$kubeconfig"

# 3. The images, built as the Dockerfiles say, loaded into the node (never pulled).
for image in sidecar operator; do
  say "building a11i/$image:$TAG"
  docker build --file "$root/Dockerfile.$image" --tag "a11i/$image:$TAG" "$root"
  "$kind" load docker-image --name "$CLUSTER" "a11i/$image:$TAG"
done

# 4. The chart (charts/a11i/values.yaml), with the images just loaded.
say "installing charts/a11i"
helm upgrade --install a11i "$root/charts/a11i" \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.operator.repository=a11i/operator --set "image.operator.tag=$TAG" \
  --set image.operator.pullPolicy=IfNotPresent \
  --set image.sidecar.repository=a11i/sidecar --set "image.sidecar.tag=$TAG" \
  --wait --timeout "${WAIT}s"

# 5. The examples, as their comments say. a11i.yaml and rate-card.yaml configure a sidecar and
# are no Kubernetes objects.
say "applying examples/"
kubectl apply -f "$root/examples/namespace.yaml"
for file in "$root"/examples/*.yaml; do
  case "$(basename "$file")" in
    namespace.yaml | a11i.yaml | rate-card.yaml) continue ;;
  esac
  kubectl apply -n "$NAMESPACE" -f "$file"
done

# 6. The agent pod runs with the injected sidecar, and the sidecar meters its calls.
say "waiting for the agent pod"
kubectl rollout status deployment/sre-agent -n "$NAMESPACE" --timeout "${WAIT}s"
pod="$(kubectl get pods -n "$NAMESPACE" -l app.kubernetes.io/name=sre-agent \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$pod" ]] || die "no running sre-agent pod"
# Native sidecars are init containers with restartPolicy Always; count them with the others.
containers="$(kubectl get pod "$pod" -n "$NAMESPACE" -o jsonpath='{range .spec.containers[*]}{.name}{"\n"}{end}{range .spec.initContainers[?(@.restartPolicy=="Always")]}{.name}{"\n"}{end}')"
count="$(grep -c . <<<"$containers" || true)"
((count == 2)) || die "pod $pod runs $count containers, not 2: $(tr '\n' ' ' <<<"$containers")"
grep -qx a11i-proxy <<<"$containers" || die "pod $pod has no a11i-proxy container"
say "pod $pod runs: $(tr '\n' ' ' <<<"$containers")"

say "waiting for a metered call"
budget_probe='import json, urllib.request as u
body = json.load(u.urlopen("http://127.0.0.1:11000/a11i/budget", timeout=5))
print(body.get("calls", {}).get("metered", 0), json.dumps(body))'
deadline=$((SECONDS + WAIT))
while :; do
  answer="$(kubectl exec -n "$NAMESPACE" "$pod" -c agent -- python -c "$budget_probe" 2>/dev/null || true)"
  metered="${answer%% *}"
  if [[ "$metered" =~ ^[0-9]+$ ]] && ((metered >= 1)); then
    say "metered: ${answer#* }"
    break
  fi
  ((SECONDS < deadline)) || die "no metered call within ${WAIT}s; last /a11i/budget: ${answer:-none}"
  sleep 5
done
echo "passed: the agent's calls go through the injected a11i sidecar in kind"
