//! The keystore: one SQLite file holding managed objects (key material wrapped under the master key), client certificates, device groups and the master key's verifier.
//!
//! Opening never writes before the file has passed SQLite's integrity check
//! and the master key has opened the verifier, so a damaged keystore or a
//! wrong master key is refused and left as it was. Writes commit with
//! `synchronous=FULL`: a key handed to a client is on disk first.

use std::path::{Path, PathBuf};

use cinta_kmip::spec::{state, tag};
use cinta_kmip::ttlv::Value;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use zeroize::Zeroizing;

use crate::attrs::Attrs;
use crate::error::{Error, Result};
use crate::master::{KdfParams, MasterKey, Source};

/// Format 2: an object's row MAC covers its type, state and backed-up
/// columns too. A format-1 keystore is checked under the old MACs when it
/// opens, then its MACs are rewritten (one transaction) and it is format 2.
const FORMAT: &str = "cinta-keymgr keystore 2";
const FORMAT_1: &str = "cinta-keymgr keystore 1";
const VERIFIER_AAD: &[u8] = b"cinta-keymgr master key verifier";

const SCHEMA: &str = "
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    auto_accept INTEGER NOT NULL,
    created INTEGER NOT NULL,
    mac BLOB NOT NULL
);
CREATE TABLE clients (
    fingerprint TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    grp TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    mac BLOB NOT NULL
);
CREATE TABLE objects (
    seq INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    grp TEXT NOT NULL,
    object_type INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attrs BLOB NOT NULL,
    material BLOB,
    backed_up INTEGER NOT NULL DEFAULT 0,
    mac BLOB NOT NULL
);
CREATE INDEX objects_by_group ON objects (grp, seq);
CREATE TABLE names (
    seq INTEGER NOT NULL REFERENCES objects (seq) ON DELETE CASCADE,
    name TEXT NOT NULL
);
CREATE INDEX names_by_name ON names (name);
CREATE INDEX names_by_object ON names (seq);
";

/// A managed object as stored (material still wrapped).
#[derive(Debug, Clone)]
pub struct Object {
    pub seq: i64,
    pub uid: String,
    pub group: String,
    pub attrs: Attrs,
    pub wrapped: Option<Vec<u8>>,
    pub backed_up: bool,
}

impl Object {
    pub fn object_type(&self) -> u32 {
        self.attrs.int("Object Type").unwrap_or(0) as u32
    }
    pub fn state(&self) -> i32 {
        self.attrs.int("State").unwrap_or(0) as i32
    }
    pub fn name_values(&self) -> Vec<String> {
        self.attrs
            .all("Name")
            .filter_map(|n| match &n.child(tag::NAME_VALUE)?.value {
                Value::TextString(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A client certificate the server has seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Client {
    pub fingerprint: String,
    pub subject: String,
    pub group: String,
    pub status: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// A device group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub name: String,
    pub auto_accept: bool,
    pub clients: i64,
    pub objects: i64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    master: MasterKey,
    rng: SystemRandom,
}

/// SQLite's file beside a keystore (`-wal`, `-shm`).
fn side(path: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}{ext}", path.display()))
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sql {
        path: path.to_owned(),
        source,
    }
}

fn tune(conn: &Connection, path: &Path) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql(path))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql(path))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql(path))?;
    // Keystores made before this index existed get it now (checked first, so
    // a damaged or foreign file is never written).
    conn.execute_batch("CREATE INDEX IF NOT EXISTS names_by_object ON names (seq);")
        .map_err(sql(path))?;
    Ok(())
}

fn meta(conn: &Connection, k: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
        .optional()
}

fn set_meta(conn: &Connection, k: &str, v: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = ?2",
        [k, v],
    )
    .map(|_| ())
}

/// Master key, KDF parameters (for a passphrase) and verifier for a source.
fn fresh_master(
    source: &Source,
    rng: &SystemRandom,
) -> Result<(MasterKey, Option<KdfParams>, Vec<u8>)> {
    let kdf = if source.needs_kdf() {
        Some(KdfParams::fresh(rng)?)
    } else {
        None
    };
    let mk = source.derive(kdf.as_ref())?;
    let verifier = mk.wrap(VERIFIER_AAD, &[0u8; 32], rng)?;
    Ok((mk, kdf, verifier))
}

fn write_master(
    conn: &Connection,
    mk: &MasterKey,
    kdf: Option<&KdfParams>,
    verifier: &[u8],
) -> rusqlite::Result<()> {
    set_meta(conn, "master_id", mk.id())?;
    set_meta(conn, "verifier", &crate::master::hex(verifier))?;
    match kdf {
        Some(k) => set_meta(conn, "kdf", &k.encode()),
        None => conn
            .execute("DELETE FROM meta WHERE k = 'kdf'", [])
            .map(|_| ()),
    }
}

