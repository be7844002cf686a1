#!/usr/bin/env bash
# Build Kueue's controller manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy into a
# cache outside the repository, keyed by version, with the module's CRDs and webhook manifests
# beside it:
#   ${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}/kueue-<version>/{kueue,crds/,webhook.yaml}
# Prints the directory on its last line. Does nothing when the binary is already there.
#
# Exit codes: 0 built or cached; 2 no usable Go toolchain; 3 the build failed (log kept).
set -euo pipefail

# v0.17.0 requires k8s.io/* v0.35 and controller-runtime v0.23: a client two minors behind the
# v1.37 API server of hack/k8s/build.sh, inside the supported skew. Its go.mod has no replaces,
# so `go install module@version` builds it exactly as released.
KUEUE_VERSION="${KUEUE_VERSION:-v0.17.0}"
GO="${GO:-go}"
CACHE="${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}"
DEST="$CACHE/kueue-$KUEUE_VERSION"
BIN="$DEST/kueue"

if [[ -x "$BIN" && -d "$DEST/crds" && -f "$DEST/webhook.yaml" ]]; then
    echo "$DEST"
    exit 0
fi
if ! command -v "$GO" >/dev/null 2>&1; then
    echo "error: no Go toolchain ('$GO' not on PATH); install Go >= 1.25 to build Kueue," \
        "or put a kueue $KUEUE_VERSION binary at $BIN" >&2
    exit 2
fi

export GOTOOLCHAIN=local CGO_ENABLED=0
ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
ldflags+=" -X sigs.k8s.io/kueue/pkg/version.BuildDate=1970-01-01"

mkdir -p "$DEST"
tmp="$(mktemp -d "$DEST/build.XXXXXX")"
log="$DEST/build.log"
trap 'rm -rf "$tmp"' EXIT
echo "building Kueue $KUEUE_VERSION into $DEST (cold: a few minutes on 2 cores; log: $log)" >&2
start=$SECONDS
cd "$tmp"  # outside any module: `go install m@v` and `go mod download m@v` need no go.mod
if ! GOBIN="$tmp" "$GO" install -trimpath -ldflags "$ldflags" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "error: building Kueue failed; full log in $log" >&2
    exit 3
fi
# The CRDs and webhook configurations come from the same module version as the binary.
src="$(GOFLAGS=-mod=mod "$GO" mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
mkdir -p "$tmp/crds"
cp "$src"/config/components/crd/bases/*.yaml "$tmp/crds/"
cp "$src/config/components/webhook/manifests.yaml" "$tmp/webhook.yaml"
chmod -R u+w "$tmp"
rm -rf "$DEST/crds"
mv "$tmp/crds" "$DEST/crds"
mv -f "$tmp/webhook.yaml" "$DEST/webhook.yaml"
mv -f "$tmp/kueue" "$BIN"
echo "built in $((SECONDS - start)) s" >&2
echo "$DEST"
