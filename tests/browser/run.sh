#!/usr/bin/env bash
# The browser test: installs Debian's chromium when it is missing (CI starts from a fresh
# machine), then runs tests/browser/main.rs, which drives headless Chromium over DevTools.
set -euo pipefail
cd "$(dirname "$0")/../.."

have() { command -v "$1" >/dev/null 2>&1; }
if [ -z "${CHROMIUM:-}" ] && ! have chromium && ! have chromium-browser && ! have google-chrome; then
    echo "test-browser: installing chromium" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
exec ${CARGO:-cargo} test --test browser -- --ignored --nocapture
