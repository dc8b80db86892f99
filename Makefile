# drainwatch — the two commands a fresh machine needs: `make drill` and `make test`.
# Everything below them (virtual environment, Python packages, npm test nodes) is set up here.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: drill test lint unit setup clean

drill: $(PY_STAMP) $(NODE_STAMP)
	$(BIN)/drainwatch drill $(DRILL_ARGS)

test: $(PY_STAMP) $(NODE_STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm install --ignore-scripts --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache drill-out
