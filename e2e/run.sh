#!/usr/bin/env bash
# The console's end-to-end test (`make test-e2e`): makes sure Chromium, the npm
# package and PostgreSQL/Redis are there (installing what is missing, once),
# builds hawker, and runs e2e/console.spec.mjs. Idempotent; safe on a fresh CI
# machine running as root, and says what to install otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[e2e] %s\n' "$*" >&2; }

# Debian's chromium, never a browser download.
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
    CHROMIUM=$(command -v chromium)
  else
    log "chromium is missing: sudo apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)"
    exit 1
  fi
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node 18+ and npm are needed (Debian: apt-get install -y nodejs npm)"
  exit 1
fi
# playwright-core only (it downloads no browser); reinstalled when the lock file changes.
if [ ! -f e2e/node_modules/playwright-core/package.json ] \
  || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  log "installing e2e/node_modules"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

bash scripts/services.sh
${CARGO:-cargo} build --quiet --bin hawker
HAWKER_BIN=${HAWKER_BIN:-${CARGO_TARGET_DIR:-target}/debug/hawker}
case $HAWKER_BIN in /*) ;; *) HAWKER_BIN=$PWD/$HAWKER_BIN ;; esac
export HAWKER_BIN
export CHROMIUM
exec node e2e/console.spec.mjs
