#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the Go
# module proxy (wrapper module in this directory) into a cache outside the repository:
#   ${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}/k8s-<version>/bin/
# Prints the bin directory on its last line. Does nothing when every binary is already there.
#
# Exit codes: 0 built or cached; 2 no usable Go toolchain; 3 the build failed (log kept).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Must match the require in go.mod; the replaces use the matching v0.X.Y staging tags.
K8S_VERSION="v1.37.2"
GO="${GO:-go}"
CACHE="${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}"
DEST="$CACHE/k8s-$K8S_VERSION"
BIN="$DEST/bin"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

missing=0
for b in "${COMMANDS[@]}" etcd; do
    [[ -x "$BIN/$b" ]] || missing=1
done
if [[ $missing == 0 ]]; then
    echo "$BIN"
    exit 0
fi

if ! command -v "$GO" >/dev/null 2>&1; then
    echo "error: no Go toolchain ('$GO' not on PATH); install Go >= 1.26 to build the" \
        "control plane, or put prebuilt binaries in $BIN" >&2
    exit 2
fi
need_minor="$(sed -n 's/^go 1\.\([0-9]*\).*/\1/p' "$HERE/go.mod")"
have="$(GOTOOLCHAIN=local "$GO" env GOVERSION 2>/dev/null || true)"
have_minor="$(sed -n 's/^go1\.\([0-9]*\).*/\1/p' <<<"$have")"
if [[ -z "$have_minor" || "$have_minor" -lt "$need_minor" ]]; then
    echo "error: Go '$have' is too old: Kubernetes $K8S_VERSION needs go1.$need_minor or newer" >&2
    exit 2
fi

export GOTOOLCHAIN=local CGO_ENABLED=0
major="${K8S_VERSION#v}"; major="${major%%.*}"
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/build.XXXXXX")"
log="$DEST/build.log"
trap 'rm -rf "$tmp"' EXIT
echo "building Kubernetes $K8S_VERSION and etcd into $BIN (cold: ~20 min on 2 cores; log: $log)" >&2
start=$SECONDS
cd "$HERE"
# One go build call for every command, so they share compiled packages.
if ! "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    "${COMMANDS[@]/#/k8s.io/kubernetes/cmd/}" go.etcd.io/etcd/server/v3 >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "error: building the control plane failed; full log in $log" >&2
    exit 3
fi
# go names the etcd main package (module root go.etcd.io/etcd/server/v3) "server".
mv "$tmp/server" "$tmp/etcd"
mkdir -p "$BIN"
for b in "${COMMANDS[@]}" etcd; do
    mv -f "$tmp/$b" "$BIN/$b"
done
echo "built in $((SECONDS - start)) s" >&2
echo "$BIN"
