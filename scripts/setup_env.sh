#!/usr/bin/env bash
# Create .venv with everything fillcls_ros needs, from a fresh clone; idempotent (steps that are
# already done are skipped). Needs Python 3.11, cmake and a C compiler; no ROS install.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP=$VENV/.fillcls-stamps
mkdir -p "$(dirname "$VENV")"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMP"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if [ ! -f "$STAMP/torch" ]; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (several GB, from the local wheel cache)"
  pip install torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import torch, torchvision" && touch "$STAMP/torch"
fi
if [ ! -f "$STAMP/requirements" ] || [ requirements.txt -nt "$STAMP/requirements" ]; then
  echo "[setup] installing ROS 2 Kilted wheels and Python requirements"
  pip install -r requirements.txt 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import rclpy, sensor_msgs.msg, cv2, rosbags.image" && touch "$STAMP/requirements"
fi
MSGS_SRC=$(find fillcls_msgs -type f -newer "$STAMP/msgs" 2>/dev/null | head -1 || true)
if [ ! -f "$STAMP/msgs" ] || [ -n "$MSGS_SRC" ]; then
  echo "[setup] building fillcls_msgs with cmake into $VENV"
  BUILD=$ROOT/build/fillcls_msgs
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  (
    export PATH=$VENV/bin:$PATH
    cmake -S fillcls_msgs -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/fix_rosidl_py_includes.cmake" >"$BUILD.log" 2>&1
    cmake --build "$BUILD" -j "$(nproc)" >>"$BUILD.log" 2>&1
    cmake --install "$BUILD" >>"$BUILD.log" 2>&1
  ) || { echo "[setup] fillcls_msgs build failed, see $BUILD.log" >&2; tail -n 30 "$BUILD.log" >&2; exit 1; }
  "$VENV/bin/python" -c "from fillcls_msgs.msg import FillingLevelArray" && touch "$STAMP/msgs"
fi
if [ ! -f "$STAMP/package" ] || [ setup.py -nt "$STAMP/package" ]; then
  echo "[setup] installing fillcls_ros and training (editable)"
  pip install --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import fillcls.core, training" && touch "$STAMP/package"
fi
# The ONNX export of the shipped segmenter, which the node runs with onnxruntime (not committed: one
# compact file per default model, models/segmenter.pt; ~30 s, the same bytes as `make models` writes).
if [ -f models/segmenter.pt ]; then
  mkdir -p "$ROOT/build"
  "$VENV/bin/python" -m training.onnx_export models/segmenter.pt models/segmenter.onnx --if-missing \
    >"$ROOT/build/segmenter_onnx.log" 2>&1 \
    || { echo "[setup] ONNX export of models/segmenter.pt failed, see build/segmenter_onnx.log" >&2; tail -n 5 "$ROOT/build/segmenter_onnx.log" >&2; exit 1; }
  tail -n 1 "$ROOT/build/segmenter_onnx.log" | sed 's/^/[setup] /'
fi
# The int8 copy of the shipped classifier, which `precision: auto` runs on the CPU (not committed: one
# compact file per default model; calibrated on procedural training crops, ~30 s, byte-identical to
# the one `make models` writes).
if [ -f models/default.onnx ]; then
  mkdir -p "$ROOT/build"
  "$VENV/bin/python" -m training.onnx_export --int8-of models/default.onnx --if-missing >"$ROOT/build/int8.log" 2>&1 \
    || { echo "[setup] int8 copy of models/default.onnx failed, see build/int8.log" >&2; tail -n 5 "$ROOT/build/int8.log" >&2; exit 1; }
  tail -n 1 "$ROOT/build/int8.log" | sed 's/^/[setup] /'
fi
echo "[setup] ready: $VENV"
