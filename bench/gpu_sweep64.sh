#!/usr/bin/env bash
# The shipped default's recipe at 64 px on all three splits, on a GPU: the in-house robust fractal
# sources (eps 0.5 and 1, `make models`' pretraining), then per split ST, AT->FT (eps_s 0.5, L = 1),
# AT->AFT (eps_s 0.5, the preset's eps_t per split) and AT->FT (eps_s 1), each with the default
# model's budget (4,800 crops, 20 epochs of 3,200, lr 0.05 for transfer), and `training compare`
# of each split's models on its unseen test containers (procedural crops: clean, PGD-10, corruptions).
# Runs with the machine's python3 from the repository root (no ROS, no venv, no network).
#   bench/gpu_sweep64.sh OUTDIR                 # CUDA machine: ~5 min on one H100
#   DEVICE=cpu TINY=1 bench/gpu_sweep64.sh OUT  # the script itself, tiny sizes, on any machine
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu_sweep64.sh OUTDIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
work=${WORK:-$(mktemp -d)}
dev=${DEVICE:-cuda}
if [ -n "${TINY:-}" ]; then
  size=16 data="--n-samples 240 --epochs 1 --samples-per-epoch 64 --eval-max 16"
  pt="--epochs 1 --n-classes 4 --per-class 8 --test-per-class 2 --eval-max 8"
else
  size=64 data="--n-samples 4800 --epochs 20 --samples-per-epoch 3200 --eval-max 0"
  pt=""
fi
common="--preset cpu --size $size $data --device $dev --runs $work/runs --cache-dir $work/cache --tag sweep64"
log() { echo "[$(date +%T)] $*" | tee -a "$out/sweep.log"; }
log "$($PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")')"
$PY -m training pretrain --preset cpu --size $size $pt --eps 0.5 1 --device $dev --cache-dir $work/cache \
  --runs $work/runs --out $work/sources 2>&1 | tr '\r' '\n' | grep -v '%|' | tee -a "$out/sweep.log"
cp "$work/sources/sources.json" "$out/sources.json" 2>/dev/null || true
models() {  # the model files of split $1 in the order trained
  for d in ST_et0 AT-FT_L1_es0.5_et0 "AT-AFT_L1_es0.5_et*" AT-FT_L1_es1_et0; do
    ls $work/runs/cpu-sweep64/$1/$d/model.pt 2>/dev/null || true
  done
}
for eps1 in 0 1; do
  for split in S1 S2 S3; do
    if [ $eps1 = 0 ]; then
      runs=("--strategy ST" "--strategy AT-FT --eps-source 0.5 --lr-transfer 0.05"
            "--strategy AT-AFT --eps-source 0.5 --lr-transfer 0.05")
    else
      runs=("--strategy AT-FT --eps-source 1 --lr-transfer 0.05")
    fi
    for r in "${runs[@]}"; do
      log "train $split $r"
      $PY -m training train $common --split $split $r --source-dir $work/sources 2>&1 | tr '\r' '\n' \
        | grep -v '%|' | tail -n 4 | tee -a "$out/sweep.log"
    done
    log "compare $split"
    $PY -m training compare $(models $split) --preset cpu --size $size $data --device $dev --runs $work/runs \
      --cache-dir $work/cache --json "$out/compare_${split}_$eps1.json" --markdown "$out/compare_${split}_$eps1.md" \
      2>&1 | tr '\r' '\n' | grep -v '%|' | tail -n 20 | tee -a "$out/sweep.log"
  done
done
log done
