# EmberLink: the two quick-start commands are `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BOARDS := esp32 rp2
BOARD_STUBS_VERSION := 1.29.0.post1

.PHONY: test demo install lint types unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# a board's own stubs (machine, the port's time) for `make types`, one folder per board
	# so that each board is checked on its own: see firmware/mypy.ini
	for b in $(BOARDS); do \
	  $(PY) -m pip install -q --no-deps --target $(VENV)/board-stubs/$$b \
	    micropython-$$b-stubs==$(BOARD_STUBS_VERSION) || exit 1; \
	done
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy protocol edge cloud tools
	for b in $(BOARDS); do \
	  MYPYPATH=$(VENV)/board-stubs/$$b $(VENV)/bin/mypy --config-file firmware/mypy.ini \
	    --cache-dir .mypy_cache/board-$$b firmware/*.py firmware/board/*.py || exit 1; \
	done

# The rooms' tests on both cores (pytest-xdist), then the end-to-end scenarios alone, one at a
# time: their latencies are measured against bounds, and each starts its own processes.
# `.venv/bin/pytest -q` with no argument still runs everything in one process.
ROOM_TESTS := protocol/tests firmware/tests firmware/board/tests edge/tests cloud/tests tools/tests
unit: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 $(ROOM_TESTS)
	$(VENV)/bin/pytest -q hil_tests

# Lint, types and every test (CPython and the real micropython interpreter).
test: lint types unit

# The main job: see README ("What runs today").
demo: $(STAMP)
	$(VENV)/bin/emberlink demo

bench: $(STAMP)
	$(VENV)/bin/emberlink bench protocol

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
