#!/usr/bin/env bash
# Makes the Python environment the tests use (PyKMIP): target/pyvenv, idempotent.
# Also unpacks the pinned PyKMIP's source distribution (its integration
# suite, kmip/tests/integration, is run against cinta-keymgr) under
# target/pyvenv/src.
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
pykmip="$(sed -n 's/^pykmip==//p' "$req")"
src="$venv/src/pykmip-$pykmip"
if [[ ! -d "$src/kmip/tests/integration" ]]; then
    rm -rf "$venv/src" && mkdir -p "$venv/src"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: "pykmip==$pykmip" -d "$venv/src" >&2
    tar -xzf "$venv/src/pykmip-$pykmip.tar.gz" -C "$venv/src"
    test -d "$src/kmip/tests/integration"
fi
echo "$venv/bin/python"
