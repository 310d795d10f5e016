# The two commands: `make run` and `make test`. Both create or reuse .venv and install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the complete system: demo data, credentials, API and worker on SQLite.
run: $(STAMP)
	$(BIN)/iod demo --url http://$(HOST):$(PORT)
	$(BIN)/iod serve --host $(HOST) --port $(PORT)

## ruff, mypy --strict, then pytest (PostgreSQL too when IOD_TEST_DATABASE_URL is set).
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .iod .pytest_cache .mypy_cache .ruff_cache