impl Store {
    /// Makes a new keystore at `path` (which must not exist) with the
    /// default group `default_group`, and returns the master key's id.
    pub fn create(path: &Path, source: &Source, default_group: &str, now: i64) -> Result<String> {
        if path.exists() {
            return Err(Error::Keystore {
                path: path.to_owned(),
                message: "already exists; it is never overwritten (restore a backup with `cinta-keymgr restore`)".into(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let rng = SystemRandom::new();
        let (mk, kdf, verifier) = fresh_master(source, &rng)?;
        let tmp = path.with_extension("creating");
        let _ = std::fs::remove_file(&tmp);
        {
            // 0600 before SQLite opens it; SQLite gives its WAL the same mode.
            crate::private::create_file(&tmp)
                .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            let mut conn = Connection::open(&tmp).map_err(sql(path))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(sql(path))?;
            let tx = conn.transaction().map_err(sql(path))?;
            tx.execute_batch(SCHEMA).map_err(sql(path))?;
            set_meta(&tx, "format", FORMAT).map_err(sql(path))?;
            set_meta(&tx, "created", &now.to_string()).map_err(sql(path))?;
            write_master(&tx, &mk, kdf.as_ref(), &verifier).map_err(sql(path))?;
            tx.execute(
                "INSERT INTO groups (name, auto_accept, created, mac) VALUES (?1, 0, ?2, ?3)",
                params![default_group, now, group_mac(&mk, default_group, false)],
            )
            .map_err(sql(path))?;
            tx.commit().map_err(sql(path))?;
        }
        // Made whole under another name, then renamed: a crash leaves no half keystore.
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(mk.id().to_string())
    }

    /// Opens an existing keystore, checking it and the master key before any write.
    pub fn open(path: &Path, source: &Source) -> Result<Store> {
        let bad = |message: String| Error::Keystore {
            path: path.to_owned(),
            message,
        };
        if !path.exists() {
            return Err(bad(
                "does not exist; make it with `cinta-keymgr init`".into()
            ));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| bad(format!("cannot open: {e}")))?;
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| {
                bad(format!(
                    "is damaged or not a keystore ({e}); it was left as it is"
                ))
            })?;
        if check != "ok" {
            return Err(bad(format!(
                "failed its integrity check ({check}); it was left as it is"
            )));
        }
        let format =
            meta(&conn, "format").map_err(|e| bad(format!("is not a cinta keystore ({e})")))?;
        let legacy = format.as_deref() == Some(FORMAT_1);
        if format.as_deref() != Some(FORMAT) && !legacy {
            return Err(bad(format!(
                "is not a cinta keystore (format {:?}, expected {FORMAT:?})",
                format.unwrap_or_default()
            )));
        }
        let get = |k: &str| -> Result<String> {
            meta(&conn, k)
                .map_err(sql(path))?
                .ok_or_else(|| bad(format!("has no {k}")))
        };
        let expected = get("master_id")?;
        let verifier = crate::master::unhex(&get("verifier")?)
            .ok_or_else(|| bad("verifier is not hex".into()))?;
        let kdf = match meta(&conn, "kdf").map_err(sql(path))? {
            Some(s) => Some(
                KdfParams::decode(&s)
                    .ok_or_else(|| bad(format!("unreadable KDF parameters {s:?}")))?,
            ),
            None => None,
        };
        if kdf.is_some() != source.needs_kdf() {
            return Err(Error::MasterKey(format!(
                "keystore {} was made with a master key {}, but the configuration gives a {}",
                path.display(),
                if kdf.is_some() { "passphrase" } else { "file" },
                if source.needs_kdf() {
                    "passphrase"
                } else {
                    "key file"
                },
            )));
        }
        let master = source.derive(kdf.as_ref())?;
        if master.unwrap(VERIFIER_AAD, &verifier).is_none() {
            return Err(Error::WrongMasterKey {
                path: path.to_owned(),
                expected,
                given: master.id().to_string(),
            });
        }
        verify_all(&conn, &master, path, legacy)?;
        tune(&conn, path)?;
        if legacy {
            upgrade_macs(&conn, &master, path)?;
        }
        // Keystores made before their files were private: only their user reads them.
        for p in [path.to_owned(), side(path, "-wal"), side(path, "-shm")] {
            crate::private::tighten(&p)
                .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
            master,
            rng: SystemRandom::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn master_id(&self) -> &str {
        self.master.id()
    }

    /// Object access on the connection; the caller frames it with
    /// [`Store::exec`] (`BEGIN`, `SAVEPOINT m`, `COMMIT`...), so many request
    /// messages can share one transaction and one fsync (group commit).
    pub fn tx(&self) -> Tx<'_> {
        Tx {
            tx: &self.conn,
            master: &self.master,
            rng: &self.rng,
            path: &self.path,
        }
    }

    /// Runs transaction-control SQL (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...).
    pub fn exec(&self, sql_text: &str) -> Result<()> {
        self.conn.execute_batch(sql_text).map_err(sql(&self.path))
    }

    /// Whether a transaction is open (after a failed COMMIT, for instance).
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Records that a client certificate connected; an unknown one is added
    /// as pending in `default_group`, or accepted if that group auto-accepts.
    pub fn client_seen(
        &mut self,
        fingerprint: &str,
        subject: &str,
        default_group: &str,
        now: i64,
    ) -> Result<Client> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        let known = client_row(&tx, fingerprint).map_err(sql(&path))?;
        let known = match known {
            Some((c, mac)) => Some(checked_client(&self.master, &path, c, &mac)?),
            None => None,
        };
        let c = match known {
            Some(mut c) => {
                tx.execute(
                    "UPDATE clients SET last_seen = ?2, subject = ?3, mac = ?4 WHERE fingerprint = ?1",
                    params![fingerprint, now, subject, client_mac(&self.master, fingerprint, subject, &c.group, &c.status)],
                )
                .map_err(sql(&path))?;
                c.last_seen = now;
                c.subject = subject.to_string();
                c
            }
            None => {
                let row: Option<(bool, Vec<u8>)> = tx
                    .query_row(
                        "SELECT auto_accept, mac FROM groups WHERE name = ?1",
                        [default_group],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(sql(&path))?;
                let auto = match row {
                    Some((auto, mac)) => {
                        if !self
                            .master
                            .row_ok("groups", &group_fields(default_group, auto), &mac)
                        {
                            return Err(altered(&path, &format!("device group '{default_group}'")));
                        }
                        auto
                    }
                    None => false,
                };
                let status = if auto { "accepted" } else { "pending" };
                tx.execute(
                    "INSERT INTO clients (fingerprint, subject, grp, status, first_seen, last_seen, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                    params![fingerprint, subject, default_group, status, now, client_mac(&self.master, fingerprint, subject, default_group, status)],
                )
                .map_err(sql(&path))?;
                Client {
                    fingerprint: fingerprint.into(),
                    subject: subject.into(),
                    group: default_group.into(),
                    status: status.into(),
                    first_seen: now,
                    last_seen: now,
                }
            }
        };
        tx.commit().map_err(sql(&path))?;
        Ok(c)
    }

    /// Looks a client up by its exact fingerprint (the server's per-message check).
    pub fn client_exact(&self, fingerprint: &str) -> Result<Option<Client>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients WHERE fingerprint = ?1")
            .map_err(sql(&self.path))?;
        let row = st
            .query_row([fingerprint], row_client)
            .optional()
            .map_err(sql(&self.path))?;
        row.map(|(c, mac)| checked_client(&self.master, &self.path, c, &mac))
            .transpose()
    }

    /// Looks a client up by fingerprint (or a unique prefix of at least 8 hex digits).
    pub fn client(&self, fingerprint: &str) -> Result<Client> {
        let fp = fingerprint.to_ascii_lowercase().replace(':', "");
        let mut stmt = self
            .conn
            .prepare("SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients WHERE fingerprint LIKE ?1 || '%'")
            .map_err(sql(&self.path))?;
        let rows: Vec<(Client, Vec<u8>)> = stmt
            .query_map([&fp], row_client)
            .and_then(|r| r.collect())
            .map_err(sql(&self.path))?;
        let rows = rows
            .into_iter()
            .map(|(c, mac)| checked_client(&self.master, &self.path, c, &mac))
            .collect::<Result<Vec<Client>>>()?;
        match rows.len() {
            _ if fp.len() < 8 => Err(Error::Invalid(
                "give at least 8 hex digits of the fingerprint".into(),
            )),
            0 => Err(Error::NotFound(format!(
                "no client with fingerprint {fingerprint}"
            ))),
            1 => Ok(rows.into_iter().next().expect("one")),
            n => Err(Error::Invalid(format!(
                "{n} clients match {fingerprint}; give more digits"
            ))),
        }
    }

    pub fn clients(&self) -> Result<Vec<Client>> {
        let mut stmt = self
            .conn
            .prepare("SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients ORDER BY first_seen, fingerprint")
            .map_err(sql(&self.path))?;
        let rows: Vec<(Client, Vec<u8>)> = stmt
            .query_map([], row_client)
            .and_then(|r| r.collect())
            .map_err(sql(&self.path))?;
        rows.into_iter()
            .map(|(c, mac)| checked_client(&self.master, &self.path, c, &mac))
            .collect()
    }

    /// Sets a client's status (and group, if given).
    pub fn set_client(
        &mut self,
        fingerprint: &str,
        status: &str,
        group: Option<&str>,
    ) -> Result<Client> {
        let c = self.client(fingerprint)?;
        let group = group.unwrap_or(&c.group).to_string();
        if !self.group_exists(&group)? {
            return Err(Error::NotFound(format!(
                "no device group '{group}' (make it with `cinta-keymgr groups add`)"
            )));
        }
        self.conn
            .execute(
                "UPDATE clients SET status = ?2, grp = ?3, mac = ?4 WHERE fingerprint = ?1",
                params![
                    c.fingerprint,
                    status,
                    group,
                    client_mac(&self.master, &c.fingerprint, &c.subject, &group, status)
                ],
            )
            .map_err(sql(&self.path))?;
        self.client(&c.fingerprint)
    }

    pub fn group_exists(&self, name: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT 1 FROM groups WHERE name = ?1", [name], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(sql(&self.path))
    }

    pub fn add_group(&mut self, name: &str, auto_accept: bool, now: i64) -> Result<()> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::Invalid(format!(
                "group name '{name}': use 1-64 letters, digits, - _ ."
            )));
        }
        if self.group_exists(name)? {
            return Err(Error::Invalid(format!(
                "device group '{name}' already exists"
            )));
        }
        self.conn
            .execute(
                "INSERT INTO groups (name, auto_accept, created, mac) VALUES (?1, ?2, ?3, ?4)",
                params![
                    name,
                    auto_accept,
                    now,
                    group_mac(&self.master, name, auto_accept)
                ],
            )
            .map_err(sql(&self.path))?;
        Ok(())
    }

