//! The catalog: agents, jobs, save sets and their claims, objects, volumes, events, role switches and small values (tonight's record, the scheduler's last tick, persisted counters), behind a trait; one implementation over SQL, run on SQLite (one file, the default) or PostgreSQL (large sites).
//!
//! Job states: queued -> running (accepted by the agent's session, exactly
//! once) -> succeeded | failed; queued or running -> cancelled, or failed
//! when its agent is lost. A running job whose agent registers a new
//! session is failed: the agent restarted under it, and its save set, if
//! any, was never recorded as complete.

mod pg_tls;
pub mod postgres;
pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::moves::VolumeRecord;

/// An agent as last registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    pub name: String,
    pub host: String,
    pub role: String,
    pub version: String,
    /// Libraries as (name, drives, slots, scratch).
    pub libraries: Vec<(String, u32, u32, u32)>,
    /// Usage figures from the last heartbeat: (what, percent used).
    pub usage: Vec<(String, f64)>,
    /// Watches from the last heartbeat: (name, up, detail).
    #[serde(default)]
    pub watched: Vec<(String, bool, String)>,
    pub session: String,
    pub last_seen: i64,
}

/// What an agent is told to do (kept with the job, offered until accepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub library: String,
    pub level: String,
    pub compress: bool,
    pub entries: Vec<SaveItem>,
    #[serde(default)]
    pub pre: Vec<String>,
    #[serde(default)]
    pub post: Vec<String>,
    #[serde(default)]
    pub step_timeout_seconds: u32,
    /// Save sets to expire (an expiry job).
    #[serde(default)]
    pub expire: Vec<String>,
    #[serde(default)]
    pub shred: bool,
    /// Cartridges to take out through the library's import/export port (a move out).
    #[serde(default)]
    pub eject: Vec<String>,
    /// Cartridges to take in from the import/export port (a move home).
    #[serde(default)]
    pub import: Vec<String>,
    /// Write only on cartridges of this media class ("": on cartridges of none).
    #[serde(default)]
    pub media_class: String,
    /// Objects to restore (a restore request's job).
    #[serde(default)]
    pub restores: Vec<RestoreItem>,
    /// Save sets to duplicate onto cartridges of `media_class` (a copy job).
    #[serde(default)]
    pub copy: Vec<String>,
}

/// Objects of one save set restored into a directory of the agent's host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreItem {
    pub save_set: String,
    /// Stored names as `ls` prints them.
    pub select: Vec<String>,
    pub to: String,
    pub replace: bool,
    /// An IBM i library's save file goes to this command (RSTLIB).
    #[serde(default)]
    pub command: String,
}

/// One entry of a job: a path (with include/exclude), or an IBM i library
/// saved by `command` (whose standard output, the save file, becomes one object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveItem {
    pub path: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    #[serde(default)]
    pub library: String,
    #[serde(default)]
    pub command: String,
}

impl Assignment {
    /// A job with nothing to save (probes, hooks, expiries), on `library`.
    pub fn chores(library: String) -> Assignment {
        Assignment {
            library,
            level: "full".into(),
            compress: false,
            entries: vec![],
            pre: vec![],
            post: vec![],
            step_timeout_seconds: 600,
            expire: vec![],
            shred: false,
            eject: vec![],
            import: vec![],
            media_class: String::new(),
            restores: vec![],
            copy: vec![],
        }
    }
}

/// A save set a job made, with its retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaveSetRecord {
    pub id: String,
    pub agent: String,
    pub library: String,
    pub control_group: String,
    pub source: String,
    pub key_id: String,
    pub volumes: Vec<String>,
    pub created: i64,
    /// 0: no date (versions, or kept).
    pub expires: i64,
    /// active, expiring (an expiry job is out), expired.
    pub state: String,
    pub media_policy: String,
    pub shred: bool,
    /// Keep only this many of this agent's save sets of this source.
    pub versions: u32,
    #[serde(default)]
    pub expire_job: String,
    /// full, incr or cuml ("" in records written before it was kept: taken as full).
    #[serde(default)]
    pub level: String,
    /// The job that made it.
    #[serde(default)]
    pub job: String,
    #[serde(default)]
    pub bytes: u64,
    /// Its share of its job's running time (seconds), for restore estimates.
    #[serde(default)]
    pub seconds: i64,
    /// Objects that changed while they were read.
    #[serde(default)]
    pub changed: u64,
    /// Duplicates of its tape file (the original is `volumes`).
    #[serde(default)]
    pub copies: Vec<SaveSetCopy>,
    /// The copy job out for it ("" none).
    #[serde(default)]
    pub copy_job: String,
    /// Copy jobs queued for it so far.
    #[serde(default)]
    pub copy_tries: u32,
}

/// One duplicate of a save set's tape file, on cartridges of another set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveSetCopy {
    /// 1 the first duplicate.
    pub copy: u32,
    pub volumes: Vec<String>,
    pub media_class: String,
    pub move_policy: String,
    pub made: i64,
    pub job: String,
    pub digest: String,
    /// Its blocks were checked against the digest the save recorded.
    pub verified: bool,
}

impl SaveSetRecord {
    /// The cartridges of each place it can be read from: the original,
    /// then every copy.
    pub fn places(&self) -> Vec<&[String]> {
        std::iter::once(self.volumes.as_slice())
            .chain(self.copies.iter().map(|c| c.volumes.as_slice()))
            .collect()
    }
}

/// A save set a job made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveSetRow {
    pub id: String,
    pub source: String,
    pub key_id: String,
    pub volumes: Vec<String>,
    pub objects: u64,
    pub bytes: u64,
    /// What the save warned of.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Objects changed while read (the first 100), and how many in all.
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub changed_count: u64,
}

