# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per install profile, so `make test` after `make demo` only adds what is missing.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.all-dev: pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e ".[all,dev]"
	@touch $@

$(VENV)/.bench: pyproject.toml | $(VENV)/.all-dev
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e ".[all,dev,bench]"
	@touch $@

demo: $(VENV)/.core
	$(BIN)/modelfusion demo --output runs/demo

test: $(VENV)/.all-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.bench
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(VENV)/.all-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.all-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
