//! A batch never acts on the wrong key, destroyed keys stay out of sight, and a keystore that is damaged or private-file-mode-less is refused or made private: over a real server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cinta_kmip::message::{ResultStatus, Version};
use cinta_kmip::spec::{operation as op, result_reason, revocation_reason_code as rrc, state, tag};
use cinta_kmip::ttlv::{Item, Value};
use cinta_kmip_client::Client;
use cinta_tests::keymgr::Kms;

const VERSIONS: [(i32, i32); 6] = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0)];

fn uid_item(uid: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.into()))
}

fn revoke_payload() -> Vec<Item> {
    vec![Item::new(
        tag::REVOCATION_REASON,
        Value::Structure(vec![Item::new(
            tag::REVOCATION_REASON_CODE,
            Value::Enumeration(rrc::KEY_COMPROMISE as u32),
        )]),
    )]
}

/// A Locate filter on State, as `v` spells it.
fn state_filter(v: Version, s: i32) -> Item {
    let value = Item::new(tag::STATE, Value::Enumeration(s as u32));
    if v.major >= 2 {
        return Item::new(tag::ATTRIBUTES, Value::Structure(vec![value]));
    }
    let mut value = value;
    value.tag = tag::ATTRIBUTE_VALUE;
    Item::new(
        tag::ATTRIBUTE,
        Value::Structure(vec![
            Item::new(tag::ATTRIBUTE_NAME, Value::TextString("State".into())),
            value,
        ]),
    )
}

fn state_of(c: &mut Client, uid: &str) -> String {
    let a = c
        .batch(vec![(op::GET_ATTRIBUTES, vec![uid_item(uid)])])
        .unwrap();
    format!("{:?}", a[0].payload)
}

#[test]
fn a_locate_that_finds_none_or_several_leaves_no_key_for_the_next_item_at_every_version() {
    let kms = Kms::serving();
    drop(kms.accepted("library", "default", Version::new(1, 0)));
    for (major, minor) in VERSIONS {
        let v = Version::new(major, minor);
        let mut c = Client::new(kms.client_config("library", v)).unwrap();
        let n = |s: &str| format!("{s}-{major}.{minor}");
        let bystander = c.create_aes256(&n("bystander"), &[]).unwrap();
        let one = c.create_aes256(&n("tape-one"), &[]).unwrap();
        let twins = [
            c.create_aes256(&n("tape-twin"), &[]).unwrap(),
            c.create_aes256(&n("tape-twin"), &[]).unwrap(),
        ];
        let failed = |a: &[cinta_kmip_client::Answer], i: usize| {
            assert_eq!(a[i].status, ResultStatus::OperationFailed, "{v}: {a:?}");
            assert!(
                a[i].message
                    .as_deref()
                    .unwrap_or("")
                    .contains("no Unique Identifier"),
                "{v}: {a:?}"
            );
        };
        // Locate finds nothing after an item that named the bystander: the
        // placeholder is emptied, so Destroy, Revoke and Get name nothing.
        for follow in [
            (op::DESTROY, vec![]),
            (op::REVOKE, revoke_payload()),
            (op::GET, vec![]),
        ] {
            let a = c
                .batch(vec![
                    (op::GET_ATTRIBUTES, vec![uid_item(&bystander)]),
                    (op::LOCATE, vec![c.name_filter(&n("no-such-tape"))]),
                    follow,
                ])
                .unwrap();
            assert_eq!(a[1].status, ResultStatus::Success, "{v}: {a:?}");
            failed(&a, 2);
        }
        // Locate finds two: neither is acted on.
        for follow in [
            (op::DESTROY, vec![]),
            (op::REVOKE, revoke_payload()),
            (op::GET, vec![]),
        ] {
            let a = c
                .batch(vec![
                    (op::LOCATE, vec![c.name_filter(&n("tape-twin"))]),
                    follow,
                ])
                .unwrap();
            let found = a[0]
                .payload
                .iter()
                .filter(|i| i.tag == tag::UNIQUE_IDENTIFIER)
                .count();
            assert_eq!(found, 2, "{v}: {a:?}");
            failed(&a, 1);
        }
        for u in twins.iter().chain([&bystander]) {
            let s = state_of(&mut c, u);
            assert!(
                !s.contains("Enumeration(5)") && !s.contains("Enumeration(4)"),
                "{v}: {u} was touched: {s}"
            );
        }
        assert!(c.get_key(&bystander).is_ok(), "{v}");
        // Locate finds exactly one: the next item acts on it.
        let a = c
            .batch(vec![
                (op::LOCATE, vec![c.name_filter(&n("tape-one"))]),
                (op::GET, vec![]),
            ])
            .unwrap();
        assert_eq!(a[1].status, ResultStatus::Success, "{v}: {a:?}");
        assert!(format!("{:?}", a[1].payload).contains(&one), "{v}: {a:?}");
        let a = c
            .batch(vec![
                (op::LOCATE, vec![c.name_filter(&n("tape-one"))]),
                (op::DESTROY, vec![]),
            ])
            .unwrap();
        assert_eq!(a[1].status, ResultStatus::Success, "{v}: {a:?}");
        // Destroyed: out of Locate unless the state is asked for; Get says
        // Item Not Found at 1.x, Object Destroyed at 2.0.
        assert!(c.locate_by_name(&n("tape-one")).unwrap().is_empty(), "{v}");
        let a = c
            .batch(vec![(
                op::LOCATE,
                vec![
                    c.name_filter(&n("tape-one")),
                    state_filter(v, state::DESTROYED),
                ],
            )])
            .unwrap();
        assert!(format!("{:?}", a[0].payload).contains(&one), "{v}: {a:?}");
        let a = c.batch(vec![(op::GET, vec![uid_item(&one)])]).unwrap();
        let want = if major >= 2 {
            result_reason::OBJECT_DESTROYED
        } else {
            result_reason::ITEM_NOT_FOUND
        };
        assert_eq!(a[0].reason, Some(want as u32), "{v}: {a:?}");
    }
}

