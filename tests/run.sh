#!/usr/bin/env bash
# The test command (README): sets up .venv if needed (torch exactly 2.13.0, the CPU build), then ruff, mypy and
# pytest. Extra arguments go to pytest, e.g. `bash tests/run.sh -k batching`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0          # first, so the local CPU wheel is the one taken
.venv/bin/python -m pip install -q -e '.[train,serve,dev]'
echo "== ruff"; .venv/bin/ruff check service training tests
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest -rs "$@"
