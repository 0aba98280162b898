# Two commands: `make demo` (set up and run the default training job) and `make test` (set up
# and test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-fast test-slow lint typecheck install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `pip install contrastkit` needs only torch and numpy; the CLI and training (`make demo`) need
# the `train` extra
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[train]'
	touch $@

# the tests cover every feature: the `all` extra (train, mining, metrics, text, data), plus the
# pinned peer libraries and tooling (pytest, ruff, mypy) of requirements-test.txt
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) -e '.[all]' -r requirements-test.txt
	# LibAUC (SogCLR/iSogCLR parity): only its loss file is used; its metadata pulls in
	# torchvision, torch_geometric, opencv and more, so install it without dependencies
	$(PIP) --no-deps libauc==2.0.1
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/contrastkit train --overwrite

# the fast tests first (a failure shows in minutes), then the slow ones (@pytest.mark.slow)
test: install-test
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

lint: install-test
	$(BIN)/ruff check .

# mypy, configured in pyproject.toml ([tool.mypy] files: src/contrastkit/engine, objective and
# losses; run by .ci/run between lint and test)
typecheck: install-test
	$(BIN)/mypy

bench: install-test
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
