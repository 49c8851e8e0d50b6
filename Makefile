# fillcls_ros: every target creates what it needs on first use (scripts/setup_env.sh).
PY := .venv/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_shm.xml
PYTEST_ARGS ?=

.PHONY: setup demo test bench models model-card segmenter-stages source-study clean photos bench224-model
setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) -m fillcls_ros.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q test --durations=12 $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_node.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py

# The shipped default models (models/default.pt, models/segmenter.pt and the ONNX exports
# default.onnx / segmenter.onnx, which the node loads on the CPU; default.int8.onnx and
# segmenter.onnx are made here and by setup, not committed), reproduced from scratch on the
# procedural data and the photographs of `make photos` (about 30 h on 2 CPU cores, 24 h of it the
# segmenter's stages 5 and 8-11; minutes on a GPU with scripts/gpu_segtrain.sh): the classifier
# is the paper's AT->FT (L = 1) at 64 px on S1's training containers, from an in-house robust
# source (12 fractal + 12 photographic cut-out classes, L2-PGD eps 0.5 at 64 px; docs/model_card.md), the segmenter the MobileNetV3
# LR-ASPP network on S1's training frames (procedural, photographic, path-traced, random container
# shapes, with a box head since stage 10; its stages 1, 5 and 8-11 ran on a GPU for the shipped file:
# scripts/gpu_segtrain.sh).
SOURCE64 := runs/sources/default64
SOURCE64_MIX := runs/sources/default64-mix
DEFAULT_SOURCE_ARGS := --preset cpu --size 64 --eps 0.5 --data fractals+cutouts --n-classes 12 --out $(SOURCE64_MIX)
ATFT64_ARGS := --preset cpu --split S1 --strategy AT-FT --eps-source 0.5 --lr-transfer 0.05 --size 64 \
	--n-samples 4800 --epochs 20 --samples-per-epoch 3200 --eval-max 0
DEFAULT_MODEL_ARGS := $(ATFT64_ARGS) --source-dir $(SOURCE64_MIX) --tag default64-ft20-mix
# The default until 2026-11-27: the same from the fractal source alone.
FRACTAL_MODEL_ARGS := $(ATFT64_ARGS) --source-dir $(SOURCE64) --tag default64-ft20
DEFAULT_MODEL_ID := fillcls-default-S1-ATFT-mix-64px
models: setup photos segmenter-stages
	$(PY) -m training pretrain $(DEFAULT_SOURCE_ARGS)
	$(PY) -m training train $(DEFAULT_MODEL_ARGS)
	$(PY) -m training export $(DEFAULT_MODEL_ARGS) --half --model-id $(DEFAULT_MODEL_ID) --out models/default.pt
	FILLCLS_PHOTOS=.gpu10/photos $(PY) -m training segtrain $(SEG_GPU11_RUN) --export models/segmenter.pt --half
	$(PY) -m training export $(DEFAULT_MODEL_ARGS) --half --model-id $(DEFAULT_MODEL_ID) --format onnx \
		--int8 --out models/default.onnx
	$(PY) -m training.onnx_export models/segmenter.pt models/segmenter.onnx

# A trained 224 px classifier for the backends and node benchmarks at the paper's input size
# (`bench/bench_backends.py --model runs/bench224/bench224.pt`, `bench/bench_node.py --model
# runs/bench224/bench224.onnx --size 224`): the default's recipe from its source (pretrained here if
# `make models` has not), 4 epochs of 1 600 crops at 224 px; about 20 min on 2 CPU cores.
BENCH224_ARGS := --preset cpu --split S1 --strategy AT-FT --eps-source 0.5 --lr-transfer 0.05 --size 224 \
	--n-samples 4800 --epochs 4 --samples-per-epoch 1600 --source-dir $(SOURCE64_MIX) --tag bench224