    pub fn set_group_auto_accept(&mut self, name: &str, auto_accept: bool) -> Result<()> {
        let n = self
            .conn
            .execute(
                "UPDATE groups SET auto_accept = ?2, mac = ?3 WHERE name = ?1",
                params![
                    name,
                    auto_accept,
                    group_mac(&self.master, name, auto_accept)
                ],
            )
            .map_err(sql(&self.path))?;
        if n == 0 {
            return Err(Error::NotFound(format!("no device group '{name}'")));
        }
        Ok(())
    }

    pub fn groups(&self) -> Result<Vec<Group>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, auto_accept,
                    (SELECT count(*) FROM clients c WHERE c.grp = g.name),
                    (SELECT count(*) FROM objects o WHERE o.grp = g.name)
                 FROM groups g ORDER BY name",
            )
            .map_err(sql(&self.path))?;
        let r = stmt
            .query_map([], |r| {
                Ok(Group {
                    name: r.get(0)?,
                    auto_accept: r.get(1)?,
                    clients: r.get(2)?,
                    objects: r.get(3)?,
                })
            })
            .and_then(|r| r.collect())
            .map_err(sql(&self.path));
        r
    }

    /// Every object, for the admin CLI (optionally one group's).
    pub fn objects(&mut self, group: Option<&str>) -> Result<Vec<Object>> {
        self.tx().select(
            "SELECT seq, uid, grp, object_type, state, attrs, material, backed_up, mac FROM objects WHERE (?1 IS NULL OR grp = ?1) ORDER BY seq",
            params![group],
        )
    }

    /// Re-wraps every key under a new master key in one transaction.
    pub fn rotate(&mut self, new: &Source) -> Result<usize> {
        let (mk, kdf, verifier) = fresh_master(new, &self.rng)?;
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        verify_all(&tx, &self.master, &path, false)?;
        let rows: Vec<RotateRow> = {
            let mut stmt = tx
                .prepare("SELECT seq, uid, grp, attrs, material, object_type, state, backed_up FROM objects")
                .map_err(sql(&path))?;
            let r = stmt
                .query_map([], |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                        (r.get(5)?, r.get(6)?, r.get(7)?),
                    ))
                })
                .and_then(|r| r.collect())
                .map_err(sql(&path))?;
            r
        };
        let mut keys = 0;
        for ((seq, uid, grp, attrs, wrapped), (object_type, state, backed_up)) in &rows {
            let rewrapped = match wrapped {
                Some(w) => {
                    let plain = self.master.unwrap(uid.as_bytes(), w).ok_or_else(|| Error::Keystore {
                        path: path.clone(),
                        message: format!("object {uid} does not unwrap under the current master key; nothing was changed"),
                    })?;
                    keys += 1;
                    Some(mk.wrap(uid.as_bytes(), &plain, &self.rng)?)
                }
                None => None,
            };
            let mac = ObjectRow {
                uid,
                group: grp,
                object_type: *object_type,
                state: *state,
                attrs,
                material: rewrapped.as_deref(),
                backed_up: *backed_up,
            }
            .mac(&mk);
            tx.execute(
                "UPDATE objects SET material = ?2, mac = ?3 WHERE seq = ?1",
                params![seq, rewrapped, mac],
            )
            .map_err(sql(&path))?;
        }
        let clients: Vec<(Client, Vec<u8>)> = {
            let mut st = tx
                .prepare("SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients")
                .map_err(sql(&path))?;
            let r = st
                .query_map([], row_client)
                .and_then(|r| r.collect())
                .map_err(sql(&path))?;
            r
        };
        for (c, _) in clients {
            tx.execute(
                "UPDATE clients SET mac = ?2 WHERE fingerprint = ?1",
                params![
                    c.fingerprint,
                    client_mac(&mk, &c.fingerprint, &c.subject, &c.group, &c.status)
                ],
            )
            .map_err(sql(&path))?;
        }
        let groups: Vec<(String, bool)> = {
            let mut st = tx
                .prepare("SELECT name, auto_accept FROM groups")
                .map_err(sql(&path))?;
            let r = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect())
                .map_err(sql(&path))?;
            r
        };
        for (name, auto) in groups {
            tx.execute(
                "UPDATE groups SET mac = ?2 WHERE name = ?1",
                params![name, group_mac(&mk, &name, auto)],
            )
            .map_err(sql(&path))?;
        }
        write_master(&tx, &mk, kdf.as_ref(), &verifier).map_err(sql(&path))?;
        tx.commit().map_err(sql(&path))?;
        self.master = mk;
        Ok(keys)
    }

    /// Copies the keystore, consistent, to `dest` (SQLite `VACUUM INTO`).
    pub fn snapshot(&self, dest: &Path) -> Result<()> {
        let d = dest
            .to_str()
            .ok_or_else(|| Error::Invalid(format!("{} is not UTF-8", dest.display())))?;
        // An empty 0600 file first: VACUUM INTO fills it, keeping its mode.
        crate::private::create_file(dest)
            .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
        self.conn
            .execute("VACUUM INTO ?1", [d])
            .map_err(sql(&self.path))?;
        Ok(())
    }

    /// Marks as backed up every object whose uid is in `uids` (its MAC covers the mark).
    pub fn mark_backed_up(&mut self, uids: &[String]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        for u in uids {
            mark_backed_up(&tx, &self.master, &path, Some(u))?;
        }
        tx.commit().map_err(sql(&path))
    }

    /// Marks everything in this (copy of a) keystore as backed up; returns the uids.
    pub fn mark_all_backed_up(&mut self) -> Result<Vec<String>> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        let uids = mark_backed_up(&tx, &self.master, &path, None)?;
        tx.commit().map_err(sql(&path))?;
        Ok(uids)
    }

    /// Marks every object of the keystore copy at `copy` (a snapshot about to
    /// be sealed into a backup) as backed up, with MACs under this
    /// keystore's master key; returns their uids.
    pub fn mark_copy_backed_up(&self, copy: &Path) -> Result<Vec<String>> {
        let mut conn = Connection::open(copy).map_err(sql(copy))?;
        let tx = conn.transaction().map_err(sql(copy))?;
        let uids = mark_backed_up(&tx, &self.master, copy, None)?;
        tx.commit().map_err(sql(copy))?;
        Ok(uids)
    }

    pub fn count_objects(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .map_err(sql(&self.path))
    }
}

