#!/usr/bin/env bash
# Runs every test of cinta: formatting, lints, the unit, property,
# conformance, interop and whole-system tests. Idempotent; needs Rust, a C
# compiler (the st ioctl layouts are checked against <sys/mtio.h>), Python 3
# with venv (PyKMIP from PyPI, as an independent KMIP client) and the
# openssl command (an RSA key for the RSA server-certificate test) and
# PostgreSQL's server programs (the controller's catalog on PostgreSQL; each
# test starts its own throwaway server) and Debian's Chromium (the evidence
# report rendered headless); the last four are installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
need=()
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
CINTA_PYTHON="$(bash tests/python/setup.sh)"
export CINTA_PYTHON
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The whole-system tests in tests/ start the real binaries.
cargo build --workspace --bins --locked
cargo test --workspace --locked
