# The README's commands. Each creates .venv if missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Unset, the settings decide (SR_HOST / SR_PORT, default 127.0.0.1:8000); `make serve PORT=9000`
# and `SR_PORT=9000 make serve` both work.
HOST ?=
PORT ?=
# Where torch comes from: the Dockerfile's knob, but defaulting to the CPU wheel index (small
# CPU build). Empty (`make serve TORCH_INDEX_URL=`): pip's configured index alone decides, and
# from plain PyPI on Linux x86_64 that is the multi-GB CUDA build. `.../whl/cu126` for CUDA.
# Where the CPU index cannot be reached but pip's config finds torch on local disk
# (find-links), pip warns and retries for ~10 s, then installs the local wheel.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: install install-test system-test-deps serve test lint bench evaluate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp files make a second `make serve` start at once instead of re-running pip (so a new
# TORCH_INDEX_URL needs `make clean` first). torch --no-deps: only torch from TORCH_INDEX_URL;
# its dependencies come from pip's configured index with the project's in the next line (pip
# installs what an already installed torch requires). 2.13.0: pyproject.toml's pin.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The Prometheus integration test needs Debian's prometheus, the web page test Debian's
# chromium and the job store's tests Debian's postgresql (the tests start their own server
# from its binaries); install them when we may (as root, with apt), else those tests skip.
system-test-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian prometheus for the integration test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus not installed: its integration test will be skipped"; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian postgresql for the job store's tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	  else echo "postgresql not installed: the job store's PostgreSQL tests will be skipped"; fi; }
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the web page test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not installed: the web page test will be skipped"; fi; }

serve: install
	$(BIN)/python -m service $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

test: install-test system-test-deps
	$(BIN)/python -m pytest -q

lint: install-test
	$(BIN)/ruff check service tests benchmarks deploy

# The request benchmarks, then video: a 640x360 -> x3 clip's frames/s, and the p99 of small
# requests alone, beside it as a request and beside it as a job; then ms per 1080p-output frame
# of every learned method at x2/x3/x4 on the server's device (CUDA in float16 when present).
bench: install-test
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.video
	$(BIN)/python -m benchmarks.frames

# 10,000 mixed requests with hang-ups against a server of its own: RSS at start and end, every
# answer that is neither 200 nor 4xx; exit 1 on any 5xx. `make soak SOAK_ARGS="--requests 1500"`.
.PHONY: soak
SOAK_ARGS ?=
soak: install-test
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

evaluate: install-test
	$(BIN)/python -m service.evaluate

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
