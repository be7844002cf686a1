#!/usr/bin/env bash
# Build the batchpredict image (operator + worker) without Docker or a registry:
#   1. a Debian 12 root filesystem from Debian packages (mmdebstrap --variant=minbase plus the
#      pinned packages of images/debian-packages.txt: Python 3.11 and nothing else);
#   2. the package's wheel and its pinned dependencies (constraints.txt, wheels only) installed
#      into the virtualenv /opt/batchpredict inside it, offline, by a pinned pip run from its
#      wheel (pip itself is not left in the image);
#   3. one layer, assembled into an OCI image with umoci (no base image), user 65532:65532;
#   4. an OCI archive (a tar of the OCI layout: `skopeo copy oci-archive:...`,
#      `ctr images import`, `podman load` take it).
# images/Dockerfile describes the same image for users with Docker.
#
# Output: $BATCHPREDICT_CACHE/images/<hash of the inputs>/ (default ~/.cache/batchpredict):
#   batchpredict.oci.tar, config.json (the OCI image config), rootfs/ (the image's filesystem,
#   which the local cluster's node agent runs containers from), image.json (ref, size, time),
#   debian-packages.lock (every Debian package in the image, with its version).
# The image is then "loaded" into this checkout's local runtime: .cluster/images/<ref> links to
# that directory. A second build with the same inputs only relinks (the cache).
# The last stdout line is the output directory. Needs root (mmdebstrap, chroot, umoci); installs
# mmdebstrap, umoci and runc with apt-get when missing.
#   IMAGE=ghcr.io/batchpredict/batchpredict TAG=0.1.0 images/build.sh
# Exit codes: 0 built (or cached); 2 a tool is missing and cannot be installed; 3 the build failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-ghcr.io/batchpredict/batchpredict}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")}"
REF="$IMAGE:$TAG"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP_VERSION=26.3
PYTHON="${PYTHON:-python3}"
CACHE="${BATCHPREDICT_CACHE:-$HOME/.cache/batchpredict}/images"

log() { echo "images: $*" >&2; }
fail() { echo "error: $*" >&2; exit "${2:-3}"; }

[[ $(id -u) == 0 ]] || fail "images/build.sh needs root (mmdebstrap, chroot and umoci run as root)" 2
missing=()
# runc: the local node agent runs the image with it (tests.harness.runc).
for tool in mmdebstrap:mmdebstrap umoci:umoci runc:runc; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
        || fail "apt-get install ${missing[*]} failed" 2
fi

# -- the cache key: every input of the image -----------------------------------------------------
inputs() {
    cd "$ROOT"
    printf '%s\n' images/build.sh images/debian-packages.txt constraints.txt pyproject.toml README.md
    find operator -type f \( -name '*.py' -o -name 'py.typed' \) -not -path '*/__pycache__/*' | LC_ALL=C sort
}
HASH="$( (echo "$REF $SUITE $MIRROR pip==$PIP_VERSION"; inputs | (cd "$ROOT" && xargs sha256sum)) \
    | sha256sum | cut -c1-16)"
OUT="$CACHE/$HASH"

load() {  # link the image into this checkout's local runtime store (the node agent's)
    local store="$ROOT/.cluster/images"
    mkdir -p "$store"
    ln -sfn "$OUT" "$store/$(echo "$REF" | tr '/:' '__')"
}

if [[ -f "$OUT/image.json" ]]; then
    load
    log "$REF is cached in $OUT ($("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sizeHuman"])' "$OUT/image.json"))"
    echo "$OUT"
    exit 0
fi

started=$(date +%s)
mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/.build-$HASH.XXXX")"
trap 'rm -rf "$WORK"' EXIT

# -- the wheels: the package and its pinned dependencies, binary only -----------------------------
log "wheels (pip cache) for $REF"
mkdir -p "$WORK/wheels"
# From a copy of exactly the hashed sources (setuptools leaves build/ where it builds).
mkdir -p "$WORK/src"
(cd "$ROOT" && cp -r pyproject.toml README.md operator "$WORK/src/")
find "$WORK/src" -depth \( -name __pycache__ -o -name '*.egg-info' \) -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WORK/wheels" "$WORK/src" >&2 \
    || fail "building the batchpredict wheel failed"
WHEEL="$(basename "$(ls "$WORK"/wheels/batchpredict-*.whl)")"
"$PYTHON" -m pip download -q --only-binary=:all: --dest "$WORK/wheels" \
    --constraint "$ROOT/constraints.txt" --find-links "$WORK/wheels" \
    "pip==$PIP_VERSION" "$WORK/wheels/$WHEEL[s3,gcs]" >&2 \
    || fail "downloading the pinned wheels failed"

