#!/usr/bin/env bash
# Prepare this checkout: Debian packages (as root) and the .venv with the project and its dev tools, installed
# from requirements/dev.lock.
# Idempotent and quick when nothing changed (stamp files keyed by the inputs' hashes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
APT_LIST="build_scripts/apt-packages.txt"
LOCK="requirements/dev.lock"

# pip install into the venv; its exit status counts, its output without this machine's find-links warnings
pip_install() {
    local log status=0
    log="$(mktemp)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
    grep -v '^WARNING: Location' "$log" >&2 || true
    rm -f "$log"
    return "$status"
}

wanted_packages() { grep -v '^\s*#' "$APT_LIST" | awk 'NF {print $1}'; }

missing_packages() {
    local pkg
    for pkg in $(wanted_packages); do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

missing="$(missing_packages | tr '\n' ' ')"
if [ -n "${missing// /}" ]; then
    if [ "$(id -u)" = "0" ]; then
        echo "bootstrap: installing Debian packages: $missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "bootstrap: missing Debian packages: $missing" >&2
        echo "bootstrap: run as root, or: sudo apt-get install -y $missing" >&2
        exit 1
    fi
fi

# the venv is exactly requirements/dev.lock (every package ==-pinned with hashes, ADR 0010) plus the project itself;
# a changed lock or pyproject.toml (entry points, packages) rebuilds it from scratch, so nothing outside the lock lingers
if ! "$PYTHON" build_scripts/lock.py --check; then
    echo "bootstrap: WARNING: $LOCK does not match pyproject.toml; installing it anyway (run: make lock)" >&2
fi
stamp="$VENV/.installed-$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    if [ -d "$VENV" ]; then
        echo "bootstrap: $LOCK or pyproject.toml changed: recreating $VENV"
        rm -rf "$VENV"
    fi
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
    pip_install --upgrade 'pip==25.3'
    echo "bootstrap: installing $LOCK into $VENV"
    pip_install --require-hashes -r "$LOCK"
    # the project's own packages, editable; its build backend (setuptools) comes from the lock, not from the index
    pip_install --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -c 'import server_stub, starlette, uvicorn, httpx, pytest, PyInstaller' # fail loudly if the install failed
    touch "$stamp"
fi
