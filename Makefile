# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv and installs what it needs from pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install demo test test-unit lint bench clean-demo

$(STAMP): pyproject.toml engines/migration/_linehash.c engines/migration/_relay.c ops/scripts/ensure-build-deps.sh
	bash ops/scripts/ensure-build-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet -e '.[fast]' >/dev/null 2>&1 || echo "note: mysqlclient did not build (it needs \
	libmariadb-dev and pkg-config); migrations read MySQL through PyMySQL instead, about 5x slower"
	$(PY) -c "from engines.migration import linehash, relay; assert linehash.ACCELERATED and relay._c_relay" \
	2>/dev/null || echo "note: the migrations' C modules did not build (they need gcc and the Python headers):\
	MySQL checksums and the PostgreSQL COPY relay run in Python, slower"
	touch $(STAMP)

install: $(STAMP)

## the fleet on embedded Redis + PostgreSQL 18 with a sample database
demo: $(STAMP)
	$(VENV)/bin/dbfleet demo $(DEMO_ARGS)

## every test tier; starts the machine's services first if they are down
test: $(STAMP)
	bash ops/scripts/ensure-services.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check engines workers beat_schedule.py tests
	$(VENV)/bin/mypy

clean-demo:
	rm -rf "$${DBFLEET_STATE_DIR:-$$HOME/.local/share/dbfleet/demo}"
