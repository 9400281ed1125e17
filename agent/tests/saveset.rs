//! Save, restore and verify through the real binary: mixed trees, spanning, tampering, incrementals, path safety.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cinta_agent::tape::label::{self, Label};
use cinta_agent::tape::vcart::{index_path, Cartridge};
use cinta_agent::tape::{Read, TapeDevice};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cinta-agent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = agent(args);
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

struct Rig {
    _t: tempfile::TempDir,
    dir: PathBuf,
    lib: String,
    key: String,
}

impl Rig {
    fn new(capacity: &str, carts: u32) -> Rig {
        Rig::with(capacity, 1, &[("SS", carts, "")])
    }
    /// A library of `drives` drives with `count` cartridges of each
    /// (prefix, count, media class), and a key file.
    fn with(capacity: &str, drives: u32, carts: &[(&str, u32, &str)]) -> Rig {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let lib = dir.join("lib").display().to_string();
        let key = dir.join("master.key").display().to_string();
        ok(&[
            "library",
            "create",
            &lib,
            "--slots",
            "10",
            "--drives",
            &drives.to_string(),
            "--capacity",
            capacity,
            "--early-warning",
            "1M",
        ]);
        for (prefix, count, class) in carts {
            ok(&[
                "library",
                "add",
                &lib,
                "--prefix",
                prefix,
                "--count",
                &count.to_string(),
                "--media-class",
                class,
            ]);
        }
        ok(&["key", "init", "--file", &key]);
        Rig {
            _t: t,
            dir,
            lib,
            key,
        }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.join(s)
    }
    fn save(&self, source: &Path, extra: &[&str]) -> serde_json::Value {
        let mut a = vec![
            "save",
            &self.lib,
            "--key-file",
            &self.key,
            "--source",
            source.to_str().unwrap(),
            "--json",
        ];
        a.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        v["report"].clone()
    }
    fn restore(&self, id: &str, to: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let o = self.restore_plain(id, to, &[&["--json"], extra].concat());
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(
            |_| serde_json::json!({ "stderr": String::from_utf8_lossy(&o.stderr) }),
        );
        (o.status.code(), v)
    }
    /// A restore, its output as it is.
    fn restore_plain(&self, id: &str, to: &Path, extra: &[&str]) -> Output {
        let mut a = vec![
            "restore",
            &self.lib,
            "--key-file",
            &self.key,
            "--save-set",
            id,
            "--to",
            to.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        agent(&a)
    }
    fn verify(&self, id: &str) -> (Option<i32>, String) {
        let o = agent(&[
            "verify",
            &self.lib,
            "--key-file",
            &self.key,
            "--save-set",
            id,
        ]);
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }
    fn objects(&self, id: &str) -> Vec<serde_json::Value> {
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(&[
            "ls",
            &self.lib,
            "--save-set",
            id,
            "--key-file",
            &self.key,
            "--json",
        ]))
        .unwrap()
    }
    fn image(&self, volser: &str) -> PathBuf {
        self.dir
            .join("lib/cartridges")
            .join(format!("{volser}.tap"))
    }
}

/// The last component of a stored path.
fn base(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    cinta_agent::tape::conformance::pattern(seed, n)
}

