#!/usr/bin/env bash
# Demo: the whole ROS 2 pipeline on the bundled two-fly clip with the bundled fly model:
#   image_source (unipose_model/data/sample_fly.mp4) -> unipose detector (unipose_model/data/fly_demo.pth)
#   -> /unipose/keypoints, /unipose/markers, /unipose/image_annotated
# No camera, no downloads (after .venv exists), no CLIP: the model carries its prompt features.
# Prints one line per processed frame; writes outputs/demo/fly_demo_annotated.mp4.
# Usage: scripts/demo.sh [--frames N] [--rate HZ] [--out DIR] ...   (unipose-demo --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
VENV="${UNIPOSE_VENV:-$ROOT/.venv}"
cd "$ROOT"
"$VENV/bin/python" -m unipose_ros.demo --out "$ROOT/outputs/demo" "$@"
echo "[demo] without ROS, the same model on the same clip: $VENV/bin/unipose predict unipose_model/data/sample_fly.mp4 --prompt fly --out outputs/predict"
