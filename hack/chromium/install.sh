#!/usr/bin/env bash
# Install Debian's `chromium` (the dashboard tier's headless browser, driven over the DevTools
# protocol by tests/dashboard/cdp.py) when it is missing. Idempotent: does nothing when a
# chromium is on PATH. Needs root (apt-get); prints the browser's path on its last line.
#
# Exit codes: 0 installed or present; 2 not root and no chromium; 3 apt-get failed.
set -euo pipefail

for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        exit 0
    fi
done
if [[ "$(id -u)" != 0 ]]; then
    echo "error: chromium is not installed and installing it needs root:" \
        "sudo apt-get install -y chromium" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# Retried: apt's lock may be held for a moment by another install on the same machine.
for attempt in 1 2 3; do
    if { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; } >&2; then
        command -v chromium
        exit 0
    fi
    echo "apt-get failed (attempt $attempt); retrying" >&2
    sleep 10
done
exit 3
