#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the console's browser tests (tests/ui).
#
# Idempotent: with /usr/bin/chromium present it only says so. Playwright drives this
# browser through executable_path; it never downloads one of its own.
#
#   .ci/chromium-setup.sh            # from the repository root
#
# Environment:
#   SMITHERS_CHROMIUM   the browser binary (default /usr/bin/chromium)
set -euo pipefail

CHROMIUM="${SMITHERS_CHROMIUM:-/usr/bin/chromium}"
log() { printf '[chromium-setup] %s\n' "$*"; }

if [ -x "$CHROMIUM" ]; then
    log "ok: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || { log "apt-get not found; install Chromium by hand"; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        log "need root to run: $*"; return 1
    fi
}
log "installing chromium (apt)"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get install -y --no-install-recommends chromium \
    || { as_root apt-get update && as_root apt-get install -y --no-install-recommends chromium; }
[ -x "$CHROMIUM" ] || { log "chromium installed but $CHROMIUM is missing"; exit 1; }
log "ok: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
