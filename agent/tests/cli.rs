//! `cinta-agent` as an operator runs it: the real binary on a library in a temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cinta-agent"));
    c.env("RUST_LOG", "warn");
    c
}

fn run(args: &[&str]) -> Output {
    agent().args(args).output().expect("cinta-agent runs")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "cinta-agent {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "cinta-agent {args:?} succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr).unwrap()
}

struct Lib {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    path: String,
}

impl Lib {
    fn new(slots: &str, drives: &str, capacity: &str, cartridges: u32) -> Lib {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("lib").display().to_string();
        ok(&[
            "library",
            "create",
            &path,
            "--slots",
            slots,
            "--drives",
            drives,
            "--ie-ports",
            "2",
            "--capacity",
            capacity,
            "--early-warning",
            "256K",
        ]);
        if cartridges > 0 {
            ok(&[
                "library",
                "add",
                &path,
                "--prefix",
                "VT",
                "--count",
                &cartridges.to_string(),
            ]);
        }
        Lib {
            _tmp: tmp,
            dir,
            path,
        }
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn image(&self, barcode: &str) -> PathBuf {
        self.dir
            .join("lib/cartridges")
            .join(format!("{barcode}.tap"))
    }
    fn state(&self, barcode: &str) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(
                self.dir
                    .join("lib/cartridges")
                    .join(format!("{barcode}.json")),
            )
            .unwrap(),
        )
        .unwrap()
    }
}