# -- the root filesystem ---------------------------------------------------------------------------
# Nothing of this machine's environment (PIP_*, PYTHON*) reaches the commands in the new root.
export CLEAN_ENV="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8"
mapfile -t PACKAGES < <(grep -v '^\s*\(#\|$\)' "$ROOT/images/debian-packages.txt")
log "root filesystem: mmdebstrap $SUITE minbase + ${PACKAGES[*]}"
# Docs, man pages and locales are left out (as in debian:bookworm-slim); apt's lists are removed.
# The hooks run inside the new root: user 65532 gets a passwd entry (getpass.getuser(), which
# kopf calls, fails without one), the virtualenv, then pip (from its wheel) installs the
# wheels offline; byte-code is compiled now because the root is read-only at run time.
mmdebstrap --quiet --variant=minbase --mode=root --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp $WORK/wheels/*.whl \"\$1/tmp/wheels/\"" \
    --customize-hook='chroot "$1" $CLEAN_ENV sh -c "groupadd --gid 65532 nonroot && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin nonroot"' \
    --customize-hook='chroot "$1" $CLEAN_ENV python3 -m venv --without-pip /opt/batchpredict' \
    --customize-hook="chroot \"\$1\" $CLEAN_ENV /opt/batchpredict/bin/python /tmp/wheels/pip-$PIP_VERSION-py3-none-any.whl/pip install -q --no-index --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels \"/tmp/wheels/$WHEEL[s3,gcs]\"" \
    --customize-hook='chroot "$1" $CLEAN_ENV /opt/batchpredict/bin/python -m compileall -q /opt/batchpredict/lib' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "$1/tmp/debian-packages.lock"' \
    --customize-hook="cp \"\$1/tmp/debian-packages.lock\" $WORK/debian-packages.lock" \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1/tmp/debian-packages.lock" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    "$SUITE" "$WORK/rootfs" "$MIRROR" >&2 \
    || fail "mmdebstrap failed (a pinned version no longer on $MIRROR? see images/debian-packages.txt)"
LC_ALL=C sort -o "$WORK/debian-packages.lock" "$WORK/debian-packages.lock"
if ! cmp -s "$WORK/debian-packages.lock" "$ROOT/images/debian-packages.lock"; then
    log "warning: the image's Debian packages differ from images/debian-packages.lock:"
    diff "$ROOT/images/debian-packages.lock" "$WORK/debian-packages.lock" >&2 || true
    log "(the new list is $OUT/debian-packages.lock; commit it if the change is intended)"
fi

# -- the OCI image ---------------------------------------------------------------------------------
log "OCI image $REF (umoci)"
cd "$WORK"
umoci init --layout oci
umoci new --image "oci:$TAG"
umoci unpack --image "oci:$TAG" bundle >/dev/null
rm -rf bundle/rootfs && mv rootfs bundle/rootfs
umoci repack --image "oci:$TAG" bundle
umoci config --image "oci:$TAG" \
    --os linux --architecture amd64 \
    --config.user 65532:65532 --config.workingdir /tmp \
    --clear=config.env \
    --config.env PATH=/opt/batchpredict/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.env HOME=/tmp \
    --clear=config.entrypoint --config.cmd batchpredict-operator \
    --config.label org.opencontainers.image.title=batchpredict \
    --config.label "org.opencontainers.image.description=batchpredict operator and worker (Triton batch inference)" \
    --config.label org.opencontainers.image.source=https://github.com/batchpredict/batchpredict \
    --config.label org.opencontainers.image.licenses=Apache-2.0 \
    --config.label "org.opencontainers.image.version=$TAG" \
    --history.created_by "images/build.sh ($HASH)"
umoci gc --layout oci
# The layout's index names the image by its full reference (what `ctr images import` shows).
"$PYTHON" - oci/index.json "$REF" <<'EOF'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
EOF
tar -C oci -cf batchpredict.oci.tar .
# The node agent needs the image's config and its filesystem, not a second copy of the layer.
"$PYTHON" - oci config.json <<'EOF'
import json, pathlib, sys
layout, out = pathlib.Path(sys.argv[1]), sys.argv[2]
def blob(digest):
    algorithm, hexdigest = digest.split(":", 1)
    return json.loads((layout / "blobs" / algorithm / hexdigest).read_text())
manifest = blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])
json.dump(blob(manifest["config"]["digest"]), open(out, "w"), indent=2)
EOF
mv bundle/rootfs rootfs && rm -rf bundle oci

size=$(stat -c %s batchpredict.oci.tar)
rootfs_size=$(du -sb rootfs | cut -f1)
seconds=$(( $(date +%s) - started ))
"$PYTHON" - image.json "$REF" "$HASH" "$size" "$rootfs_size" "$seconds" <<'EOF'
import json, sys
path, ref, digest, size, rootfs, seconds = sys.argv[1:]
human = f"{int(size) / 2**20:.0f} MiB archive, {int(rootfs) / 2**20:.0f} MiB unpacked"
json.dump({"ref": ref, "inputsHash": digest, "archiveBytes": int(size), "rootfsBytes": int(rootfs),
           "sizeHuman": human, "buildSeconds": int(seconds)}, open(path, "w"), indent=2)
EOF
cd /
rm -rf "$WORK/src" "$WORK/wheels" "$OUT" && mv "$WORK" "$OUT"
# Keep the 3 newest images (each about 750 MiB); a checkout whose image went is rebuilt on use.
ls -1dt "$CACHE"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
trap - EXIT
load
log "built $REF in ${seconds} s: $(stat -c %s "$OUT/batchpredict.oci.tar" | awk '{printf "%.0f MiB", $1/1048576}') archive, $(du -sb "$OUT/rootfs" | awk '{printf "%.0f MiB", $1/1048576}') unpacked"
echo "$OUT"
