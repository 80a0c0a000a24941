# taskgate: `make run` runs everything, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# `make test` runs the suite on this many processes (most of its time is spent waiting on the
# servers, workers and APIs it starts), then the tests marked `alone` (they measure time) by
# themselves. PYTEST_WORKERS=0 runs everything in one process. A file's tests share a process but
# for the slowest files' (tests/conftest.py, SLOWEST), which start first, so none is left last.
PYTEST_WORKERS ?= 4
BENCH_ARGS ?=
# Options for `taskgate up`, e.g. make run RUN_ARGS="--port 8001 --flower-port 5556"
RUN_ARGS ?=

# `make test-lowest`: tests again in LOWEST_VENV, made with the lowest versions pyproject.toml
# allows of every direct dependency, dev tools included (uv's --resolution lowest-direct), so the
# lower bounds are tested, not just declared. The subset is what the bounds touch, kept to about
# a minute on 2 processes: the library (a worker starts), the producer, Celery's message format,
# the API through uvicorn (SSE streams and their release included), the webhook sender's session
# (aiohttp); then the concurrency tests under the lowest redis-py by themselves (their bursts time
# themselves against the whole machine).
LOWEST_VENV ?= .venv-lowest
LOWEST_WORKERS ?= 2
LOWEST_TESTS ?= tests/test_gate.py tests/producer tests/brokers/test_message.py tests/api/test_app.py \
	tests/api/test_input.py tests/api/test_metrics.py tests/worker/test_webhook_transport.py
LOWEST_ALONE_TESTS ?= tests/test_concurrency.py

.PHONY: run test lint typecheck pytest test-lowest bench profile clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "taskgate needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Runtime install; redone when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "Installing taskgate and its runtime dependencies into $(VENV) (first run only: some 15-30 s from a warm pip cache, longer while packages download)..."
	$(PY) -m pip install --quiet --progress-bar off -e .
	@echo "Installed."
	@touch $@

# Runtime plus the test and lint tools.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	@echo "Installing taskgate with its test and lint tools into $(VENV) (first run only: longer than the runtime install, more packages)..."
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	@echo "Installed."
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/taskgate up $(RUN_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

# Exit status 5 is pytest's "no test selected" (a PYTEST_ARGS filter can leave a phase empty).
pytest: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not alone" $(PYTEST_ARGS) \
		|| [ $$? -eq 5 ]
	$(PY) -m pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

test: lint typecheck pytest test-lowest

# Redone when pyproject.toml changes; `uv pip sync` makes the venv exactly the resolved set (a
# package a bound no longer brings in is removed). uv itself comes from the dev tools in $(VENV).
$(LOWEST_VENV)/.installed: pyproject.toml $(VENV)/.installed-dev
	@echo "Building $(LOWEST_VENV) with the lowest versions pyproject.toml allows..."
	$(VENV)/bin/uv venv --quiet --allow-existing --python $(PY) $(LOWEST_VENV)
	$(VENV)/bin/uv pip compile --quiet --resolution lowest-direct --extra dev --python $(PY) pyproject.toml \
		-o $(LOWEST_VENV)/requirements.txt
	VIRTUAL_ENV=$(LOWEST_VENV) $(VENV)/bin/uv pip sync --quiet $(LOWEST_VENV)/requirements.txt
	VIRTUAL_ENV=$(LOWEST_VENV) $(VENV)/bin/uv pip install --quiet --no-deps -e .
	@touch $@

test-lowest: $(LOWEST_VENV)/.installed
	$(LOWEST_VENV)/bin/python -m pytest -n $(LOWEST_WORKERS) --dist loadfile -m "not alone" $(LOWEST_TESTS) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(LOWEST_VENV)/bin/python -m pytest -n 0 $(LOWEST_ALONE_TESTS) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The benchmark: needs wrk (Debian's package; installed here when missing and run as root).
bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(PY) -m bench.run $(BENCH_ARGS)

# Where the API's CPU goes per submit (py-spy; needs wrk too, and ptrace rights).
profile: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "profile needs wrk: apt-get install wrk"; exit 1; }
	$(PY) -m bench.profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .mypy_cache .ruff_cache