impl SaveSetRow {
    /// How many things the save warned of (warnings and changed objects).
    pub fn warning_count(&self) -> u64 {
        self.warnings.len() as u64 + self.changed_count
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub control_group: String,
    pub agent: String,
    pub state: String,
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    pub message: String,
    pub entries_done: u32,
    pub entries_total: u32,
    pub bytes: u64,
    pub save_sets: Vec<SaveSetRow>,
    pub assignment: Assignment,
    /// Standard output of the exit steps (probes and hooks).
    #[serde(default)]
    pub output: String,
    /// Bytes expected in all, as far as the agent knows (0: not known).
    #[serde(default)]
    pub bytes_total: u64,
    /// Objects of the current entry saved so far.
    #[serde(default)]
    pub objects: u64,
    /// The entry being saved.
    #[serde(default)]
    pub current: String,
}

impl JobRow {
    /// A new job, queued for `agent` at `created`.
    pub fn queued(
        id: String,
        control_group: &str,
        agent: &str,
        assignment: Assignment,
        created: i64,
    ) -> JobRow {
        JobRow {
            id,
            control_group: control_group.to_string(),
            agent: agent.to_string(),
            state: "queued".into(),
            created,
            started: 0,
            finished: 0,
            message: String::new(),
            entries_done: 0,
            entries_total: assignment.entries.len() as u32,
            bytes: 0,
            save_sets: vec![],
            output: String::new(),
            bytes_total: 0,
            objects: 0,
            current: String::new(),
            assignment,
        }
    }
}

/// An object of a save set, as the catalog keeps it for searches.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRow {
    pub path: String,
    pub kind: String,
    pub size: u64,
    pub mtime: i64,
}

/// A row of (save_set, path, kind, size, mtime).
fn object_row(r: Vec<Val>) -> (String, ObjectRow) {
    let mut it = r.into_iter();
    let mut next = || it.next().unwrap_or(Val::Null);
    let save_set = next().text();
    let o = ObjectRow {
        path: next().text(),
        kind: next().text(),
        size: u64::try_from(next().int()).unwrap_or(0),
        mtime: next().int(),
    };
    (save_set, o)
}

/// A glob (`*`, `?`) as an SQL LIKE pattern with `\` as its escape.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// How far a running job has got, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub entries_done: u32,
    pub entries_total: u32,
    pub bytes: u64,
    pub bytes_total: u64,
    pub objects: u64,
    pub current: String,
}

/// Where the controller keeps what it knows (SQLite today; PostgreSQL is the planned second implementation).
pub trait Catalog: Send {
    /// Records a registration; fails the jobs the agent's previous session was running. Returns their ids.
    fn register(&mut self, agent: &AgentRow) -> Result<Vec<String>>;
    fn agents(&self) -> Result<Vec<AgentRow>>;
    fn agent(&self, name: &str) -> Result<Option<AgentRow>>;
    fn add_job(&mut self, job: &JobRow) -> Result<()>;
    fn queued_for(&self, agent: &str) -> Result<Vec<JobRow>>;
    /// Moves a queued job of `agent` to running under `session`; Err(reason) if it cannot.
    fn accept(
        &mut self,
        job: &str,
        agent: &str,
        session: &str,
        now: i64,
    ) -> Result<std::result::Result<(), String>>;
    /// Records how far a running job of `agent` has got.
    fn progress(&mut self, job: &str, agent: &str, p: &Progress) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        job: &str,
        agent: &str,
        ok: bool,
        message: &str,
        save_sets: &[SaveSetRow],
        output: &str,
        now: i64,
    ) -> Result<bool>;
    fn cancel(&mut self, job: &str, now: i64) -> Result<Option<JobRow>>;
    /// Fails a queued or running job with `message`; false if it had ended.
    fn abandon(&mut self, job: &str, message: &str, now: i64) -> Result<bool>;
    /// Jobs queued or running, oldest first.
    fn active_jobs(&self) -> Result<Vec<JobRow>>;
    fn job(&self, id: &str) -> Result<Option<JobRow>>;
    fn jobs(&self, limit: u32) -> Result<Vec<JobRow>>;
    fn event(&mut self, now: i64, kind: &str, text: &str) -> Result<()>;
    /// The most recent events, newest first: (time, kind, text).
    fn events(&self, limit: u32) -> Result<Vec<(i64, String, String)>>;
    /// How many jobs are in each state.
    fn job_counts(&self) -> Result<Vec<(String, i64)>>;
    fn put_save_set(&mut self, s: &SaveSetRecord) -> Result<()>;
    fn save_sets(&self) -> Result<Vec<SaveSetRecord>>;
    /// One save set, if it is recorded.
    fn save_set(&self, id: &str) -> Result<Option<SaveSetRecord>>;
    fn put_volume(&mut self, v: &VolumeRecord) -> Result<()>;
    fn volumes(&self) -> Result<Vec<VolumeRecord>>;
    /// Records objects of a save set (one transaction).
    fn put_objects(&mut self, save_set: &str, objects: &[ObjectRow]) -> Result<()>;
    /// Objects whose path matches `glob` (`*`, `?`; `*` crosses `/`), by path
    /// then save set, at most `limit`: (save set, object).
    fn find_objects(&self, glob: &str, limit: u32) -> Result<Vec<(String, ObjectRow)>>;
    /// Objects of one save set, by path, at most `limit`.
    fn objects_of(&self, save_set: &str, limit: u32) -> Result<Vec<ObjectRow>>;
    /// Binds a save set not yet recorded to the job making it, the first
    /// time the job names it. Returns the job it was bound to before, if
    /// that is another one (and then binds nothing).
    fn claim_save_set(&mut self, save_set: &str, job: &str) -> Result<Option<String>>;
    /// Forgets the objects a job reported for save sets that were never
    /// recorded (the job failed or left them out); returns how many.
    fn drop_unrecorded_objects(&mut self, job: &str) -> Result<u64>;
    /// Forgets a save set's objects (it expired).
    fn drop_objects(&mut self, save_set: &str) -> Result<()>;
    /// Dates a save set's objects with its creation time once it is
    /// recorded; until then they are in no restore point.
    fn date_objects(&mut self, save_set: &str, created: i64) -> Result<()>;
    /// The restore point of one path: its newest recorded copy made at or
    /// before `at` (one index lookup).
    fn restore_point(&self, path: &str, at: i64) -> Result<Option<(String, ObjectRow)>>;
    /// A small persistent value (scheduler position, tonight's record).
    fn meta(&self, key: &str) -> Result<Option<String>>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<()>;
    /// Records a record of `kind` (a restore request, a drill) as JSON,
    /// open or closed.
    fn put_record(
        &mut self,
        kind: &str,
        id: &str,
        created: i64,
        open: bool,
        body: &str,
    ) -> Result<()>;
    /// Records of `kind` (only the open ones unless `all`), oldest first.
    fn records(&self, kind: &str, all: bool) -> Result<Vec<String>>;
    fn record(&self, kind: &str, id: &str) -> Result<Option<String>>;
    /// Role switches in force, as (LPAR, role).
    fn roles(&self) -> Result<Vec<(String, String)>>;
    fn set_roles(&mut self, roles: &[(String, String)]) -> Result<()>;
    /// Appends an audit record and its signed head (one transaction).
    fn append_audit(&mut self, row: &crate::audit::AuditRow, head: &str) -> Result<()>;
    /// Audit records numbered above `after`, in order, at most `limit`.
    fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<crate::audit::AuditRow>>;
    /// Audit records made at or after `since`, in order, at most `limit`.
    fn audit_since(&self, since: i64, limit: u32) -> Result<Vec<crate::audit::AuditRow>>;
    /// The audit record with the highest number.
    fn audit_last(&self) -> Result<Option<crate::audit::AuditRow>>;
}

