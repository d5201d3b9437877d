#!/usr/bin/env bash
# One idempotent set-up for a machine WITHOUT a ROS distro (developers, CI, laptops):
#   .venv with torch + ROS 2 Kilted wheels + the project's deps, the m3_ros interfaces built
#   with CMake into that venv, and the project installed editable.
# Re-running skips every step whose inputs did not change (a no-change run takes seconds).
# Environment: M3_VENV (default .venv), M3_TORCH ("full": torch 2.14.1 + torchvision 0.29.1,
# CUDA-capable and CPU-capable, needed by open_clip; "cpu": the small CPU-only torch, no
# torchvision/open_clip).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${M3_VENV:-$ROOT/.venv}
M3_TORCH=${M3_TORCH:-full}
cd "$ROOT"
log() { printf '[setup] %s\n' "$*"; }

# 1. System tools for building the interfaces.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# 3. Python packages (skipped when requirements and torch choice are unchanged).
want="$(sha256sum scripts/requirements.txt | cut -d' ' -f1)-$M3_TORCH"
if [ "$(cat "$VENV/.m3-requirements" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages (torch: $M3_TORCH)"
  case "$M3_TORCH" in
    full) "${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1" ;;
    cpu) "${PIP[@]}" install "torch==2.13.0" ;;
    *) echo "M3_TORCH must be full or cpu" >&2; exit 2 ;;
  esac
  reqs=scripts/requirements.txt
  if [ "$M3_TORCH" = cpu ]; then
    reqs=$(mktemp); grep -vE '^(open_clip_torch|efficientnet)' scripts/requirements.txt > "$reqs"
  fi
  "${PIP[@]}" install -r "$reqs"
  echo "$want" > "$VENV/.m3-requirements"
fi

# 4. The ROS message wheels export CMake files with their builder's include paths; point them
#    at this venv's Python and numpy (re-applied every run: cheap, and needed after reinstalls).
py_inc=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_inc=$("$PY" -c "import numpy; print(numpy.get_include())")
mapfile -t cmake_files < <(grep -l "/opt/python/cp311-cp311" "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
if [ ${#cmake_files[@]} -gt 0 ]; then
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "${cmake_files[@]}"
fi

# 5. Build and install the interfaces (msg/ srv/ action/) into the venv.
iface_hash=$(cat CMakeLists.txt package.xml msg/* srv/* action/* m3_ros/__init__.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.m3-interfaces" 2>/dev/null)" != "$iface_hash" ] \
   || ! "$PY" -c "import m3_ros.srv" 2>/dev/null; then
  log "building the m3_ros interfaces"
  export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" LD_LIBRARY_PATH="$VENV/lib:${LD_LIBRARY_PATH:-}"
  BUILD="$VENV/.m3-build"  # per venv: several venvs (M3_VENV) may share one checkout
  LOG="$BUILD/cmake.log"
  mkdir -p "$BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DM3_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY >"$LOG" 2>&1 \
    || { tail -30 "$LOG"; exit 1; }
  cmake --build "$BUILD" -j2 >>"$LOG" 2>&1 || { tail -30 "$LOG"; exit 1; }
  cmake --install "$BUILD" >>"$LOG" 2>&1 || { tail -30 "$LOG"; exit 1; }
  echo "$iface_hash" > "$VENV/.m3-interfaces"
fi

# 6. The project itself, editable (distribution "m3"; see setup.py for why not "m3_ros").
if ! "$PY" -c "import m3_core, m3_ros.srv; import importlib.metadata as m; m.version('m3')" 2>/dev/null \
   || [ ! -x "$VENV/bin/m3" ]; then
  log "installing the project (editable)"
  "${PIP[@]}" install --no-deps --no-build-isolation -e .
fi

"$PY" -c "from m3_ros.srv import QueryText; import m3_core" \
  || { echo "[setup] failed: m3_ros interfaces do not import" >&2; exit 1; }

# 7. The CPU rasterizer's kernels, compiled now (~25 s once; later runs load numba's cache in
#    a few seconds) rather than in the first live keyframe or training step of a robot's run.
log "compiling the CPU kernels (m3_core.warmup)"
OMP_WAIT_POLICY=PASSIVE "$PY" -m m3_core.warmup \
  || { echo "[setup] failed: the CPU kernels did not compile" >&2; exit 1; }
log "ready: $VENV (activate with: source $VENV/bin/activate)"
