#!/usr/bin/env bash
# Makes the Python environment the tests use (PyKMIP): target/pyvenv, idempotent.
# Usage: bash tests/python/setup.sh   (prints the interpreter's path)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CINTA_PYVENV:-$root/target/pyvenv}"
req="$root/tests/python/requirements.txt"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$venv/bin/python"
