#!/usr/bin/env bash
# Build the nnserve serving image here, reaching no registry: a local debootstrap base (deploy/build-base.sh),
# a host-built wheelhouse (deploy/build-wheelhouse.sh), and a small staged build context (the wheels, models/
# and deploy/), so neither .venv nor data travel to the engine.
#
#   usage: deploy/build-image.sh [TAG]       (default nnserve:latest)
#   env:   VARIANT=cpu|cuda (default cpu), BASE (default nnserve-base:bookworm, built if missing),
#          MODELS (default models), SKIP_WHEELHOUSE=1 to reuse .wheelhouse as it is
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-nnserve:latest}"
VARIANT="${VARIANT:-cpu}"
BASE="${BASE:-nnserve-base:bookworm}"
MODELS="${MODELS:-models}"

if [ "$BASE" = nnserve-base:bookworm ]; then deploy/build-base.sh "$BASE"; fi
if [ "${SKIP_WHEELHOUSE:-0}" != 1 ]; then deploy/build-wheelhouse.sh "$VARIANT"; fi

context="$(mktemp -d /tmp/nnserve-context.XXXXXX)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/deploy" "$context/models"
cp deploy/Dockerfile deploy/healthcheck.py "$context/deploy/"
cp -r .wheelhouse "$context/.wheelhouse"
cp -r "$MODELS"/. "$context/models/"

# --network none: everything the build needs is in the context; RUN steps get only loopback.
docker build --network none --build-arg BASE="$BASE" --build-arg VARIANT="$VARIANT" \
    -f "$context/deploy/Dockerfile" -t "$TAG" "$context"
docker image inspect -f "build-image: $TAG {{.Size}} bytes" "$TAG"
