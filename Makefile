# Bulkhead: `make demo` runs the main job, `make test` runs the whole suite.
# Both set up .venv on first use (Python 3.11+ and make are all a fresh machine needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/bulkhead/signer/v1/*.proto)

.PHONY: setup test demo protos lint bench clean

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

bench: $(STAMP)
	$(PY) benchmarks/backtest_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
