# Two commands on a fresh machine: `make run` and `make test`. Each creates .venv and
# installs what it needs the first time (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint typecheck pytest clean bench

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/chatledger demo

test: lint typecheck pytest

lint: $(INSTALLED)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(INSTALLED)
	$(BIN)/mypy

pytest: $(INSTALLED)
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks (bench/), by hand, never in CI: each prints its figures beside a baseline
# measured in the same run. BENCH_ARGS=--quick for a smoke run; PROFILE=1 writes a
# pyinstrument profile of each server into bench/profiles/.
BENCH_SCRIPTS := ingest live_chat write_amplification reads_at_scale walls

bench: $(INSTALLED)
	@for script in $(BENCH_SCRIPTS); do \
		$(BIN)/python -m bench.$$script $(BENCH_ARGS) || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
