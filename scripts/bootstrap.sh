#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
# Idempotent: does nothing when requirements and setup files are unchanged since the last run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${UNIPOSE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

stamp_src() {
  local f
  for f in "$ROOT/requirements.txt" "$ROOT/requirements-ros.txt" "$ROOT/setup.py" "$ROOT/scripts/bootstrap.sh" \
           "$ROOT/scripts/build_msgs.sh" "$ROOT/CMakeLists.txt" "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv; do
    if [[ -f "$f" ]]; then cat "$f"; fi
  done | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.unipose-bootstrap"
want="$(stamp_src)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

echo "[bootstrap] setting up $VENV (first run takes a few minutes: torch $(grep '^torch==' "$ROOT/requirements.txt"))" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
# xtcocotools (the OKS reference the evaluator is tested against): its wheel is built for numpy 1,
# so build it from source against the pinned numpy.
"$VENV/bin/python" -m pip install -q cython==3.3.1
"$VENV/bin/python" -m pip install -q --no-binary xtcocotools --no-build-isolation xtcocotools==1.14.3
if [[ -f "$ROOT/requirements-ros.txt" ]]; then
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements-ros.txt"
fi
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
if [[ -x "$ROOT/scripts/build_msgs.sh" ]]; then
  "$ROOT/scripts/build_msgs.sh" "$VENV"
fi
echo "$want" > "$STAMP"
echo "[bootstrap] ready" >&2
