#!/bin/sh
# Browser end-to-end tests of the duet web client, plus unit tests of its pure
# modules. Installs what is missing (npm deps from the lockfile, Debian's
# chromium, firefox-esr and redis-server, geckodriver from crates.io), builds duet
# unless DUET_BIN is given, then runs everything in a fresh network namespace that has
# only loopback (needs root).
#
#   sh e2e/run.sh                 # everything
#   sh e2e/run.sh calls.test.js   # some files (paths relative to e2e/)
#
# Environment: DUET_BIN (binary, default target/release/duet), DUET_WEB_DIR
# (serve the client from disk), E2E_SERVER_LOG=1 (show duet's log),
# E2E_VERBOSE=1 (print page consoles), E2E_NO_BUILD=1 (skip cargo build).
set -eu

E2E_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$E2E_DIR/.." && pwd)
cd "$E2E_DIR"

if [ ! -f node_modules/playwright-core/package.json ] || [ ! -f node_modules/oidc-provider/package.json ] || [ ! -f node_modules/axe-core/package.json ]; then
  echo "run.sh: installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing Debian's chromium"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# firefox.test.js: Debian's firefox-esr, driven through geckodriver (Mozilla's WebDriver
# server). Debian does not package geckodriver; crates.io has Mozilla's own releases, so it
# is built from there, once per machine (18 min measured with -j1 on a busy two-core machine).
if [ ! -x /usr/bin/firefox-esr ]; then
  echo "run.sh: installing Debian's firefox-esr"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends firefox-esr
fi
PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export PATH
if ! command -v geckodriver >/dev/null 2>&1; then
  echo "run.sh: installing geckodriver from crates.io (cargo install)"
  cargo install geckodriver --version 0.37.1 --locked
fi

# resume.test.js runs a two-node cluster on a real Redis.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "run.sh: installing Debian's redis-server"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

if [ -z "${DUET_BIN:-}" ] && [ -z "${E2E_NO_BUILD:-}" ]; then
  echo "run.sh: cargo build --release"
  (cd "$ROOT" && cargo build --release --bin duet)
fi

mkdir -p artifacts

if [ "$#" -gt 0 ]; then
  TESTS="$*"
else
  TESTS="unit/*.test.js embedded.test.js calls.test.js peer.test.js reconnect.test.js resume.test.js turn.test.js tls.test.js proxy.test.js auth.test.js oidc.test.js lobby.test.js ringing.test.js a11y.test.js links.test.js install.test.js firefox.test.js"
fi

# Only loopback: nothing a test does can reach (or wait for) another host.
# shellcheck disable=SC2086
exec unshare -n -- sh -c "ip link set lo up && exec node --test --test-concurrency=1 $TESTS"
