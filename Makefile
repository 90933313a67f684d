# EmberLink: the two quick-start commands are `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install lint types unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy protocol edge cloud tools
	$(VENV)/bin/mypy --config-file firmware/mypy.ini firmware/*.py firmware/board/*.py

unit: $(STAMP)
	$(VENV)/bin/pytest -q

# Lint, types and every test (CPython and the real micropython interpreter).
test: lint types unit

# The main job: see README ("What runs today").
demo: $(STAMP)
	$(VENV)/bin/emberlink demo

bench: $(STAMP)
	$(VENV)/bin/emberlink bench protocol

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
