#!/usr/bin/env bash
# Run the test suite (sets up .venv on first use). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Several tests write full-size Swin-T checkpoints (~2 GB of temp files per run): keep the temp
# folders of failed tests only, so repeated runs do not fill the disk.
exec "${UNIPOSE_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -o tmp_path_retention_policy=failed "$@"
