#!/usr/bin/env bash
# Headless Chromium's targets: installs Debian's chromium when it is missing (CI starts from a
# fresh machine), then runs one of them, driving Chromium over DevTools (chromium.rs):
#   tests/browser/run.sh browser       the browser test (main.rs), for `make test-browser`
#   tests/browser/run.sh screenshots   the README's picture (screenshots.rs), `make screenshots`
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
target=${1:-browser}
case "$target" in
browser | screenshots) ;;
*) echo "tests/browser/run.sh: unknown target $target (browser or screenshots)" >&2; exit 2 ;;
esac
exec ${CARGO:-cargo} test --test "$target" -- --ignored --nocapture