bench224-model: setup photos
	$(PY) -m training pretrain $(DEFAULT_SOURCE_ARGS)
	$(PY) -m training train $(BENCH224_ARGS)
	$(PY) -m training export $(BENCH224_ARGS) --half --model-id bench-224-S1-ATFT --out runs/bench224/bench224.pt
	$(PY) -m training export $(BENCH224_ARGS) --half --model-id bench-224-S1-ATFT --format onnx --int8 \
		--out runs/bench224/bench224.onnx

# The measurements of docs/model_card.md (about 10.5 h on 2 CPU cores; needs `make photos`): the
# default AT->FT (its in-house robust source at 64 px: fractals, L2-PGD eps 0.5), ST at the same
# size and budget (the previous default) and the first AT->FT try (lr 0.005, 10 epochs) side by
# side on S1's unseen containers of both renderers (clean, PGD, corruptions), the shipped recipe
# against ST on S2 and S3 (about 1.5 h more), the cpu study's ST and
# AT->FT (both transfer learning rates) on all three splits, the shipped segmenter vs ones
# retrained with the real photographs (and path-traced frames; checked independently on
# scikit-image's sample photographs), and the renderer study: ST at 64 px on 2 400 crops of each
# renderer and on both.
# The larger segmenter (MobileNetV3 LR-ASPP, 3.2 M parameters): 12 000 frames x 6 epochs with the
# photo pack and 300 path-traced frames (scripts/gpu_segtrain.sh runs the same on a GPU: minutes; here
# about 3 h), then fine-tuned on 2 400 new frames + 600 path-traced ones with aspect jitter (~35 min).
SEG_LRASPP_ARGS := --preset gpu --split S1 --train-frames 12000 --epochs 6 --photo-eval-frames 0 \
	--frames-dir .gpu/frames --frames-repeat 8
SEG_LRASPP_FT_ARGS := --train-frames 2400 --epochs 4 --lr 1e-3 --pbr-frames 600 --aspect-jitter 0.6 \
	--photo-eval-frames 100 --pbr-eval-frames 60
# Then (2026-11-27, ~45 min here) random container shapes: half of the training containers drawn with
# a random revolved shape, 3 epochs; then 30 % with more no-container photos, 2 epochs; the shipped
# file is the mean of the weights of that last run and of the stage above (a model soup).
SEG_RS_ARGS := --train-frames 2400 --epochs 3 --lr 1e-3 --pbr-frames 600 --aspect-jitter 0.6 --random-shapes 0.5 \
	--photo-eval-frames 100 --pbr-eval-frames 60
SEG_RS2_ARGS := --train-frames 2400 --epochs 2 --lr 5e-4 --pbr-frames 600 --aspect-jitter 0.6 --random-shapes 0.3 \
	--negative-frames 0.25 --photo-eval-frames 100 --pbr-eval-frames 60
SEG_RS2_RUN := --preset gpu --split S1 --init runs/segmenter/lraspp-rs/S1/segmenter.pt $(SEG_RS2_ARGS) \
	--out runs/segmenter/lraspp-rs2/S1
# Stage 5 (2026-11-27, on one H100 with scripts/gpu_segtrain.sh and the pack `.gpu600`: 7 min; here
# about 9 h): the soup of stages 2 and 4 fine-tuned on 32 000 new frames (40 % random shapes, 20 %
# no-container photos) + 600 path-traced frames x 8, 6 epochs: the shipped file (float16).
SEG_SOUP24 := runs/segmenter/soup24/segmenter.pt
SEG_GPU5_ARGS := --preset gpu --split S1 --train-frames 32000 --epochs 6 --lr 1e-3 --random-shapes 0.4 \
	--aspect-jitter 0.6 --negative-frames 0.2 --photo-eval-frames 0 --frames-dir .gpu600/frames --frames-repeat 8
