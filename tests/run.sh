#!/usr/bin/env bash
# Runs every test of cinta: formatting, lints, the unit, property,
# conformance and whole-system tests. Idempotent; needs only Rust and a C
# compiler (the st ioctl layouts are checked against <sys/mtio.h>).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The whole-system tests in tests/ start the real binaries.
cargo build --workspace --bins --locked
cargo test --workspace --locked
