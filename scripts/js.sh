#!/usr/bin/env bash
# Installs what the end-to-end tests run of third-party JS: Node.js and npm from Debian's
# packages when missing (needs root or sudo), then tests/js's locked npm packages
# (`npm ci`, only when package-lock.json changed since the last install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../tests/js"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "js.sh: installing nodejs and npm from Debian's packages" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
fi

stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || ! cmp -s <(sha256sum package-lock.json) node_modules/.installed-from 2>/dev/null; then
    echo "js.sh: npm ci in tests/js ($(node --version))" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    sha256sum package-lock.json >node_modules/.installed-from
fi