SEG_GPU5_RUN := $(SEG_GPU5_ARGS) --init $(SEG_SOUP24) --out runs/segmenter/lraspp-gpu5/S1
# Stages 8 and 9 (2026-11-27 afternoon, on one H100 with scripts/gpu_segtrain.sh and the pack `.gpu8`
# of the photographs of 7 packages and 240 path-traced frames: 3 + 3 min; here about 5 h): stage 5
# fine-tuned at a 384 x 288 input (the flutes' thin stems) on 16 000 new frames (25 % no-container
# photos), 4 epochs, then once more with the path-traced frames x 20 (the lease stopped it after
# epoch 3 of 4; this runs all 4).
SEG_GPU8_ARGS := --preset gpu --split S1 --train-frames 16000 --epochs 4 --input-h 288 --input-w 384 \
	--random-shapes 0.4 --aspect-jitter 0.6 --negative-frames 0.25 --photo-eval-frames 0 --frames-dir .gpu8/frames
SEG_GPU8_RUN := $(SEG_GPU8_ARGS) --lr 7e-4 --seed 8 --frames-repeat 10 --init runs/segmenter/lraspp-gpu5/S1/segmenter.pt \
	--out runs/segmenter/lraspp-gpu8/S1
SEG_GPU9_RUN := $(SEG_GPU8_ARGS) --lr 5e-4 --seed 9 --frames-repeat 20 --init runs/segmenter/lraspp-gpu8/S1/segmenter.pt \
	--out runs/segmenter/lraspp-gpu9/S1
SEG_SOUP89 := runs/segmenter/soup89/segmenter.pt
# Stages 10 and 11 (2026-11-27 evening, on one H100 with scripts/gpu_segtrain.sh and the pack `.gpu10`
# (`--quality travel`, to fit beside the repository): 4 + 4 min; here about 5 h): a box head (`--box-head
# true`: every foreground pixel also regresses its container's box; instances are the pixels' box
# votes, fillcls.segnet.box_instances) on the mean of stages 8 and 9 (the shipped file until then; its
# foreground channel), 16 000 new frames x 4 epochs, then 16 000 more with the path-traced frames x 20.
# Stage 11 is the shipped file.
SEG_GPU10_ARGS := --preset gpu --split S1 --train-frames 16000 --epochs 4 --input-h 288 --input-w 384 \
	--random-shapes 0.4 --aspect-jitter 0.6 --negative-frames 0.25 --photo-eval-frames 0 --frames-dir .gpu10/frames \
	--box-head true
SEG_GPU10_RUN := $(SEG_GPU10_ARGS) --lr 7e-4 --seed 10 --frames-repeat 10 --init $(SEG_SOUP89) \
	--out runs/segmenter/lraspp-gpu10/S1
SEG_GPU11_RUN := $(SEG_GPU10_ARGS) --lr 5e-4 --seed 11 --frames-repeat 20 --init runs/segmenter/lraspp-gpu10/S1/segmenter.pt \
	--out runs/segmenter/lraspp-gpu11/S1