/// Opens the catalog the configuration names: a PostgreSQL URL
/// (`postgresql://user@host/db`, over TLS with `tls`), or else an SQLite file.
pub fn open(
    catalog: &std::path::Path,
    tls: Option<&postgres::TlsFiles>,
) -> Result<Box<dyn Catalog>> {
    match catalog.to_str() {
        Some(url) if postgres::is_url(url) => Ok(Box::new(postgres::open(url, tls)?)),
        _ => Ok(Box::new(sqlite::open(catalog)?)),
    }
}

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Text(String),
    Null,
}

impl Val {
    fn text(self) -> String {
        match self {
            Val::Text(s) => s,
            Val::Int(i) => i.to_string(),
            Val::Null => String::new(),
        }
    }
    fn int(self) -> i64 {
        match self {
            Val::Int(i) => i,
            Val::Text(s) => s.parse().unwrap_or(0),
            Val::Null => 0,
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_string())
    }
}
impl From<&String> for Val {
    fn from(s: &String) -> Val {
        Val::Text(s.clone())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::Int(i)
    }
}

/// The statement that sets a `meta` value (the audit head is one, stored
/// with its record; the benchmark writes it too).
pub fn meta_upsert(key: &str, value: &str) -> (&'static str, Vec<Val>) {
    (
        "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = ?2",
        vec![key.into(), value.into()],
    )
}

/// The statement that stores an audit record as it is (the catalog's
/// append, and the tests and benchmark that write rows of their own).
pub fn audit_insert(r: &crate::audit::AuditRow) -> (&'static str, Vec<Val>) {
    (
        "INSERT INTO audit (seq, at, body, prev, mac) VALUES (?1, ?2, ?3, ?4, ?5)",
        vec![
            r.seq.into(),
            r.at.into(),
            r.body.as_str().into(),
            r.prev.as_str().into(),
            r.mac.as_str().into(),
        ],
    )
}

fn audit_row(r: Vec<Val>) -> crate::audit::AuditRow {
    let mut it = r.into_iter();
    let mut next = || it.next().unwrap_or(Val::Int(0));
    crate::audit::AuditRow {
        seq: next().int(),
        at: next().int(),
        body: next().text(),
        prev: next().text(),
        mac: next().text(),
    }
}

/// Tables the same on every engine (`jobs`, `save_sets` and `events` differ
/// in how they number rows, so each engine declares those).
pub(crate) const COMMON_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    volser TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS roles (
    lpar TEXT PRIMARY KEY,
    role TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    save_set TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime BIGINT NOT NULL,
    created BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS claims (
    save_set TEXT PRIMARY KEY,
    job TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    created BIGINT NOT NULL,
    open BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS claims_by_job ON claims (job);
CREATE INDEX IF NOT EXISTS objects_by_path ON objects (path, created);
CREATE INDEX IF NOT EXISTS objects_by_save_set ON objects (save_set);
";

/// The SQL engine under the catalog: statements with numbered parameters
/// (`?1`, `?2`; an engine rewrites them if it numbers them otherwise), rows
/// of integers and texts. SQLite and PostgreSQL implement it; the catalog's
/// logic above it is the same code for both.
pub trait Sql: Send {
    /// Where the catalog is, for messages (a file, or a server and database).
    fn at(&self) -> String;
    /// Runs the statements in one transaction (all or none).
    fn exec(&mut self, stmts: &[(&str, Vec<Val>)]) -> Result<()>;
    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>>;
    /// How save sets are ordered by insertion (SQLite's rowid, a sequence on PostgreSQL).
    fn insertion_order(&self) -> &'static str;
}

/// The catalog over an SQL engine.
pub struct SqlCatalog<S: Sql> {
    db: S,
}

impl<S: Sql> SqlCatalog<S> {
    pub fn new(db: S) -> SqlCatalog<S> {
        SqlCatalog { db }
    }

    /// The engine underneath, for statements of one's own (tests that
    /// tamper with the catalog as an intruder with database access would).
    pub fn sql(&mut self) -> &mut S {
        &mut self.db
    }

    fn exec1(&mut self, sql: &str, p: Vec<Val>) -> Result<()> {
        self.db.exec(&[(sql, p)])
    }

    fn put_job_stmt(j: &JobRow, session: Option<&str>) -> (&'static str, Vec<Val>) {
        let body = serde_json::to_string(j).expect("job serializes");
        match session {
            Some(s) => (
                "UPDATE jobs SET state = ?2, body = ?3, session = ?4 WHERE id = ?1",
                vec![(&j.id).into(), (&j.state).into(), Val::Text(body), s.into()],
            ),
            None => (
                "UPDATE jobs SET state = ?2, body = ?3 WHERE id = ?1",
                vec![(&j.id).into(), (&j.state).into(), Val::Text(body)],
            ),
        }
    }

    fn put_job(&mut self, j: &JobRow, session: Option<&str>) -> Result<()> {
        let (sql, p) = Self::put_job_stmt(j, session);
        self.exec1(sql, p)
    }

    /// Rows of one JSON `body` column, decoded; `what` names the record in errors.
    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        p: &[Val],
        what: &str,
    ) -> Result<Vec<T>> {
        self.db
            .rows(sql, p)?
            .into_iter()
            .map(|mut r| {
                let b = r.pop().map(Val::text).unwrap_or_default();
                serde_json::from_str(&b).map_err(|e| {
                    Error::Invalid(format!("catalog {}: {what} record: {e}", self.db.at()))
                })
            })
            .collect()
    }

    fn job_of(&self, id: &str) -> Result<Option<JobRow>> {
        Ok(self
            .json_rows("SELECT body FROM jobs WHERE id = ?1", &[id.into()], "a job")?
            .pop())
    }

    /// The first column of the first row, if there is a row.
    fn value(&self, sql: &str, p: &[Val]) -> Result<Option<Val>> {
        Ok(self
            .db
            .rows(sql, p)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next()))
    }

    fn pairs(&self, sql: &str, p: &[Val]) -> Result<Vec<(Val, Val)>> {
        Ok(self
            .db
            .rows(sql, p)?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                (
                    it.next().unwrap_or(Val::Null),
                    it.next().unwrap_or(Val::Null),
                )
            })
            .collect())
    }
}

