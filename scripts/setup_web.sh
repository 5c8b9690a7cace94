#!/usr/bin/env bash
# The browser device's tools (edgepack check/bench --browser, tests/test_browser.py): Debian's Chromium from apt and
# the JavaScript packages pinned in device_bench/web/package-lock.json from the npm registry (npm ci).
# Idempotent and quick when nothing changed. Nothing is fetched at run time: the page loads only these files.
set -euo pipefail
cd "$(dirname "$0")/.."
web=device_bench/web
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
stamp=$web/node_modules/.edgepack-setup
if [ -f "$stamp" ] && [ "$stamp" -nt $web/package-lock.json ] && [ "$stamp" -nt scripts/setup_web.sh ]; then
  exit 0
fi
# --ignore-scripts: none of the pinned packages needs an install script (playwright-core uses the system Chromium)
npm ci --prefix "$web" --ignore-scripts --no-audit --no-fund --loglevel=error
touch "$stamp"
