# One task runner: make demo | test | lint | bench. Each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install demo test lint format bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "sagabridge needs Python 3.11 or newer" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The live demo: the embedded broker, moto's SQS server, four choreographed services (orders,
# inventory, payment, shipping) and sagabridge tracking them, until Ctrl-C. Knobs go in DEMO_ARGS
# (`sagabridge demo --help` lists them), e.g. make demo DEMO_ARGS='--mode observe --lose-rate 0.2';
# a bounded run that stops by itself: make demo DEMO_ARGS='--duration 60'.
DEMO_ARGS ?=
demo: install
	$(BIN)/sagabridge demo $(DEMO_ARGS)

# The dashboard's browser tests drive Debian's Chromium (Playwright's own download is not used).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make test needs Chromium at $(CHROMIUM): install Debian's chromium package" >&2; exit 1; }
	apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

test: install $(CHROMIUM)
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The runtime and SQS benchmarks run even when the engine one misses a target; make then fails with the
# engine's status. BENCH_ARGS goes to bench/runtime.py, e.g. make bench BENCH_ARGS=--kafka
bench: install
	$(PY) bench/engine.py; status=$$?; $(PY) bench/runtime.py $(BENCH_ARGS) && $(PY) bench/sqs.py && exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
