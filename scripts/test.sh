#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then ruff + pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/core -k psc).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${M3_VENV:-$ROOT/.venv}  # the venv setup.sh prepares (M3_VENV: another one)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
# OpenMP threads sleep instead of spinning while they wait: the tests run several processes
# (ROS nodes, training) on few cores, where spinning threads starve the others
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$VENV/bin/python" -m pytest "${@:-tests}"
