#!/usr/bin/env bash
# Demo: detect fly keypoints in the bundled sample frame (unipose_model/data/sample_fly.jpg).
# Uses the official checkpoint when it is at the default location (or $UNIPOSE_CHECKPOINT);
# otherwise runs the whole pipeline with the reference weights and hash text features, whose
# detections are meaningless (a pipeline check only).
# Usage: scripts/demo.sh [OUTPUT_DIR]   (default outputs/demo)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
VENV="${UNIPOSE_VENV:-$ROOT/.venv}"
OUT="${1:-$ROOT/outputs/demo}"
SAMPLE="$ROOT/unipose_model/data/sample_fly.jpg"
CKPT="${UNIPOSE_CHECKPOINT:-${UNIPOSE_CACHE:-$HOME/.cache/unipose}/unipose_swint.pth}"

if [[ -f "$CKPT" ]]; then
  echo "[demo] official checkpoint: $CKPT" >&2
  args=(--checkpoint "$CKPT")
else
  cat >&2 <<MSG
[demo] WARNING: no official checkpoint at $CKPT.
[demo] Running with --checkpoint reference --text-encoder hash: the DETECTIONS ARE MEANINGLESS
[demo] (deterministic test weights). For real results download 'unipose_swint.pth' from the
[demo] IDEA-Research/X-Pose GitHub README and put it at $CKPT.
MSG
  args=(--checkpoint reference --text-encoder hash --max-instances 5)  # fewer boxes of noise
fi

"$VENV/bin/unipose" predict "$SAMPLE" --prompt "fly" --out "$OUT" --verbose "${args[@]}"
echo "[demo] outputs in $OUT: sample_fly.png (overlay), results.json (COCO results), images.json (image ids, keypoint names)"
