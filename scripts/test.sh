#!/usr/bin/env bash
# The test suite in one command: install (first time), then pytest.
#   scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh train test cluster
export GENRESTREAM_SHARED=${GENRESTREAM_SHARED:-$(cd .. && pwd)/shared}
exec .venv/bin/python -m pytest "$@"
