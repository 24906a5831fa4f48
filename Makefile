# The two commands of the README: `make demo` and `make test`. Both bootstrap what they need.
VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := orbit tuf_updates safe_fs desktop_tray packager osquery_bin_manager server_stub osquery_sim

.PHONY: demo test lint typecheck unit bootstrap lock clean

bootstrap:
	@build_scripts/bootstrap.sh

# requirements/*.lock from pyproject.toml (uv pinned in the dev extra; ADR 0010). UPGRADE=1 moves transitive pins on.
lock: bootstrap
	$(PY) build_scripts/lock.py $(if $(UPGRADE),--upgrade)

# FROZEN=1: orbit, osqueryd and fleet-desktop as frozen release builds (PyInstaller, cached in build/cache/)
demo: bootstrap
	$(PY) -m build_scripts.demo $(if $(FROZEN),--frozen)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: bootstrap
	$(VENV)/bin/mypy $(PACKAGES) build_scripts benchmarks

unit: bootstrap
	$(VENV)/bin/pytest tests/unit -q

# pytest-xdist workers: the suite waits on servers, timers, Wine and PyInstaller about half of its wall time, so two
# workers per core keep the cores busy. --dist loadfile keeps a file on one worker (a module's fixtures, e.g. the
# frozen build, are made once); --no-loadscope-reorder keeps the order of tests/conftest.py (slow files first).
TEST_WORKERS ?= 4

test: lint typecheck
	NO_PROXY=127.0.0.1,localhost,::1 $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
