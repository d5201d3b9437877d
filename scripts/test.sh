#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then ruff + pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/core -k psc).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "${@:-tests}"
