#!/usr/bin/env bash
# Build helm from the Go module proxy into a cache outside the repository, keyed by version:
#   ${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}/helm-<version>/helm
# Prints the binary's path on its last line. Does nothing when it is already there.
#
# The default Kubernetes version helm assumes for `template` and `lint` (Capabilities.KubeVersion)
# is set by ldflags to the local control plane's (hack/k8s/build.sh), as helm's own Makefile does
# from its client-go version; callers may still pass --kube-version.
#
# Exit codes: 0 built or cached; 2 no usable Go toolchain; 3 the build failed (log kept).
set -euo pipefail

# Latest helm v3 on the module proxy (`go list -m -versions helm.sh/helm/v3`); its client-go is
# v0.37, the same minor as the Kubernetes we test against.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBE_VERSION="${HELM_KUBE_VERSION:-v1.37.2}"
GO="${GO:-go}"
CACHE="${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}"
DEST="$CACHE/helm-$HELM_VERSION"
BIN="$DEST/helm"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
if ! command -v "$GO" >/dev/null 2>&1; then
    echo "error: no Go toolchain ('$GO' not on PATH); install Go >= 1.26 to build helm," \
        "or put a helm $HELM_VERSION binary at $BIN" >&2
    exit 2
fi

export GOTOOLCHAIN=local CGO_ENABLED=0
kmajor="${KUBE_VERSION#v}"; kmajor="${kmajor%%.*}"
kminor="${KUBE_VERSION#v*.}"; kminor="${kminor%%.*}"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=$kmajor -X $pkg.k8sVersionMinor=$kminor"
done

mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/build.XXXXXX")"
log="$DEST/build.log"
trap 'rm -rf "$tmp"' EXIT
echo "building helm $HELM_VERSION (default kube version $KUBE_VERSION) into $DEST (log: $log)" >&2
start=$SECONDS
# go install (not build) because helm's go.mod has no replaces: module mode outside any module.
if ! GOBIN="$tmp" "$GO" install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "error: building helm failed; full log in $log" >&2
    exit 3
fi
mv -f "$tmp/helm" "$BIN"
echo "built in $((SECONDS - start)) s" >&2
echo "$BIN"