impl<S: Sql> Catalog for SqlCatalog<S> {
    fn register(&mut self, a: &AgentRow) -> Result<Vec<String>> {
        let body = serde_json::to_string(a).expect("agent serializes");
        let running: Vec<JobRow> = self.json_rows(
            "SELECT body FROM jobs WHERE agent = ?1 AND state = 'running' AND session != ?2",
            &[(&a.name).into(), (&a.session).into()],
            "a job",
        )?;
        let mut stmts = vec![(
            "INSERT INTO agents (name, body) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET body = ?2",
            vec![(&a.name).into(), Val::Text(body)],
        )];
        let mut failed = Vec::new();
        for mut j in running {
            j.state = "failed".into();
            j.finished = a.last_seen;
            j.message = format!(
                "agent {} restarted while the job ran; no save set of it is recorded as complete",
                a.name
            );
            stmts.push(Self::put_job_stmt(&j, None));
            failed.push(j.id);
        }
        self.db.exec(&stmts)?;
        Ok(failed)
    }

    fn agents(&self) -> Result<Vec<AgentRow>> {
        self.json_rows("SELECT body FROM agents ORDER BY name", &[], "an agent")
    }

    fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        Ok(self
            .json_rows(
                "SELECT body FROM agents WHERE name = ?1",
                &[name.into()],
                "an agent",
            )?
            .pop())
    }

    fn add_job(&mut self, j: &JobRow) -> Result<()> {
        self.exec1(
            "INSERT INTO jobs (id, seq, agent, state, body) VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4)",
            vec![
                (&j.id).into(),
                (&j.agent).into(),
                (&j.state).into(),
                Val::Text(serde_json::to_string(j).expect("job serializes")),
            ],
        )
    }

    fn queued_for(&self, agent: &str) -> Result<Vec<JobRow>> {
        self.json_rows(
            "SELECT body FROM jobs WHERE agent = ?1 AND state = 'queued' ORDER BY seq",
            &[agent.into()],
            "a job",
        )
    }

    fn accept(
        &mut self,
        job: &str,
        agent: &str,
        session: &str,
        now: i64,
    ) -> Result<std::result::Result<(), String>> {
        let Some(mut j) = self.job_of(job)? else {
            return Ok(Err(format!("no job {job}")));
        };
        if j.agent != agent {
            return Ok(Err(format!("job {job} is for {}, not {agent}", j.agent)));
        }
        if j.state != "queued" {
            return Ok(Err(format!("job {job} is {}, not queued", j.state)));
        }
        j.state = "running".into();
        j.started = now;
        self.put_job(&j, Some(session))?;
        Ok(Ok(()))
    }

    fn progress(&mut self, job: &str, agent: &str, p: &Progress) -> Result<()> {
        if let Some(mut j) = self.job_of(job)? {
            if j.agent == agent && j.state == "running" {
                j.entries_done = p.entries_done;
                j.entries_total = p.entries_total;
                j.bytes = p.bytes;
                j.bytes_total = p.bytes_total;
                j.objects = p.objects;
                j.current = p.current.clone();
                self.put_job(&j, None)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        job: &str,
        agent: &str,
        ok: bool,
        message: &str,
        save_sets: &[SaveSetRow],
        output: &str,
        now: i64,
    ) -> Result<bool> {
        let Some(mut j) = self.job_of(job)? else {
            return Ok(false);
        };
        if j.agent != agent || j.state != "running" {
            return Ok(false);
        }
        j.state = if ok { "succeeded" } else { "failed" }.into();
        j.finished = now;
        j.message = message.to_string();
        j.save_sets = save_sets.to_vec();
        j.output = output.to_string();
        j.bytes = save_sets.iter().map(|s| s.bytes).sum::<u64>().max(j.bytes);
        self.put_job(&j, None)?;
        Ok(true)
    }

    fn cancel(&mut self, job: &str, now: i64) -> Result<Option<JobRow>> {
        let Some(mut j) = self.job_of(job)? else {
            return Ok(None);
        };
        if j.state == "queued" || j.state == "running" {
            j.state = "cancelled".into();
            j.finished = now;
            self.put_job(&j, None)?;
        }
        Ok(Some(j))
    }

    fn abandon(&mut self, job: &str, message: &str, now: i64) -> Result<bool> {
        let Some(mut j) = self.job_of(job)? else {
            return Ok(false);
        };
        if j.state != "queued" && j.state != "running" {
            return Ok(false);
        }
        j.state = "failed".into();
        j.finished = now;
        j.message = message.to_string();
        self.put_job(&j, None)?;
        Ok(true)
    }

    fn active_jobs(&self) -> Result<Vec<JobRow>> {
        self.json_rows(
            "SELECT body FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq",
            &[],
            "a job",
        )
    }

    fn job(&self, id: &str) -> Result<Option<JobRow>> {
        self.job_of(id)
    }

    fn jobs(&self, limit: u32) -> Result<Vec<JobRow>> {
        self.json_rows(
            "SELECT body FROM jobs ORDER BY seq DESC LIMIT ?1",
            &[i64::from(limit).into()],
            "a job",
        )
    }

    fn event(&mut self, now: i64, kind: &str, text: &str) -> Result<()> {
        self.exec1(
            "INSERT INTO events (time, kind, text) VALUES (?1, ?2, ?3)",
            vec![now.into(), kind.into(), text.into()],
        )
    }

    fn events(&self, limit: u32) -> Result<Vec<(i64, String, String)>> {
        Ok(self
            .db
            .rows(
                "SELECT time, kind, text FROM events ORDER BY seq DESC LIMIT ?1",
                &[i64::from(limit).into()],
            )?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Val::Null);
                (next().int(), next().text(), next().text())
            })
            .collect())
    }

    fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(self
            .pairs(
                "SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state",
                &[],
            )?
            .into_iter()
            .map(|(a, b)| (a.text(), b.int()))
            .collect())
    }

    fn put_save_set(&mut self, s: &SaveSetRecord) -> Result<()> {
        self.exec1(
            "INSERT INTO save_sets (id, state, body) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET state = ?2, body = ?3",
            vec![
                (&s.id).into(),
                (&s.state).into(),
                Val::Text(serde_json::to_string(s).expect("save set serializes")),
            ],
        )
    }

    fn save_sets(&self) -> Result<Vec<SaveSetRecord>> {
        let sql = format!(
            "SELECT body FROM save_sets ORDER BY {}",
            self.db.insertion_order()
        );
        self.json_rows(&sql, &[], "a save set")
    }

    fn save_set(&self, id: &str) -> Result<Option<SaveSetRecord>> {
        Ok(self
            .json_rows(
                "SELECT body FROM save_sets WHERE id = ?1",
                &[id.into()],
                "a save set",
            )?
            .pop())
    }

    fn put_volume(&mut self, v: &VolumeRecord) -> Result<()> {
        self.exec1(
            "INSERT INTO volumes (volser, body) VALUES (?1, ?2) ON CONFLICT (volser) DO UPDATE SET body = ?2",
            vec![
                (&v.volser).into(),
                Val::Text(serde_json::to_string(v).expect("volume serializes")),
            ],
        )
    }

    fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        self.json_rows("SELECT body FROM volumes ORDER BY volser", &[], "a volume")
    }

    fn put_objects(&mut self, save_set: &str, objects: &[ObjectRow]) -> Result<()> {
        let stmts: Vec<(&str, Vec<Val>)> = objects
            .iter()
            .map(|o| {
                (
                    "INSERT INTO objects (save_set, path, kind, size, mtime) VALUES (?1, ?2, ?3, ?4, ?5)",
                    vec![
                        save_set.into(),
                        (&o.path).into(),
                        (&o.kind).into(),
                        Val::Int(i64::try_from(o.size).unwrap_or(i64::MAX)),
                        Val::Int(o.mtime),
                    ],
                )
            })
            .collect();
        self.db.exec(&stmts)
    }

    fn objects_of(&self, save_set: &str, limit: u32) -> Result<Vec<ObjectRow>> {
        Ok(self
            .db
            .rows(
                "SELECT save_set, path, kind, size, mtime FROM objects WHERE save_set = ?1 ORDER BY path LIMIT ?2",
                &[save_set.into(), i64::from(limit).into()],
            )?
            .into_iter()
            .map(|r| object_row(r).1)
            .collect())
    }

    fn find_objects(&self, glob: &str, limit: u32) -> Result<Vec<(String, ObjectRow)>> {
        // A path without wildcards is looked up by the index; a pattern is scanned.
        let (sql, pattern) = if glob.contains(['*', '?']) {
            (
                "SELECT save_set, path, kind, size, mtime FROM objects WHERE path LIKE ?1 ESCAPE '\\' ORDER BY path, save_set LIMIT ?2",
                glob_to_like(glob),
            )
        } else {
            (
                "SELECT save_set, path, kind, size, mtime FROM objects WHERE path = ?1 ORDER BY path, save_set LIMIT ?2",
                glob.to_string(),
            )
        };
        Ok(self
            .db
            .rows(sql, &[pattern.into(), i64::from(limit).into()])?
            .into_iter()
            .map(object_row)
            .collect())
    }

    fn claim_save_set(&mut self, save_set: &str, job: &str) -> Result<Option<String>> {
        // One statement decides: of two jobs naming the same id, one binds it.
        self.exec1(
            "INSERT INTO claims (save_set, job) VALUES (?1, ?2) ON CONFLICT (save_set) DO NOTHING",
            vec![save_set.into(), job.into()],
        )?;
        let owner = self
            .value(
                "SELECT job FROM claims WHERE save_set = ?1",
                &[save_set.into()],
            )?
            .map(Val::text);
        Ok(owner.filter(|o| o != job))
    }

    fn drop_unrecorded_objects(&mut self, job: &str) -> Result<u64> {
        const UNRECORDED: &str = "FROM objects WHERE save_set IN (SELECT save_set FROM claims WHERE job = ?1) AND save_set NOT IN (SELECT id FROM save_sets)";
        let n = self
            .value(&format!("SELECT COUNT(*) {UNRECORDED}"), &[job.into()])?
            .map_or(0, Val::int);
        self.exec1(&format!("DELETE {UNRECORDED}"), vec![job.into()])?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn drop_objects(&mut self, save_set: &str) -> Result<()> {
        self.exec1(
            "DELETE FROM objects WHERE save_set = ?1",
            vec![save_set.into()],
        )
    }

    fn date_objects(&mut self, save_set: &str, created: i64) -> Result<()> {
        self.exec1(
            "UPDATE objects SET created = ?2 WHERE save_set = ?1",
            vec![save_set.into(), created.into()],
        )
    }

    fn restore_point(&self, path: &str, at: i64) -> Result<Option<(String, ObjectRow)>> {
        Ok(self
            .db
            .rows(
                "SELECT save_set, path, kind, size, mtime FROM objects WHERE path = ?1 AND created > 0 AND created <= ?2 ORDER BY created DESC LIMIT 1",
                &[path.into(), at.into()],
            )?
            .into_iter()
            .next()
            .map(object_row))
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .value("SELECT v FROM meta WHERE k = ?1", &[key.into()])?
            .map(Val::text))
    }

    fn put_record(
        &mut self,
        kind: &str,
        id: &str,
        created: i64,
        open: bool,
        body: &str,
    ) -> Result<()> {
        self.exec1(
            "INSERT INTO records (kind, id, created, open, body) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, id) DO UPDATE SET open = ?4, body = ?5",
            vec![
                kind.into(),
                id.into(),
                created.into(),
                i64::from(open).into(),
                body.into(),
            ],
        )
    }

    fn records(&self, kind: &str, all: bool) -> Result<Vec<String>> {
        let sql = if all {
            "SELECT body FROM records WHERE kind = ?1 ORDER BY created, id"
        } else {
            "SELECT body FROM records WHERE kind = ?1 AND open = 1 ORDER BY created, id"
        };
        Ok(self
            .db
            .rows(sql, &[kind.into()])?
            .into_iter()
            .filter_map(|mut r| r.pop().map(Val::text))
            .collect())
    }

    fn record(&self, kind: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .value(
                "SELECT body FROM records WHERE kind = ?1 AND id = ?2",
                &[kind.into(), id.into()],
            )?
            .map(Val::text))
    }

    fn append_audit(&mut self, r: &crate::audit::AuditRow, head: &str) -> Result<()> {
        self.db
            .exec(&[audit_insert(r), meta_upsert(crate::audit::HEAD_META, head)])
    }

    fn audit_page(&self, after: i64, limit: u32) -> Result<Vec<crate::audit::AuditRow>> {
        Ok(self
            .db
            .rows(
                "SELECT seq, at, body, prev, mac FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                &[after.into(), i64::from(limit).into()],
            )?
            .into_iter()
            .map(audit_row)
            .collect())
    }

    fn audit_since(&self, since: i64, limit: u32) -> Result<Vec<crate::audit::AuditRow>> {
        Ok(self
            .db
            .rows(
                "SELECT seq, at, body, prev, mac FROM audit WHERE at >= ?1 ORDER BY seq LIMIT ?2",
                &[since.into(), i64::from(limit).into()],
            )?
            .into_iter()
            .map(audit_row)
            .collect())
    }

    fn audit_last(&self) -> Result<Option<crate::audit::AuditRow>> {
        Ok(self
            .db
            .rows(
                "SELECT seq, at, body, prev, mac FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .into_iter()
            .next()
            .map(audit_row))
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let (sql, params) = meta_upsert(key, value);
        self.exec1(sql, params)
    }

    fn roles(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .pairs("SELECT lpar, role FROM roles ORDER BY lpar", &[])?
            .into_iter()
            .map(|(a, b)| (a.text(), b.text()))
            .collect())
    }

    fn set_roles(&mut self, roles: &[(String, String)]) -> Result<()> {
        let stmts: Vec<(&str, Vec<Val>)> = roles
            .iter()
            .map(|(l, r)| {
                (
                    "INSERT INTO roles (lpar, role) VALUES (?1, ?2) ON CONFLICT (lpar) DO UPDATE SET role = ?2",
                    vec![l.into(), r.into()],
                )
            })
            .collect();
        self.db.exec(&stmts)
    }
}