fn row_client(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Client, Vec<u8>)> {
    Ok((
        Client {
            fingerprint: r.get(0)?,
            subject: r.get(1)?,
            group: r.get(2)?,
            status: r.get(3)?,
            first_seen: r.get(4)?,
            last_seen: r.get(5)?,
        },
        r.get(6)?,
    ))
}

/// Every row carries an HMAC under a key derived from the master key, over
/// the fields that decide what is served to whom (not the last-seen times
/// or the backed-up flag): a row altered on disk, by damage or by hand, is
/// refused instead of trusted.
fn altered(path: &Path, what: &str) -> Error {
    Error::Keystore {
        path: path.to_owned(),
        message: format!(
            "{what} fails its integrity check (altered or damaged); nothing was changed"
        ),
    }
}

fn client_mac(m: &MasterKey, fp: &str, subject: &str, group: &str, status: &str) -> Vec<u8> {
    m.row_mac(
        "clients",
        &[
            fp.as_bytes(),
            subject.as_bytes(),
            group.as_bytes(),
            status.as_bytes(),
        ],
    )
}

fn checked_client(m: &MasterKey, path: &Path, c: Client, mac: &[u8]) -> Result<Client> {
    let f = [
        c.fingerprint.as_bytes(),
        c.subject.as_bytes(),
        c.group.as_bytes(),
        c.status.as_bytes(),
    ];
    if m.row_ok("clients", &f, mac) {
        Ok(c)
    } else {
        Err(altered(path, &format!("client {}", c.fingerprint)))
    }
}

