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

/// The tests' Python (PyKMIP, grpcio, aiosmtpd, and PyKMIP's source
/// distribution unpacked beside it), made by tests/python/setup.sh:
/// `CINTA_PYTHON` when tests/run.sh set it, else the script is run here.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CINTA_PYTHON") {
        return PathBuf::from(p);
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/python/setup.sh"))
        .output()
        .expect("run tests/python/setup.sh");
    assert!(
        out.status.success(),
        "tests/python/setup.sh failed (PyKMIP comes from PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