# The segmenter's training stages (`models` exports the shipped file from the last, then
# `model-card` evaluates them); a finished stage is skipped.
segmenter-stages: setup photos
	$(PY) scripts/pack_gpu_data.py --out .gpu --pbr 300
	FILLCLS_PHOTOS=.gpu/photos $(PY) -m training segtrain $(SEG_LRASPP_ARGS) --out runs/segmenter/lraspp/S1
	$(PY) -m training segtrain --preset gpu --split S1 --init runs/segmenter/lraspp/S1/segmenter.pt $(SEG_LRASPP_FT_ARGS) \
		--out runs/segmenter/lraspp-ft/S1
	$(PY) -m training segtrain --preset gpu --split S1 --init runs/segmenter/lraspp-ft/S1/segmenter.pt $(SEG_RS_ARGS) \
		--out runs/segmenter/lraspp-rs/S1
	$(PY) -m training segtrain $(SEG_RS2_RUN) --export $(SEG_SOUP24) --half \
		--average-with runs/segmenter/lraspp-ft/S1/segmenter.pt
	$(PY) scripts/pack_gpu_data.py --out .gpu600 --pbr 600
	FILLCLS_PHOTOS=.gpu600/photos $(PY) -m training segtrain $(SEG_GPU5_RUN)
	$(PY) scripts/pack_gpu_data.py --out .gpu8 --pbr 240
	FILLCLS_PHOTOS=.gpu8/photos $(PY) -m training segtrain $(SEG_GPU8_RUN)
	FILLCLS_PHOTOS=.gpu8/photos $(PY) -m training segtrain $(SEG_GPU9_RUN) --export $(SEG_SOUP89) --half \
		--average-with runs/segmenter/lraspp-gpu8/S1/segmenter.pt
	$(PY) scripts/pack_gpu_data.py --out .gpu10 --pbr 240 --quality travel
	FILLCLS_PHOTOS=.gpu10/photos $(PY) -m training segtrain $(SEG_GPU10_RUN)
	FILLCLS_PHOTOS=.gpu10/photos $(PY) -m training segtrain $(SEG_GPU11_RUN)
XR_ARGS := --preset cpu --split S1 --strategy ST --size 64 --epochs 8 --samples-per-epoch 3200 --eval-max 0
ST64_ARGS := --preset cpu --split S1 --strategy ST --size 64 --n-samples 4800 --epochs 20 --samples-per-epoch 3200 \
	--eval-max 0 --tag default64
