//! The key server as clients and administrators meet it: lifecycle at every version, onboarding and groups, batches, malformed frames, restart, keystore damage, backup, restore, rotation, audit.

use std::io::{Read, Write};
use std::net::TcpStream;

use cinta_kmip::message::Version;
use cinta_kmip::spec::{operation as op, revocation_reason_code as rrc, tag};
use cinta_kmip::ttlv::{Item, Value};
use cinta_kmip_client::Client;
use cinta_tests::keymgr::{tls_client_config, Kms};
use rustls::pki_types::ServerName;

const VERSIONS: [Version; 6] = [
    Version::new(1, 0),
    Version::new(1, 1),
    Version::new(1, 2),
    Version::new(1, 3),
    Version::new(1, 4),
    Version::new(2, 0),
];

#[test]
fn key_lifecycle_at_every_version() {
    let kms = Kms::serving();
    let mut first = kms.accepted("agent", "default", Version::new(1, 0));
    drop(first.locate_by_name("warm-up"));
    for v in VERSIONS {
        let mut c = Client::new(kms.client_config("agent", v)).unwrap();
        let name = format!("saveset-{v}");
        let uid = c
            .create_aes256(&name, &[("x-saveset", "0a1b2c"), ("x-host", "lpar1")])
            .unwrap();
        // Pre-Active keys may not protect data yet.
        let e = c.check_encrypt(&uid).unwrap_err().to_string();
        assert!(e.contains("Pre-Active"), "{v}: {e}");
        c.activate(&uid).unwrap();
        c.check_encrypt(&uid).unwrap();
        let key = c.get_key(&uid).unwrap();
        assert_eq!(key.len(), 32, "{v}");
        assert_eq!(c.locate_by_name(&name).unwrap(), vec![uid.clone()], "{v}");
        // A second activation is a lifecycle error, named as such.
        let e = c.activate(&uid).unwrap_err().to_string();
        let want = if v.major >= 2 {
            "WrongKeyLifecycleState"
        } else {
            "PermissionDenied"
        };
        assert!(e.contains(want) && e.contains("Active"), "{v}: {e}");
        // An active key cannot be destroyed before it is revoked.
        let e = c.destroy(&uid).unwrap_err().to_string();
        assert!(e.contains("revoke it"), "{v}: {e}");
        c.revoke(&uid, rrc::CESSATION_OF_OPERATION).unwrap();
        let e = c.check_encrypt(&uid).unwrap_err().to_string();
        assert!(e.contains("Deactivated"), "{v}: {e}");
        // Still readable for restores after deactivation.
        assert_eq!(*c.get_key(&uid).unwrap(), *key);
        c.destroy(&uid).unwrap();
        let e = c.get_key(&uid).unwrap_err();
        // KMIP 1.x has no Object Destroyed: Item Not Found, as clients expect.
        let reason = if v.major >= 2 {
            "ObjectDestroyed"
        } else {
            "ItemNotFound"
        };
        assert!(format!("{e:?}").contains(reason), "{v}: {e:?}");
        let e = e.to_string();
        assert!(e.contains("destroyed"), "{v}: {e}");
        // Attributes as the version spells them, custom ones included (1.x names, 2.0 vendor attributes).
        let p = c.call(op::GET_ATTRIBUTES, vec![uid_item(&uid)]).unwrap();
        let text = format!("{p:?}");
        assert!(
            text.contains("0a1b2c") && text.contains("lpar1"),
            "{v}: {text}"
        );
        if v.major >= 2 {
            assert!(p.iter().any(|i| i.tag == tag::ATTRIBUTES), "{v}: {p:?}");
        } else {
            assert!(
                p.iter().filter(|i| i.tag == tag::ATTRIBUTE).count() >= 8,
                "{v}: {p:?}"
            );
        }
    }
}

fn uid_item(uid: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.into()))
}

#[test]
fn compromise_revokes_any_state_and_rekey_links_the_pair() {
    let kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let uid = c.create_active_aes256("rotating", &[]).unwrap();
    let p = c.call(op::REKEY, vec![uid_item(&uid)]).unwrap();
    let new = match &p[0].value {
        Value::TextString(s) => s.clone(),
        v => panic!("{v:?}"),
    };
    assert_ne!(new, uid);
    assert_ne!(*c.get_key(&new).unwrap(), *c.get_key(&uid).unwrap());
    let old_attrs = format!(
        "{:?}",
        c.call(op::GET_ATTRIBUTES, vec![uid_item(&uid)]).unwrap()
    );
    let new_attrs = format!(
        "{:?}",
        c.call(op::GET_ATTRIBUTES, vec![uid_item(&new)]).unwrap()
    );
    assert!(
        old_attrs.contains(&new),
        "old key links its replacement: {old_attrs}"
    );
    assert!(
        new_attrs.contains(&uid) && new_attrs.contains("rotating"),
        "{new_attrs}"
    );
    assert_eq!(
        c.locate_by_name("rotating").unwrap(),
        vec![new.clone(), uid.clone()],
        "newest first"
    );
    // Key compromise revokes a Pre-Active key too; the result is Compromised then Destroyed Compromised.
    let pre = c.create_aes256("leaked", &[]).unwrap();
    c.revoke(&pre, rrc::KEY_COMPROMISE).unwrap();
    let e = c.check_encrypt(&pre).unwrap_err().to_string();
    assert!(e.contains("Compromised"), "{e}");
    c.destroy(&pre).unwrap();
    let s = format!(
        "{:?}",
        c.call(
            op::GET_ATTRIBUTES,
            vec![
                uid_item(&pre),
                Item::new(tag::ATTRIBUTE_NAME, Value::TextString("State".into()))
            ]
        )
        .unwrap()
    );
    assert!(s.contains("Enumeration(6)"), "Destroyed Compromised: {s}");
}