/// Writes an audit log of 12 records into `c`, then changes, removes and
/// inserts rows and cuts the tail with plain SQL, as someone with access to
/// the database but not to the audit key would; each is named by the
/// verification, and undoing it makes the log verify again. Panics otherwise.
pub fn audit_tampering_is_caught<S: Sql>(c: &mut SqlCatalog<S>) {
    use crate::audit::{verify_pages, AuditKey, Chain, Entry, HEAD_META, PAGE};
    let key = || AuditKey::new(&[9u8; 32]);
    let (mut chain, _) = Chain::open(key(), None, c.audit_last().unwrap().as_ref());
    for i in 0..12 {
        let (row, head) = chain.next(
            1_700_000_000 + i,
            &Entry {
                who: "ana".into(),
                role: "operator".into(),
                action: "RunControlGroup".into(),
                args: format!("control_group: \"NIGHTLY{i}\""),
                result: "ok".into(),
                from: "10.0.0.7:5000".into(),
            },
        );
        c.append_audit(&row, &head.to_text()).unwrap();
        chain.advance(&head);
    }
    let k = key();
    let check = |c: &mut SqlCatalog<S>| {
        let head = c.meta(HEAD_META).unwrap();
        verify_pages(&k, head.as_deref(), |after| c.audit_page(after, PAGE))
            .unwrap()
            .problem
    };
    assert_eq!(check(c), None);
    let row = |c: &SqlCatalog<S>, seq: i64| c.audit_page(seq - 1, 1).unwrap().remove(0);
    let sql = |c: &mut SqlCatalog<S>, q: &str, p: Vec<Val>| c.sql().exec(&[(q, p)]).unwrap();
    let put = |c: &mut SqlCatalog<S>, r: &crate::audit::AuditRow| {
        c.sql().exec(&[audit_insert(r)]).unwrap()
    };
    // Changed: one argument of record 5.
    let five = row(c, 5);
    sql(
        c,
        "UPDATE audit SET body = ?1 WHERE seq = 5",
        vec![five.body.replace("NIGHTLY4", "WEEKLY").into()],
    );
    let p = check(c).expect("a changed record is caught");
    assert!(p.starts_with("record 5 was changed"), "{p}");
    sql(c, "DELETE FROM audit WHERE seq = 5", vec![]);
    put(c, &five);
    assert_eq!(check(c), None);
    // Removed: record 3.
    let three = row(c, 3);
    sql(c, "DELETE FROM audit WHERE seq = 3", vec![]);
    assert_eq!(check(c).as_deref(), Some("record 3 was removed"));
    put(c, &three);
    assert_eq!(check(c), None);
    // Inserted: a forged record at 7, the later ones renumbered.
    let all: Vec<_> = c.audit_page(0, 100).unwrap();
    sql(c, "DELETE FROM audit WHERE seq >= 7", vec![]);
    let mut forged = all[5].clone();
    forged.seq = 7;
    forged.body = forged.body.replace("NIGHTLY5", "FORGED");
    put(c, &forged);
    for r in &all[6..] {
        let mut r = r.clone();
        r.seq += 1;
        put(c, &r);
    }
    let p = check(c).expect("an inserted record is caught");
    assert!(p.starts_with("a record was inserted at 7"), "{p}");
    sql(c, "DELETE FROM audit WHERE seq >= 7", vec![]);
    for r in &all[6..] {
        put(c, r);
    }
    assert_eq!(check(c), None);
    // The tail cut off: the signed head still says 12.
    sql(c, "DELETE FROM audit WHERE seq >= 11", vec![]);
    assert_eq!(
        check(c).as_deref(),
        Some("records 11 to 12 were removed from the end (the signed head is record 12)")
    );
    for r in &all[10..] {
        put(c, r);
    }
    assert_eq!(check(c), None);
    // Added past the head without the key: named, and the chain goes on
    // after it (its number is taken) from the signed head.
    let mut extra = all[11].clone();
    extra.seq = 13;
    put(c, &extra);
    let p = check(c).expect("a record past the head is caught");
    assert!(p.starts_with("record 13 "), "{p}");
    let head = crate::audit::Head::parse(&c.meta(HEAD_META).unwrap().unwrap());
    let (chain, warning) = Chain::open(key(), head, c.audit_last().unwrap().as_ref());
    assert!(warning.is_some());
    let (next, _) = chain.next(1_800_000_000, &Entry::default());
    assert_eq!(next.seq, 14);
    sql(c, "DELETE FROM audit WHERE seq = 13", vec![]);
    assert_eq!(check(c), None);
    // The head removed too: named.
    sql(c, "DELETE FROM meta WHERE k = ?1", vec![HEAD_META.into()]);
    let p = check(c).expect("a log without its head is caught");
    assert!(p.contains("no signed head"), "{p}");
}

