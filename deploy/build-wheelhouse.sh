#!/usr/bin/env bash
# Fill .wheelhouse/ on the host with every wheel the serving image installs: nnserve itself (built from this
# checkout) and `nnserve[serve]`'s dependencies as binary wheels for the image's Python (not the host's), so a
# `docker build` never reaches a package registry.
#
#   usage: deploy/build-wheelhouse.sh [cpu|cuda]     (cuda adds onnxruntime-gpu with its CUDA/cuDNN wheels)
#   env:   PIP (default .venv/bin/pip), WHEELHOUSE (default .wheelhouse),
#          PYTHON_VERSION (default 3.11: Debian bookworm's python3), GLIBC_MINOR (default 36: bookworm's glibc 2.36)
set -euo pipefail

VARIANT="${1:-cpu}"
PIP="${PIP:-.venv/bin/pip}"
WHEELHOUSE="${WHEELHOUSE:-.wheelhouse}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
GLIBC_MINOR="${GLIBC_MINOR:-36}"
abi="cp${PYTHON_VERSION/./}"
target=(--only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp --abi "$abi" --abi abi3
        --abi none --platform any --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
        --platform manylinux1_x86_64)
# pip does not widen an explicit --platform to older glibc versions: name each one the image's glibc runs.
for minor in $(seq 5 "$GLIBC_MINOR"); do target+=(--platform "manylinux_2_${minor}_x86_64"); done

mkdir -p "$WHEELHOUSE"
# nnserve's own wheel, from this checkout, replacing any older one.
rm -f "$WHEELHOUSE"/nnserve-*.whl
# Fixed timestamps inside the wheel: an unchanged checkout gives the same bytes, so the image build stays cached.
SOURCE_DATE_EPOCH=315532800 "$PIP" wheel -q --no-deps --no-build-isolation --wheel-dir "$WHEELHOUSE" .
# Its serving dependencies, resolved for the image's interpreter and platform.
"$PIP" download -q "${target[@]}" --dest "$WHEELHOUSE" --find-links "$WHEELHOUSE" "nnserve[serve]" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
if [ "$VARIANT" = cuda ]; then
    "$PIP" download -q "${target[@]}" --dest "$WHEELHOUSE" "onnxruntime-gpu[cuda,cudnn]" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
echo "build-wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)" \
     "in $WHEELHOUSE for $abi glibc 2.$GLIBC_MINOR ($VARIANT)"
