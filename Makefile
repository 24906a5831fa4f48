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

demo: bootstrap
	$(PY) -m build_scripts.demo

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: bootstrap
	$(VENV)/bin/mypy $(PACKAGES) build_scripts benchmarks

unit: bootstrap
	$(VENV)/bin/pytest tests/unit -q

test: lint typecheck
	NO_PROXY=127.0.0.1,localhost,::1 $(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
