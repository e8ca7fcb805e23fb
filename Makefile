# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Offline copies of the datasets (tests and the demo never download).
export PERFTUNE_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: demo test lint venv clean bench

$(BIN)/perftune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/perftune

demo: venv
	$(BIN)/perftune tune examples/quick.yaml --out runs/quick

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs perftune-workspace .pytest_cache
