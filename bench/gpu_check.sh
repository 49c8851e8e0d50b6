#!/usr/bin/env bash
# GPU check of the paper's setting (bench/gpu_check.py): img/s of ST / ST->FT / PGD-10 AT / AT->AFT
# at 224 px on one split, the node's latency on CUDA (fp32, fp16) and the full study's wall time.
# Runs with the machine's python3 from the repository root: no ROS, no venv, no network.
#   bench/gpu_check.sh [--split S1] [--steps 20] [--json out.json]   # CUDA machine
#   bench/gpu_check.sh --tiny                                         # any machine, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