#[test]
fn batches_use_the_id_placeholder_and_undo_rolls_back() {
    let kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 2));
    let attrs = |name: &str| {
        let a = |n: &str, v: Item| {
            let mut v = v;
            v.tag = tag::ATTRIBUTE_VALUE;
            Item::new(
                tag::ATTRIBUTE,
                Value::Structure(vec![
                    Item::new(tag::ATTRIBUTE_NAME, Value::TextString(n.into())),
                    v,
                ]),
            )
        };
        vec![
            Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)),
            Item::new(
                tag::TEMPLATE_ATTRIBUTE,
                Value::Structure(vec![
                    a(
                        "Cryptographic Algorithm",
                        Item::new(0, Value::Enumeration(3)),
                    ),
                    a("Cryptographic Length", Item::new(0, Value::Integer(256))),
                    a(
                        "Name",
                        Item::new(
                            0,
                            Value::Structure(vec![
                                Item::new(tag::NAME_VALUE, Value::TextString(name.into())),
                                Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
                            ]),
                        ),
                    ),
                ]),
            ),
        ]
    };
    // Create, Activate, Get with no identifiers after the first: the placeholder carries it.
    let a = c
        .batch(vec![
            (op::CREATE, attrs("batched")),
            (op::ACTIVATE, vec![]),
            (op::GET, vec![]),
        ])
        .unwrap();
    assert!(
        a.iter()
            .all(|x| x.status == cinta_kmip::message::ResultStatus::Success),
        "{a:?}"
    );
    assert!(
        format!("{:?}", a[2].payload).contains("KeyMaterial")
            || a[2].payload.iter().any(|i| i.tag == tag::SYMMETRIC_KEY)
    );
    // 33 items is one too many.
    let many: Vec<_> = (0..33).map(|_| (op::QUERY, vec![])).collect();
    let e = c.batch(many).unwrap();
    assert!(
        e[0].message.as_deref().unwrap_or("").contains("32"),
        "{e:?}"
    );
    // Undo: a Create then a failing Activate of an unknown object leave nothing behind.
    let mut req = cinta_kmip::message::Request {
        version: Version::new(1, 2),
        max_response_size: None,
        batch_order: Some(true),
        on_error: cinta_kmip::message::OnError::Undo,
        authentication: None,
        items: vec![],
    };
    for (o, p) in [
        (op::CREATE, attrs("undone")),
        (op::ACTIVATE, vec![uid_item("no-such-key")]),
    ] {
        req.items.push(cinta_kmip::message::RequestItem {
            operation: o as u32,
            id: None,
            payload: Some(Item::new(tag::REQUEST_PAYLOAD, Value::Structure(p))),
        });
    }
    let resp = raw_exchange(&kms, "agent", &req.to_item().to_bytes());
    let text = format!("{resp:?}");
    assert!(
        text.contains("Enumeration(3)") && text.contains("no object 'no-such-key'"),
        "undone + failure: {text}"
    );
    assert!(
        c.locate_by_name("undone").unwrap().is_empty(),
        "the undone Create left no key"
    );
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn raw_connect(kms: &Kms, name: &str, tls12_only: bool) -> Tls {
    let tcp = TcpStream::connect(&kms.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let conn = rustls::ClientConnection::new(
        tls_client_config(kms, name, tls12_only),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn read_message(s: &mut Tls) -> std::io::Result<Item> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h)?;
    let n = cinta_kmip::ttlv::frame_len(&h).unwrap();
    let mut m = vec![0u8; n];
    m[..8].copy_from_slice(&h);
    s.read_exact(&mut m[8..])?;
    Ok(Item::decode(&m).unwrap())
}

fn raw_exchange(kms: &Kms, name: &str, bytes: &[u8]) -> Item {
    let mut s = raw_connect(kms, name, false);
    s.write_all(bytes).unwrap();
    read_message(&mut s).unwrap()
}

fn closed(s: &mut Tls) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn malformed_frames_get_errors_or_closed_connections_and_others_keep_being_served() {
    let kms = Kms::serving();
    let mut good = kms.accepted("good", "default", Version::new(1, 4));
    kms.issue("bad");
    let mut bad = Client::new(kms.client_config("bad", Version::new(1, 4))).unwrap();
    let _ = bad.locate_by_name("x");
    kms.admin_ok(&["clients", "accept", &kms.fingerprint("bad")[..16]]);
    let uid = good.create_active_aes256("steady", &[]).unwrap();

    // Unframeable: a 2 GiB length, a message that is not a structure, a length not a multiple of 8.
    for header in [
        [0x42, 0x00, 0x78, 0x01, 0x80, 0x00, 0x00, 0x00],
        [0x42, 0x00, 0x78, 0x02, 0x00, 0x00, 0x00, 0x04],
        [0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x05],
    ] {
        let mut s = raw_connect(&kms, "bad", true);
        s.write_all(&header).unwrap();
        s.flush().unwrap();
        assert!(closed(&mut s), "{header:02x?} closes the connection");
        assert_eq!(*good.get_key(&uid).unwrap(), *good.get_key(&uid).unwrap());
    }

    // Framed but wrong inside: an error response each, and the connection goes on.
    let mut s = raw_connect(&kms, "bad", true);
    let depth_bomb = {
        let mut i = Item::new(tag::REQUEST_PAYLOAD, Value::Structure(vec![]));
        for _ in 0..40 {
            i = Item::new(tag::REQUEST_PAYLOAD, Value::Structure(vec![i]));
        }
        Item::new(tag::REQUEST_MESSAGE, Value::Structure(vec![i])).to_bytes()
    };
    let mut wrong_type = Item::new(
        tag::REQUEST_MESSAGE,
        Value::Structure(vec![Item::new(tag::REQUEST_HEADER, Value::Integer(7))]),
    )
    .to_bytes();
    let mut bad_inner_len = wrong_type.clone();
    bad_inner_len[15] = 0x09; // the inner item claims 9 bytes where 8 are
    let not_a_request = Item::new(tag::RESPONSE_MESSAGE, Value::Structure(vec![])).to_bytes();
    for (what, msg) in [
        ("depth bomb", depth_bomb),
        ("wrong type", std::mem::take(&mut wrong_type)),
        ("bad inner length", bad_inner_len),
        ("not a request", not_a_request),
    ] {
        s.write_all(&msg).unwrap();
        let r = read_message(&mut s).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let t = format!("{r:?}");
        assert!(
            r.tag == tag::RESPONSE_MESSAGE && t.contains("Enumeration(4)"),
            "{what}: Invalid Message expected: {t}"
        );
    }
    // The same connection still serves a valid request.
    let q = cinta_kmip::message::Request {
        version: Version::new(1, 4),
        max_response_size: None,
        batch_order: None,
        on_error: cinta_kmip::message::OnError::Stop,
        authentication: None,
        items: vec![cinta_kmip::message::RequestItem {
            operation: op::GET as u32,
            id: None,
            payload: Some(Item::new(
                tag::REQUEST_PAYLOAD,
                Value::Structure(vec![uid_item(&uid)]),
            )),
        }],
    };
    s.write_all(&q.to_item().to_bytes()).unwrap();
    let r = format!("{:?}", read_message(&mut s).unwrap());
    assert!(
        r.contains(&uid) && !r.contains("Enumeration(4)"),
        "served after the errors: {r}"
    );
    // A client that never finishes its message does not hold anyone up.
    let mut slow = raw_connect(&kms, "bad", false);
    slow.write_all(&[0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x01, 0x00])
        .unwrap();
    slow.flush().unwrap();
    assert_eq!(good.get_key(&uid).unwrap().len(), 32);
    let audit = kms.admin_ok(&["audit", "--tail", "0"]);
    assert!(
        audit.contains("invalid") && audit.contains("unframeable"),
        "{audit}"
    );
}

#[test]
fn onboarding_pending_accepted_groups_and_auto_accept() {
    let kms = Kms::serving();
    kms.issue("lib1");
    let mut lib = Client::new(kms.client_config("lib1", Version::new(1, 2))).unwrap();
    let e = lib.create_aes256("x", &[]).unwrap_err().to_string();
    assert!(
        e.contains("PermissionDenied") && e.contains("pending") && e.contains("clients accept"),
        "{e}"
    );
    let list = kms.admin_ok(&["clients", "list"]);
    assert!(
        list.contains("pending") && list.contains("CN=lib1"),
        "{list}"
    );
    // An unknown group is refused by name; then made and used.
    let fp = kms.fingerprint("lib1");
    let o = kms.admin(&["clients", "accept", &fp, "--group", "LTO"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no device group 'LTO'")
    );
    kms.admin_ok(&["groups", "add", "LTO"]);
    kms.admin_ok(&["clients", "accept", &fp, "--group", "LTO"]);
    let lto_key = lib.create_active_aes256("lto-key", &[]).unwrap();

    let mut agent = kms.accepted("agent", "default", Version::new(1, 2));
    let agent_key = agent.create_active_aes256("agent-key", &[]).unwrap();
    // Each group sees only its own keys: another group's key is "not found", never "denied".
    let e = agent.get_key(&lto_key).unwrap_err().to_string();
    assert!(e.contains("ItemNotFound"), "{e}");
    assert!(agent.locate_by_name("lto-key").unwrap().is_empty());
    assert!(lib.locate_by_name("agent-key").unwrap().is_empty());
    assert_eq!(lib.get_key(&lto_key).unwrap().len(), 32);
    assert!(lib.get_key(&agent_key).is_err());

    // Rejecting cuts the client off at its next request.
    kms.admin_ok(&["clients", "reject", &fp[..12]]);
    let e = lib.get_key(&lto_key).unwrap_err().to_string();
    assert!(e.contains("rejected"), "{e}");

    // Auto-accept: a new certificate is served at once.
    kms.admin_ok(&["groups", "set", "default", "--auto-accept", "true"]);
    kms.issue("agent2");
    let mut a2 = Client::new(kms.client_config("agent2", Version::new(2, 0))).unwrap();
    assert_eq!(a2.get_key(&agent_key).unwrap().len(), 32);
    let groups = kms.admin_ok(&["groups", "list"]);
    assert!(groups.contains("LTO") && groups.contains("yes"), "{groups}");
    // The audit trail names client, operation, object and result.
    let audit = kms.admin_ok(&["--json", "audit", "--tail", "0"]);
    let recs: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    assert!(
        recs.iter()
            .any(|r| r["result"] == "refused" && r["operation"] == "Create"),
        "{audit}"
    );
    assert!(recs.iter().any(|r| r["result"] == "success"
        && r["operation"] == "Get"
        && r["object"] == lto_key.as_str()
        && r["group"] == "LTO"));
}

#[test]
fn restart_keeps_keys_and_damaged_keystores_or_wrong_master_keys_are_refused_untouched() {
    let mut kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let active = c
        .create_active_aes256("kept", &[("x-saveset", "saveset-0a1b2c3d")])
        .unwrap();
    let key = c.get_key(&active).unwrap();
    let destroyed = c.create_aes256("gone", &[]).unwrap();
    c.destroy(&destroyed).unwrap();
    drop(c);
    kms.stop();
    kms.start();
    let mut c = Client::new(kms.client_config("agent", Version::new(1, 4))).unwrap();
    assert_eq!(*c.get_key(&active).unwrap(), *key, "same key after restart");
    c.check_encrypt(&active).unwrap();
    assert!(c
        .get_key(&destroyed)
        .unwrap_err()
        .to_string()
        .contains("destroyed"));
    drop(c);
    kms.stop();

    let ks = kms.dir.path().join("keystore.db");
    let before = std::fs::read(&ks).unwrap();
    // A wrong master key: refused, named, keystore unchanged.
    std::fs::rename(
        kms.dir.path().join("master.key"),
        kms.dir.path().join("master.key.good"),
    )
    .unwrap();
    kms.admin_ok(&[
        "master-key",
        "new",
        "--out",
        kms.dir.path().join("master.key").to_str().unwrap(),
    ]);
    let o = kms.admin(&["serve"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("master key does not open keystore"),
        "{err}"
    );
    assert_eq!(std::fs::read(&ks).unwrap(), before, "not written");
    std::fs::rename(
        kms.dir.path().join("master.key.good"),
        kms.dir.path().join("master.key"),
    )
    .unwrap();

    // A damaged keystore (a byte of a key's attributes flipped): refused, named, unchanged.
    let mut bad = before.clone();
    let at = bad
        .windows(16)
        .position(|w| w == b"saveset-0a1b2c3d")
        .expect("the attribute value is in the file");
    bad[at + 8] ^= 0x01;
    std::fs::write(&ks, &bad).unwrap();
    let o = kms.admin(&["serve"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(&format!("object {active} fails its integrity check")),
        "{err}"
    );
    assert_eq!(std::fs::read(&ks).unwrap(), bad, "not written");
    // Tampering by hand (a pending client set to accepted with SQL) is caught the same way.
    std::fs::write(&ks, &before).unwrap();
    kms.start();
    kms.issue("intruder");
    let mut intruder = Client::new(kms.client_config("intruder", Version::new(1, 4))).unwrap();
    assert!(intruder
        .get_key(&active)
        .unwrap_err()
        .to_string()
        .contains("pending"));
    drop(intruder);
    kms.stop();
    {
        let db = rusqlite::Connection::open(&ks).unwrap();
        let n = db
            .execute(
                "UPDATE clients SET status = 'accepted' WHERE subject LIKE '%intruder%'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let o = kms.admin(&["serve"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("fails its integrity check"),
        "{err}"
    );
    // Not a keystore at all.
    std::fs::write(&ks, b"hello, this is not SQLite").unwrap();
    let o = kms.admin(&["keys", "list"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("keystore"),
        "{o:?}"
    );
    // init never overwrites.
    let o = kms.admin(&["init"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("never overwritten")
    );
    assert_eq!(std::fs::read(&ks).unwrap(), b"hello, this is not SQLite");
}

#[test]
fn backup_restore_rotation_and_serving_only_backed_up_keys() {
    let mut kms = Kms::new("require_backup = true");
    kms.start();
    let pass = kms.dir.path().join("backup.pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let k1 = c.create_active_aes256("payroll-key-one", &[]).unwrap();
    let e = c.get_key(&k1).unwrap_err().to_string();
    assert!(e.contains("not served until a keystore backup"), "{e}");
    let out = kms.dir.path().join("ks.backup");
    let o = kms.admin_ok(&[
        "backup",
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(o.contains("backed up 1 objects"), "{o}");
    let key1 = c.get_key(&k1).unwrap();
    let raw = std::fs::read(&out).unwrap();
    assert!(
        !raw.windows(key1.len()).any(|w| w == &key1[..]),
        "no key bytes in the clear"
    );
    assert!(
        !raw.windows(15).any(|w| w == b"payroll-key-one"),
        "names are not in the clear either"
    );
    // After the backup: k1 is destroyed and k2 made.
    c.revoke(&k1, rrc::SUPERSEDED).unwrap();
    c.destroy(&k1).unwrap();
    let k2 = c.create_active_aes256("k2", &[]).unwrap();
    drop(c);

    // Restore refuses while serving, then brings the backup's state back.
    let restore = |kms: &Kms, from: &std::path::Path, pass: &std::path::Path| {
        kms.admin(&[
            "restore",
            "--from",
            from.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
    };
    let o = restore(&kms, &out, &pass);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("in use by cinta-keymgr serve"),
        "{o:?}"
    );
    kms.stop();
    let wrong = kms.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not the right passphrase\n").unwrap();
    let o = restore(&kms, &out, &wrong);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("wrong backup passphrase"),
        "{o:?}"
    );
    let mut cut = raw.clone();
    cut.truncate(raw.len() - 20);
    let cutp = kms.dir.path().join("cut.backup");
    std::fs::write(&cutp, &cut).unwrap();
    let o = restore(&kms, &cutp, &pass);
    assert!(!o.status.success(), "a cut backup does not restore");
    let o = restore(&kms, &out, &pass);
    assert!(o.status.success(), "{o:?}");
    let o = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.contains("restored 1 objects") && o.contains("before-restore"),
        "{o}"
    );

    // Rotate the master key, point the config at it, serve: keys still open.
    let newkey = kms.dir.path().join("master2.key");
    kms.admin_ok(&["master-key", "new", "--out", newkey.to_str().unwrap()]);
    let o = kms.admin_ok(&[
        "master-key",
        "rotate",
        "--new-file",
        newkey.to_str().unwrap(),
    ]);
    assert!(o.contains("re-wrapped 1 keys"), "{o}");
    let cfg = std::fs::read_to_string(&kms.config)
        .unwrap()
        .replace("file = \"master.key\"", "file = \"master2.key\"");
    std::fs::write(&kms.config, cfg).unwrap();
    kms.start();
    let mut c = Client::new(kms.client_config("agent", Version::new(1, 4))).unwrap();
    assert_eq!(
        *c.get_key(&k1).unwrap(),
        *key1,
        "k1 is back, same bytes, under the new master key"
    );
    assert!(
        c.get_key(&k2)
            .unwrap_err()
            .to_string()
            .contains("ItemNotFound"),
        "k2 came after the backup"
    );
    let list = kms.admin_ok(&["keys", "list"]);
    assert!(list.contains(&k1) && list.contains("Active"), "{list}");
}

#[test]
fn rsa_server_certificate_and_tls12_clients() {
    let mut kms = Kms::new("trace = true");
    let rsa = kms.dir.path().join("rsa.key");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    kms.admin_ok(&[
        "pki",
        "issue",
        kms.pki.to_str().unwrap(),
        "server",
        "--server",
        "--host",
        "127.0.0.1",
        "--key",
        rsa.to_str().unwrap(),
    ]);
    kms.start();
    kms.accepted("agent", "default", Version::new(1, 2));
    let mut s = raw_connect(&kms, "agent", true);
    let q = cinta_kmip::message::Request {
        version: Version::new(1, 1),
        max_response_size: None,
        batch_order: None,
        on_error: cinta_kmip::message::OnError::Stop,
        authentication: None,
        items: vec![cinta_kmip::message::RequestItem {
            operation: op::QUERY as u32,
            id: None,
            payload: Some(Item::new(
                tag::REQUEST_PAYLOAD,
                Value::Structure(vec![
                    Item::new(tag::QUERY_FUNCTION, Value::Enumeration(1)),
                    Item::new(tag::QUERY_FUNCTION, Value::Enumeration(4)),
                ]),
            )),
        }],
    };
    s.write_all(&q.to_item().to_bytes()).unwrap();
    let r = read_message(&mut s).unwrap();
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let t = format!("{r:?}");
    assert!(
        t.contains("LIBRARY-LTO") && t.contains("Enumeration(30)"),
        "Discover Versions offered at 1.1, namespaces listed: {t}"
    );
    let log = std::fs::read_to_string(&kms.log).unwrap();
    assert!(
        log.contains("ttlv=42007801"),
        "hex trace of the request: {log}"
    );
}

/// A 1.x Attribute structure.
fn attr(name: &str, mut v: Item) -> Item {
    v.tag = tag::ATTRIBUTE_VALUE;
    Item::new(
        tag::ATTRIBUTE,
        Value::Structure(vec![
            Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
            v,
        ]),
    )
}

fn v(x: Value) -> Item {
    Item::new(0, x)
}

fn asi(ns: &str, data: &str) -> Item {
    v(Value::Structure(vec![
        Item::new(tag::APPLICATION_NAMESPACE, Value::TextString(ns.into())),
        Item::new(tag::APPLICATION_DATA, Value::TextString(data.into())),
    ]))
}

#[test]
fn tape_library_profile_custom_attributes_locate_and_attribute_edits() {
    let kms = Kms::serving();
    let mut c = kms.accepted("library", "default", Version::new(1, 2));
    // As a tape library does: keys tagged with LIBRARY-LTO and the key identifier it writes on tape.
    let mut uids = Vec::new();
    for i in 0..5 {
        let mut attrs = vec![
            attr("Cryptographic Algorithm", v(Value::Enumeration(3))),
            attr("Cryptographic Length", v(Value::Integer(256))),
            attr(
                "Application Specific Information",
                asi("LIBRARY-LTO", &format!("KAD{i:04}")),
            ),
            attr(
                "Alternative Name",
                v(Value::Structure(vec![
                    Item::new(
                        tag::ALTERNATIVE_NAME_VALUE,
                        Value::TextString(format!("lto-{i}")),
                    ),
                    Item::new(tag::ALTERNATIVE_NAME_TYPE, Value::Enumeration(1)),
                ])),
            ),
        ];
        // 30 custom attributes of text, integer and date-time type.
        for j in 0..10 {
            attrs.push(attr(
                &format!("x-text-{j}"),
                v(Value::TextString(format!("t{i}-{j}"))),
            ));
            attrs.push(attr(&format!("x-int-{j}"), v(Value::Integer(i * 100 + j))));
            attrs.push(attr(
                &format!("x-date-{j}"),
                v(Value::DateTime(1_700_000_000 + i as i64)),
            ));
        }
        let p = c
            .call(
                op::CREATE,
                vec![
                    Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)),
                    Item::new(tag::TEMPLATE_ATTRIBUTE, Value::Structure(attrs)),
                ],
            )
            .unwrap();
        uids.push(match &p[1].value {
            Value::TextString(s) => s.clone(),
            x => panic!("{x:?}"),
        });
    }
    // All 30 come back with their types.
    let p = c
        .call(op::GET_ATTRIBUTES, vec![uid_item(&uids[2])])
        .unwrap();
    let customs = p.iter().filter(|a| format!("{a:?}").contains("x-")).count();
    assert_eq!(customs, 30, "{p:?}");
    let t = format!("{p:?}");
    assert!(
        t.contains("Integer(209)") && t.contains("DateTime(1700000002)") && t.contains("t2-9"),
        "{t}"
    );
    let locate = |c: &mut Client, filters: Vec<Item>| -> Vec<String> {
        c.call(op::LOCATE, filters)
            .unwrap()
            .iter()
            .filter(|i| i.tag == tag::UNIQUE_IDENTIFIER)
            .map(|i| match &i.value {
                Value::TextString(s) => s.clone(),
                _ => unreachable!(),
            })
            .collect()
    };
    // By application specific information, by custom attribute (integer), by a date range.
    assert_eq!(
        locate(
            &mut c,
            vec![attr(
                "Application Specific Information",
                asi("LIBRARY-LTO", "KAD0003")
            )]
        ),
        vec![uids[3].clone()]
    );
    assert_eq!(
        locate(&mut c, vec![attr("x-int-4", v(Value::Integer(104)))]),
        vec![uids[1].clone()]
    );
    let range = locate(
        &mut c,
        vec![
            attr("x-date-0", v(Value::DateTime(1_700_000_001))),
            attr("x-date-0", v(Value::DateTime(1_700_000_003))),
        ],
    );
    assert_eq!(
        range,
        vec![uids[3].clone(), uids[2].clone(), uids[1].clone()],
        "inclusive range, newest first"
    );
    // By object type and state, with Maximum Items and Offset Items.
    let all = locate(
        &mut c,
        vec![
            attr("State", v(Value::Enumeration(1))),
            attr("Object Type", v(Value::Enumeration(2))),
        ],
    );
    assert_eq!(all.len(), 5);
    let page = locate(
        &mut c,
        vec![
            Item::new(tag::MAXIMUM_ITEMS, Value::Integer(2)),
            Item::new(tag::OFFSET_ITEMS, Value::Integer(1)),
            attr("Object Type", v(Value::Enumeration(2))),
        ],
    );
    assert_eq!(page, all[1..3].to_vec());

    // Add, modify, delete: a name added, a custom attribute changed, one removed; server attributes refused.
    let u = &uids[0];
    let name = v(Value::Structure(vec![
        Item::new(tag::NAME_VALUE, Value::TextString("renamed".into())),
        Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
    ]));
    c.call(op::ADD_ATTRIBUTE, vec![uid_item(u), attr("Name", name)])
        .unwrap();
    assert_eq!(c.locate_by_name("renamed").unwrap(), vec![u.clone()]);
    c.call(
        op::MODIFY_ATTRIBUTE,
        vec![
            uid_item(u),
            attr("x-text-0", v(Value::TextString("changed".into()))),
        ],
    )
    .unwrap();
    c.call(
        op::DELETE_ATTRIBUTE,
        vec![
            uid_item(u),
            Item::new(tag::ATTRIBUTE_NAME, Value::TextString("x-int-0".into())),
        ],
    )
    .unwrap();
    let t = format!(
        "{:?}",
        c.call(op::GET_ATTRIBUTES, vec![uid_item(u)]).unwrap()
    );
    assert!(t.contains("changed") && !t.contains("x-int-0\""), "{t}");
    let e = c
        .call(
            op::MODIFY_ATTRIBUTE,
            vec![uid_item(u), attr("State", v(Value::Enumeration(2)))],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be changed by a client"), "{e}");
    let e = c
        .call(
            op::ADD_ATTRIBUTE,
            vec![
                uid_item(u),
                attr("Cryptographic Length", v(Value::Integer(128))),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be changed"), "{e}");
    // Query lists the namespaces a tape library looks for.
    let q = format!(
        "{:?}",
        c.call(
            op::QUERY,
            vec![
                Item::new(tag::QUERY_FUNCTION, Value::Enumeration(4)),
                Item::new(tag::QUERY_FUNCTION, Value::Enumeration(2))
            ]
        )
        .unwrap()
    );
    assert!(
        q.contains("LIBRARY-LTO") && q.contains("Enumeration(7)"),
        "{q}"
    );
}

#[test]
fn lifecycle_dates_move_states_and_protect_stop_ends_protection() {
    let kms = Kms::serving();
    let mut c = kms.accepted("agent", "default", Version::new(1, 4));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let create = |c: &mut Client, extra: Vec<Item>| -> String {
        let mut attrs = vec![
            attr("Cryptographic Algorithm", v(Value::Enumeration(3))),
            attr("Cryptographic Length", v(Value::Integer(128))),
        ];
        attrs.extend(extra);
        match &c
            .call(
                op::CREATE,
                vec![
                    Item::new(tag::OBJECT_TYPE, Value::Enumeration(2)),
                    Item::new(tag::TEMPLATE_ATTRIBUTE, Value::Structure(attrs)),
                ],
            )
            .unwrap()[1]
            .value
        {
            Value::TextString(s) => s.clone(),
            x => panic!("{x:?}"),
        }
    };
    let state = |c: &mut Client, u: &str| -> String {
        format!(
            "{:?}",
            c.call(
                op::GET_ATTRIBUTES,
                vec![
                    uid_item(u),
                    Item::new(tag::ATTRIBUTE_NAME, Value::TextString("State".into()))
                ]
            )
            .unwrap()
        )
    };
    // An Activation Date already passed: Active from the start.
    let a = create(
        &mut c,
        vec![attr("Activation Date", v(Value::DateTime(now - 60)))],
    );
    assert!(state(&mut c, &a).contains("Enumeration(2)"));
    c.check_encrypt(&a).unwrap();
    // One in the future: Pre-Active until then.
    let b = create(
        &mut c,
        vec![attr("Activation Date", v(Value::DateTime(now + 3600)))],
    );
    assert!(state(&mut c, &b).contains("Enumeration(1)"));
    // A Deactivation Date set in the past deactivates at the next look.
    c.call(
        op::ADD_ATTRIBUTE,
        vec![
            uid_item(&a),
            attr("Deactivation Date", v(Value::DateTime(now - 1))),
        ],
    )
    .unwrap();
    assert!(state(&mut c, &a).contains("Enumeration(3)"));
    assert!(c
        .check_encrypt(&a)
        .unwrap_err()
        .to_string()
        .contains("Deactivated"));
    // A Protect Stop Date passed: still Active, still decrypts, no longer encrypts.
    let p = create(
        &mut c,
        vec![attr("Protect Stop Date", v(Value::DateTime(now - 1)))],
    );
    c.activate(&p).unwrap();
    let e = c.check_encrypt(&p).unwrap_err().to_string();
    assert!(e.contains("Protect Stop Date"), "{e}");
    c.call(
        op::CHECK,
        vec![
            uid_item(&p),
            Item::new(tag::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(8)),
        ],
    )
    .unwrap();
    // Usage outside the key's mask is refused.
    let e = c
        .call(
            op::CHECK,
            vec![
                uid_item(&p),
                Item::new(tag::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(1)),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not permit usage"), "{e}");
}

#[test]
fn a_passphrase_master_key_stretched_with_argon2id() {
    let mut kms = Kms::new("");
    let d = kms.dir.path().to_path_buf();
    std::fs::remove_file(d.join("keystore.db")).unwrap();
    std::fs::write(d.join("pass"), "a long operator passphrase\n").unwrap();
    let cfg = std::fs::read_to_string(&kms.config)
        .unwrap()
        .replace("file = \"master.key\"", "passphrase_file = \"pass\"");
    std::fs::write(&kms.config, cfg).unwrap();
    kms.admin_ok(&["init"]);
    let raw = std::fs::read(d.join("keystore.db")).unwrap();
    assert!(
        !raw.windows(9).any(|w| w == b"operator "),
        "the passphrase is not stored"
    );
    kms.start();
    let mut c = kms.accepted("agent", "default", Version::new(2, 0));
    let k = c.create_active_aes256("under-passphrase", &[]).unwrap();
    let key = c.get_key(&k).unwrap();
    drop(c);
    kms.stop();
    std::fs::write(d.join("pass"), "a long operator passphrasE\n").unwrap();
    let o = kms.admin(&["keys", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("master key does not open keystore"),
        "{err}"
    );
    std::fs::write(d.join("pass"), "short\n").unwrap();
    let o = kms.admin(&["keys", "list"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("shorter than 12"));
    std::fs::write(d.join("pass"), "a long operator passphrase\n").unwrap();
    kms.start();
    let mut c = Client::new(kms.client_config("agent", Version::new(2, 0))).unwrap();
    assert_eq!(*c.get_key(&k).unwrap(), *key);
}

#[test]
fn idle_sockets_slow_handshakes_and_pending_clients_never_keep_an_accepted_client_out() {
    let kms = Kms::serving();
    let mut early = kms.accepted("early", "default", Version::new(1, 4));
    kms.accepted("good", "default", Version::new(1, 4));
    kms.issue("pending");
    let mut held: Vec<TcpStream> = Vec::new();
    let mut pending: Vec<Tls> = Vec::new();
    // An accepted client, fresh connection each time; how long it took.
    let serve_good = || {
        let t = std::time::Instant::now();
        let mut cfg = kms.client_config("good", Version::new(1, 4));
        cfg.io_timeout = std::time::Duration::from_secs(10);
        let mut c = Client::new(cfg).unwrap();
        c.locate_by_name("nothing-here").unwrap();
        t.elapsed()
    };
    let mut slowest = std::time::Duration::ZERO;
    for round in 0..8 {
        // TCP connections that never start TLS, from the same address as the client.
        for _ in 0..if round == 0 { 300 } else { 30 } {
            held.push(TcpStream::connect(&kms.addr).unwrap());
        }
        // Connections whose handshake finishes with a pending certificate, then idle.
        for _ in 0..if round == 0 { 80 } else { 10 } {
            let mut s = raw_connect(&kms, "pending", false);
            // Some are closed for newer ones while they shake hands: as an attacker's would be.
            let _ = s.conn.complete_io(&mut s.sock);
            pending.push(s);
        }
        slowest = slowest.max(serve_good());
    }
    eprintln!(
        "accepted client served in at most {slowest:?} with {} idle sockets and {} pending handshakes opened",
        held.len(),
        pending.len()
    );
    // Far below the old wait (the 30 s handshake limit, 90 s seen): a bound
    // on function, not a benchmark.
    assert!(slowest < std::time::Duration::from_secs(5), "{slowest:?}");
    // The connection made before the flood was never touched.
    early.locate_by_name("nothing-here").unwrap();
    let log = std::fs::read_to_string(&kms.log).unwrap();
    assert!(log.contains("closed to make room"), "{log}");
    // The waiting connections were closed: most of the held sockets read end of file.
    let closed = held
        .iter_mut()
        .filter_map(|s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(8)))
                .unwrap();
            match s.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                Ok(_) => false,
            }
            .then_some(())
        })
        .count();
    assert_eq!(closed, held.len());
}

/// An attribute's value in a Get Attributes answer (1.x: by name; 2.0: by tag).
fn attr_value(p: &[Item], name: &str, tag2: u32) -> Option<Value> {
    if let Some(all) = p.iter().find(|i| i.tag == tag::ATTRIBUTES) {
        return all
            .children()
            .iter()
            .find(|i| i.tag == tag2)
            .map(|i| i.value.clone());
    }
    p.iter()
        .filter(|i| i.tag == tag::ATTRIBUTE)
        .find(|i| {
            i.child(tag::ATTRIBUTE_NAME)
                .is_some_and(|n| n.value == Value::TextString(name.into()))
        })
        .and_then(|i| i.child(tag::ATTRIBUTE_VALUE))
        .map(|i| i.value.clone())
}

/// A boolean attribute set by Modify Attribute, as `v` spells it.
fn set_flag(c: &mut Client, v: Version, uid: &str, name: &str, t: u32, on: bool) {
    let a = if v.major >= 2 {
        Item::new(
            tag::NEW_ATTRIBUTE,
            Value::Structure(vec![Item::new(t, Value::Boolean(on))]),
        )
    } else {
        Item::new(
            tag::ATTRIBUTE,
            Value::Structure(vec![
                Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
                Item::new(tag::ATTRIBUTE_VALUE, Value::Boolean(on)),
            ]),
        )
    };
    c.call(op::MODIFY_ATTRIBUTE, vec![uid_item(uid), a])
        .unwrap();
}

#[test]
fn digest_freshness_and_extractability_are_kept_at_every_version() {
    let kms = Kms::serving();
    drop(kms.accepted("lib", "default", Version::new(1, 0)));
    for v in VERSIONS {
        let minor = if v.major >= 2 { 99 } else { v.minor };
        let mut c = Client::new(kms.client_config("lib", v)).unwrap();
        let uid = c.create_active_aes256(&format!("tape-{v}"), &[]).unwrap();
        // Listed by Get Attribute List; sent when asked for by name (a Get
        // Attributes of all leaves them out, as test case TL-M-3 expects).
        let names = [
            ("Fresh", tag::FRESH),
            ("Digest", tag::DIGEST),
            ("Original Creation Date", tag::ORIGINAL_CREATION_DATE),
            ("Random Number Generator", tag::RANDOM_NUMBER_GENERATOR),
            ("Sensitive", tag::SENSITIVE),
            ("Always Sensitive", tag::ALWAYS_SENSITIVE),
            ("Extractable", tag::EXTRACTABLE),
            ("Never Extractable", tag::NEVER_EXTRACTABLE),
        ];
        let attrs = |c: &mut Client| {
            let mut p = vec![uid_item(&uid)];
            for (n, t) in names {
                p.push(if v.major >= 2 {
                    Item::new(tag::ATTRIBUTE_REFERENCE, Value::Enumeration(t))
                } else {
                    Item::new(tag::ATTRIBUTE_NAME, Value::TextString(n.into()))
                });
            }
            c.call(op::GET_ATTRIBUTES, p).unwrap()
        };
        let listed = format!(
            "{:?}",
            c.call(op::GET_ATTRIBUTE_LIST, vec![uid_item(&uid)])
                .unwrap()
        );
        let all = c.call(op::GET_ATTRIBUTES, vec![uid_item(&uid)]).unwrap();
        assert_eq!(attr_value(&all, "Digest", tag::DIGEST), None, "{v}");
        if v.major < 2 {
            for (n, _) in &names[1..3] {
                if *n != "Original Creation Date" || v.minor >= 2 {
                    assert!(listed.contains(n), "{v}: {n} not listed: {listed}");
                }
            }
        }
        let before = attrs(&mut c);
        if minor >= 1 {
            assert_eq!(
                attr_value(&before, "Fresh", tag::FRESH),
                Some(Value::Boolean(true)),
                "{v}"
            );
        }
        let key = c.get_key(&uid).unwrap();
        let after = attrs(&mut c);
        if minor >= 1 {
            // Served once: no longer fresh.
            assert_eq!(
                attr_value(&after, "Fresh", tag::FRESH),
                Some(Value::Boolean(false)),
                "{v}"
            );
        }
        // Digest: SHA-256 of the key as it is served (Raw).
        let digest = match attr_value(&after, "Digest", tag::DIGEST) {
            Some(Value::Structure(d)) => d,
            other => panic!("{v}: Digest {other:?}"),
        };
        let value = digest.iter().find(|i| i.tag == tag::DIGEST_VALUE).unwrap();
        assert_eq!(
            value.value,
            Value::ByteString(
                ring::digest::digest(&ring::digest::SHA256, &key)
                    .as_ref()
                    .to_vec()
            ),
            "{v}"
        );
        // Lease Time, at every version: asked for by name, and by Obtain Lease.
        let lease = c
            .call(
                op::GET_ATTRIBUTES,
                vec![
                    uid_item(&uid),
                    if v.major >= 2 {
                        Item::new(
                            tag::ATTRIBUTE_REFERENCE,
                            Value::Enumeration(tag::LEASE_TIME),
                        )
                    } else {
                        Item::new(tag::ATTRIBUTE_NAME, Value::TextString("Lease Time".into()))
                    },
                ],
            )
            .unwrap();
        assert_eq!(
            attr_value(&lease, "Lease Time", tag::LEASE_TIME),
            Some(Value::Interval(86_400)),
            "{v}"
        );
        let obtained = c.call(op::OBTAIN_LEASE, vec![uid_item(&uid)]).unwrap();
        assert!(
            obtained
                .iter()
                .any(|i| i.tag == tag::LEASE_TIME && i.value == Value::Interval(86_400)),
            "{v}: {obtained:?}"
        );
        let has = |name: &str, t: u32| attr_value(&after, name, t).is_some();
        assert_eq!(
            has("Original Creation Date", tag::ORIGINAL_CREATION_DATE),
            minor >= 2,
            "{v}"
        );
        assert_eq!(
            has("Random Number Generator", tag::RANDOM_NUMBER_GENERATOR),
            minor >= 3,
            "{v}"
        );
        for (name, t, want) in [
            ("Sensitive", tag::SENSITIVE, false),
            ("Always Sensitive", tag::ALWAYS_SENSITIVE, false),
            ("Extractable", tag::EXTRACTABLE, true),
            ("Never Extractable", tag::NEVER_EXTRACTABLE, false),
        ] {
            let got = attr_value(&after, name, t);
            if minor >= 4 {
                assert_eq!(got, Some(Value::Boolean(want)), "{v} {name}");
            } else {
                assert_eq!(got, None, "{v}: {name} is not {v}'s");
            }
        }
        if minor < 4 {
            continue;
        }
        // A key made Sensitive, or not Extractable, is no longer served.
        set_flag(&mut c, v, &uid, "Sensitive", tag::SENSITIVE, true);
        let e = c.get_key(&uid).unwrap_err().to_string();
        assert!(e.contains("Sensitive"), "{v}: {e}");
        set_flag(&mut c, v, &uid, "Sensitive", tag::SENSITIVE, false);
        set_flag(&mut c, v, &uid, "Extractable", tag::EXTRACTABLE, false);
        let e = c.get_key(&uid).unwrap_err().to_string();
        assert!(
            e.contains("NotExtractable") && e.contains("not Extractable"),
            "{v}: {e}"
        );
        let now = attrs(&mut c);
        // It was extractable once, and was never sensitive throughout.
        assert_eq!(
            attr_value(&now, "Never Extractable", tag::NEVER_EXTRACTABLE),
            Some(Value::Boolean(false)),
            "{v}"
        );
        assert_eq!(
            attr_value(&now, "Always Sensitive", tag::ALWAYS_SENSITIVE),
            Some(Value::Boolean(false)),
            "{v}"
        );
    }
    // Made Sensitive and unextractable from the start (2.0): always and never so,
    // until a client changes it.
    let v = Version::new(2, 0);
    let mut c = Client::new(kms.client_config("lib", v)).unwrap();
    let p = c
        .call(
            op::CREATE,
            vec![
                Item::new(
                    tag::OBJECT_TYPE,
                    Value::Enumeration(cinta_kmip::spec::object_type::SYMMETRIC_KEY as u32),
                ),
                Item::new(
                    tag::ATTRIBUTES,
                    Value::Structure(vec![
                        Item::new(
                            tag::CRYPTOGRAPHIC_ALGORITHM,
                            Value::Enumeration(
                                cinta_kmip::spec::cryptographic_algorithm::AES as u32,
                            ),
                        ),
                        Item::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(256)),
                        Item::new(tag::SENSITIVE, Value::Boolean(true)),
                        Item::new(tag::EXTRACTABLE, Value::Boolean(false)),
                    ]),
                ),
            ],
        )
        .unwrap();
    let uid = p
        .iter()
        .find_map(|i| match (&i.tag, &i.value) {
            (&t, Value::TextString(s)) if t == tag::UNIQUE_IDENTIFIER => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    let flags = vec![
        uid_item(&uid),
        Item::new(
            tag::ATTRIBUTE_REFERENCE,
            Value::Enumeration(tag::ALWAYS_SENSITIVE),
        ),
        Item::new(
            tag::ATTRIBUTE_REFERENCE,
            Value::Enumeration(tag::NEVER_EXTRACTABLE),
        ),
    ];
    let a = c.call(op::GET_ATTRIBUTES, flags.clone()).unwrap();
    assert_eq!(
        attr_value(&a, "", tag::ALWAYS_SENSITIVE),
        Some(Value::Boolean(true))
    );
    assert_eq!(
        attr_value(&a, "", tag::NEVER_EXTRACTABLE),
        Some(Value::Boolean(true))
    );
    set_flag(&mut c, v, &uid, "Sensitive", tag::SENSITIVE, false);
    set_flag(&mut c, v, &uid, "Extractable", tag::EXTRACTABLE, true);
    let a = c.call(op::GET_ATTRIBUTES, flags.clone()).unwrap();
    assert_eq!(
        attr_value(&a, "", tag::ALWAYS_SENSITIVE),
        Some(Value::Boolean(false))
    );
    assert_eq!(
        attr_value(&a, "", tag::NEVER_EXTRACTABLE),
        Some(Value::Boolean(false))
    );
}

fn name_item(n: &str) -> Item {
    Item::new(
        tag::NAME,
        Value::Structure(vec![
            Item::new(tag::NAME_VALUE, Value::TextString(n.into())),
            Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
        ]),
    )
}

fn en(x: i32) -> Value {
    Value::Enumeration(x as u32)
}

fn uid_of(p: &[Item]) -> String {
    match &p
        .iter()
        .find(|i| i.tag == tag::UNIQUE_IDENTIFIER)
        .unwrap()
        .value
    {
        Value::TextString(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn templates_at_1x_and_a_sensitive_key_served_only_wrapped() {
    use cinta_kmip::spec::{
        block_cipher_mode, cryptographic_algorithm as alg, cryptographic_usage_mask as usage,
        object_type as ot, query_function as qf, wrapping_method,
    };
    let kms = Kms::serving();
    drop(kms.accepted("lib", "default", Version::new(1, 4)));
    let mut c = Client::new(kms.client_config("lib", Version::new(1, 4))).unwrap();
    // Query Objects lists Template at 1.x (test case TL-M-1), not at 2.0.
    let objects = |c: &mut Client| -> Vec<Value> {
        c.call(
            op::QUERY,
            vec![Item::new(tag::QUERY_FUNCTION, en(qf::QUERY_OBJECTS))],
        )
        .unwrap()
        .into_iter()
        .filter(|i| i.tag == tag::OBJECT_TYPE)
        .map(|i| i.value)
        .collect()
    };
    let at14 = objects(&mut c);
    for t in [
        ot::SYMMETRIC_KEY,
        ot::PUBLIC_KEY,
        ot::PRIVATE_KEY,
        ot::CERTIFICATE,
        ot::SECRET_DATA,
        ot::OPAQUE_DATA,
        ot::SPLIT_KEY,
        ot::TEMPLATE,
    ] {
        assert!(at14.contains(&en(t)), "{t:#x} in {at14:?}");
    }
    let mut c2 = Client::new(kms.client_config("lib", Version::new(2, 0))).unwrap();
    assert!(!objects(&mut c2).contains(&en(ot::TEMPLATE)));

    // A template named in a Create's Template-Attribute gives the key its attributes.
    let t = c
        .call(
            op::REGISTER,
            vec![
                Item::new(tag::OBJECT_TYPE, en(ot::TEMPLATE)),
                Item::new(
                    tag::TEMPLATE_ATTRIBUTE,
                    Value::Structure(vec![attr("Name", v(name_item("lto-default").value))]),
                ),
                Item::new(
                    tag::TEMPLATE,
                    Value::Structure(vec![
                        attr("Cryptographic Algorithm", v(en(alg::AES))),
                        attr("Cryptographic Length", v(Value::Integer(256))),
                        attr(
                            "Cryptographic Usage Mask",
                            v(Value::Integer(usage::ENCRYPT | usage::DECRYPT)),
                        ),
                        attr("x-library", v(Value::TextString("LIB1".into()))),
                    ]),
                ),
            ],
        )
        .unwrap();
    let tuid = uid_of(&t);
    let got = c.call(op::GET, vec![uid_item(&tuid)]).unwrap();
    let tmpl = got
        .iter()
        .find(|i| i.tag == tag::TEMPLATE)
        .expect("a Template");
    assert_eq!(tmpl.children().len(), 4);
    let k = c
        .call(
            op::CREATE,
            vec![
                Item::new(tag::OBJECT_TYPE, en(ot::SYMMETRIC_KEY)),
                Item::new(
                    tag::TEMPLATE_ATTRIBUTE,
                    Value::Structure(vec![name_item("lto-default")]),
                ),
            ],
        )
        .unwrap();
    let kuid = uid_of(&k);
    let a = c.call(op::GET_ATTRIBUTES, vec![uid_item(&kuid)]).unwrap();
    assert_eq!(
        attr_value(&a, "Cryptographic Length", tag::CRYPTOGRAPHIC_LENGTH),
        Some(Value::Integer(256))
    );
    assert_eq!(
        attr_value(&a, "x-library", tag::ATTRIBUTE_VALUE),
        Some(Value::TextString("LIB1".into()))
    );
    // The template's name is not the key's.
    assert_eq!(attr_value(&a, "Name", tag::NAME), None);
    // Templates are 1.x objects.
    let e = c2
        .call(
            op::REGISTER,
            vec![
                Item::new(tag::OBJECT_TYPE, en(ot::TEMPLATE)),
                Item::new(tag::ATTRIBUTES, Value::Structure(vec![])),
                Item::new(tag::TEMPLATE, Value::Structure(vec![])),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("1.x"), "{e}");

    // A Sensitive key is never sent in the clear, but is sent wrapped (RFC 3394).
    set_flag(
        &mut c,
        Version::new(1, 4),
        &kuid,
        "Sensitive",
        tag::SENSITIVE,
        true,
    );
    let e = c.get_key(&kuid).unwrap_err().to_string();
    assert!(e.contains("Sensitive"), "{e}");
    let kek = uid_of(
        &c.call(
            op::CREATE,
            vec![
                Item::new(tag::OBJECT_TYPE, en(ot::SYMMETRIC_KEY)),
                Item::new(
                    tag::TEMPLATE_ATTRIBUTE,
                    Value::Structure(vec![
                        attr("Cryptographic Algorithm", v(en(alg::AES))),
                        attr("Cryptographic Length", v(Value::Integer(256))),
                        attr(
                            "Cryptographic Usage Mask",
                            v(Value::Integer(usage::WRAP_KEY)),
                        ),
                    ]),
                ),
            ],
        )
        .unwrap(),
    );
    c.activate(&kek).unwrap();
    let spec = Item::new(
        tag::KEY_WRAPPING_SPECIFICATION,
        Value::Structure(vec![
            Item::new(tag::WRAPPING_METHOD, en(wrapping_method::ENCRYPT)),
            Item::new(
                tag::ENCRYPTION_KEY_INFORMATION,
                Value::Structure(vec![
                    uid_item(&kek),
                    Item::new(
                        tag::CRYPTOGRAPHIC_PARAMETERS,
                        Value::Structure(vec![Item::new(
                            tag::BLOCK_CIPHER_MODE,
                            en(block_cipher_mode::NIST_KEY_WRAP),
                        )]),
                    ),
                ]),
            ),
        ]),
    );
    let got = c.call(op::GET, vec![uid_item(&kuid), spec]).unwrap();
    let block = got[2].child(tag::KEY_BLOCK).unwrap();
    assert!(block.child(tag::KEY_WRAPPING_DATA).is_some());
    let wrapped = match &block
        .child(tag::KEY_VALUE)
        .unwrap()
        .child(tag::KEY_MATERIAL)
        .unwrap()
        .value
    {
        Value::ByteString(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(wrapped.len(), 40);
    let kek_bytes = c.get_key(&kek).unwrap();
    let key = cinta_keymgr::crypto::symmetric::unwrap(
        block_cipher_mode::NIST_KEY_WRAP,
        &kek_bytes,
        &wrapped,
    )
    .unwrap();
    assert_eq!(key.len(), 32);
}