fn group_fields(name: &str, auto_accept: bool) -> [&[u8]; 2] {
    [name.as_bytes(), if auto_accept { b"1" } else { b"0" }]
}

fn group_mac(m: &MasterKey, name: &str, auto_accept: bool) -> Vec<u8> {
    m.row_mac("groups", &group_fields(name, auto_accept))
}

/// What an object's row MAC covers: every column that decides what a
/// client gets (its names are checked against its attributes at open).
/// Not covered: `seq` (the row's place) and nothing else.
struct ObjectRow<'a> {
    uid: &'a str,
    group: &'a str,
    object_type: i64,
    state: i64,
    attrs: &'a [u8],
    material: Option<&'a [u8]>,
    backed_up: bool,
}

impl<'a> ObjectRow<'a> {
    fn of(o: &'a Object, attrs: &'a [u8], material: Option<&'a [u8]>, backed_up: bool) -> Self {
        ObjectRow {
            uid: &o.uid,
            group: &o.group,
            object_type: i64::from(o.object_type()),
            state: i64::from(o.state()),
            attrs,
            material,
            backed_up,
        }
    }

    fn fields(&self) -> ([u8; 8], [u8; 8], [&[u8]; 4]) {
        (
            self.object_type.to_be_bytes(),
            self.state.to_be_bytes(),
            [
                self.uid.as_bytes(),
                self.group.as_bytes(),
                self.attrs,
                self.material.unwrap_or(b""),
            ],
        )
    }

    fn mac(&self, m: &MasterKey) -> Vec<u8> {
        let (t, st, f) = self.fields();
        let flag: &[u8] = if self.backed_up { b"1" } else { b"0" };
        m.row_mac("objects/2", &[f[0], f[1], &t, &st, f[2], f[3], flag])
    }

    fn ok(&self, m: &MasterKey, mac: &[u8]) -> bool {
        let (t, st, f) = self.fields();
        let flag: &[u8] = if self.backed_up { b"1" } else { b"0" };
        m.row_ok("objects/2", &[f[0], f[1], &t, &st, f[2], f[3], flag], mac)
    }

    /// Format 1's MAC: uid, group, attributes, material.
    fn ok_v1(&self, m: &MasterKey, mac: &[u8]) -> bool {
        let (_, _, f) = self.fields();
        m.row_ok("objects", &f, mac)
    }
}

