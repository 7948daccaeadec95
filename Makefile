# The interface: `make demo`, `make test`, `make bench`, `make lint` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-quick lint format stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## setup: virtualenv, packages, broker and Spark jars (cached; later runs need no network)
setup: $(STAMP)
	$(BIN)/opensky-lakehouse setup

## demo: broker + real recorded traffic replayed into the lakehouse + dashboard
demo: setup
	$(BIN)/opensky-lakehouse demo

## test: everything the CI runs (real Kafka broker, real Spark and Delta)
test: setup
	$(BIN)/python -m pytest --durations=25

## test-fast: unit tests only (no broker, no Spark jobs)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not browser"

## bench: the benchmark suite, results in bench/results/
bench: setup
	$(BIN)/opensky-lakehouse bench

bench-quick: setup
	$(BIN)/opensky-lakehouse bench --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .

stop:
	-$(BIN)/opensky-lakehouse kafka stop

clean: stop
	rm -rf data/lakehouse data/kafka
