//! The agent with the key manager, as real processes: saves encrypted under per-save-set KMIP keys, restores with them, and expiring with --shred destroys the key so every copy, vaulted ones included, is unreadable. Without the key manager, a save fails before writing anything.

use std::path::Path;
use std::process::{Command, Output};

use cinta_kmip::message::Version;
use cinta_tests::keymgr::Kms;

fn agent(args: &[&str]) -> Output {
    Command::new(cinta_tests::binary("cinta-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = agent(args);
    assert!(
        o.status.success(),
        "cinta-agent {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn kmip_file(kms: &Kms, dir: &Path, retry: u64) -> String {
    let p = dir.join("kmip.toml");
    std::fs::write(
        &p,
        format!(
            "server = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nretry_secs = {retry}\n",
            kms.addr,
            kms.pki.join("agent.pem").display(),
            kms.pki.join("agent.key").display(),
            kms.pki.join("ca.pem").display()
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

/// `scan` finds the save set on tape and cannot open it: its key is destroyed.
fn scan_finds_only_a_destroyed_key(lib: &str, kmip: &str, what: &str) {
    let o = agent(&["scan", lib, "--kmip", kmip]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success() && text.contains("destroyed"),
        "{what} after shredding: {text}"
    );
}

/// A virtual library in `w` with `count` scratch cartridges of `capacity`.
fn library(w: &Path, capacity: &str, count: u32) -> String {
    let lib = w.join("lib");
    let lib = lib.to_str().unwrap();
    ok(&[
        "library",
        "create",
        lib,
        "--name",
        "t",
        "--slots",
        "4",
        "--drives",
        "1",
        "--ie-ports",
        "1",
        "--capacity",
        capacity,
        "--early-warning",
        "1M",
    ]);
    ok(&[
        "library",
        "add",
        lib,
        "--prefix",
        "CT",
        "--count",
        &count.to_string(),
    ]);
    lib.to_string()
}

#[test]
fn save_restore_with_kmip_keys_then_shred_makes_every_copy_unreadable() {
    let mut kms = Kms::serving();
    kms.accepted("agent", "default", Version::new(1, 4));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let kmip = kmip_file(&kms, w, 1);
    let lib = library(w, "64M", 2);
    let lib = lib.as_str();
    let src = w.join("src");
    std::fs::create_dir_all(src.join("payroll")).unwrap();
    std::fs::write(src.join("payroll/ledger.dat"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("payroll/close.txt"), b"close of day\n").unwrap();
    let src = src.to_str().unwrap();

    ok(&["save", lib, "--kmip", &kmip, "--source", src]);
    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", lib, "--json"])).unwrap();
    let id = ls[0]["id"].as_str().unwrap().to_string();
    let key_id = ls[0]["key_id"].as_str().unwrap().to_string();
    assert!(key_id.starts_with("kmip:"), "{key_id}");
    let uid = key_id.trim_start_matches("kmip:");
    // The key manager holds that key, named after the save set, Active, tied to it by attributes.
    let show = kms.admin_ok(&["keys", "show", uid]);
    assert!(
        show.contains(&format!("cinta-saveset-{id}"))
            && show.contains("x-cinta-save-set")
            && show.contains(&id),
        "{show}"
    );
    assert!(kms.admin_ok(&["keys", "list"]).contains("Active"));

    ok(&["verify", lib, "--kmip", &kmip, "--save-set", &id]);
    let out = w.join("restored");
    ok(&[
        "restore",
        lib,
        "--kmip",
        &kmip,
        "--save-set",
        &id,
        "--to",
        out.to_str().unwrap(),
    ]);
    let restored = std::fs::read(
        out.join(src.trim_start_matches('/'))
            .join("payroll/ledger.dat"),
    )
    .unwrap();
    assert_eq!(restored, vec![7u8; 300_000]);

    // A copy goes to the vault.
    let vol = ls[0]["volume"].as_str().unwrap().to_string();
    ok(&["library", "export", lib, &vol]);
    let vault = w.join("vault.tap");
    ok(&[
        "library",
        "remove",
        lib,
        &vol,
        "--to",
        vault.to_str().unwrap(),
    ]);
    let copy = w.join("vault-copy.tap");
    std::fs::copy(&vault, &copy).unwrap();
    ok(&[
        "library",
        "insert",
        lib,
        vault.to_str().unwrap(),
        "--barcode",
        &vol,
    ]);
    ok(&["library", "import", lib, &vol]);

    // Expire with --shred: the key is destroyed on the key manager.
    let o = ok(&["expire", lib, "--save-set", &id, "--shred", "--kmip", &kmip]);
    assert!(o.contains("destroyed key") && o.contains(&id), "{o}");
    assert!(kms.admin_ok(&["keys", "list"]).contains("Destroyed"));
    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", lib, "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 0, "gone from the catalog");

    // The tape is still there, but nothing on it can be read: scan finds the save set and cannot open it.
    scan_finds_only_a_destroyed_key(lib, &kmip, "the library's cartridge");
    // Nor can the vaulted copy, brought back in place of the library's cartridge.
    ok(&["library", "export", lib, &vol]);
    ok(&[
        "library",
        "remove",
        lib,
        &vol,
        "--to",
        w.join("scratched.tap").to_str().unwrap(),
    ]);
    ok(&[
        "library",
        "insert",
        lib,
        copy.to_str().unwrap(),
        "--barcode",
        &vol,
    ]);
    ok(&["library", "import", lib, &vol]);
    scan_finds_only_a_destroyed_key(lib, &kmip, "the vaulted copy");

    // With the key manager away, a save fails before writing anything.
    kms.stop();
    let before: serde_json::Value =
        serde_json::from_str(&ok(&["library", "list", lib, "--json"])).unwrap();
    let o = agent(&["save", lib, "--kmip", &kmip, "--source", src]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(&kms.addr),
        "names the key manager: {err}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&ok(&["library", "list", lib, "--json"])).unwrap();
    assert_eq!(before, after, "no cartridge touched");
}

#[test]
fn a_save_waits_out_a_brief_key_manager_outage() {
    let mut kms = Kms::serving();
    kms.accepted("agent", "default", Version::new(1, 4));
    kms.pin_port();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let kmip = kmip_file(&kms, w, 30);
    let lib = library(w, "16M", 1);
    let lib = lib.as_str();
    std::fs::write(w.join("file.dat"), vec![1u8; 100_000]).unwrap();
    kms.stop();
    let save = Command::new(cinta_tests::binary("cinta-agent"))
        .args([
            "save",
            lib,
            "--kmip",
            &kmip,
            "--source",
            w.join("file.dat").to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The agent is retrying by now (its first attempt fails at once); bring the key manager back.
    std::thread::sleep(std::time::Duration::from_millis(700));
    kms.start();
    let out = save.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retrying"), "the wait was logged: {err}");
    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", lib, "--json"])).unwrap();
    let id = ls[0]["id"].as_str().unwrap();
    ok(&["verify", lib, "--kmip", &kmip, "--save-set", id]);
}