/// An objects row whole: seq, uid, group, type, state, attributes, material, backed up, MAC.
type FullRow = (
    i64,
    String,
    String,
    i64,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
    bool,
    Vec<u8>,
);

/// An objects row read as [`FullRow`] (the columns in its order).
fn full_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FullRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

/// Object `uid`'s row, or every object's (None).
fn full_rows(conn: &Connection, path: &Path, uid: Option<&str>) -> Result<Vec<FullRow>> {
    let mut st = conn
        .prepare("SELECT seq, uid, grp, object_type, state, attrs, material, backed_up, mac FROM objects WHERE ?1 IS NULL OR uid = ?1")
        .map_err(sql(path))?;
    let r = st
        .query_map([uid], full_row)
        .and_then(|r| r.collect())
        .map_err(sql(path));
    r
}

/// Sets `backed_up` on object `uid` (every object if None), rewriting its
/// MAC after checking the old one; the uids marked.
fn mark_backed_up(
    conn: &Connection,
    m: &MasterKey,
    path: &Path,
    uid: Option<&str>,
) -> Result<Vec<String>> {
    let rows = full_rows(conn, path, uid)?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, uid, grp, object_type, state, attrs, material, backed_up, mac) in rows {
        let mut row = ObjectRow {
            uid: &uid,
            group: &grp,
            object_type,
            state,
            attrs: &attrs,
            material: material.as_deref(),
            backed_up,
        };
        if !row.ok(m, &mac) {
            return Err(altered(path, &format!("object {uid}")));
        }
        row.backed_up = true;
        conn.execute(
            "UPDATE objects SET backed_up = 1, mac = ?2 WHERE seq = ?1",
            params![seq, row.mac(m)],
        )
        .map_err(sql(path))?;
        out.push(uid);
    }
    Ok(out)
}

/// Rewrites a format-1 keystore's object MACs as format 2 (after they were
/// all checked under format 1), in one transaction.
fn upgrade_macs(conn: &Connection, m: &MasterKey, path: &Path) -> Result<()> {
    let tx = conn.unchecked_transaction().map_err(sql(path))?;
    let rows = full_rows(&tx, path, None)?;
    for (seq, uid, grp, object_type, state, attrs, material, backed_up, _) in &rows {
        let row = ObjectRow {
            uid,
            group: grp,
            object_type: *object_type,
            state: *state,
            attrs,
            material: material.as_deref(),
            backed_up: *backed_up,
        };
        tx.execute(
            "UPDATE objects SET mac = ?2 WHERE seq = ?1",
            params![seq, row.mac(m)],
        )
        .map_err(sql(path))?;
    }
    set_meta(&tx, "format", FORMAT).map_err(sql(path))?;
    tx.commit().map_err(sql(path))
}

/// Checks every row of the keystore (at open, before anything is written).
fn verify_all(conn: &Connection, m: &MasterKey, path: &Path, legacy: bool) -> Result<()> {
    let mut st = conn
        .prepare("SELECT seq, uid, grp, attrs, material, mac, object_type, state, backed_up FROM objects")
        .map_err(sql(path))?;
    let mut rows = st.query([]).map_err(sql(path))?;
    let mut names_st = conn
        .prepare("SELECT name FROM names WHERE seq = ?1 ORDER BY name")
        .map_err(sql(path))?;
    let mut named = 0i64;
    while let Some(r) = rows.next().map_err(sql(path))? {
        let seq: i64 = r.get(0).map_err(sql(path))?;
        let uid: String = r.get(1).map_err(sql(path))?;
        let grp: String = r.get(2).map_err(sql(path))?;
        let attrs: Vec<u8> = r.get(3).map_err(sql(path))?;
        let material: Option<Vec<u8>> = r.get(4).map_err(sql(path))?;
        let mac: Vec<u8> = r.get(5).map_err(sql(path))?;
        let row = ObjectRow {
            uid: &uid,
            group: &grp,
            object_type: r.get(6).map_err(sql(path))?,
            state: r.get(7).map_err(sql(path))?,
            attrs: &attrs,
            material: material.as_deref(),
            backed_up: r.get(8).map_err(sql(path))?,
        };
        let good = if legacy {
            row.ok_v1(m, &mac)
        } else {
            row.ok(m, &mac)
        };
        if !good {
            return Err(altered(path, &format!("object {uid}")));
        }
        // The names index says what the (authenticated) attributes say.
        let mut want: Vec<String> = Attrs::from_blob(&attrs)
            .map(|a| {
                Object {
                    seq,
                    uid: uid.clone(),
                    group: grp.clone(),
                    attrs: a,
                    wrapped: None,
                    backed_up: false,
                }
                .name_values()
            })
            .unwrap_or_default();
        want.sort();
        let have: Vec<String> = names_st
            .query_map([seq], |r| r.get(0))
            .and_then(|r| r.collect())
            .map_err(sql(path))?;
        if have != want {
            return Err(altered(path, &format!("the names of object {uid}")));
        }
        named += have.len() as i64;
    }
    let all_names: i64 = conn
        .query_row("SELECT count(*) FROM names", [], |r| r.get(0))
        .map_err(sql(path))?;
    if all_names != named {
        return Err(altered(path, "the names index (names of no object)"));
    }
    let mut st = conn
        .prepare(
            "SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients",
        )
        .map_err(sql(path))?;
    let clients: Vec<(Client, Vec<u8>)> = st
        .query_map([], row_client)
        .and_then(|r| r.collect())
        .map_err(sql(path))?;
    for (c, mac) in clients {
        checked_client(m, path, c, &mac)?;
    }
    let mut st = conn
        .prepare("SELECT name, auto_accept, mac FROM groups")
        .map_err(sql(path))?;
    let groups: Vec<(String, bool, Vec<u8>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|r| r.collect())
        .map_err(sql(path))?;
    for (name, auto, mac) in groups {
        if !m.row_ok("groups", &group_fields(&name, auto), &mac) {
            return Err(altered(path, &format!("device group '{name}'")));
        }
    }
    Ok(())
}

