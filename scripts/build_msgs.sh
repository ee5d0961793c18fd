#!/usr/bin/env bash
# Build the unipose_ros messages with plain CMake and install them into a virtual environment
# (the pip route; a colcon workspace does not need this). Usage: scripts/build_msgs.sh [VENV]
# Needs cmake, a C compiler and the ROS build wheels of requirements-ros.txt in VENV.
#
# The generated Python modules go to VENV/lib/unipose_ros_msgs/unipose_ros/, not to
# site-packages: a second `unipose_ros` directory on sys.path would shadow the pip-installed
# (possibly editable) source package. unipose_ros/__init__.py adds that directory to its
# __path__, so `import unipose_ros.msg` works. The C libraries go to VENV/lib, which the ROS
# wheels' bootstrapper puts on LD_LIBRARY_PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-${VIRTUAL_ENV:-$ROOT/.venv}}" && pwd)"
PY="$VENV/bin/python"
BUILD="${UNIPOSE_MSGS_BUILD_DIR:-$ROOT/build/msgs}"
MSGS_PY_DIR="lib/unipose_ros_msgs"   # relative to VENV; unipose_ros/__init__.py knows it

command -v cmake >/dev/null || { echo "build_msgs: cmake not found (apt-get install cmake g++)" >&2; exit 1; }
"$PY" -c 'import rosidl_generator_py' 2>/dev/null || {
  echo "build_msgs: ROS build wheels missing in $VENV (pip install -r requirements-ros.txt)" >&2; exit 1; }

rm -rf "$BUILD" && mkdir -p "$BUILD"
LOG="$BUILD/build_msgs.log"
# The ament/rosidl CMake configs of the wheels live in the venv prefix; the generators are
# Python scripts that need the wheels' libraries.
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"
run() { "$@" >>"$LOG" 2>&1 || { tail -60 "$LOG" >&2; echo "build_msgs: failed, log in $LOG" >&2; exit 1; }; }
run cmake -S "$ROOT" -B "$BUILD" -DUNIPOSE_MESSAGES_ONLY=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
  -DPYTHON_INSTALL_DIR="$MSGS_PY_DIR"
run cmake --build "$BUILD" -j "$(nproc)"
run cmake --install "$BUILD"
echo "build_msgs: unipose_ros messages installed into $VENV/$MSGS_PY_DIR" >&2