model-card: setup photos segmenter-stages
	$(PY) -m training pretrain --preset cpu --size 64 --eps 0.5 --out $(SOURCE64)
	$(PY) -m training train $(FRACTAL_MODEL_ARGS)
	$(PY) -m training train $(ST64_ARGS)
	$(PY) -m training train --preset cpu --split S1 --size 64 --n-samples 4800 --epochs 10 \
		--samples-per-epoch 3200 --eval-max 0 --tag default64-ft --source-dir $(SOURCE64) \
		--strategy AT-FT --eps-source 0.5
	$(PY) -m training compare runs/cpu-default64/S1/ST_et0/model.pt runs/cpu-default64-ft/S1/AT-FT_L1_es0.5_et0/model.pt \
		runs/cpu-default64-ft20/S1/AT-FT_L1_es0.5_et0/model.pt \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_64.json
	$(PY) -m training pretrain $(DEFAULT_SOURCE_ARGS)
	$(PY) -m training train $(DEFAULT_MODEL_ARGS)
	$(PY) -m training compare runs/cpu-default64/S1/ST_et0/model.pt runs/cpu-default64-ft20/S1/AT-FT_L1_es0.5_et0/model.pt \
		runs/cpu-default64-ft20-mix/S1/AT-FT_L1_es0.5_et0/model.pt \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_64_mix.json
	for s in S2 S3; do $(PY) -m training train $(ST64_ARGS) --split $$s && \
		$(PY) -m training train $(DEFAULT_MODEL_ARGS) --split $$s || exit 1; done
	$(PY) -m training compare $(foreach s,S2 S3,runs/cpu-default64/$(s)/ST_et0/model.pt \
		runs/cpu-default64-ft20-mix/$(s)/AT-FT_L1_es0.5_et0/model.pt) \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_64_mix_s23.json
	$(PY) -m training pretrain --preset cpu --size 64 --eps 0.05 --out $(SOURCE64)
	$(PY) -m training train $(FRACTAL_MODEL_ARGS) --eps-source 0.05
	$(PY) -m training compare runs/cpu-default64-ft20/S1/AT-FT_L1_es0.5_et0/model.pt \
		runs/cpu-default64-ft20/S1/AT-FT_L1_es0.05_et0/model.pt \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_64_eps005.json
	$(PY) -m training pretrain --preset cpu --eps 0 0.5
	for s in S1 S2 S3; do $(PY) -m training train --preset cpu --split $$s --strategy ST && \
		$(PY) -m training train --preset cpu --split $$s --strategy AT-FT --eps-source 0.5 && \
		$(PY) -m training train --preset cpu --split $$s --strategy AT-FT --eps-source 0.5 --lr-transfer 0.05 \
			--tag lr05 || exit 1; done
	$(PY) -m training compare $(foreach s,S1 S2 S3,runs/cpu/$(s)/ST_et0/model.pt runs/cpu/$(s)/AT-FT_L1_es0.5_et0/model.pt \
		runs/cpu-lr05/$(s)/AT-FT_L1_es0.5_et0/model.pt) --preset cpu --pbr 320 --json runs/compare_cpu32.json
	$(PY) -m training pretrain --preset cpu --eps 0.05 1
	$(PY) -m training train --preset cpu --split S1 --strategy AT-FT --eps-source 0.05 --lr-transfer 0.05 --tag lr05
	$(PY) -m training train --preset cpu --split S2 --strategy AT-FT --eps-source 1 --lr-transfer 0.05 --tag lr05
	$(PY) -m training compare $(foreach s,S1 S2,runs/cpu/$(s)/ST_et0/model.pt runs/cpu-lr05/$(s)/AT-FT_L1_es0.5_et0/model.pt) \
		runs/cpu-lr05/S1/AT-FT_L1_es0.05_et0/model.pt runs/cpu-lr05/S2/AT-FT_L1_es1_et0/model.pt \
		--preset cpu --pbr 320 --json runs/compare_cpu32_eps.json
	$(PY) -m training segtrain --preset photos --split S1
	$(PY) -m training segtrain --preset mix --split S1
	$(PY) bench/eval_segmenter.py --model models/segmenter.onnx --pbr 60 --json runs/seg_shipped.json
	$(PY) bench/eval_segmenter.py --model runs/segmenter/photos/S1/segmenter.pt --backend torch --pbr 60 --json runs/seg_photos.json
	$(PY) bench/eval_segmenter.py --model runs/segmenter/mix/S1/segmenter.pt --backend torch --pbr 60 --json runs/seg_mix.json
	$(PY) -m training segtrain --preset mix --split S1 --init runs/segmenter/mix/S1/segmenter.pt \
		--train-frames 4000 --epochs 6 --lr 0.002 --out runs/segmenter/mix2/S1
	$(PY) bench/eval_segmenter.py --model runs/segmenter/mix2/S1/segmenter.pt --backend torch --pbr 60 --json runs/seg_mix2.json
	$(PY) -m training segtrain --preset mix --split S1 --init runs/segmenter/mix/S1/segmenter.pt \
		--pbr-hand-frames 200 --epochs 4 --lr 0.002 --out runs/segmenter/mixh/S1
	$(PY) bench/eval_segmenter.py --model runs/segmenter/mixh/S1/segmenter.pt --backend torch --pbr 60 --json runs/seg_mixh.json
	for m in models/segmenter.onnx runs/segmenter/mix/S1/segmenter.pt runs/segmenter/mix2/S1/segmenter.pt \
		runs/segmenter/mixh/S1/segmenter.pt; do \
		$(PY) bench/eval_segmenter.py --model $$m --procedural 0 --pbr 0 --negatives 0 --pbr-hands 30 || exit 1; done
	for m in runs/segmenter/lraspp/S1/segmenter.pt runs/segmenter/lraspp-ft/S1/segmenter.pt \
		runs/segmenter/lraspp-rs/S1/segmenter.pt runs/segmenter/lraspp-rs2/S1/segmenter.pt models/segmenter.onnx; do \
		$(PY) bench/eval_segmenter.py --model $$m --pbr 60 --pbr-hands 30 --score 0.5,0.7 || exit 1; done
	$(PY) bench/independent_photos.py models/segmenter.onnx runs/segmenter/mix/S1/segmenter.pt \
		runs/segmenter/mix2/S1/segmenter.pt runs/segmenter/mixh/S1/segmenter.pt \
		runs/segmenter/lraspp/S1/segmenter.pt runs/segmenter/lraspp-ft/S1/segmenter.pt \
		runs/segmenter/lraspp-rs2/S1/segmenter.pt
	$(PY) -m training.data contact-sheet --renderer pbr --hands 1 --out docs/pbr_hands.png
	$(PY) -m training.data generate --n 2400 --size 64 --seed 21 --out runs/xr/proc64
	$(PY) -m training.data generate --renderer pbr --n 2400 --size 64 --spp 16 --seed 21 --out runs/xr/pbr64
	$(PY) -m training.data merge runs/xr/mix64/manifest.csv runs/xr/proc64/manifest.csv runs/xr/pbr64/manifest.csv
	for d in proc64 pbr64 mix64; do $(PY) -m training train $(XR_ARGS) --data runs/xr/$$d/manifest.csv --tag xr-$$d || exit 1; done
	for d in proc64 mix64; do $(PY) -m training train $(XR_ARGS) --strategy AT-FT --eps-source 0.5 --lr-transfer 0.05 \
		--source-dir $(SOURCE64) --data runs/xr/$$d/manifest.csv --tag xr-$$d || exit 1; done
	$(PY) -m training compare $(foreach d,proc64 pbr64 mix64,runs/cpu-xr-$(d)/S1/ST_et0/model.pt) \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_xr.json
	$(PY) -m training compare $(foreach d,proc64 mix64,runs/cpu-xr-$(d)/S1/ST_et0/model.pt \
		runs/cpu-xr-$(d)/S1/AT-FT_L1_es0.5_et0/model.pt) \
		--preset cpu --size 64 --n-samples 4800 --eval-max 0 --pbr 320 --json runs/compare_xr_atft.json