fn client_row(conn: &Connection, fp: &str) -> rusqlite::Result<Option<(Client, Vec<u8>)>> {
    conn.query_row(
        "SELECT fingerprint, subject, grp, status, first_seen, last_seen, mac FROM clients WHERE fingerprint = ?1",
        [fp],
        row_client,
    )
    .optional()
}

/// What rotation re-wraps: seq, uid, group, attributes, wrapped material.
type RotateRow = (
    (i64, String, String, Vec<u8>, Option<Vec<u8>>),
    (i64, i64, bool),
);

/// Object reads and writes on the keystore's connection, inside whatever
/// transaction the caller opened.
pub struct Tx<'a> {
    tx: &'a Connection,
    master: &'a MasterKey,
    rng: &'a SystemRandom,
    path: &'a Path,
}

impl Tx<'_> {
    fn select(&self, q: &str, p: impl rusqlite::Params) -> Result<Vec<Object>> {
        let mut stmt = self.tx.prepare_cached(q).map_err(sql(self.path))?;
        let rows: Vec<FullRow> = stmt
            .query_map(p, full_row)
            .and_then(|r| r.collect())
            .map_err(sql(self.path))?;
        rows.into_iter()
            .map(
                |(seq, uid, group, object_type, state, attrs, wrapped, backed_up, mac)| {
                    let row = ObjectRow {
                        uid: &uid,
                        group: &group,
                        object_type,
                        state,
                        attrs: &attrs,
                        material: wrapped.as_deref(),
                        backed_up,
                    };
                    if !row.ok(self.master, &mac) {
                        return Err(altered(self.path, &format!("object {uid}")));
                    }
                    let attrs = Attrs::from_blob(&attrs).ok_or_else(|| Error::Keystore {
                        path: self.path.to_owned(),
                        message: format!("object {uid}: unreadable attributes"),
                    })?;
                    Ok(Object {
                        seq,
                        uid,
                        group,
                        attrs,
                        wrapped,
                        backed_up,
                    })
                },
            )
            .collect()
    }

    /// The object `uid` if it is in `group`.
    pub fn load(&self, uid: &str, group: &str) -> Result<Option<Object>> {
        Ok(self
            .select(
                "SELECT seq, uid, grp, object_type, state, attrs, material, backed_up, mac FROM objects WHERE uid = ?1 AND grp = ?2",
                params![uid, group],
            )?
            .pop())
    }

    /// Objects of `group`, newest first; only those with Name `name` if given.
    pub fn candidates(&self, group: &str, name: Option<&str>) -> Result<Vec<Object>> {
        match name {
            Some(n) => self.select(
                "SELECT o.seq, o.uid, o.grp, o.object_type, o.state, o.attrs, o.material, o.backed_up, o.mac FROM objects o
                 WHERE o.grp = ?1 AND o.seq IN (SELECT seq FROM names WHERE name = ?2) ORDER BY o.seq DESC",
                params![group, n],
            ),
            None => self.select(
                "SELECT seq, uid, grp, object_type, state, attrs, material, backed_up, mac FROM objects WHERE grp = ?1 ORDER BY seq DESC",
                params![group],
            ),
        }
    }

    /// A fresh unique identifier (random, so a restored keystore never reissues one).
    pub fn new_uid(&self) -> Result<String> {
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .map_err(|_| Error::MasterKey("no randomness".into()))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = crate::master::hex(&b);
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ))
    }

    /// Fresh random bytes (key material).
    pub fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut b = Zeroizing::new(vec![0u8; n]);
        self.rng
            .fill(&mut b)
            .map_err(|_| Error::MasterKey("no randomness".into()))?;
        Ok(b)
    }

    /// Stores a new object with its material; fills in `obj.seq`.
    pub fn insert(&self, obj: &mut Object, material: &[u8]) -> Result<()> {
        let wrapped = self.master.wrap(obj.uid.as_bytes(), material, self.rng)?;
        self.tx
            .prepare_cached("INSERT INTO objects (uid, grp, object_type, state, attrs, material, backed_up, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)")
            .and_then(|mut st| {
                let blob = obj.attrs.to_blob();
                let mac = ObjectRow::of(obj, &blob, Some(&wrapped), false).mac(self.master);
                st.execute(params![obj.uid, obj.group, obj.object_type(), obj.state(), blob, wrapped, mac])
            })
            .map_err(sql(self.path))?;
        obj.seq = self.tx.last_insert_rowid();
        obj.wrapped = Some(wrapped);
        self.write_names(obj)
    }

    fn write_names(&self, obj: &Object) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM names WHERE seq = ?1")
            .and_then(|mut st| st.execute([obj.seq]))
            .map_err(sql(self.path))?;
        for n in obj.name_values() {
            self.tx
                .prepare_cached("INSERT INTO names (seq, name) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![obj.seq, n]))
                .map_err(sql(self.path))?;
        }
        Ok(())
    }

    /// Writes back an object's attributes (state, names, dates...).
    pub fn update(&self, obj: &Object) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE objects SET object_type = ?2, state = ?3, attrs = ?4, mac = ?5 WHERE seq = ?1",
            )
            .and_then(|mut st| {
                let blob = obj.attrs.to_blob();
                let mac = ObjectRow::of(obj, &blob, obj.wrapped.as_deref(), obj.backed_up).mac(self.master);
                st.execute(params![obj.seq, obj.object_type(), obj.state(), blob, mac])
            })
            .map_err(sql(self.path))?;
        self.write_names(obj)
    }

    /// Erases an object's key material for good.
    pub fn erase_material(&self, obj: &mut Object) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE objects SET material = NULL, object_type = ?3, state = ?4, attrs = ?5, mac = ?2 WHERE seq = ?1")
            .and_then(|mut st| {
                let blob = obj.attrs.to_blob();
                let mac = ObjectRow::of(obj, &blob, None, obj.backed_up).mac(self.master);
                st.execute(params![obj.seq, mac, obj.object_type(), obj.state(), blob])
            })
            .map_err(sql(self.path))?;
        obj.wrapped = None;
        Ok(())
    }

    /// The plaintext key material of an object.
    pub fn material(&self, obj: &Object) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(w) = &obj.wrapped else {
            return Ok(None);
        };
        self.master
            .unwrap(obj.uid.as_bytes(), w)
            .map(Some)
            .ok_or_else(|| Error::Keystore {
                path: self.path.to_owned(),
                message: format!(
                    "object {}: key material does not authenticate under the master key",
                    obj.uid
                ),
            })
    }
}

