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
# torch's CUDA build (the only torch with a working torchvision here) brings ~5 GB of CUDA and Triton
# libraries even on a CPU machine, so a fresh environment needs ~7 GB; say so up front instead of
# leaving the user with pip's bare "[Errno 28] No space left on device" half-way through.
NEED_GB=7
if [[ ! -d "$VENV/lib" ]] || ! compgen -G "$VENV/lib/python3*/site-packages/torch" >/dev/null; then
  mkdir -p "$(dirname "$VENV")"
  free_kb="$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')"
  if [[ -n "$free_kb" ]] && (( free_kb < NEED_GB * 1024 * 1024 )); then
    echo "[bootstrap] warning: only $((free_kb / 1024 / 1024)) GB free on the disk of $(dirname "$VENV");" \
         "a fresh environment needs about $NEED_GB GB. If pip stops with 'No space left on device'," \
         "free some space or set UNIPOSE_VENV to a folder on a larger disk." >&2
  fi
fi
on_error() {
  echo "[bootstrap] failed (see the message above); nothing was marked ready, so the next run retries." \
       "Free disk now: $(df -Ph "$(dirname "$VENV")" | awk 'NR==2 {print $4}')." >&2
}
trap on_error ERR
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
