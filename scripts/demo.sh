#!/usr/bin/env bash
# The built-in demo (simulated quadruped walk -> collect -> train -> serve -> ground -> goals).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
if ! "$ROOT/.venv/bin/python" -c "import demo.run" 2>/dev/null; then
  echo "m3 demo: not yet available: the simulated-walk demo (issue 8) has not landed." >&2
  exit 3
fi
exec "$ROOT/.venv/bin/python" -m demo.run "$@"
