# fillcls_ros: every target creates what it needs on first use (scripts/setup_env.sh).
PY := .venv/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_shm.xml
PYTEST_ARGS ?=

.PHONY: setup demo test bench models clean photos
setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) -m fillcls_ros.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q test $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_node.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py

# The shipped default models (models/default.pt, models/segmenter.pt and their ONNX exports
# default.onnx / segmenter.onnx, which the node loads on the CPU; default.int8.onnx is made here,
# not shipped), reproduced from scratch on the procedural data: the classifier is ST on S1's
# training containers at 64 px (the cpu preset with a larger input, more crops and epochs), the
# segmenter FillSegNet on S1's training frames.
DEFAULT_MODEL_ARGS := --preset cpu --split S1 --strategy ST --size 64 --n-samples 4800 --epochs 20 \
	--samples-per-epoch 3200 --eval-max 0 --tag default64
models: setup
	$(PY) -m training train $(DEFAULT_MODEL_ARGS)
	$(PY) -m training export $(DEFAULT_MODEL_ARGS) --half --model-id fillcls-default-S1-ST-64px --out models/default.pt
	$(PY) -m training segtrain --split S1 --export models/segmenter.pt
	$(PY) -m training export $(DEFAULT_MODEL_ARGS) --half --model-id fillcls-default-S1-ST-64px --format onnx \
		--int8 --out models/default.onnx
	$(PY) -m training.onnx_export models/segmenter.pt models/segmenter.onnx

# Real photographs from Debian packages (backgrounds, distractor cut-outs, no-container
# negatives) -> data/photos/, never committed; sources and licences in docs/data.md.
photos: setup
	bash scripts/fetch_photos.sh

clean:
	rm -rf build .venv .pytest_cache
