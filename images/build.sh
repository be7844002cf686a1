#!/usr/bin/env bash
# Build the batchpredict image (operator + worker) with a Docker-compatible engine.
#   IMAGE=ghcr.io/batchpredict/batchpredict TAG=0.1.0 ENGINE=docker images/build.sh
# Exit codes: 0 built; 2 no container engine; 3 the build failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-ghcr.io/batchpredict/batchpredict}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")}"
ENGINE="${ENGINE:-}"
if [[ -z "$ENGINE" ]]; then
    for candidate in docker podman; do
        if command -v "$candidate" >/dev/null 2>&1; then ENGINE="$candidate"; break; fi
    done
fi
if [[ -z "$ENGINE" ]] || ! "$ENGINE" info >/dev/null 2>&1; then
    echo "error: no container engine: 'make images' needs a running Docker (or podman; set" \
        "ENGINE=...) to build $IMAGE:$TAG. None was found here, so no image was built." >&2
    exit 2
fi
echo "building $IMAGE:$TAG with $ENGINE" >&2
if ! "$ENGINE" build -f "$ROOT/images/Dockerfile" -t "$IMAGE:$TAG" "$ROOT"; then
    echo "error: building $IMAGE:$TAG failed" >&2
    exit 3
fi
echo "$IMAGE:$TAG"
