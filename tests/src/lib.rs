//! Helpers for cinta's whole-system tests, which start the real binaries.

use std::path::PathBuf;

pub mod keymgr;
pub mod postgres;

/// Path of a binary of this workspace, built by `cargo build --workspace --bins`
/// (tests/run.sh does it before running the tests).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target.join(profile).join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// The repository's top directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
