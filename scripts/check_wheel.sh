#!/usr/bin/env bash
# The package as a pip user gets it (run by .ci/run): build the wheel, install it with its declared
# dependencies into a FRESH virtual environment beside an already installed torch, then, from
# outside the checkout, run `unipose predict` on the bundled sample with the bundled model and ask
# every console script for --help (the ROS ones must also say in one line that ROS is missing).
#
# torch + torchvision (~5 GB with CUDA) are not downloaded again: the fresh venv sees only them and
# their own dependencies, through a .pth naming a folder of symlinks into the project's venv, so pip
# counts them as installed and fetches the rest (open_clip, scipy, opencv, ...) from the package
# index or its cache. The versions are held to requirements.txt (-c) so that a new release on the
# index cannot turn CI red overnight; UNIPOSE_WHEEL_UNPINNED=1 installs the newest allowed instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${UNIPOSE_VENV:-$ROOT/.venv}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/unipose-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
say() { echo "[wheel] $* ($(( SECONDS - START )) s)" >&2; }
die() { echo "[wheel] FAILED: $*" >&2; exit 1; }

say "building the wheel"
# from a copy of the checkout's files (setuptools writes build/ and *.egg-info into the source tree,
# and .ci/run runs this beside the tests); --no-build-isolation: the venv's setuptools, no download
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/src" 2>/dev/null || true)
"$VENV/bin/python" -m pip wheel "$WORK/src" --no-deps --no-build-isolation -q -w "$WORK/dist" > "$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; die "pip wheel"; }
if grep -q "Package would be ignored" "$WORK/build.log"; then
  cat "$WORK/build.log" >&2; die "setuptools warns 'Package would be ignored' (declare the data folder as a package)"
fi
WHEEL="$(ls "$WORK"/dist/unipose_ros-*.whl)"

say "fresh venv beside torch"
BASE_PY="$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
"$BASE_PY" -m venv "$WORK/venv"
# torch, torchvision and the distributions they require (markers evaluated here), as symlinks
"$VENV/bin/python" - "$WORK/torch_site" <<'EOF'
import sys
from importlib.metadata import distribution
from pathlib import Path
from packaging.requirements import Requirement

out = Path(sys.argv[1]); out.mkdir()
todo, seen = ["torch", "torchvision"], set()
while todo:
    dist = distribution(todo.pop())
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name in seen:
        continue
    seen.add(name)
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
    site = Path(dist.locate_file(""))
    for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
        if (site / top).exists() and not (out / top).exists():
            (out / top).symlink_to(site / top)
print(f"[wheel] beside torch: {', '.join(sorted(seen))}", file=sys.stderr)
EOF
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$WORK/torch_site" > "$SITE/torch_beside.pth"

say "pip install the wheel (declared dependencies only)"
CONSTRAINTS=(-c "$ROOT/requirements.txt")
[[ "${UNIPOSE_WHEEL_UNPINNED:-0}" == 1 ]] && CONSTRAINTS=()
"$WORK/venv/bin/python" -m pip install -q --no-compile --disable-pip-version-check "${CONSTRAINTS[@]}" "$WHEEL" \
  > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; die "pip install of the wheel"; }
"$WORK/venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(torch|torchvision) " | sed 's/^/[wheel]   /' >&2
# the torch beside it was used, not downloaded again
TORCH_AT="$("$WORK/venv/bin/python" -c 'import torch; print(torch.__file__)')"
[[ "$TORCH_AT" == "$WORK/torch_site/"* ]] || die "pip installed another torch ($TORCH_AT)"

say "unipose predict, from outside the checkout"
mkdir "$WORK/run" && cd "$WORK/run"
BIN="$WORK/venv/bin"
DATA="$("$BIN/python" -c 'import unipose_model, pathlib; print(pathlib.Path(unipose_model.__file__).parent / "data")')"
[[ "$DATA" == "$SITE/"* ]] || die "unipose_model imported from $DATA, not from the installed wheel"
# the bundled clip, its first 3 frames (video decoding, tracking, the progress-bar path)
HF_HUB_OFFLINE=1 "$BIN/unipose" predict "$DATA/sample_fly.mp4" --max-frames 3 --model fly --prompt fly --out predict \
  > predict.log 2>&1 || { cat predict.log >&2; die "unipose predict"; }
"$BIN/python" - <<'EOF' || die "unipose predict wrote no fly with 13 keypoints"
import json, sys
found = json.load(open("predict/results.json"))  # COCO results: one record per instance
assert found and all(r["label"] == "fly" and len(r["keypoints"]) == 13 * 3 for r in found), found
frames = {r["image_id"] for r in found}
assert len(frames) == 3, f"expected results on 3 frames (--max-frames 3), got {len(frames)}"
print(f"[wheel]   {len(found)} flies found on {len(frames)} frames, 13 keypoints each", file=sys.stderr)
EOF
# inference imported none of the extras' packages (they are not installed here)
"$BIN/python" -c "
import importlib.util as u, sys
extra = [m for m in ('tensorboard', 'pycocotools', 'h5py', 'rosbags', 'onnx', 'rclpy') if u.find_spec(m)]
sys.exit(f'extras installed without being asked for: {extra}' if extra else 0)" || die "inference pulled in an extra"

say "every console script answers --help"
SCRIPTS="$("$BIN/python" -c "
from importlib.metadata import distribution
print(' '.join(sorted(ep.name for ep in distribution('unipose_ros').entry_points if ep.group == 'console_scripts')))")"
for script in $SCRIPTS; do
  timeout 120 "$BIN/$script" --help > "help_$script.log" 2>&1 ||
    { cat "help_$script.log" >&2; die "$script --help (rc $?)"; }
done
echo "[wheel]   --help ok: $SCRIPTS" >&2
# without ROS, a ROS script says so in one line (no traceback) and exits 1
set +e; "$BIN/unipose-detector" > detector.log 2>&1; rc=$?; set -e
if [[ $rc != 1 ]] || grep -q Traceback detector.log || [[ "$(wc -l < detector.log)" != 1 ]] ||
   ! grep -q "ROS 2 (rclpy) is not importable" detector.log; then
  cat detector.log >&2; die "unipose-detector without ROS (rc $rc)"
fi
say "ok"
