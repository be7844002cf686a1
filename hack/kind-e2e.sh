#!/usr/bin/env bash
# The cluster and chart tiers against a kind cluster, on a machine with a Docker engine:
# create the cluster, build and load the image, install the chart, run the tests through
# KUBECONFIG (the same tests `make test` runs on the local control plane).
#   KIND_CLUSTER=batchpredict-e2e KEEP_CLUSTER=1 make kind-e2e
# Not run in our CI (no Docker there). Exit codes: 2 a tool is missing; else pytest's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-batchpredict-e2e}"
NAMESPACE=batchpredict-system
cd "$ROOT"

for tool in docker kind; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: make kind-e2e needs '$tool' on PATH (and a running Docker engine)" >&2
        exit 2
    fi
done
helm="$(bash hack/helm/build.sh | tail -1)"
# The image as `make images` builds it (mmdebstrap + umoci, as root), loaded from its OCI archive.
image_dir="$(PYTHON="$ROOT/.venv/bin/python" bash images/build.sh | tail -1)"
image="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ref"])' "$image_dir/image.json")"

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --wait 180s
fi
if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    trap 'kind delete cluster --name "$CLUSTER"' EXIT
fi
kind load image-archive "$image_dir/batchpredict.oci.tar" --name "$CLUSTER"
export KUBECONFIG="$ROOT/.cluster/kind-$CLUSTER.kubeconfig"
mkdir -p "$(dirname "$KUBECONFIG")"
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

# The chart as a platform team installs it, with the image just built (never pulled). It
# watches only its own namespace so the tests' own operators and releases are undisturbed.
"$helm" upgrade --install batchpredict charts/batchpredict --namespace "$NAMESPACE" \
    --create-namespace --set image.pullPolicy=Never --set-json "watchNamespaces=[\"$NAMESPACE\"]" \
    --wait --timeout 5m
"$helm" status batchpredict --namespace "$NAMESPACE"

# The cluster, operator and chart tiers, against kind (the tests start no local cluster when
# KUBECONFIG is set); BATCHPREDICT_IMAGE tells the chart tier which image to install.
BATCHPREDICT_IMAGE="$image" "$ROOT/.venv/bin/pytest" -ra -m "cluster or chart" tests