fn sha256(p: &Path) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(p).unwrap());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_keystore_with_a_damaged_index_page_is_refused_and_left_as_it_was() {
    let mut kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let uid = c.create_active_aes256("indexed", &[]).unwrap();
    drop(c);
    kms.stop();
    let ks = kms.dir.path().join("keystore.db");
    // One character of the key's uid in the objects' uid index, changed.
    let (root, page_size): (i64, i64) = {
        let db = rusqlite::Connection::open(&ks).unwrap();
        let root = db
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'objects' AND sql IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (
            root,
            db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap(),
        )
    };
    let mut bytes = std::fs::read(&ks).unwrap();
    let page = (root - 1) as usize * page_size as usize..root as usize * page_size as usize;
    let at = page.start
        + bytes[page.clone()]
            .windows(uid.len())
            .position(|w| w == uid.as_bytes())
            .expect("the uid in its index page");
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&ks, &bytes).unwrap();
    let before = sha256(&ks);
    let quick: String = rusqlite::Connection::open(&ks)
        .unwrap()
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(quick, "ok", "the damage a quick check misses");
    let o = refused_serve(&kms);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("failed its integrity check"),
        "{err}"
    );
    assert!(err.contains("index"), "names what is damaged: {err}");
    assert_eq!(sha256(&ks), before, "left as it was");
}

#[test]
fn the_keystore_its_wal_the_audit_log_and_their_directories_are_private_under_umask_022() {
    // SAFETY: umask(2) before the server processes are started; they inherit it.
    unsafe { libc::umask(0o022) };
    let mut kms = Kms::new("audit_log = \"logs/audit.log\"");
    // A keystore made in a directory that does not exist yet.
    let other = kms.dir.path().join("other.toml");
    let cfg = std::fs::read_to_string(&kms.config)
        .unwrap()
        .replace("keystore = \"keystore.db\"", "keystore = \"new/dir/ks.db\"");
    std::fs::write(&other, cfg).unwrap();
    let o = cinta_tests::keymgr::admin(&other, &["init"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    kms.start();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    c.create_active_aes256("private", &[]).unwrap();
    let d = kms.dir.path().to_path_buf();
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for f in ["keystore.db", "logs/audit.log", "new/dir/ks.db"] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    // SQLite's WAL and shared-memory files take the keystore's mode.
    for f in ["keystore.db-wal", "keystore.db-shm"] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    for dir in ["logs", "new", "new/dir"] {
        assert_eq!(mode(&d.join(dir)), 0o700, "{dir}");
    }
    // A keystore left readable by others (made before) is made private when opened.
    drop(c);
    kms.stop();
    std::fs::set_permissions(
        d.join("keystore.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    kms.start();
    assert_eq!(mode(&d.join("keystore.db")), 0o600);
}

/// `cinta-keymgr serve` on `kms`'s keystore, expected to refuse at once; one
/// that serves is stopped and fails the test.
fn refused_serve(kms: &Kms) -> std::process::Output {
    // `serve` must refuse at once; one that serves the damaged keystore is stopped and fails the test.
    let mut serve = std::process::Command::new(cinta_tests::binary("cinta-keymgr"))
        .arg("--config")
        .arg(&kms.config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while serve.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(20) {
            let _ = serve.kill();
            panic!("the damaged keystore was served");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    serve.wait_with_output().unwrap()
}

#[test]
fn a_key_whose_state_or_backup_mark_was_edited_in_the_file_is_refused() {
    let mut kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let gone = c.create_aes256("gone", &[]).unwrap();
    c.destroy(&gone).unwrap();
    drop(c);
    kms.stop();
    let ks = kms.dir.path().join("keystore.db");
    let good = std::fs::read(&ks).unwrap();
    for edit in [
        format!(
            "UPDATE objects SET state = {} WHERE uid = '{gone}'",
            state::ACTIVE
        ),
        format!("UPDATE objects SET backed_up = 1 WHERE uid = '{gone}'"),
        format!("DELETE FROM names WHERE seq = (SELECT seq FROM objects WHERE uid = '{gone}')"),
    ] {
        std::fs::write(&ks, &good).unwrap();
        rusqlite::Connection::open(&ks)
            .unwrap()
            .execute(&edit, [])
            .unwrap();
        let before = sha256(&ks);
        let o = refused_serve(&kms);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("fails its integrity check") && err.contains(&gone),
            "{edit}: {err}"
        );
        assert_eq!(sha256(&ks), before, "{edit}: left as it was");
    }
    std::fs::write(&ks, &good).unwrap();
    kms.start();
}
