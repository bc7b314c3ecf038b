# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the pinned stack into it (constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format install benchmark clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] not in [(3, 11), (3, 12)])' \
		|| { echo "ponderlife needs Python 3.11 or 3.12 (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt pip setuptools
	$(BIN)/python -m pip install -q -c constraints.txt --no-build-isolation -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	PYTHONUNBUFFERED=1 $(BIN)/python -m experiments.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmark: $(STAMP)
	PYTHONUNBUFFERED=1 $(BIN)/python -m experiments.benchmarks.pondernet_unroll
	PYTHONUNBUFFERED=1 $(BIN)/python -m experiments.benchmarks.cbp_cost

clean:
	rm -rf $(VENV) build *.egg-info
