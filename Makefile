# Two commands: `make demo` (set up and run the default training job) and `make test` (set up
# and test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) -e '.[text]' -r requirements-test.txt
	# LibAUC (SogCLR/iSogCLR parity): only its loss file is used; its metadata pulls in
	# torchvision, torch_geometric, opencv and more, so install it without dependencies
	$(PIP) --no-deps libauc==2.0.1
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/contrastkit train --overwrite

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
