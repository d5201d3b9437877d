#!/usr/bin/env bash
# Optional developer tools for a machine WITHOUT a ROS distro, on top of scripts/setup.sh.
# PyPI has the ROS 2 Kilted core wheels but not launch, launch_ros, ros2launch, the ros2
# command line, message_filters or tf2. This script builds them from source into the project
# venv, then installs the full m3_ros package (share/m3_ros/launch, config, node executables)
# into $VENV/.m3-build-ros/install. Afterwards a developer can run
# `ros2 launch m3_ros memory.launch.py`, `ros2 service call ...`, and the tests that need
# launch_ros / message_filters / tf2_ros (they are skipped otherwise).
# Needs network access to GitHub: each source repo is cloned with
#   git clone --depth 1 --branch "$M3_ROS_BRANCH" "$M3_ROS_GIT/<repo>"
# Re-running skips every step whose inputs did not change (a no-change run takes seconds);
# re-run it after editing launch/, config/ or the interfaces (the install holds copies).
# Environment: M3_VENV (default .venv; the venv made by scripts/setup.sh),
#   M3_ROS_GIT (default https://github.com/ros2; may be a local folder holding the (bare)
#   repos launch launch_ros ros2cli rosidl_runtime_py rcl_interfaces message_filters geometry2),
#   M3_ROS_BRANCH (default rolling).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$(realpath -m "${M3_VENV:-$ROOT/.venv}")
GIT=${M3_ROS_GIT:-https://github.com/ros2}
BRANCH=${M3_ROS_BRANCH:-rolling}
[ -d "$GIT" ] && GIT="file://$(cd "$GIT" && pwd)"   # file:// so that --depth works locally
B="$VENV/.m3-build-ros"  # per venv, like setup.sh's .m3-build
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
log() { printf '[ros_tools] %s\n' "$*"; }

"$PY" -c "import rclpy, m3_ros.srv, m3_core" 2>/dev/null \
  || { echo "[ros_tools] $VENV is not ready: run scripts/setup.sh first (same M3_VENV)" >&2; exit 1; }
command -v git >/dev/null || { echo "[ros_tools] git is needed" >&2; exit 1; }
mkdir -p "$B"
export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" LD_LIBRARY_PATH="$VENV/lib:${LD_LIBRARY_PATH:-}"

# step FUNCTION KEY MESSAGE: run FUNCTION unless its stamp holds KEY, then stamp it.
step() {
  [ "$(cat "$B/stamp.$1" 2>/dev/null)" = "$2" ] && return 0
  log "$3"; "$1"; echo "$2" > "$B/stamp.$1"
}
# cm SRC NAME PREFIX [ARGS]: CMake configure + build + install; output in $B/build-NAME.log.
cm() {
  local src=$1 bld="$B/build-$2" pre=$3; shift 3
  { cmake -S "$src" -B "$bld" -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$pre" \
      -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$PY" -DPython3_FIND_VIRTUALENV=ONLY "$@" \
      && cmake --build "$bld" -j2 && cmake --install "$bld"; } >"$bld.log" 2>&1 \
    || { tail -30 "$bld.log"; echo "[ros_tools] failed: see $bld.log" >&2; exit 1; }
}
# The ROS wheels' exported CMake files hold their builder's paths (as in setup.sh, step 4).
fix_cmake_paths() {
  local py_inc np_inc files
  py_inc=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  np_inc=$("$PY" -c "import numpy; print(numpy.get_include())")
  mapfile -t files < <(grep -l "/opt/python/cp311-cp311" "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
  [ ${#files[@]} -eq 0 ] || sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "${files[@]}"
}

REPOS=(launch launch_ros ros2cli rosidl_runtime_py rcl_interfaces message_filters geometry2)
S="$B/src"
clone() {
  rm -rf "$S"; mkdir -p "$S"
  for r in "${REPOS[@]}"; do git clone -q --depth 1 --branch "$BRANCH" "$GIT/$r" "$S/$r"; done
}
python_tools() {
  # never the PyPI package named "launch" (an unrelated app), never lark 1.x: --no-deps below
  "${PIP[@]}" install osrf-pycommon argcomplete psutil packaging pyyaml importlib-metadata \
    empy importlib-resources netifaces
  local verbs=(ros2cli ros2pkg ros2node ros2service ros2action ros2topic ros2param \
    ros2lifecycle ros2run ros2interface ros2component ros2doctor ros2multicast)
  (cd "$S" && "${PIP[@]}" install --no-deps --no-build-isolation ./launch/launch \
    ./launch/launch_xml ./launch/launch_yaml ./launch_ros/launch_ros ./launch_ros/ros2launch \
    ./rosidl_runtime_py "${verbs[@]/#/./ros2cli/}")
}
composition() { cm "$S/rcl_interfaces/composition_interfaces" composition_interfaces "$VENV"; }
message_filters() {  # its setup.py is a ROS 1 leftover: a minimal one for the Python package
  local d="$B/message_filters_pkg" ver
  rm -rf "$d"; mkdir -p "$d/resource"; touch "$d/resource/message_filters"
  cp -r "$S/message_filters/src/message_filters" "$S/message_filters/package.xml" "$d/"
  ver=$(sed -n 's:.*<version>\(.*\)</version>.*:\1:p' "$d/package.xml" | head -1)
  cat > "$d/setup.py" <<EOF
from setuptools import setup
setup(name="message_filters", version="$ver", packages=["message_filters"],
      data_files=[("share/ament_index/resource_index/packages", ["resource/message_filters"]),
                  ("share/message_filters", ["package.xml"])])
EOF
  "${PIP[@]}" install --no-deps --no-build-isolation "$d"
}
tf2() {
  "${PIP[@]}" install ros-ament-cmake-ros ros-ament-cmake-gmock ros-ament-cmake-gtest \
    ros-ament-cmake-pytest ros-gmock-vendor ros-gtest-vendor
  fix_cmake_paths
  for p in tf2_msgs tf2 tf2_py; do cm "$S/geometry2/$p" "$p" "$VENV"; done
  "${PIP[@]}" install --no-deps --no-build-isolation "$S/geometry2/tf2_ros_py"
}
m3_ros_package() { fix_cmake_paths; cm "$ROOT" m3_ros "$B/install"; }

# Sources and tools: keyed by origin, branch and this script; redone when they do not import.
KEY="$GIT $BRANCH $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
CHECK="import launch_ros, ros2launch, ros2cli, message_filters, tf2_ros, composition_interfaces.srv"
"$PY" -c "$CHECK" 2>/dev/null || rm -f "$B"/stamp.*
step clone "$KEY" "cloning the sources from $GIT ($BRANCH)"
step python_tools "$KEY" "installing launch, launch_ros, ros2launch, ros2cli"
step composition "$KEY" "building composition_interfaces"
step message_filters "$KEY" "installing message_filters"
step tf2 "$KEY" "building tf2_msgs, tf2, tf2_py; installing tf2_ros"
# The full m3_ros package (what colcon would install); its Python copies there stay unused.
pkg_hash=$(find CMakeLists.txt package.xml msg srv action launch config m3_ros/__init__.py -type f \
  | sort | xargs cat \
  | sha256sum | cut -d' ' -f1)
step m3_ros_package "$KEY $pkg_hash" "installing m3_ros into $B/install"
"$PY" -c "$CHECK" || { echo "[ros_tools] failed: the tools do not import" >&2; exit 1; }

# No PYTHONPATH: nodes and tests import m3_ros / m3_core from the editable checkout (setup.sh).
cat > "$B/env.sh" <<EOF
export PATH="$VENV/bin:\$PATH"
export AMENT_PREFIX_PATH="$B/install:$VENV"
export LD_LIBRARY_PATH="$VENV/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
log "ready. For ros2 launch / ros2 service call, run these (or: source $B/env.sh):"
sed 's/^/  /' "$B/env.sh"
