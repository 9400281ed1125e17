//! Whole-system tests of cinta live in `tests/tests/`; they start the real binaries. This library holds nothing.
