#!/usr/bin/env bash
# Prepare this checkout: Debian packages (as root) and the .venv with the project and its dev tools.
# Idempotent and quick when nothing changed (stamp files keyed by the inputs' hashes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
APT_LIST="build_scripts/apt-packages.txt"

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

stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo "bootstrap: creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip==25.3' 2>&1 | grep -v '^WARNING: Location' || true
    echo "bootstrap: installing the project and its dev tools into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,build]' 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c 'import server_stub, starlette, uvicorn, httpx, pytest' # fail loudly if the install failed
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
