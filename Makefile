# Two commands are all the set-up on a fresh machine: `make demo` and `make test`.
# Both (re)create .venv from the lock files in requirements/ whenever a lock changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
LOCKS := requirements/all.lock requirements/train.lock requirements/serve.lock requirements/pipeline.lock
DEMO_DIR ?= demo-output

.PHONY: venv demo test test-long image-test lint format lock clean bench

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/all.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements/all.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: venv
	$(BIN)/python -m snapcat.demo --data data/sample --workdir $(DEMO_DIR)

test: venv lint
	$(BIN)/python -m pytest -q -rs

# The few tests of minutes each (marked `long`: kill-and-resume runs, InceptionV3, ImageNet
# features learning) and the ones that look at the HTML report in headless Chromium (marked
# `browser`; scripts/chromium.sh installs Debian's chromium and chromedriver as root), kept out of
# `make test` so that it stays under ~15 minutes and needs no root; CI runs them after it.
test-long: venv
	scripts/chromium.sh
	$(BIN)/python -m pytest -q -rs -m "long or browser"

# The real images, built with Docker here and run as production runs them (tests marked `image`).
# From nothing: installs and starts Docker, builds the Python base stand-in (Docker Hub is out of
# reach), builds the serving, training and light images, runs the image tests, prints the sizes.
image-test: venv
	scripts/docker-daemon.sh
	scripts/python-base-image.sh
	scripts/build-image.sh serve train pipeline
	$(BIN)/python -m pytest -q -rs -m image
	@docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
		| grep -E '^(ghcr.io/snapcat|snapcat-local)/' | sort

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerates every lock from pyproject.toml. all.lock is the resolution; the per-image locks are
# constrained by it, so every environment gets the same version of every shared package.
lock:
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra train --extra serve --extra pipeline --extra cloud --extra dev pyproject.toml \
		-o requirements/all.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra train --extra pipeline --extra cloud -c requirements/all.lock pyproject.toml \
		-o requirements/train.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra serve -c requirements/all.lock pyproject.toml -o requirements/serve.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra pipeline --extra cloud -c requirements/all.lock pyproject.toml \
		-o requirements/pipeline.lock

bench: venv
	$(BIN)/python benchmarks/normalize_bench.py
	$(BIN)/python benchmarks/input_pipeline_bench.py
	$(BIN)/python benchmarks/serving_bench.py
	$(BIN)/python benchmarks/tf_threads_bench.py
	$(BIN)/python benchmarks/warmup_bench.py
	$(BIN)/python benchmarks/backbone_bench.py
	$(BIN)/python benchmarks/concurrency_sweep.py --no-write

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
