#!/usr/bin/env bash
# Run every check: lint, types, unit tests and lab tests (root: network namespaces).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@" tests
