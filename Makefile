# FactoryLM: `make demo` runs the product on its embedded default; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
FLM := $(VENV)/bin/factorylm
# `make test PYTEST_ARGS="-k drift"` runs a part of the suite (scripts/test.sh reads it).
export PYTEST_ARGS

.PHONY: setup demo test bench lint typecheck check db-start db-stop clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(FLM) demo

test: setup
	@$(FLM) db start
	@bash scripts/test.sh

bench: setup
	@$(FLM) db start
	@$(FLM) bench all

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports

typecheck: setup
	@$(VENV)/bin/mypy

check: lint typecheck test

db-start: setup
	@$(FLM) db start

db-stop:
	@$(FLM) db stop

clean:
	@-$(FLM) db stop 2>/dev/null
	rm -rf .factorylm .pytest_cache .mypy_cache .ruff_cache