# Which source data helps the transfer (issue 16 item 4; docs/model_card.md, *Richer sources*): four
# eps_s 0.5 sources of ~3 000 images each at 32 px (24 fractal classes x 125, 96 x 31, 24 photographic
# cut-outs x 125, 12 + 12 of both), AT->FT from each on all three splits, against ST.
SOURCES32 := cpu cpu-f96 cpu-cutouts cpu-mix
source-study: setup photos
	$(PY) -m training pretrain --preset cpu --eps 0.5
	$(PY) -m training pretrain --preset cpu --eps 0.5 --n-classes 96 --per-class 31 --test-per-class 7 \
		--out runs/sources/cpu-f96
	$(PY) -m training pretrain --preset cpu --eps 0.5 --data cutouts --out runs/sources/cpu-cutouts
	$(PY) -m training pretrain --preset cpu --eps 0.5 --data fractals+cutouts --n-classes 12 \
		--out runs/sources/cpu-mix
	for s in S1 S2 S3; do $(PY) -m training train --preset cpu --split $$s --strategy ST || exit 1; \
		for src in $(SOURCES32); do $(PY) -m training train --preset cpu --split $$s --strategy AT-FT \
			--eps-source 0.5 --lr-transfer 0.05 --source-dir runs/sources/$$src --tag src-$$src || exit 1; done; done
	$(PY) -m training compare $(foreach s,S1 S2 S3,runs/cpu/$(s)/ST_et0/model.pt \
		$(foreach src,$(SOURCES32),runs/cpu-src-$(src)/$(s)/AT-FT_L1_es0.5_et0/model.pt)) \
		--preset cpu --pbr 320 --json runs/compare_sources32.json

# Real photographs from Debian packages (backgrounds, distractor cut-outs, no-container
# negatives) -> data/photos/, never committed; sources and licences in docs/data.md.
photos: setup
	bash scripts/fetch_photos.sh

clean:
	rm -rf build .venv .pytest_cache
