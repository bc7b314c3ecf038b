# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the pinned stack into it (constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format install benchmark report fashion-mnist clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] not in [(3, 11), (3, 12)])' \
		|| { echo "ponderlife needs Python 3.11 or 3.12 (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt pip setuptools
	$(BIN)/python -m pip install -q -c constraints.txt --no-build-isolation -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP) fashion-mnist
	PYTHONUNBUFFERED=1 $(BIN)/python -m experiments.demo

# Every figure from every run so far (stream, parity, bit_flipping): `make report RUNS=runs FIGURES=figures`.
RUNS    ?= runs
FIGURES ?= figures
report: $(STAMP)
	$(BIN)/python -m analysis.report $(RUNS) --out $(FIGURES)

# Fashion-MNIST for the real-data streams: Debian's dataset-fashion-mnist ships the IDX
# files. Installed when missing and running as root; otherwise (or if apt fails) a note,
# since only the Fashion-MNIST streams need it (they also take a folder of your own).
FASHION_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's dataset-fashion-mnist into $(FASHION_DIR) ..."; \
		{ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && \
		    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } || \
		echo "note: could not install dataset-fashion-mnist; Fashion-MNIST streams need fashion_root=<IDX folder>"; \
	else \
		echo "note: no Fashion-MNIST in $(FASHION_DIR) (apt-get install dataset-fashion-mnist as root, or set fashion_root)"; \
	fi

test: $(STAMP) fashion-mnist
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
	PYTHONUNBUFFERED=1 $(BIN)/python -m experiments.benchmarks.avalanche_overhead

clean:
	rm -rf $(VENV) build *.egg-info