/// A tree with every kind of object the issue names.
fn mixed_tree(root: &Path) {
    let d = root.join("data");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    std::fs::write(d.join("small.txt"), b"hello\n").unwrap();
    std::fs::write(d.join("large.bin"), pattern(1, 9_000_000)).unwrap();
    let f = std::fs::File::create(d.join("sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"island", 20 << 20).unwrap();
    std::fs::hard_link(d.join("small.txt"), d.join("sub/hardlink.txt")).unwrap();
    std::os::unix::fs::symlink("../small.txt", d.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", d.join("dangling")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(
        d.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"bytes name",
    )
    .unwrap();
    std::fs::write(d.join("unicode-ñandú-日本.txt"), b"unicode name").unwrap();
    let mut deep = d.join("sub/deeper");
    for i in 0..40 {
        deep = deep.join(format!("level-{i:02}-with-a-longer-name"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"deep").unwrap();
    // Where the file system has no user xattrs (tmpfs on older kernels),
    // there is none to save; the comparison then checks both sides have none.
    match xattr::set(d.join("small.txt"), "user.cinta.note", b"kept") {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!("no user xattrs on this file system")
        }
        Err(e) => panic!("setting an xattr: {e}"),
    }
    // Another owner (the tests run as root, so chown works).
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(d.join("large.bin"), Some(1234), Some(2345)).unwrap();
        std::os::unix::fs::lchown(d.join("sub/link"), Some(1234), Some(2345)).unwrap();
    }
    // Modes a restore must set exactly: below and beyond the umask, read-only, set-id.
    for (name, mode) in [
        ("large.bin", 0o640),
        ("readonly", 0o444),
        ("world", 0o666),
        ("setid", 0o6750),
    ] {
        if !d.join(name).exists() {
            std::fs::write(d.join(name), name.as_bytes()).unwrap();
        }
        std::fs::set_permissions(
            d.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(d.join("large.bin"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Compares two trees: names, kinds, content, mode, mtime, xattrs, link targets.
fn same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| -> Vec<PathBuf> {
        let mut v = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                if std::fs::symlink_metadata(&e).unwrap().is_dir() {
                    stack.push(e.clone());
                }
                v.push(e.strip_prefix(root).unwrap().to_path_buf());
            }
        }
        v.sort();
        v
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la, lb, "the trees hold different names");
    for rel in la {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{rel:?} kind");
        assert_eq!(ma.mode(), mb.mode(), "{rel:?} mode");
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{rel:?} owner");
        if ma.is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{rel:?} target"
            );
            continue;
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{rel:?} mtime"
        );
        if ma.is_file() {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{rel:?} content"
            );
        }
        let xa: Vec<_> = xattr::list(&pa).unwrap().collect();
        let xb: Vec<_> = xattr::list(&pb).unwrap().collect();
        assert_eq!(xa, xb, "{rel:?} xattrs");
    }
}

#[test]
fn a_mixed_tree_spanning_cartridges_round_trips() {
    let r = Rig::new("8M", 6);
    mixed_tree(&r.p("src"));
    let rep = r.save(&r.p("src/data"), &["--segment-size", "64K"]);
    let id = rep["save_set"].as_str().unwrap().to_string();
    assert!(
        rep["file"]["sections"].as_array().unwrap().len() >= 2,
        "9 MB on 8 MiB cartridges spans: {rep}"
    );
    let (code, out) = r.verify(&id);
    assert_eq!(code, Some(0), "{out}");
    let to = r.p("restored");
    let (code, v) = r.restore(&id, &to, &[]);
    assert_eq!(code, Some(0), "{v}");
    let src = std::fs::canonicalize(r.p("src/data")).unwrap();
    let back = to.join(src.strip_prefix("/").unwrap());
    same_tree(&src, &back);
    // Sparse stays sparse; the hard link is one file.
    let sp = std::fs::metadata(back.join("sparse.img")).unwrap();
    assert_eq!(sp.len(), 64 << 20);
    assert!(
        sp.blocks() * 512 < 1 << 20,
        "sparse file restored dense: {} blocks",
        sp.blocks()
    );
    assert_eq!(
        std::fs::metadata(back.join("small.txt")).unwrap().ino(),
        std::fs::metadata(back.join("sub/hardlink.txt"))
            .unwrap()
            .ino()
    );
    // One object alone, by position.
    let one = r.p("one");
    let (code, v) = r.restore(&id, &one, &["--select", "**/bottom.txt"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["restored"], 1, "{v}");
    // Existing files are kept unless replacing is asked.
    let (code, v) = r.restore(&id, &one, &["--select", "**/bottom.txt"]);
    assert_eq!(
        (code, v["skipped"].as_array().unwrap().len()),
        (Some(0), 1),
        "{v}"
    );
}

#[test]
fn a_save_leaves_access_times_as_they_were() {
    let r = Rig::new("64M", 1);
    let src = r.p("src");
    std::fs::create_dir(&src).unwrap();
    let year_2000 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    for name in ["a", "b"] {
        std::fs::write(src.join(name), pattern(7, 5000)).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(src.join(name))
            .unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(year_2000))
            .unwrap();
    }
    // Reading such a file (accessed before it was modified) sets its access
    // time, unless the file system never does (noatime).
    let _ = std::fs::read(src.join("b")).unwrap();
    let atime = |n: &str| std::fs::metadata(src.join(n)).unwrap().atime();
    let moves = atime("b") != 946_684_800;
    let id = r.save(&src, &[])["save_set"].as_str().unwrap().to_string();
    assert_eq!(atime("a"), 946_684_800, "the save changed the access time");
    // What was saved is the access time the file had.
    let (code, v) = r.restore(&id, &r.p("back"), &[]);
    assert_eq!(code, Some(0), "{v}");
    let back = r.p("back").join(src.strip_prefix("/").unwrap()).join("a");
    assert_eq!(std::fs::metadata(back).unwrap().atime(), 946_684_800);
    eprintln!("reads set access times here: {moves}");
}

#[test]
fn stdin_is_one_object() {
    let r = Rig::new("64M", 2);
    let data = pattern(7, 3_000_001);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cinta-agent"))
        .args([
            "save",
            &r.lib,
            "--key-file",
            &r.key,
            "--stdin",
            "QSYS.LIB/PAYROLL.LIB/NIGHT.SAVF",
            "--json",
            "--compress",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["report"]["save_set"].as_str().unwrap();
    let to = r.p("savf");
    let (code, rep) = r.restore(id, &to, &[]);
    assert_eq!(code, Some(0), "{rep}");
    assert_eq!(
        std::fs::read(to.join("QSYS.LIB/PAYROLL.LIB/NIGHT.SAVF")).unwrap(),
        data
    );
}

/// Reads every block and filemark of a cartridge image.
fn read_image(path: &Path) -> Vec<Option<Vec<u8>>> {
    let mut c = Cartridge::open(path, "T", u64::MAX / 4, 0).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match c.read_block(&mut buf) {
            Ok(Read::Block) => out.push(Some(buf.clone())),
            Ok(Read::Filemark) => out.push(None),
            Err(cinta_agent::Error::EndOfData { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn write_image(path: &Path, objs: &[Option<Vec<u8>>]) {
    std::fs::remove_file(path).unwrap();
    let _ = std::fs::remove_file(index_path(path));
    let mut c = Cartridge::create(path, "T", u64::MAX / 4, 0).unwrap();
    for o in objs {
        match o {
            Some(b) => c.write_block(b).unwrap(),
            None => c.write_filemark().unwrap(),
        };
    }
    c.unload().unwrap();
}

/// Makes the EOF1 block count agree with the data blocks again, as a
/// careless copy or a deliberate tamperer would.
fn fix_counts(objs: &mut [Option<Vec<u8>>]) {
    let marks: Vec<usize> = objs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_none())
        .map(|(i, _)| i)
        .collect();
    // VOL1 HDR1 HDR2 TM data TM EOF1 EOF2 TM TM: data lies between marks[0] and marks[1].
    let blocks = (marks[1] - marks[0] - 1) as u64;
    let eof1 = marks[1] + 1;
    if let Ok(Label::File1(mut l)) = label::decode(objs[eof1].as_ref().unwrap()) {
        l.block_count = blocks;
        objs[eof1] = Some(label::encode(&Label::File1(l)).unwrap().to_vec());
    }
}

struct Tampered {
    rig: Rig,
    id: String,
    /// Logical block of each object's first segment.
    at: std::collections::BTreeMap<String, u64>,
}

/// One save set of files a, big1, b, big2, c on one cartridge, 64 KiB segments.
fn tampered_rig() -> Tampered {
    let rig = Rig::new("64M", 3);
    let d = rig.p("t");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a"), b"first small file").unwrap();
    std::fs::write(d.join("big1"), pattern(11, 1_000_000)).unwrap();
    std::fs::write(d.join("b"), b"second small file").unwrap();
    std::fs::write(d.join("big2"), pattern(12, 1_000_000)).unwrap();
    std::fs::write(d.join("c"), b"third small file").unwrap();
    let rep = rig.save(&d, &["--segment-size", "64K"]);
    let id = rep["save_set"].as_str().unwrap().to_string();
    let mut at = std::collections::BTreeMap::new();
    for o in rig.objects(&id) {
        let name = o["path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        at.insert(name, o["block"].as_u64().unwrap());
    }
    Tampered { rig, id, at }
}

fn failed_names(v: &str) -> Vec<String> {
    v.lines()
        .filter_map(|l| l.trim().strip_prefix("FAILED "))
        .map(|l| base(l.split(':').next().unwrap()))
        .collect()
}

fn tamper(t: &Tampered, f: impl FnOnce(&mut Vec<Option<Vec<u8>>>)) -> (Option<i32>, String) {
    let img = t.rig.image("SS0001");
    let mut objs = read_image(&img);
    f(&mut objs);
    write_image(&img, &objs);
    t.rig.verify(&t.id)
}

#[test]
fn a_flipped_bit_fails_only_the_object_it_touches() {
    let t = tampered_rig();
    let blk = t.at["big1"] as usize + 5;
    let (code, out) = tamper(&t, |o| {
        let b = o[blk].as_mut().unwrap();
        b[100] ^= 0x04;
    });
    assert_eq!(code, Some(3), "partial: {out}");
    assert_eq!(failed_names(&out), vec!["big1"], "{out}");
    assert!(
        out.contains(&format!("cartridge SS0001 block {blk}"))
            && out.contains("does not authenticate"),
        "{out}"
    );
    assert!(
        out.contains("5 objects good") || out.contains("objects good"),
        "{out}"
    );
}

#[test]
fn swapped_blocks_fail_the_objects_they_hold() {
    let t = tampered_rig();
    let (x, y) = (t.at["big2"] as usize + 2, t.at["big2"] as usize + 3);
    let (code, out) = tamper(&t, |o| o.swap(x, y));
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(failed_names(&out), vec!["big2"], "{out}");
    assert!(out.contains(&format!("block {x}")), "{out}");
}

#[test]
fn dropped_and_duplicated_blocks_are_found_and_only_the_lost_one_fails() {
    // With the trailer label's count patched to match, and as the damage
    // leaves it (a count that does not match is reported, then read past).
    for (dup, patched) in [(false, true), (true, true), (false, false), (true, false)] {
        let t = tampered_rig();
        let k = t.at["big1"] as usize + 3;
        let (code, out) = tamper(&t, |o| {
            if dup {
                let copy = o[k].clone();
                o.insert(k, copy);
            } else {
                o.remove(k);
            }
            if patched {
                fix_counts(o);
            }
        });
        assert_eq!(code, Some(3), "dup={dup} patched={patched}: {out}");
        assert_eq!(
            out.contains("the trailer label counts"),
            !patched,
            "dup={dup} patched={patched}: {out}"
        );
        if dup {
            // Nothing is lost: every object reads; the extra block is reported.
            assert!(
                failed_names(&out).is_empty() && out.contains("1 block(s) more"),
                "{out}"
            );
        } else {
            assert_eq!(failed_names(&out), vec!["big1"], "{out}");
            assert!(
                out.contains("1 block(s) fewer") && out.contains("blocks were dropped"),
                "{out}"
            );
        }
    }
}

#[test]
fn truncation_wrong_key_and_a_foreign_header_are_named() {
    // Truncated: the last blocks are gone (labels made consistent).
    let t = tampered_rig();
    let (code, out) = tamper(&t, |o| {
        let marks: Vec<usize> = o
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_none())
            .map(|(i, _)| i)
            .collect();
        o.remove(marks[1] - 1);
        o.remove(marks[1] - 2);
        fix_counts(o);
    });
    // What the lost blocks held is lost; what came before still reads.
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("the tape file is truncated"), "{out}");
    let failed = failed_names(&out);
    assert!(
        ["a", "big1", "b"]
            .iter()
            .all(|n| !failed.contains(&n.to_string())),
        "{out}"
    );
    // The wrong key.
    let t = tampered_rig();
    let other = t.rig.p("other.key");
    ok(&["key", "init", "--file", other.to_str().unwrap()]);
    let o = agent(&[
        "verify",
        &t.rig.lib,
        "--key-file",
        other.to_str().unwrap(),
        "--save-set",
        &t.id,
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("made with key file"),
        "{e}"
    );
    // A header block taken from another save set under the same key file.
    let t = tampered_rig();
    let d2 = t.rig.p("t2");
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::write(d2.join("x"), b"another save set").unwrap();
    t.rig.save(&d2, &["--append"]);
    let (code, out) = tamper(&t, |o| {
        let headers: Vec<usize> = o
            .iter()
            .enumerate()
            .filter(|(_, x)| x.as_ref().is_some_and(|b| b.starts_with(b"CINTASS1")))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(headers.len(), 2);
        o[headers[0]] = o[headers[1]].clone();
    });
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("header belongs to another save set"), "{out}");
}

/// Blocks of the tape file: (index of the header block, of the last data block).
fn data_blocks(o: &[Option<Vec<u8>>]) -> (usize, usize) {
    let marks: Vec<usize> = o
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_none())
        .map(|(i, _)| i)
        .collect();
    (marks[0] + 1, marks[1] - 1)
}

/// Restores `t`'s save set; returns the exit code, the output and where it went.
fn restore_all(t: &Tampered) -> (Option<i32>, serde_json::Value, PathBuf) {
    let to = t.rig.p("restored");
    let _ = std::fs::remove_dir_all(&to);
    let (code, v) = t.rig.restore(&t.id, &to, &[]);
    let src = std::fs::canonicalize(t.rig.p("t")).unwrap();
    (code, v, to.join(src.strip_prefix("/").unwrap()))
}

#[test]
fn damage_in_the_first_or_last_segment_costs_only_the_objects_there() {
    let contents = |name: &str| -> Vec<u8> {
        match name {
            "a" => b"first small file".to_vec(),
            "b" => b"second small file".to_vec(),
            "c" => b"third small file".to_vec(),
            "big1" => pattern(11, 1_000_000),
            _ => pattern(12, 1_000_000),
        }
    };
    for first in [true, false] {
        let t = tampered_rig();
        let mut at = 0;
        let (code, out) = tamper(&t, |o| {
            let (header, last) = data_blocks(o);
            at = if first { header + 1 } else { last };
            let b = o[at].as_mut().unwrap();
            let n = b.len();
            b[n / 2] ^= 0x10;
        });
        assert_eq!(code, Some(3), "first={first}: {out}");
        assert!(
            out.contains(&format!("cartridge SS0001 block {at}")),
            "{out}"
        );
        // Exactly the objects whose records lie in that block fail (for the
        // last block: no other), and every other one restores byte for byte.
        let mut starts: Vec<(u64, &String)> = t.at.iter().map(|(n, &b)| (b, n)).collect();
        starts.sort();
        let touching: Vec<String> = starts
            .iter()
            .enumerate()
            .filter(|(i, (b, _))| {
                let next = starts.get(i + 1).map_or(u64::MAX, |x| x.0);
                *b as usize <= at && at as u64 <= next
            })
            .map(|(_, (_, n))| n.to_string())
            .collect();
        let failed = failed_names(&out);
        for n in ["a", "big1", "b", "big2", "c"] {
            let lost = failed.contains(&n.to_string());
            if first {
                assert_eq!(lost, touching.contains(&n.to_string()), "{n}: {out}");
            } else if !touching.contains(&n.to_string()) {
                assert!(!lost, "{n}: {out}");
            }
        }
        let (rcode, v, got) = restore_all(&t);
        assert_eq!(rcode, Some(3), "{v}");
        let failed: Vec<String> = v["report"]["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| base(f[0].as_str().unwrap()))
            .collect();
        for n in ["a", "big1", "b", "big2", "c"] {
            if failed.contains(&n.to_string()) {
                assert!(!got.join(n).exists(), "{n} failed yet named");
            } else if !touching.contains(&n.to_string()) {
                assert_eq!(std::fs::read(got.join(n)).unwrap(), contents(n), "{n}: {v}");
            }
        }
    }
}

#[test]
fn fifos_and_device_nodes_are_saved_and_restored_as_tar_does() {
    let r = Rig::new("64M", 2);
    let d = r.p("special");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("plain"), b"plain").unwrap();
    nix::unistd::mkfifo(
        &d.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        d.join("pipe"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        // /dev/null's numbers: character device 1, 3.
        nix::sys::stat::mknod(
            &d.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &d.join("loop"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(7, 200),
        )
        .unwrap();
        std::os::unix::fs::lchown(d.join("loop"), Some(1234), Some(2345)).unwrap();
    }
    let rep = r.save(&d, &[]);
    let id = rep["save_set"].as_str().unwrap();
    let kinds: std::collections::BTreeMap<String, String> = r
        .objects(id)
        .iter()
        .map(|o| {
            (
                base(o["path"].as_str().unwrap()),
                o["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds["pipe"], "fifo");
    if root {
        assert_eq!(
            (kinds["null"].as_str(), kinds["loop"].as_str()),
            ("char-device", "block-device")
        );
    }
    let to = r.p("dest");
    let (code, v) = r.restore(id, &to, &[]);
    assert_eq!(code, Some(0), "{v}");
    same_tree(
        &d,
        &to.join(
            std::fs::canonicalize(&d)
                .unwrap()
                .strip_prefix("/")
                .unwrap(),
        ),
    );
    let got = to.join(
        std::fs::canonicalize(&d)
            .unwrap()
            .strip_prefix("/")
            .unwrap(),
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(got.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    if root {
        for (n, dev) in [
            ("null", nix::sys::stat::makedev(1, 3)),
            ("loop", nix::sys::stat::makedev(7, 200)),
        ] {
            assert_eq!(
                std::fs::symlink_metadata(got.join(n)).unwrap().rdev(),
                dev,
                "{n}"
            );
        }
    }
}

#[test]
fn a_damaged_header_is_told_from_a_wrong_key_and_named_where_it_lies() {
    let t = tampered_rig();
    let mut at = 0;
    let img = t.rig.image("SS0001");
    let mut objs = read_image(&img);
    let (header, _) = data_blocks(&objs);
    at = at.max(header);
    // A bit of the salt: under format 1 this read as "wrong key, or damaged".
    objs[header].as_mut().unwrap()[40] ^= 0x01;
    write_image(&img, &objs);
    let (code, out) = t.rig.verify(&t.id);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("cartridge SS0001 block {at}"))
            && out.contains("the header block is damaged")
            && !out.contains("wrong key"),
        "{out}"
    );
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_objects_records() {
    let rig = Rig::new("64M", 3);
    let d = rig.p("many");
    std::fs::create_dir_all(&d).unwrap();
    // Long names: an index of several 64 KiB segments.
    for i in 0..1500 {
        std::fs::write(
            d.join(format!("{i:05}-{}", "n".repeat(150))),
            format!("file {i}"),
        )
        .unwrap();
    }
    let rep = rig.save(&d, &["--segment-size", "64K"]);
    let id = rep["save_set"].as_str().unwrap().to_string();
    let last_object = rig
        .objects(&id)
        .iter()
        .map(|o| o["block"].as_u64().unwrap())
        .max()
        .unwrap() as usize;
    let img = rig.image("SS0001");
    let mut objs = read_image(&img);
    let (_, last) = data_blocks(&objs);
    let hit = last_object + 2;
    assert!(hit < last, "the index spans segments: {hit} < {last}");
    let b = objs[hit].as_mut().unwrap();
    b[300] ^= 1;
    write_image(&img, &objs);
    let to = rig.p("restored");
    let (code, v) = rig.restore(&id, &to, &[]);
    assert_eq!(code, Some(3), "{v}");
    let report = &v["report"];
    assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(report["ok"].as_u64().unwrap(), 1501, "{v}");
    let damaged = report["damaged"].to_string();
    assert!(
        damaged.contains(&format!("block {hit}")) && damaged.contains("rebuilt by walking"),
        "{damaged}"
    );
    let src = std::fs::canonicalize(&d).unwrap();
    let got = to.join(src.strip_prefix("/").unwrap());
    for i in [0, 777, 1499] {
        assert_eq!(
            std::fs::read_to_string(got.join(format!("{i:05}-{}", "n".repeat(150)))).unwrap(),
            format!("file {i}")
        );
    }
}

#[test]
fn incremental_and_cumulative_saves_hold_only_changes() {
    let r = Rig::new("64M", 4);
    let d = r.p("inc");
    std::fs::create_dir_all(d.join("s")).unwrap();
    for i in 0..5 {
        std::fs::write(d.join(format!("s/f{i}")), pattern(i, 10_000)).unwrap();
    }
    let full = r.save(&d, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(d.join("s/f1"), b"changed").unwrap();
    std::fs::write(d.join("s/new"), b"added").unwrap();
    let inc = r.save(&d, &["--level", "incr"]);
    let names = |id: &str| -> Vec<String> {
        r.objects(id)
            .iter()
            .filter(|o| o["kind"] == "file")
            .map(|o| base(o["path"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(names(inc["save_set"].as_str().unwrap()), vec!["f1", "new"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(d.join("s/f3"), b"changed too").unwrap();
    let inc2 = r.save(&d, &["--level", "incr"]);
    assert_eq!(names(inc2["save_set"].as_str().unwrap()), vec!["f3"]);
    let cuml = r.save(&d, &["--level", "cuml"]);
    assert_eq!(
        names(cuml["save_set"].as_str().unwrap()),
        vec!["f1", "f3", "new"]
    );
    // Full, then the cumulative, replacing: the tree as it is now.
    let to = r.p("back");
    assert_eq!(
        r.restore(full["save_set"].as_str().unwrap(), &to, &[]).0,
        Some(0)
    );
    assert_eq!(
        r.restore(
            cuml["save_set"].as_str().unwrap(),
            &to,
            &["--existing", "replace"]
        )
        .0,
        Some(0)
    );
    let src = std::fs::canonicalize(&d).unwrap();
    same_tree(&src, &to.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn existing_files_are_kept_unless_replacing_is_asked() {
    let r = Rig::new("64M", 2);
    let d = r.p("keep");
    for f in ["a/f1", "a/f2", "b/g1"] {
        std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        std::fs::write(d.join(f), format!("saved {f}")).unwrap();
    }
    let id = r.save(&d, &[])["save_set"].as_str().unwrap().to_string();
    // The destination already holds a/ with a file of its own at a/f1; b/ is new.
    let to = r.p("to");
    let src = std::fs::canonicalize(&d).unwrap();
    let back = to.join(src.strip_prefix("/").unwrap());
    std::fs::create_dir_all(back.join("a")).unwrap();
    std::fs::write(back.join("a/f1"), "mine").unwrap();
    let (code, v) = r.restore(&id, &to, &[]);
    assert_eq!(code, Some(0), "{v}");
    let skipped: Vec<String> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| base(s.as_str().unwrap()))
        .collect();
    assert_eq!(skipped, vec!["f1"], "{v}");
    let read = |f: &str| std::fs::read_to_string(back.join(f)).unwrap();
    assert_eq!(read("a/f1"), "mine");
    assert_eq!(read("a/f2"), "saved a/f2");
    assert_eq!(read("b/g1"), "saved b/g1");
    // Replacing: the saved content comes back, and nothing else is left beside it.
    let (code, v) = r.restore(&id, &to, &["--existing", "replace"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 0, "{v}");
    same_tree(&src, &back);
}

#[test]
fn a_restore_never_writes_outside_its_destination() {
    let r = Rig::new("64M", 2);
    let d = r.p("safe");
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::write(d.join("etc/passwd"), b"not the real one").unwrap();
    let rep = r.save(&d, &[]);
    let id = rep["save_set"].as_str().unwrap();
    // The destination holds a symlink, on the way to the object, pointing outside.
    let to = r.p("dest");
    let outside = r.p("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let src = std::fs::canonicalize(&d).unwrap();
    let first = src.strip_prefix("/").unwrap().components().next().unwrap();
    std::fs::create_dir_all(&to).unwrap();
    std::os::unix::fs::symlink(&outside, to.join(first)).unwrap();
    let o = r.restore_plain(id, &to, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    // Nothing could be written: every object lies below the symlink.
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("is a symlink or not a directory") && out.contains("etc/passwd"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the destination"
    );
}

#[test]
fn a_restore_goes_on_past_what_it_cannot_write_and_links_become_copies() {
    let r = Rig::new("64M", 2);
    let d = r.p("src");
    // "a-trap" comes first in the walk: its file is the first name of a
    // hard link whose other name, in "b-ok", comes later.
    std::fs::create_dir_all(d.join("a-trap")).unwrap();
    std::fs::create_dir_all(d.join("b-ok/deeper")).unwrap();
    std::fs::write(d.join("a-trap/x"), b"refused").unwrap();
    std::fs::write(d.join("a-trap/first-name"), pattern(7, 300_000)).unwrap();
    std::fs::hard_link(d.join("a-trap/first-name"), d.join("b-ok/second-name")).unwrap();
    std::fs::hard_link(d.join("a-trap/first-name"), d.join("b-ok/third-name")).unwrap();
    std::fs::write(d.join("b-ok/one"), pattern(8, 70_000)).unwrap();
    std::fs::write(d.join("b-ok/deeper/two"), b"two").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("b-ok"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    let set_old = |p: &Path| {
        std::fs::File::open(p).unwrap().set_modified(old).unwrap();
    };
    set_old(&d.join("b-ok"));
    let rep = r.save(&d, &[]);
    let id = rep["save_set"].as_str().unwrap();
    let src = std::fs::canonicalize(&d).unwrap();
    let rel = src.strip_prefix("/").unwrap().to_path_buf();

    // A symlink in the destination where "a-trap" goes, pointing outside.
    let to = r.p("dest");
    let outside = r.p("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(to.join(&rel)).unwrap();
    std::os::unix::fs::symlink(&outside, to.join(&rel).join("a-trap")).unwrap();
    let o = r.restore_plain(id, &to, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut failed = failed_names(&out);
    failed.sort();
    assert_eq!(failed, vec!["a-trap", "first-name", "x"], "{out}");
    assert!(out.contains("is a symlink or not a directory"), "{out}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside"
    );
    // Every other object is there, the hard links as one copy of the data.
    let got = to.join(&rel);
    for f in ["b-ok/second-name", "b-ok/third-name"] {
        assert_eq!(
            std::fs::read(got.join(f)).unwrap(),
            pattern(7, 300_000),
            "{f}"
        );
    }
    let (a, b) = (
        std::fs::metadata(got.join("b-ok/second-name")).unwrap(),
        std::fs::metadata(got.join("b-ok/third-name")).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "the two names are one file"
    );
    assert_eq!(
        std::fs::read(got.join("b-ok/one")).unwrap(),
        pattern(8, 70_000)
    );
    assert_eq!(std::fs::read(got.join("b-ok/deeper/two")).unwrap(), b"two");
    // Directory metadata applied after the failures.
    let m = std::fs::metadata(got.join("b-ok")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o750, 1_500_000_000));
    let o2 = r.restore_plain(
        id,
        &r.p("dest2"),
        &["--select", &format!("{}/b-ok", rel.display())],
    );
    // A hard link whose file is not selected: a copy of the data, and exit 0.
    let out2 = String::from_utf8_lossy(&o2.stdout);
    assert_eq!(o2.status.code(), Some(0), "{out2}");
    let got2 = r.p("dest2").join(&rel);
    assert_eq!(
        std::fs::read(got2.join("b-ok/third-name")).unwrap(),
        pattern(7, 300_000)
    );
    assert!(!got2.join("a-trap").exists());
}

#[test]
fn an_object_changing_while_saved_follows_the_policy() {
    let r = Rig::new("256M", 3);
    let d = r.p("swa");
    std::fs::create_dir_all(&d).unwrap();
    let busy = d.join("busy.db");
    std::fs::write(&busy, pattern(3, 64 << 20)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let b2 = busy.clone();
    let writer = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&b2).unwrap();
        let mut i = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            std::os::unix::fs::FileExt::write_all_at(&f, &i.to_le_bytes(), (i * 4096) % (64 << 20))
                .unwrap();
            i += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let save_with = |policy: &str| {
        agent(&[
            "save",
            &r.lib,
            "--key-file",
            &r.key,
            "--source",
            d.to_str().unwrap(),
            "--on-change",
            policy,
            "--json",
        ])
    };
    let fail = save_with("fail");
    let retry = save_with("retry:1");
    let warn = save_with("warn");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let e = String::from_utf8_lossy(&fail.stderr);
    assert!(
        !fail.status.success() && e.contains("changed while it was saved"),
        "{e}"
    );
    // The failed save left no catalog entry and no readable tape file.
    assert!(
        warn.status.success(),
        "{}",
        String::from_utf8_lossy(&warn.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&warn.stdout).unwrap();
    assert_eq!(v["report"]["changed"].as_array().unwrap().len(), 1, "{v}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&ok(&["ls", &r.lib, "--json"])).unwrap();
    // Retried once, still changing: kept with the flag, like warn.
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let rv: serde_json::Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(rv["report"]["changed"].as_array().unwrap().len(), 1, "{rv}");
    assert_eq!(all.len(), 2, "the failed save has no catalog entry");
    let objs = r.objects(v["report"]["save_set"].as_str().unwrap());
    assert!(
        objs.iter().any(|o| o["changed_while_saved"] == true),
        "{objs:?}"
    );
}

#[test]
fn scan_rebuilds_the_catalog_from_the_cartridges() {
    let r = Rig::new("8M", 6);
    mixed_tree(&r.p("src"));
    let a = r.save(&r.p("src/data"), &["--segment-size", "64K"]);
    std::fs::write(r.p("x"), b"x").unwrap();
    let b = r.save(&r.p("x"), &["--append"]);
    let before: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["ls", &r.lib, "--json"])).unwrap();
    std::fs::remove_dir_all(r.dir.join("lib/catalog")).unwrap();
    let out = ok(&["scan", &r.lib, "--key-file", &r.key]);
    // Listed by cartridge: the spanning save set is on both of its cartridges.
    let on2: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["ls", &r.lib, "--volume", "SS0002", "--json"])).unwrap();
    assert_eq!(on2.len(), 2, "{on2:?}");
    let on3: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["ls", &r.lib, "--volume", "SS0003", "--json"])).unwrap();
    assert!(on3.is_empty(), "{on3:?}");
    assert!(out.contains("scan found 2 save sets"), "{out}");
    let after: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["ls", &r.lib, "--json"])).unwrap();
    assert_eq!(before, after);
    for id in [
        a["save_set"].as_str().unwrap(),
        b["save_set"].as_str().unwrap(),
    ] {
        assert_eq!(r.verify(id).0, Some(0));
    }
}

#[test]
fn names_that_are_not_utf8_are_listed_apart_and_selected_as_listed() {
    use std::os::unix::ffi::OsStrExt;
    let r = Rig::new("64M", 1);
    let src = r.p("src");
    std::fs::create_dir_all(&src).unwrap();
    let name = |b: &[u8]| src.join(std::ffi::OsStr::from_bytes(b));
    std::fs::write(name(b"caf\xe9"), b"latin-1 e acute").unwrap();
    std::fs::write(name(b"caf\xe8"), b"latin-1 e grave").unwrap();
    std::fs::write(name("café".as_bytes()), b"utf-8").unwrap();
    let id = r.save(&src, &[])["save_set"].as_str().unwrap().to_string();
    let paths: Vec<String> = r
        .objects(&id)
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    let find = |tail: &str| {
        paths
            .iter()
            .find(|p| p.ends_with(&format!("/{tail}")))
            .unwrap_or_else(|| panic!("{tail} not in {paths:?}"))
            .clone()
    };
    let (e9, e8) = (find("caf\\xe9"), find("caf\\xe8"));
    find("café");
    assert_ne!(e9, e8, "two names, listed apart");
    // The name as listed selects that one object.
    let to = r.p("out");
    let (code, rep) = r.restore(&id, &to, &["--select", &e9]);
    assert_eq!(code, Some(0), "{rep}");
    let restored = to.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join(std::ffi::OsStr::from_bytes(b"caf\xe9"))).unwrap(),
        b"latin-1 e acute"
    );
    assert!(!restored
        .join(std::ffi::OsStr::from_bytes(b"caf\xe8"))
        .exists());
    // A selection that matches nothing is an error, not an empty success.
    let (code, rep) = r.restore(&id, &r.p("none"), &["--select", "no/such/object"]);
    assert_eq!(code, Some(1), "{rep}");
    assert!(rep.to_string().contains("matched no object"), "{rep}");
}

#[test]
fn an_unreadable_scratch_cartridge_is_put_in_error_and_the_next_one_used() {
    let r = Rig::new("64M", 2);
    // The first scratch cartridge's image is garbage (its index gone too).
    let bad = r.image("SS0001");
    std::fs::write(&bad, pattern(3, 100_000)).unwrap();
    let _ = std::fs::remove_file(index_path(&bad));
    let src = r.p("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let rep = r.save(&src, &[]);
    let w = rep["warnings"].to_string();
    assert!(
        w.contains("scratch cartridge SS0001 could not be used"),
        "{rep}"
    );
    assert_eq!(rep["file"]["sections"][0]["volser"], "SS0002", "{rep}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["library", "list", &r.lib, "--json"])).unwrap();
    let text = list.to_string();
    let first = text.find("SS0001").unwrap();
    assert!(
        text[first..]
            .split("SS0002")
            .next()
            .unwrap()
            .contains("error"),
        "{list}"
    );
    let (code, out) = r.verify(rep["save_set"].as_str().unwrap());
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn names_near_the_length_limit_restore_whatever_their_kind() {
    let r = Rig::new("64M", 1);
    let src = r.p("src");
    std::fs::create_dir_all(&src).unwrap();
    let long = |c: char| c.to_string().repeat(250);
    std::fs::write(src.join(long('f')), b"long file").unwrap();
    std::os::unix::fs::symlink("f-target", src.join(long('s'))).unwrap();
    std::fs::hard_link(src.join(long('f')), src.join(long('h'))).unwrap();
    let id = r.save(&src, &[])["save_set"].as_str().unwrap().to_string();
    let to = r.p("out");
    let (code, rep) = r.restore(&id, &to, &[]);
    assert_eq!(code, Some(0), "{rep}");
    let got = to.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(got.join(long('f'))).unwrap(), b"long file");
    assert_eq!(std::fs::read(got.join(long('h'))).unwrap(), b"long file");
    assert_eq!(
        std::fs::read_link(got.join(long('s'))).unwrap(),
        Path::new("f-target")
    );
    // Again over what is there, replacing it.
    std::fs::write(got.join(long('f')), b"old").unwrap();
    let (code, rep) = r.restore(&id, &to, &["--existing", "replace"]);
    assert_eq!(code, Some(0), "{rep}");
    assert_eq!(std::fs::read(got.join(long('f'))).unwrap(), b"long file");
    assert_eq!(
        std::fs::read_link(got.join(long('s'))).unwrap(),
        Path::new("f-target")
    );
}

mod damage {
    //! Random damage to one block of a small save set: nothing panics, and
    //! every object whose blocks are intact restores byte for byte.
    use super::*;
    use proptest::prelude::*;

    struct Pristine {
        rig: Rig,
        id: String,
        image: Vec<u8>,
        /// (name, first block, last block it may touch), names relative to the source.
        spans: Vec<(String, usize, usize)>,
        /// Blocks of the tape file: header, last data block.
        blocks: (usize, usize),
        src: PathBuf,
    }

    fn pristine() -> Pristine {
        let rig = Rig::new("64M", 2);
        let src = rig.p("small");
        std::fs::create_dir_all(src.join("d")).unwrap();
        for i in 0..14u64 {
            let n = [0, 10, 3000, 4096, 9000, 17_000, 40_000][i as usize % 7] + i as usize;
            std::fs::write(src.join(format!("d/f{i:02}")), pattern(i, n)).unwrap();
        }
        let rep = rig.save(&src, &["--segment-size", "4K"]);
        let id = rep["save_set"].as_str().unwrap().to_string();
        let objs = read_image(&rig.image("SS0001"));
        let blocks = data_blocks(&objs);
        let mut starts: Vec<(usize, String)> = rig
            .objects(&id)
            .iter()
            .map(|o| {
                (
                    o["block"].as_u64().unwrap() as usize,
                    o["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        starts.sort();
        let spans = (0..starts.len())
            .map(|i| {
                let next = starts.get(i + 1).map_or(blocks.1, |x| x.0);
                (starts[i].1.clone(), starts[i].0, next)
            })
            .collect();
        let image = std::fs::read(rig.image("SS0001")).unwrap();
        Pristine {
            rig,
            id,
            image,
            spans,
            blocks,
            src,
        }
    }

    #[derive(Debug, Clone)]
    enum Damage {
        Flip(usize),
        Zero,
        Halve,
        Drop,
        Duplicate,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            any::<usize>().prop_map(Damage::Flip),
            Just(Damage::Zero),
            Just(Damage::Halve),
            Just(Damage::Drop),
            Just(Damage::Duplicate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn one_damaged_block_costs_only_the_objects_it_holds(pick in any::<usize>(), how in damage()) {
            let p = &*PRISTINE;
            let img = p.rig.image("SS0001");
            std::fs::write(&img, &p.image).unwrap();
            let mut objs = read_image(&img);
            // Any segment (the header, the one block every key check needs, aside).
            let (header, last) = p.blocks;
            let at = header + 1 + pick % (last - header);
            match &how {
                Damage::Flip(i) => {
                    let b = objs[at].as_mut().unwrap();
                    let k = i % b.len();
                    b[k] ^= 1 << (i % 8);
                }
                Damage::Zero => objs[at].as_mut().unwrap().fill(0),
                Damage::Halve => {
                    let b = objs[at].as_mut().unwrap();
                    b.truncate(b.len() / 2);
                }
                Damage::Drop => {
                    objs.remove(at);
                }
                Damage::Duplicate => {
                    let copy = objs[at].clone();
                    objs.insert(at, copy);
                }
            }
            write_image(&img, &objs);
            let to = p.rig.p("out");
            let _ = std::fs::remove_dir_all(&to);
            let o = p.rig.restore_plain(&p.id, &to, &["--json"]);
            let err = String::from_utf8_lossy(&o.stderr);
            prop_assert!(!err.contains("panicked"), "{err}");
            prop_assert!(matches!(o.status.code(), Some(0 | 1 | 3)), "{:?} {err}", o.status);
            let lost_nothing = matches!(how, Damage::Duplicate);
            for (name, first, end) in &p.spans {
                let got = to.join(name);
                let rel = Path::new(name).strip_prefix(
                    std::fs::canonicalize(&p.src).unwrap().strip_prefix("/").unwrap()
                ).unwrap().to_path_buf();
                let want = p.src.join(&rel);
                if !want.is_file() {
                    continue;
                }
                let touched = !lost_nothing && (*first..=*end).contains(&at);
                match std::fs::read(&got) {
                    Ok(data) => prop_assert_eq!(data, std::fs::read(&want).unwrap(), "{} {:?}", name, how),
                    Err(_) => prop_assert!(touched, "{} lost, block {} {:?} ({}..={}): {}", name, at, how, first, end,
                        String::from_utf8_lossy(&o.stdout)),
                }
            }
        }
    }

    static PRISTINE: std::sync::LazyLock<Pristine> = std::sync::LazyLock::new(pristine);
}

/// Byte offsets of the records of a SIMH image, in order (None for a filemark).
fn record_offsets(img: &[u8]) -> Vec<(usize, Option<usize>)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= img.len() {
        let w = u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
        if w == 0xffff_ffff {
            break;
        }
        if w == 0 {
            out.push((off, None));
            off += 4;
            continue;
        }
        let len = (w & 0x00ff_ffff) as usize;
        out.push((off, Some(len)));
        off += 8 + len + (len & 1);
    }
    out
}

#[test]
fn a_bad_trailing_length_word_without_an_index_costs_only_its_block() {
    let t = tampered_rig();
    let img_path = t.rig.image("SS0001");
    let mut img = std::fs::read(&img_path).unwrap();
    let recs = record_offsets(&img);
    let k = t.at["big2"] as usize + 4;
    let (off, len) = recs[k];
    let len = len.expect("a data block");
    let tail = off + 4 + len + (len & 1);
    img[tail] ^= 0x02;
    std::fs::write(&img_path, &img).unwrap();
    std::fs::remove_file(index_path(&img_path)).unwrap();
    let (code, out) = t.rig.verify(&t.id);
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(failed_names(&out), vec!["big2"], "{out}");
    assert!(
        out.contains(&format!("block {k}")) && out.contains("trailing"),
        "{out}"
    );
}

/// FNV-1a, as the cartridge index's checksum.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn a_forged_cartridge_index_is_rebuilt_from_the_image_and_the_read_goes_on() {
    let t = tampered_rig();
    let idx_path = index_path(&t.rig.image("SS0001"));
    let good = std::fs::read(&idx_path).unwrap();
    // Two filemarks' offsets swapped, the checksum made good again: it
    // passes its own checks and points to the wrong places.
    let mut idx = good[..good.len() - 8].to_vec();
    let count = u64::from_le_bytes(idx[24..32].try_into().unwrap()) as usize;
    let fm: Vec<usize> = (0..count)
        .filter(|i| {
            u64::from_le_bytes(idx[40 + 16 * i..48 + 16 * i].try_into().unwrap()) >> 63 == 1
        })
        .collect();
    assert!(fm.len() >= 2, "{fm:?}");
    let (a, b) = (40 + 16 * fm[0], 40 + 16 * fm[1]);
    let (x, y) = (idx[a..a + 8].to_vec(), idx[b..b + 8].to_vec());
    idx[a..a + 8].copy_from_slice(&y);
    idx[b..b + 8].copy_from_slice(&x);
    let sum = fnv64(&idx);
    idx.extend_from_slice(&sum.to_le_bytes());
    std::fs::write(&idx_path, &idx).unwrap();
    let (code, out) = t.rig.verify(&t.id);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        std::fs::read(&idx_path).unwrap(),
        good,
        "the index was written again"
    );
    // The filemark that ends the save set's data moved onto a data record:
    // a valid word, the wrong place.
    let mut idx = good[..good.len() - 8].to_vec();
    let at = 40 + 16 * fm[1];
    let raw = u64::from_le_bytes(idx[at..at + 8].try_into().unwrap());
    let recs = record_offsets(&std::fs::read(t.rig.image("SS0001")).unwrap());
    let pos = recs
        .iter()
        .position(|r| r.0 as u64 == raw & !(1 << 63))
        .unwrap();
    let wrong = recs[pos - 5].0 as u64 | (1 << 63);
    idx[at..at + 8].copy_from_slice(&wrong.to_le_bytes());
    let sum = fnv64(&idx);
    idx.extend_from_slice(&sum.to_le_bytes());
    std::fs::write(&idx_path, &idx).unwrap();
    let (code, out) = t.rig.verify(&t.id);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        std::fs::read(&idx_path).unwrap(),
        good,
        "the index was written again"
    );
}

/// Opens directory `dir` under `root` one component at a time (any depth).
fn open_deep(root: &Path, rel: &[String]) -> std::os::fd::OwnedFd {
    use nix::fcntl::{open, openat, OFlag};
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut fd = open(root, flags, nix::sys::stat::Mode::empty()).unwrap();
    for c in rel {
        fd = openat(&fd, c.as_str(), flags, nix::sys::stat::Mode::empty()).unwrap();
    }
    fd
}

#[test]
fn trees_deeper_than_path_max_save_and_restore() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let r = Rig::new("64M", 2);
    let d = r.p("deep");
    std::fs::create_dir_all(&d).unwrap();
    // 40 levels of 120-byte names: about 4,900 bytes below the root.
    let names: Vec<String> = (0..40)
        .map(|i| format!("{i:02}-{}", "d".repeat(117)))
        .collect();
    let mut fd = open_deep(&d, &[]);
    for n in &names {
        mkdirat(&fd, n.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
        fd = openat(
            &fd,
            n.as_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    let write = |fd: &std::os::fd::OwnedFd, name: &str, data: &[u8]| {
        let f = openat(
            fd,
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        std::io::Write::write_all(&mut std::fs::File::from(f), data).unwrap();
    };
    write(&fd, "bottom.bin", &pattern(3, 100_000));
    nix::unistd::symlinkat("bottom.bin", &fd, "link").unwrap();
    write(&open_deep(&d, &names[..20]), "middle.txt", b"middle");
    let rep = r.save(&d, &[]);
    let id = rep["save_set"].as_str().unwrap();
    let longest = r
        .objects(id)
        .iter()
        .map(|o| o["path"].as_str().unwrap().len())
        .max()
        .unwrap();
    assert!(longest > 4096, "{longest}");
    let to = r.p("dest");
    let (code, v) = r.restore(id, &to, &[]);
    assert_eq!(code, Some(0), "{v}");
    let src = std::fs::canonicalize(&d).unwrap();
    let base: Vec<String> = src
        .strip_prefix("/")
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let all: Vec<String> = base.iter().chain(names.iter()).cloned().collect();
    let bottom = open_deep(&to, &all);
    let f = openat(&bottom, "bottom.bin", OFlag::O_RDONLY, Mode::empty()).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(f), &mut got).unwrap();
    assert_eq!(got, pattern(3, 100_000));
    assert_eq!(
        nix::fcntl::readlinkat(&bottom, "link").unwrap(),
        std::ffi::OsString::from("bottom.bin")
    );
    let mid = open_deep(&to, &all[..base.len() + 20]);
    assert!(nix::sys::stat::fstatat(&mid, "middle.txt", nix::fcntl::AtFlags::empty()).is_ok());
}

/// A library of two drives: save sets on class ONSITE (SS...), copies on
/// class VAULT (CP...).
fn copy_rig() -> (Rig, String, std::collections::BTreeMap<String, u64>) {
    let rig = Rig::with(
        "64M",
        2,
        &[("SS", 2, "ONSITE"), ("CP", 2, "VAULT"), ("DR", 1, "DR")],
    );
    let d = rig.p("t");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a"), b"first small file").unwrap();
    std::fs::write(d.join("big1"), pattern(21, 1_000_000)).unwrap();
    std::fs::write(d.join("b"), b"second small file").unwrap();
    let rep = rig.save(&d, &["--segment-size", "64K", "--media-class", "ONSITE"]);
    let id = rep["save_set"].as_str().unwrap().to_string();
    let mut at = std::collections::BTreeMap::new();
    for o in rig.objects(&id) {
        at.insert(
            base(o["path"].as_str().unwrap()),
            o["block"].as_u64().unwrap(),
        );
    }
    (rig, id, at)
}

#[test]
fn a_copy_serves_a_restore_when_the_original_is_damaged_or_gone() {
    let (rig, id, at) = copy_rig();
    // The copy's class must not be the original's.
    let o = agent(&[
        "copy",
        &rig.lib,
        "--save-set",
        &id,
        "--media-class",
        "ONSITE",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("a copy must go on cartridges of another class"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "copy",
        &rig.lib,
        "--save-set",
        &id,
        "--media-class",
        "VAULT",
        "--json",
    ]))
    .unwrap();
    let c = &v["copy"];
    assert_eq!(c["copy"], 1, "{v}");
    assert_eq!(c["verified"], true, "{v}");
    let copy_vol = c["volumes"][0].as_str().unwrap().to_string();
    assert!(copy_vol.starts_with("CP"), "{v}");
    // Block for block: the same data blocks, byte for byte.
    let orig = read_image(&rig.image("SS0001"));
    let dup = read_image(&rig.image(&copy_vol));
    let data = |o: &[Option<Vec<u8>>]| -> Vec<Vec<u8>> {
        o.iter()
            .flatten()
            .filter(|b| b.len() != 80)
            .cloned()
            .collect()
    };
    assert_eq!(data(&orig), data(&dup));
    // The copy verifies on its own.
    let o = agent(&[
        "verify",
        &rig.lib,
        "--key-file",
        &rig.key,
        "--save-set",
        &id,
        "--copy",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    // The catalog rebuilt from the cartridges knows the copy as the copy.
    let before: serde_json::Value = serde_json::from_str(&ok(&["ls", &rig.lib, "--json"])).unwrap();
    std::fs::remove_dir_all(rig.dir.join("lib/catalog")).unwrap();
    ok(&["scan", &rig.lib, "--key-file", &rig.key]);
    let after: serde_json::Value = serde_json::from_str(&ok(&["ls", &rig.lib, "--json"])).unwrap();
    assert_eq!(
        after[0]["copies"][0]["volume"],
        copy_vol.as_str(),
        "{after}"
    );
    assert_eq!(after[0]["copies"][0]["copy"], 1, "{after}");
    assert_eq!(after[0]["digest"], before[0]["digest"], "{after}");
    assert_eq!(
        after[0]["copies"][0]["digest"], before[0]["copies"][0]["digest"],
        "{after}"
    );

    // A damaged block of the original: its object is read from the copy.
    let blk = at["big1"] as usize + 3;
    let img = rig.image("SS0001");
    let mut objs = read_image(&img);
    objs[blk].as_mut().unwrap()[100] ^= 0x10;
    write_image(&img, &objs);
    let to = rig.p("out1");
    let (code, rep) = rig.restore(&id, &to, &[]);
    assert_eq!(code, Some(0), "{rep}");
    assert_eq!(
        std::fs::read(to.join(rig.p("t").strip_prefix("/").unwrap()).join("big1")).unwrap(),
        pattern(21, 1_000_000)
    );
    assert_eq!(
        std::fs::read(to.join(rig.p("t").strip_prefix("/").unwrap()).join("a")).unwrap(),
        b"first small file"
    );
    let r = &rep["report"];
    assert!(r["failed"].as_array().unwrap().is_empty(), "{rep}");
    assert!(
        r["damaged"].to_string().contains(&format!("block {blk}")),
        "{rep}"
    );
    assert!(
        r["from_copies"].to_string().contains(&format!(
            "1 objects read from copy 1 on cartridge {copy_vol}"
        )),
        "{rep}"
    );
    // A copy of a damaged original is refused: its blocks are not the ones written.
    let o = agent(&["copy", &rig.lib, "--save-set", &id, "--media-class", "DR"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("do not match the digest recorded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The original's cartridge gone from the library: all of it from the copy.
    ok(&["library", "export", &rig.lib, "SS0001"]);
    ok(&[
        "library",
        "remove",
        &rig.lib,
        "SS0001",
        "--to",
        rig.p("SS0001.tap").to_str().unwrap(),
    ]);
    let to = rig.p("out2");
    let (code, rep) = rig.restore(&id, &to, &[]);
    assert_eq!(code, Some(0), "{rep}");
    assert_eq!(
        std::fs::read(to.join(rig.p("t").strip_prefix("/").unwrap()).join("big1")).unwrap(),
        pattern(21, 1_000_000)
    );
    assert!(
        rep["report"]["from_copies"]
            .to_string()
            .contains("the original's cartridges are not in the library"),
        "{rep}"
    );
}
