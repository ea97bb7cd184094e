#!/usr/bin/env bash
# Build a local base image for deploy/Dockerfile without pulling from any registry:
# debootstrap a minimal Debian bookworm with python3 + venv, then `docker import` it.
#
#   usage: deploy/build-base.sh [TAG]            (default TAG: nnserve-base:bookworm)
#   env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), ROOTFS_DIR (default: a temp dir)
#
# Needs root, debootstrap and a running Docker engine. The image has no compiler, no pip cache, no docs.
set -euo pipefail

TAG="${1:-nnserve-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS="${ROOTFS_DIR:-$(mktemp -d /tmp/nnserve-rootfs.XXXXXX)}"
cleanup() { rm -rf --one-file-system "$ROOTFS"; }
trap cleanup EXIT

if docker image inspect "$TAG" >/dev/null 2>&1 && [ "${REBUILD:-0}" != 1 ]; then
    echo "build-base: $TAG exists (REBUILD=1 to rebuild)"
    exit 0
fi

echo "build-base: debootstrap bookworm into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"

# Slim it: package caches, lists, docs, man pages, locales other than C.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log
find "$ROOTFS"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +

echo "build-base: docker import -> $TAG"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG" >/dev/null
docker image inspect -f 'build-base: {{.RepoTags}} {{.Size}} bytes' "$TAG"
