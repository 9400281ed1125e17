//! PyKMIP's own integration suite (`kmip/tests/integration` of the pinned
//! source distribution, unpacked by tests/python/setup.sh) run with pytest
//! against a real cinta-keymgr: every test passes except those named, with
//! the reason, in tests/python/pykmip_integration_skip.txt.

use std::path::PathBuf;
use std::process::Command;

use cinta_kmip::message::Version;
use cinta_tests::keymgr::Kms;
use cinta_tests::python;

use cinta_tests::repo as root;

/// The skip file's entries: (pytest node id, reason). Every entry must give a reason.
fn skipped() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("tests/python/pykmip_integration_skip.txt"))
        .expect("read tests/python/pykmip_integration_skip.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, why) = l
                .split_once(" -- ")
                .unwrap_or_else(|| panic!("skip entry without ' -- reason': {l}"));
            assert!(!why.trim().is_empty(), "skip entry without a reason: {l}");
            (id.trim().to_string(), why.trim().to_string())
        })
        .collect()
}

#[test]
fn pykmip_integration_suite_passes_but_for_the_named_skips() {
    let py = python();
    let src = PathBuf::from(py.parent().unwrap())
        .join("../src")
        .join("pykmip-0.11.0");
    let suite = src.join("kmip/tests/integration");
    assert!(suite.is_dir(), "no suite at {}", suite.display());
    let kms = Kms::serving();
    kms.accepted("pykmip", "default", Version::new(1, 2));
    let (host, port) = kms.addr.rsplit_once(':').unwrap();
    // PyKMIP's clients read their section from ~/.pykmip/pykmip.conf.
    let home = kms.dir.path().join("home");
    std::fs::create_dir_all(home.join(".pykmip")).unwrap();
    std::fs::write(
        home.join(".pykmip/pykmip.conf"),
        format!(
            "[cinta]\nhost={host}\nport={port}\ncertfile={}\nkeyfile={}\nca_certs={}\n\
             cert_reqs=CERT_REQUIRED\nssl_version=PROTOCOL_SSLv23\n\
             do_handshake_on_connect=True\nsuppress_ragged_eofs=True\n",
            kms.pki.join("pykmip.pem").display(),
            kms.pki.join("pykmip.key").display(),
            kms.pki.join("ca.pem").display(),
        ),
    )
    .unwrap();
    let skips = skipped();
    let mut cmd = Command::new(&py);
    cmd.current_dir(&src)
        .env("HOME", &home)
        .args([
            "-m",
            "pytest",
            "kmip/tests/integration",
            "--config",
            "cinta",
        ])
        .args(["-p", "no:cacheprovider", "-q", "-rfE", "--no-header"])
        .args(["-W", "ignore"]);
    for (id, _) in &skips {
        cmd.arg("--deselect").arg(id);
    }
    let out = cmd.output().expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
        .unwrap_or("")
        .to_string();
    assert!(
        out.status.success(),
        "PyKMIP's integration suite against cinta-keymgr: {summary}\n{text}\nserver log:\n{}",
        std::fs::read_to_string(&kms.log).unwrap_or_default()
    );
    // Every test not skipped ran and passed: none silently missing.
    let passed: usize = summary
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" passed"))
        .and_then(|n| n.trim_start_matches('=').trim().parse().ok())
        .unwrap_or(0);
    let deselected: usize = summary
        .split(',')
        .find_map(|p| {
            p.split_whitespace()
                .next()
                .filter(|_| p.contains("deselected"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        deselected,
        skips.len(),
        "every skip entry names a test: {summary}"
    );
    assert!(passed >= 41 - skips.len(), "{summary}");

    // What the skipped tests ask, done the way KMIP allows (same answers),
    // and the forbidden forms refused with their reasons.
    let counterparts = root().join("tests/python/test_pykmip_counterparts.py");
    let out = Command::new(&py)
        .current_dir(&src)
        .env("HOME", &home)
        .env("CINTA_PYKMIP_SECTION", "cinta")
        .arg("-m")
        .arg("pytest")
        .arg(&counterparts)
        .args(["-p", "no:cacheprovider", "-q", "-rfE", "--no-header"])
        .args(["-W", "ignore", "--rootdir"])
        .arg(root().join("tests/python"))
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("8 passed"),
        "the skipped tests' counterparts:\n{text}\nserver log:\n{}",
        std::fs::read_to_string(&kms.log).unwrap_or_default()
    );
}
