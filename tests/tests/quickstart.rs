//! README's main command, deploy/quickstart.sh, run end to end against the built binaries.

use std::process::Command;

#[test]
fn readme_quickstart_runs() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = Command::new("bash")
        .arg(cinta_tests::repo().join("deploy/quickstart.sh"))
        .env("CINTA_AGENT", cinta_tests::binary("cinta-agent"))
        .env("CINTA_KEYMGR", cinta_tests::binary("cinta-keymgr"))
        .env("CINTA_CONTROLLER", cinta_tests::binary("cinta-controller"))
        .env("CINTACTL", cinta_tests::binary("cintactl"))
        .env("CINTA_DEMO_DIR", &demo)
        .env("CINTA_DEMO_MB", "150")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 150 MB spans three 64 MiB cartridges; the first names the next in EOV2.
    assert!(stdout.contains("cartridge CT0003 section 3"), "{stdout}");
    assert!(stdout.contains("EOV -> CT0002"), "{stdout}");
    assert!(stdout.contains("identical:"), "{stdout}");
    assert!(stdout.contains("imported CT0001 into slot"), "{stdout}");
    // The morning after: a restore request served through RSTLIB.
    assert!(
        stdout.contains("library PAYRST identical to PAYROLL as saved")
            && stdout.contains("restore request R")
            && stdout.contains("closed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verified: ") && stdout.contains("0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("restored tree identical to the source"),
        "{stdout}"
    );
    // The key manager part: pending, accepted, a KMIP-keyed save restored, then shredded.
    assert!(stdout.contains("pending approval"), "{stdout}");
    assert!(
        stdout.contains("restored with the key manager's key: identical"),
        "{stdout}"
    );
    assert!(stdout.contains("destroyed key kmip:"), "{stdout}");
    assert!(stdout.contains("Destroyed"), "{stdout}");
    // The night: pre-close save, close finished with users on, contingency fallback, media to move.
    for want in [
        "pre-close save succeeded; close window open",
        "forcing sign-off (policy)",
        "stdin:PAYROLL.SAVF",
        "3 users still signed on: production cannot be quiesced; FALLBACK to contingency",
        "apply suspended; recovery point",
        "MEDIA: cartridges",
        "night done (contingency fallback)",
        "key kmip:",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
}

#[test]
fn other_binaries_state_what_they_are() {
    for name in ["cinta-controller", "cinta-keymgr", "cintactl"] {
        let out = Command::new(cinta_tests::binary(name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} --version");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(name));
        // Without a command each lists its commands and exits 2.
        let out = Command::new(cinta_tests::binary(name)).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} without a command");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage"),
            "{name}"
        );
    }
}
