#!/usr/bin/env bash
# Train the `gpu` segmenter preset (MobileNetV3 LR-ASPP, 32 000 procedural / photo / negative frames
# rendered by every core, + path-traced frames) on a lent GPU machine and bring the model back.
# Here, first: .venv/bin/python scripts/pack_gpu_data.py --out .gpu --pbr 300   (photos + frames, ~11 MiB)
# There, from the repository root with `.gpu` carried:  bash scripts/gpu_segtrain.sh OUT [segtrain options]
# SEG_PACK names another pack folder (default .gpu). OUT receives segmenter.pt, result.json,
# segtrain.log. The pack holds no validation photographs:
# evaluate the model back here with bench/eval_segmenter.py.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_segtrain.sh OUT [segtrain options]}
shift
mkdir -p "$out"
pack=${SEG_PACK:-.gpu}
export FILLCLS_PHOTOS=$PWD/$pack/photos PYTHONUNBUFFERED=1 TQDM_DISABLE=1
run=${SEG_RUN:-/tmp/gpu_segtrain}
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/[gpu_segtrain] GPU: /'
py=${PYTHON:-python3}
# SEG_TIMEOUT seconds (0: none): a run stopped by it still brings back its last finished epoch
timeout "${SEG_TIMEOUT:-0}" "$py" -m training segtrain --preset gpu --split S1 --frames-dir "$pack/frames" --frames-repeat 8 \
    --photo-eval-frames 0 --out "$run" --cache-dir "$run.cache" "$@" 2>&1 | tee "$out/segtrain.log"
rc=${PIPESTATUS[0]}
for f in segmenter.pt result.json; do [ -f "$run/$f" ] && cp "$run/$f" "$out/"; done
if [ ! -f "$run/segmenter.pt" ] && [ -f "$run/last.pt" ]; then  # the weights alone (last.pt also holds AdamW's state)
    "$py" -c "import sys; from fillcls.core import read_checkpoint, save_checkpoint
h, s, e = read_checkpoint(sys.argv[1]); save_checkpoint(sys.argv[2], s, h); print('[gpu_segtrain] partial: epoch', e['epoch'])" \
        "$run/last.pt" "$out/partial_segmenter.pt"
fi
exit "$rc"