/// True for states in which key material may no longer be served.
pub fn is_destroyed(s: i32) -> bool {
    s == state::DESTROYED || s == state::DESTROYED_COMPROMISED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source::Key(Zeroizing::new([7u8; 32]))
    }

    #[test]
    fn a_format_1_keystore_is_checked_under_its_macs_then_upgraded_and_its_columns_covered() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ks.db");
        Store::create(&path, &source(), "default", 1).unwrap();
        {
            let s = Store::open(&path, &source()).unwrap();
            let mut attrs = Attrs::default();
            attrs.set("Object Type", Value::Enumeration(2));
            attrs.set("State", Value::Enumeration(state::ACTIVE as u32));
            attrs.set(
                "Name",
                Value::Structure(vec![
                    cinta_kmip::ttlv::Item::new(
                        tag::NAME_VALUE,
                        Value::TextString("tape-1".into()),
                    ),
                    cinta_kmip::ttlv::Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
                ]),
            );
            let mut o = Object {
                seq: 0,
                uid: "u1".into(),
                group: "default".into(),
                attrs,
                wrapped: None,
                backed_up: false,
            };
            s.tx().insert(&mut o, &[1u8; 32]).unwrap();
        }
        // Made format 1 again: its MACs as format 1 wrote them.
        let mk = source().derive(None).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            let (uid, grp, attrs, material): (String, String, Vec<u8>, Vec<u8>) = conn
                .query_row("SELECT uid, grp, attrs, material FROM objects", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .unwrap();
            let mac = mk.row_mac(
                "objects",
                &[uid.as_bytes(), grp.as_bytes(), &attrs, &material],
            );
            conn.execute("UPDATE objects SET mac = ?1", [mac]).unwrap();
            set_meta(&conn, "format", FORMAT_1).unwrap();
        }
        {
            let s = Store::open(&path, &source()).unwrap();
            assert_eq!(
                meta(&s.conn, "format").unwrap().as_deref(),
                Some(FORMAT),
                "upgraded"
            );
            assert!(s.tx().load("u1", "default").unwrap().is_some());
        }
        assert!(
            Store::open(&path, &source()).is_ok(),
            "opens again as format 2"
        );
        // Every column that decides what a client gets is covered now.
        for edit in [
            "UPDATE objects SET state = 5",
            "UPDATE objects SET backed_up = 1",
            "UPDATE objects SET object_type = 7",
            "DELETE FROM names",
            "INSERT INTO names (seq, name) VALUES (1, 'tape-x')",
        ] {
            let copy = d.path().join("copy.db");
            std::fs::copy(&path, &copy).unwrap();
            let conn = Connection::open(&copy).unwrap();
            conn.execute(edit, []).unwrap();
            drop(conn);
            let e = Store::open(&copy, &source())
                .err()
                .unwrap_or_else(|| panic!("{edit}: opened"));
            assert!(
                e.to_string().contains("fails its integrity check"),
                "{edit}: {e}"
            );
            std::fs::remove_file(&copy).unwrap();
        }
    }
}
