#!/usr/bin/env bash
# The built-in demo (simulated quadruped walk -> collect -> train -> serve -> ground -> goals).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${M3_VENV:-$ROOT/.venv}  # the venv setup.sh prepares (M3_VENV: another one)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # four nodes share the cores: no spinning
exec "$VENV/bin/python" -m demo.run "$@"
