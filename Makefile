# FactoryLM: `make demo` runs the product on its embedded default; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
FLM := $(VENV)/bin/factorylm

.PHONY: setup demo test bench lint typecheck check db-start db-stop clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(FLM) demo

test: setup
	@$(FLM) db start
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

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
