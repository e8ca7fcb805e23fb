# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Offline copies of the datasets (tests and the demo never download).
export PERFTUNE_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: demo test lint venv clean bench bench-serving bench-drift bench-contention bench-busy browser thesis

$(BIN)/perftune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/perftune

demo: venv
	$(BIN)/perftune tune examples/quick.yaml --out runs/quick --overwrite

# The report's browser test uses Debian's Chromium (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium to run the report's browser test"; fi; }

test: venv browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/overhead.py

# perftune serve vs mlflow models serve; the load client is wrk (Debian package), installed when missing.
bench-serving: venv
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "install wrk (apt-get install wrk) to run the serving benchmark"; exit 1; fi; }
	$(BIN)/python benchmarks/serving.py

# perftune monitor's drift check vs Evidently's DataDriftPreset (Evidently gets its own venv in .bench/, made once).
bench-drift: venv
	$(BIN)/python benchmarks/drift.py

# Decisions quiet vs beside ../shared/tools/busy 2, alternately (≤ 40 min); before/after side by side with e.g.
# CONTENTION_ARGS="--code before=../wt-before/src --code after=src" (--quick: a smoke run, --only: some decisions).
bench-contention: venv
	$(BIN)/python benchmarks/contention.py $(CONTENTION_ARGS)

# How busy the thesis's budgets / ASHA / budgets + ASHA runs keep the cores, on a part of thesis-small (minutes, not
# an hour). BUSY_ARGS="--code before=../wt-before/src --code after=src" compares checkouts side by side.
bench-busy: venv
	$(BIN)/python benchmarks/busy_cores.py $(BUSY_ARGS)

# The thesis experiment on 2 cores (≤ 1 hour): five runs of examples/thesis-small.yaml (full grid, budgets, ASHA,
# budgets + ASHA, one epoch + top k), then the generated Results chapter docs/results/README.md and its figures.
# Finished runs in thesis-workspace/ are reused; THESIS_ARGS=--rerun runs them again.
thesis: venv
	$(BIN)/python benchmarks/thesis.py $(THESIS_ARGS)

clean:
	rm -rf $(VENV) runs perftune-workspace thesis-workspace .pytest_cache