/// Checks a catalog's behaviour (every implementation must pass): jobs taken
/// exactly once, a restart failing the running job, save sets in insertion
/// order, volumes, meta, roles, events. Panics on the first difference.
pub fn conformance(c: &mut dyn Catalog) {
    let agent = |session: &str| AgentRow {
        name: "PROD1".into(),
        host: "h".into(),
        role: "production".into(),
        version: "0".into(),
        libraries: vec![("default".into(), 1, 10, 3)],
        usage: vec![],
        watched: vec![],
        session: session.into(),
        last_seen: 10,
    };
    c.register(&agent("s1")).unwrap();
    let job = |id: &str| {
        let a = Assignment {
            entries: vec![SaveItem {
                path: "/home".into(),
                include: vec![],
                exclude: vec![],
                library: String::new(),
                command: String::new(),
            }],
            ..Assignment::chores("default".into())
        };
        JobRow::queued(id.into(), "NIGHTLY", "PROD1", a, 1)
    };
    c.add_job(&job("J1")).unwrap();
    c.add_job(&job("J2")).unwrap();
    let q: Vec<String> = c
        .queued_for("PROD1")
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(q, ["J1", "J2"], "queued in order");
    assert!(c.accept("J1", "PROD1", "s1", 2).unwrap().is_ok());
    assert!(
        c.accept("J1", "PROD1", "s1", 2).unwrap().is_err(),
        "never twice"
    );
    assert!(
        c.accept("J2", "CONT1", "s1", 2).unwrap().is_err(),
        "not another agent's"
    );
    assert!(c.accept("NOPE", "PROD1", "s1", 2).unwrap().is_err());
    c.progress(
        "J1",
        "PROD1",
        &Progress {
            entries_done: 0,
            entries_total: 1,
            bytes: 5,
            bytes_total: 10,
            objects: 1,
            current: "/home".into(),
        },
    )
    .unwrap();
    let j = c.job("J1").unwrap().unwrap();
    assert_eq!(
        (j.state.as_str(), j.bytes, j.current.as_str()),
        ("running", 5, "/home")
    );
    // The same session re-registering keeps it; a new session fails it.
    assert!(c.register(&agent("s1")).unwrap().is_empty());
    assert_eq!(c.register(&agent("s2")).unwrap(), vec!["J1".to_string()]);
    let j = c.job("J1").unwrap().unwrap();
    assert_eq!(j.state, "failed");
    assert!(j.message.contains("restarted"));
    assert!(
        !c.finish("J1", "PROD1", true, "", &[], "", 3).unwrap(),
        "a failed job stays failed"
    );
    assert!(c.accept("J2", "PROD1", "s2", 4).unwrap().is_ok());
    let set = SaveSetRow {
        id: "S1".into(),
        source: "/home".into(),
        key_id: "kmip:1".into(),
        volumes: vec!["PR0001".into()],
        objects: 2,
        bytes: 7,
        warnings: vec!["/home/x: removed before it was read; not saved".into()],
        changed: vec!["home/y".into()],
        changed_count: 1,
    };
    assert!(c
        .finish("J2", "PROD1", true, "ok", &[set], "out", 5)
        .unwrap());
    let j = c.job("J2").unwrap().unwrap();
    assert_eq!((j.state.as_str(), j.bytes, j.finished), ("succeeded", 7, 5));
    assert_eq!(
        c.cancel("J2", 6).unwrap().unwrap().state,
        "succeeded",
        "ended jobs stay"
    );
    c.add_job(&job("J4")).unwrap();
    assert_eq!(
        c.active_jobs()
            .unwrap()
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["J4"]
    );
    assert!(c.abandon("J4", "agent lost", 6).unwrap());
    assert!(
        !c.abandon("J4", "again", 7).unwrap(),
        "an ended job stays as it ended"
    );
    assert_eq!(c.job("J4").unwrap().unwrap().message, "agent lost");
    c.add_job(&job("J3")).unwrap();
    assert_eq!(c.cancel("J3", 6).unwrap().unwrap().state, "cancelled");
    assert_eq!(
        c.jobs(2)
            .unwrap()
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["J3", "J4"]
    );
    assert_eq!(
        c.job_counts().unwrap(),
        [
            ("cancelled".to_string(), 1),
            ("failed".to_string(), 2),
            ("succeeded".to_string(), 1)
        ]
    );
    assert_eq!(c.agent("PROD1").unwrap().unwrap().session, "s2");
    assert_eq!(c.agent("PROD1").unwrap().unwrap().libraries[0].3, 3);
    assert!(c.agent("NOPE").unwrap().is_none());
    assert_eq!(c.agents().unwrap().len(), 1);
    // Save sets come back in the order they were first recorded, updated in place.
    let rec = |id: &str| SaveSetRecord {
        id: id.into(),
        agent: "PROD1".into(),
        library: "default".into(),
        control_group: "NIGHTLY".into(),
        source: "/home".into(),
        key_id: "kmip:1".into(),
        volumes: vec!["PR0001".into()],
        created: 5,
        state: "active".into(),
        level: "full".into(),
        ..Default::default()
    };
    for id in ["Z", "A", "M"] {
        c.put_save_set(&rec(id)).unwrap();
    }
    let mut a = rec("A");
    a.state = "expired".into();
    c.put_save_set(&a).unwrap();
    let sets = c.save_sets().unwrap();
    assert_eq!(
        sets.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["Z", "A", "M"]
    );
    assert_eq!(sets[1].state, "expired");
    assert_eq!(
        c.save_set("A").unwrap().map(|s| s.state),
        Some("expired".into())
    );
    assert_eq!(c.save_set("Q").unwrap(), None);
    let v = VolumeRecord {
        volser: "PR0001".into(),
        agent: "PROD1".into(),
        library: "default".into(),
        site: "main".into(),
        first_written: 5,
        last_written: 5,
        save_sets: vec!["Z".into()],
        move_policy: String::new(),
        location: crate::moves::HOME.into(),
        since: 5,
        in_transit_to: String::new(),
        move_job: String::new(),
        carry_to: String::new(),
        kept_at: String::new(),
    };
    c.put_volume(&v).unwrap();
    let mut moved = v.clone();
    moved.location = "VAULT".into();
    c.put_volume(&moved).unwrap();
    assert_eq!(c.volumes().unwrap(), vec![moved]);
    assert_eq!(c.meta("k").unwrap(), None);
    c.set_meta("k", "1").unwrap();
    c.set_meta("k", "2").unwrap();
    assert_eq!(c.meta("k").unwrap().as_deref(), Some("2"));
    // Records (restore requests, drills): open ones listed alone, a closed
    // one kept, kinds apart.
    c.put_record("restore", "R2", 20, true, "{\"n\":2}")
        .unwrap();
    c.put_record("restore", "R1", 10, true, "{\"n\":1}")
        .unwrap();
    c.put_record("restore", "R1", 10, false, "{\"n\":11}")
        .unwrap();
    c.put_record("drill", "R1", 5, true, "{\"d\":1}").unwrap();
    assert_eq!(
        c.records("restore", false).unwrap(),
        vec!["{\"n\":2}".to_string()]
    );
    assert_eq!(
        c.records("restore", true).unwrap(),
        vec!["{\"n\":11}".to_string(), "{\"n\":2}".to_string()]
    );
    assert_eq!(
        c.record("restore", "R1").unwrap().as_deref(),
        Some("{\"n\":11}")
    );
    assert_eq!(
        c.record("drill", "R1").unwrap().as_deref(),
        Some("{\"d\":1}")
    );
    assert_eq!(c.record("restore", "R3").unwrap(), None);
    c.set_roles(&[
        ("CONT1".into(), "production".into()),
        ("PROD1".into(), "contingency".into()),
    ])
    .unwrap();
    c.set_roles(&[("PROD1".into(), "production".into())])
        .unwrap();
    assert_eq!(
        c.roles().unwrap(),
        [
            ("CONT1".to_string(), "production".to_string()),
            ("PROD1".to_string(), "production".to_string())
        ]
    );
    let obj = |p: &str| ObjectRow {
        path: p.into(),
        kind: "file".into(),
        size: 5_000_000_000,
        mtime: 1_700_000_000,
    };
    c.put_objects(
        "Z",
        &[
            obj("home/a/ledger.dat"),
            obj("home/a_b%c.txt"),
            obj("home/b/ledger.dat"),
        ],
    )
    .unwrap();
    c.put_objects("M", &[obj("home/a/ledger.dat")]).unwrap();
    let found = c.find_objects("*/ledger.dat", 10).unwrap();
    let got: Vec<(&str, &str)> = found
        .iter()
        .map(|(s, o)| (s.as_str(), o.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("M", "home/a/ledger.dat"),
            ("Z", "home/a/ledger.dat"),
            ("Z", "home/b/ledger.dat")
        ]
    );
    assert_eq!(found[0].1.size, 5_000_000_000);
    // LIKE's own wildcards in a name are literal; ? is one character.
    assert_eq!(c.find_objects("home/a_b%c.txt", 10).unwrap().len(), 1);
    assert_eq!(c.find_objects("home/a_b%c.tx?", 10).unwrap().len(), 1);
    assert_eq!(c.find_objects("home/aXb%c.txt", 10).unwrap().len(), 0);
    assert_eq!(c.find_objects("*", 2).unwrap().len(), 2);
    // Restore points count only dated (recorded) copies.
    assert_eq!(c.restore_point("home/a/ledger.dat", 100).unwrap(), None);
    c.date_objects("Z", 10).unwrap();
    c.date_objects("M", 20).unwrap();
    let at = |t: i64| {
        c.restore_point("home/a/ledger.dat", t)
            .unwrap()
            .map(|(s, _)| s)
    };
    assert_eq!(
        (at(9), at(10), at(19), at(20), at(99)),
        (
            None,
            Some("Z".into()),
            Some("Z".into()),
            Some("M".into()),
            Some("M".into())
        )
    );
    c.drop_objects("Z").unwrap();
    assert_eq!(c.find_objects("*", 10).unwrap().len(), 1);
    // A save set not yet recorded belongs to the first job that names it.
    assert_eq!(c.claim_save_set("N", "J1").unwrap(), None);
    assert_eq!(c.claim_save_set("N", "J1").unwrap(), None);
    assert_eq!(c.claim_save_set("N", "J2").unwrap(), Some("J1".into()));
    assert_eq!(c.claim_save_set("R", "J1").unwrap(), None);
    c.put_objects("N", &[obj("home/n1"), obj("home/n2")])
        .unwrap();
    let of: Vec<String> = c
        .objects_of("N", 1)
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert_eq!(of, ["home/n1"]);
    c.put_objects("R", &[obj("home/r")]).unwrap();
    // Of J1's, only what was never recorded goes; others' stay.
    c.put_save_set(&rec("R")).unwrap();
    assert_eq!(c.drop_unrecorded_objects("J2").unwrap(), 0);
    assert_eq!(c.drop_unrecorded_objects("J1").unwrap(), 2);
    let left: Vec<String> = c
        .find_objects("home/*", 10)
        .unwrap()
        .into_iter()
        .map(|(s, o)| format!("{s}:{}", o.path))
        .collect();
    assert_eq!(left, ["M:home/a/ledger.dat", "R:home/r"]);
    c.event(7, "job.queued", "first").unwrap();
    c.event(8, "job.failed", "it's \"quoted\"").unwrap();
    let ev = c.events(10).unwrap();
    assert_eq!(
        ev[0],
        (8, "job.failed".to_string(), "it's \"quoted\"".to_string())
    );
    assert_eq!(ev.len(), 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_catalog_conforms_and_keeps_old_entries_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut c = sqlite::open(&d.path().join("c.db")).unwrap();
        conformance(&mut c);
        let mut c = sqlite::open(&d.path().join("audit.db")).unwrap();
        audit_tampering_is_caught(&mut c);
        // Entries written before library entries (path, include, exclude) still read.
        let old: SaveItem = serde_json::from_str(r#"["/home", ["*.db"], []]"#).unwrap();
        assert_eq!(
            (old.path.as_str(), old.include.len(), old.library.as_str()),
            ("/home", 1, "")
        );
    }
}
