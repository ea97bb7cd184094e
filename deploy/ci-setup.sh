#!/usr/bin/env bash
# Install what the deploy tests use: from Debian promtool + prometheus, docker-compose, a Docker engine,
# debootstrap and the shell linter; from PyPI kubernetes-validate + pyyaml, into the venv given as $1.
#
# Tolerant on purpose: a package that cannot be installed here only makes the tests that need it skip (each
# prints why). It never starts a service: Debian's maintainer scripts are kept from starting dockerd (which
# would create a bridge network) by a policy-rc.d that refuses every start while we install.
#
#   usage: deploy/ci-setup.sh .venv
set -u

VENV="${1:-.venv}"
APT_PACKAGES=(prometheus docker-compose docker.io debootstrap shellcheck)
PIP_PACKAGES=(kubernetes-validate pyyaml)

log() { printf 'deploy/ci-setup: %s\n' "$*"; }

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get: skipping ${APT_PACKAGES[*]}"
        return 0
    fi
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "already installed: ${APT_PACKAGES[*]}"
        return 0
    fi
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the cached lists"
    # One at a time, so one unavailable package does not block the others.
    for pkg in "${missing[@]}"; do
        if apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
            log "installed $pkg"
        else
            log "could not install $pkg: the tests that need it will skip"
        fi
    done
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    return 0
}

pip_install() {
    local pip="$VENV/bin/pip"
    if [ ! -x "$pip" ]; then
        log "no pip at $pip: skipping ${PIP_PACKAGES[*]}"
        return 0
    fi
    if "$pip" install -q "${PIP_PACKAGES[@]}" >/dev/null 2>&1; then
        log "pip installed ${PIP_PACKAGES[*]}"
    else
        for pkg in "${PIP_PACKAGES[@]}"; do
            "$pip" install -q "$pkg" >/dev/null 2>&1 || log "could not pip install $pkg: its tests will skip"
        done
    fi
    return 0
}

apt_install
pip_install
exit 0
