# Every install step lives here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HARNESS := js_harness
HARNESS_STAMP := $(HARNESS)/node_modules/.installed
WEB := app/web
WEB_STAMP := $(WEB)/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install chromium redis-server cc kernels demo test lint zoo bench clean

install: $(STAMP) $(HARNESS_STAMP) $(WEB_STAMP) chromium redis-server cc kernels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# TF.js and its wasm backend, pinned by the lock file; served to Chromium from disk.
$(HARNESS_STAMP): $(HARNESS)/package.json $(HARNESS)/package-lock.json
	npm ci --prefix $(HARNESS) --no-audit --no-fund --loglevel=error
	touch $(HARNESS_STAMP)

# Plotly.js for the dashboards, pinned by the lock file; served by the app itself.
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

# Debian's Chromium, driven by Playwright through executable_path (never `playwright install`).
chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The Celery tests start a private redis-server of their own on a unix socket.
redis-server:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }

# The C compiler of the `c` and `c-fastmath` backends.
cc:
	@command -v cc >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc libc6-dev; }

# The comparison's and the diagnosis's numba kernels, compiled into their cache once (4 s),
# not by a first job.
kernels: $(STAMP)
	$(BIN)/python -c "from workers.kernels import load_kernels; load_kernels()"

demo: install
	$(BIN)/driftbench demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Two test processes, each test file whole in one of them (its module fixtures start once):
# about 11 minutes here instead of 16, the servers' and browsers' start-ups overlapping.
test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile

# Every zoo model (twelve keras.applications architectures and four hand-built ones) on
# keras-cpu, numpy and tfjs-cpu against numpy-f64; fails unless every layer is within
# rounding (about 3 minutes).
zoo: install
	$(BIN)/driftbench zoo

# driftbench against bare baselines: ratios with their targets (about 7 minutes).
bench: install
	$(BIN)/driftbench bench

clean:
	rm -rf $(VENV) $(HARNESS)/node_modules $(WEB)/node_modules driftbench-data bench-results .pytest_cache .ruff_cache