/// Reads tape file `file` starting on `volume` and checks it equals `original`.
fn read_back(lib: &Lib, volume: &str, file: u32, original: &Path) {
    let out = lib.file(&format!("{volume}-{file}.out"));
    let _ = std::fs::remove_file(&out);
    ok(&[
        "tape",
        "read",
        &lib.path,
        "--volume",
        volume,
        "--file",
        &file.to_string(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(original).unwrap(),
        std::fs::read(&out).unwrap(),
        "file {file} of {volume} differs from {}",
        original.display()
    );
}

/// `tape write --json` of `input` as file `name`; returns the summary.
fn write_json(lib: &Lib, name: &str, input: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "tape",
        "write",
        &lib.path,
        "--name",
        name,
        "--input",
        input.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

fn random_file(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, cinta_agent::tape::conformance::pattern(seed, len)).unwrap();
}

#[test]
fn write_spanning_cartridges_and_read_back() {
    let lib = Lib::new("8", "2", "2M", 4);
    let input = lib.file("in.bin");
    random_file(&input, 4_000_000, 1);
    let out = ok(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "demo",
        "--input",
        input.to_str().unwrap(),
        "--block-size",
        "64K",
    ]);
    assert!(
        out.contains("cartridge VT0001 section 1") && out.contains("cartridge VT0002 section 2"),
        "{out}"
    );
    let dump = ok(&["library", "dump", &lib.path, "VT0001"]);
    assert!(
        dump.contains("EOV -> VT0002") && dump.contains("DEMO"),
        "{dump}"
    );
    read_back(&lib, "VT0001", 1, &input);
    assert_eq!(lib.state("VT0001")["state"], "full");
    // Append a second file after the last one.
    let small = lib.file("small.bin");
    random_file(&small, 100_001, 2);
    let v = write_json(&lib, "second", &small, &["--append"]);
    let vol = v["file"]["sections"][0]["volser"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["file"]["sequence"], 2, "{out}");
    read_back(&lib, &vol, 2, &small);
    // Every cartridge is back in a slot, none left in a drive.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["library", "list", &lib.path, "--json"])).unwrap();
    for c in list["cartridges"].as_array().unwrap() {
        assert!(c["location"].get("slot").is_some(), "{c}");
    }
}

#[test]
fn import_export_and_moves() {
    let lib = Lib::new("4", "1", "1M", 2);
    ok(&["library", "load", &lib.path, "VT0001"]);
    assert_eq!(lib.state("VT0001")["location"]["drive"], 0);
    ok(&["library", "unload", &lib.path, "--drive", "0"]);
    assert_eq!(lib.state("VT0001")["location"]["slot"], 1);
    ok(&["library", "move", &lib.path, "VT0001", "--to", "slot:4"]);
    ok(&["library", "export", &lib.path, "VT0001"]);
    assert_eq!(lib.state("VT0001")["location"]["ie"], 1);
    let vault = lib.file("vault-VT0001.tap");
    ok(&[
        "library",
        "remove",
        &lib.path,
        "VT0001",
        "--to",
        vault.to_str().unwrap(),
    ]);
    assert!(!lib.image("VT0001").exists());
    // Back from the vault.
    let out = ok(&[
        "library",
        "insert",
        &lib.path,
        vault.to_str().unwrap(),
        "--barcode",
        "VT0001",
    ]);
    assert!(
        out.contains("VT0001") && out.contains("import/export port 1") && out.contains("scratch"),
        "{out}"
    );
    ok(&["library", "import", &lib.path]);
    assert!(lib.state("VT0001")["location"].get("slot").is_some());
    let e = fails(&["library", "expire", &lib.path, "VT0002"]);
    assert!(e.contains("VT0002 is scratch"), "{e}");
}

#[test]
fn bad_input_is_named_and_nothing_is_overwritten() {
    let lib = Lib::new("3", "1", "1M", 2);
    // A file that is not a SIMH cartridge.
    let junk = lib.file("junk.tap");
    std::fs::write(&junk, b"this is a text file, not a tape\n").unwrap();
    let e = fails(&["library", "insert", &lib.path, junk.to_str().unwrap()]);
    assert!(
        e.contains("junk.tap") && e.contains("not a SIMH tape cartridge"),
        "{e}"
    );
    // A label whose volume serial does not match the barcode.
    let img = lib.file("other.tap");
    std::fs::copy(lib.image("VT0002"), &img).unwrap();
    let e = fails(&[
        "library",
        "insert",
        &lib.path,
        img.to_str().unwrap(),
        "--barcode",
        "ZZ0001",
    ]);
    assert!(
        e.contains("label mismatch") && e.contains("ZZ0001") && e.contains("VT0002"),
        "{e}"
    );
    assert!(!lib.dir.join("lib/cartridges/ZZ0001.json").exists());
    // A cartridge whose image was swapped: found at load, not written.
    let before = std::fs::read(lib.image("VT0002")).unwrap();
    std::fs::copy(lib.image("VT0002"), lib.image("VT0001")).unwrap();
    let swapped = std::fs::read(lib.image("VT0001")).unwrap();
    let input = lib.file("in.bin");
    random_file(&input, 10_000, 3);
    // It is put in error state, not written, and the next scratch cartridge takes the file.
    let o = run(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "x",
        "--input",
        input.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("scratch cartridge VT0001 could not be used") && e.contains("label mismatch"),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("cartridge VT0002"));
    assert_eq!(
        std::fs::read(lib.image("VT0001")).unwrap(),
        swapped,
        "a mismatched cartridge was written"
    );
    assert_eq!(lib.state("VT0001")["state"], "error");
    assert_ne!(std::fs::read(lib.image("VT0002")).unwrap(), before);
    // A full library with no scratch cartridge.
    let e = fails(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "more",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        e.contains("has no scratch cartridge") && e.contains("lib"),
        "{e}"
    );
    // Full slots.
    ok(&["library", "add", &lib.path, "VT0003"]);
    let e = fails(&["library", "add", &lib.path, "VT0004"]);
    assert!(e.contains("no free slot for VT0004"), "{e}");
    // A file that is not on the cartridge, and one read past the end of data.
    let e = fails(&[
        "tape",
        "read",
        &lib.path,
        "--volume",
        "VT0002",
        "--file",
        "7",
        "--output",
        lib.file("o").to_str().unwrap(),
    ]);
    assert!(e.contains("VT0002") && e.contains("no tape file 7"), "{e}");
    assert!(!lib.file("o").exists() && !lib.file("o.partial").exists());
    // Relabelling a cartridge that holds data is refused.
    let e = fails(&["library", "label", &lib.path, "VT0002"]);
    assert!(
        e.contains("VT0002 is active") && e.contains("expire"),
        "{e}"
    );
    // Bad barcodes and places.
    let e = fails(&["library", "add", &lib.path, "lower1"]);
    assert!(e.contains("lower1"), "{e}");
    let e = fails(&["library", "move", &lib.path, "VT0002", "--to", "slot:99"]);
    assert!(e.contains("no slot 99"), "{e}");
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A writer that has written `bytes` of a file and waits for more on stdin.
fn start_writer(lib: &Lib, name: &str, bytes: usize) -> Child {
    let mut child = agent()
        .args([
            "tape",
            "write",
            &lib.path,
            "--name",
            name,
            "--block-size",
            "4K",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&cinta_agent::tape::conformance::pattern(9, bytes))
        .unwrap();
    stdin.flush().unwrap();
    // Keep the pipe open (the writer blocks on it) by leaking it into the child handle's lifetime.
    std::mem::forget(stdin);
    child
}

#[test]
fn locks_belong_to_one_job_and_die_with_it() {
    let lib = Lib::new("4", "1", "1M", 2);
    let mut writer = start_writer(&lib, "held", 20_000);
    wait_for("the writer to load a cartridge", || {
        lib.state("VT0001")["location"].get("drive").is_some()
    });
    // The drive and cartridge are the writer's.
    let e = fails(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "other",
        "--input",
        "/dev/null",
    ]);
    assert!(
        e.contains("every drive") && e.contains("drive 0: process"),
        "{e}"
    );
    let e = fails(&["library", "unload", &lib.path, "--drive", "0"]);
    assert!(e.contains("cartridge VT0001 is in use by process"), "{e}");
    assert!(ok(&["library", "list", &lib.path]).contains("in use by process"));
    // The writer crashes: its locks go with it.
    writer.kill().unwrap();
    writer.wait().unwrap();
    ok(&["library", "unload", &lib.path, "--drive", "0"]);
}

#[test]
fn a_writer_killed_mid_write_leaves_a_usable_cartridge() {
    let lib = Lib::new("4", "1", "4M", 2);
    let first = lib.file("first.bin");
    random_file(&first, 300_000, 4);
    ok(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "first",
        "--input",
        first.to_str().unwrap(),
    ]);
    // Append a second file and kill the writer mid-way.
    let mut writer = agent()
        .args([
            "tape",
            "write",
            &lib.path,
            "--name",
            "cut",
            "--block-size",
            "4K",
            "--append",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    stdin
        .write_all(&cinta_agent::tape::conformance::pattern(5, 40_000))
        .unwrap();
    stdin.flush().unwrap();
    wait_for("blocks of the second file on the cartridge", || {
        std::fs::metadata(lib.image("VT0001")).unwrap().len() > 300_000 + 30_000
    });
    writer.kill().unwrap();
    writer.wait().unwrap();
    drop(stdin);
    // Found on the next load, never read as valid data.
    let dump = ok(&["library", "dump", &lib.path, "VT0001"]);
    assert!(
        dump.contains("CUT") && dump.contains("incomplete"),
        "{dump}"
    );
    assert!(dump.contains("stopped without closing"), "{dump}");
    let e = fails(&[
        "tape",
        "read",
        &lib.path,
        "--volume",
        "VT0001",
        "--file",
        "2",
        "--output",
        lib.file("cut.out").to_str().unwrap(),
    ]);
    assert!(e.contains("incomplete"), "{e}");
    assert!(!lib.file("cut.out").exists());
    // Usable up to its last complete file, and after it.
    read_back(&lib, "VT0001", 1, &first);
    let third = lib.file("third.bin");
    random_file(&third, 50_000, 6);
    let v = write_json(&lib, "third", &third, &["--append"]);
    assert_eq!(
        (
            v["file"]["sequence"].as_u64(),
            v["file"]["sections"][0]["volser"].as_str()
        ),
        (Some(2), Some("VT0001"))
    );
    read_back(&lib, "VT0001", 2, &third);
    let dump = ok(&["library", "dump", &lib.path, "VT0001"]);
    assert!(
        !dump.contains("incomplete") && !dump.contains("stopped without closing"),
        "{dump}"
    );
}

#[test]
fn debris_of_a_crash_mid_operation_leaves_the_library_usable() {
    let lib = Lib::new("4", "1", "1M", 1);
    let carts = lib.dir.join("lib/cartridges");
    // A state file being replaced when the crash came, and an add that
    // wrote its image but never committed its state file.
    std::fs::write(carts.join("VT0001.tmp"), b"{\"half\": ").unwrap();
    std::fs::write(carts.join("NEW001.tap"), b"partial image").unwrap();
    let list = ok(&["library", "list", &lib.path]);
    assert!(
        list.contains("VT0001") && !list.contains("NEW001"),
        "{list}"
    );
    assert_eq!(lib.state("VT0001")["state"], "scratch");
    // The uncommitted add is simply done again.
    ok(&["library", "add", &lib.path, "NEW001"]);
    assert!(ok(&["library", "dump", &lib.path, "NEW001"]).contains("next file goes at block 1"));
    // A damaged state file is named, not guessed around.
    std::fs::write(carts.join("VT0001.json"), b"{ not json").unwrap();
    let e = fails(&["library", "list", &lib.path]);
    assert!(e.contains("VT0001.json is damaged"), "{e}");
}

#[test]
fn a_cartridge_repaired_after_an_error_is_cleared_by_the_operator_and_keeps_its_data() {
    let lib = Lib::new("4", "1", "4M", 2);
    let input = lib.file("in.bin");
    random_file(&input, 50_000, 9);
    ok(&[
        "tape",
        "write",
        &lib.path,
        "--name",
        "kept",
        "--input",
        input.to_str().unwrap(),
    ]);
    let good = std::fs::read(lib.image("VT0001")).unwrap();
    let e = fails(&["library", "clear", &lib.path, "VT0001"]);
    assert!(e.contains("not in error state"), "{e}");
    // Damaged: the next read puts it in error state.
    std::fs::write(lib.image("VT0001"), b"this is not a tape any more").unwrap();
    let mut idx = lib.image("VT0001").into_os_string();
    idx.push(".idx");
    let _ = std::fs::remove_file(idx);
    let out = lib.file("out.bin");
    let read = [
        "tape",
        "read",
        &lib.path,
        "--volume",
        "VT0001",
        "--file",
        "1",
        "--output",
        out.to_str().unwrap(),
    ];
    fails(&read);
    assert_eq!(lib.state("VT0001")["state"], "error");
    // Still damaged: clearing is refused, and says why.
    let e = fails(&["library", "clear", &lib.path, "VT0001"]);
    assert!(
        e.contains("still not usable") && e.contains("VT0001"),
        "{e}"
    );
    assert_eq!(lib.state("VT0001")["state"], "error");
    // Repaired (the image put back): cleared, active, its file reads.
    std::fs::write(lib.image("VT0001"), &good).unwrap();
    let said = ok(&["library", "clear", &lib.path, "VT0001"]);
    assert!(said.contains("error state cleared; it is active"), "{said}");
    ok(&read);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
}
