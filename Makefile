# Bulkhead: `make demo` runs the main job, `make test` runs the whole suite.
# Both set up .venv on first use (Python 3.11+ and make are all a fresh machine needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/bulkhead/signer/v1/*.proto)

.PHONY: setup test demo protos lint bench reliability clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/bulkhead demo

protos: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTO_SRC)

lint: $(STAMP)
	$(VENV)/bin/ruff check signer botengine simexchange tests benchmarks
	$(VENV)/bin/lint-imports

# All benchmarks -> one JSON document with targets and pass/fail (~6-8 min; BENCH_ARGS=--quick ~3).
bench: $(STAMP)
	@$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# Faults, load and hostile input against real processes (long form, ~20 min); prints the table.
# The short form of the same scenarios runs in `make test`. RELIABILITY_ARGS=--crash-trials N.
reliability: $(STAMP)
	$(PY) -m tests.reliability.run_long $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
