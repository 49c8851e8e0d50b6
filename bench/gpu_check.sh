#!/usr/bin/env bash
# GPU check (bench/gpu_check.py): the node's forward and end-to-end latency on CUDA (fp32, fp16, CUDA
# graphs; one camera and four batched), fp16 accuracy, the ONNX exporter and providers, img/s of
# ST / ST->FT / PGD-10 AT / AT->AFT at 224 px on one split, the full study's wall time, ROS-free tests.
# Runs with the machine's python3 from the repository root: no ROS, no venv, no network.
#   bench/gpu_check.sh [--split S1] [--steps 20] [--json out/gpu.json]   # CUDA machine
#   bench/gpu_check.sh --tiny --device cpu                                # any machine, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
