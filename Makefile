# fillcls_ros: every target creates what it needs on first use (scripts/setup_env.sh).
PY := .venv/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_shm.xml
PYTEST_ARGS ?=

.PHONY: setup demo test bench models clean
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

clean:
	rm -rf build .venv .pytest_cache
