#!/usr/bin/env bash
# Install the browser the page's tests drive (tests/web/test_page_browser.py): Debian's Chromium and a font. The
# Python side (playwright) is in the dev extra; Playwright's own browser builds come from a CDN and are never
# fetched ("playwright install" is not run): the tests launch /usr/lib/chromium/chromium.
#
# Tolerant like ci-setup.sh: without a browser the tests skip saying why, and CI (NNSERVE_CI=1) fails on that skip.
#
#   usage: deploy/ci-browser.sh
set -u

PACKAGES=(chromium fonts-dejavu-core)

log() { printf 'deploy/ci-browser: %s\n' "$*"; }

if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get: install Chromium yourself and set NNSERVE_CHROMIUM to its binary"
    exit 0
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    log "already installed: ${PACKAGES[*]} ($(/usr/lib/chromium/chromium --version 2>/dev/null))"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the cached lists"
if apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    log "installed ${missing[*]} ($(/usr/lib/chromium/chromium --version 2>/dev/null))"
else
    log "could not install ${missing[*]}: the browser tests will skip"
fi
exit 0
