//! The catalog: agents, jobs and events, behind a trait, on SQLite (one file, WAL, synchronous=FULL).
//!
//! Job states: queued -> running (accepted by the agent's session, exactly
//! once) -> succeeded | failed; queued or running -> cancelled. A running
//! job whose agent registers a new session is failed: the agent restarted
//! under it, and its save set, if any, was never recorded as complete.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
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
        }
    }
}

/// A save set a job made, with its retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    fn job(&self, id: &str) -> Result<Option<JobRow>>;
    fn jobs(&self, limit: u32) -> Result<Vec<JobRow>>;
    fn event(&mut self, now: i64, kind: &str, text: &str) -> Result<()>;
    /// The most recent events, newest first: (time, kind, text).
    fn events(&self, limit: u32) -> Result<Vec<(i64, String, String)>>;
    /// How many jobs are in each state.
    fn job_counts(&self) -> Result<Vec<(String, i64)>>;
    fn put_save_set(&mut self, s: &SaveSetRecord) -> Result<()>;
    fn save_sets(&self) -> Result<Vec<SaveSetRecord>>;
    fn put_volume(&mut self, v: &VolumeRecord) -> Result<()>;
    fn volumes(&self) -> Result<Vec<VolumeRecord>>;
    /// A small persistent value (scheduler position, tonight's record).
    fn meta(&self, key: &str) -> Result<Option<String>>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<()>;
    /// Role switches in force, as (LPAR, role).
    fn roles(&self) -> Result<Vec<(String, String)>>;
    fn set_roles(&mut self, roles: &[(String, String)]) -> Result<()>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_agent ON jobs (agent, state);
CREATE TABLE IF NOT EXISTS save_sets (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
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
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
";

pub struct SqliteCatalog {
    conn: Connection,
    path: PathBuf,
}

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<SqliteCatalog> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::Io {
                what: format!("create {}", d.display()),
                source: e,
            })?;
        }
        let err = |source| Error::Catalog {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SqliteCatalog {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Catalog {
            path: self.path.clone(),
            source,
        }
    }

    fn put_job(&self, j: &JobRow, session: Option<&str>) -> Result<()> {
        let body = serde_json::to_string(j).expect("job serializes");
        match session {
            Some(s) => self.conn.execute(
                "UPDATE jobs SET state = ?2, body = ?3, session = ?4 WHERE id = ?1",
                params![j.id, j.state, body, s],
            ),
            None => self.conn.execute(
                "UPDATE jobs SET state = ?2, body = ?3 WHERE id = ?1",
                params![j.id, j.state, body],
            ),
        }
        .map_err(self.err())?;
        Ok(())
    }

    /// Rows of one JSON `body` column, decoded; `what` names the record in errors.
    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows: Vec<String> = st
            .query_map(p, |r| r.get(0))
            .and_then(|r| r.collect())
            .map_err(self.err())?;
        rows.iter()
            .map(|b| {
                serde_json::from_str(b).map_err(|e| {
                    Error::Invalid(format!(
                        "catalog {}: {what} record: {e}",
                        self.path.display()
                    ))
                })
            })
            .collect()
    }

    fn bodies(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<JobRow>> {
        self.json_rows(sql, p, "a job")
    }

    fn job_of(&self, id: &str) -> Result<Option<(JobRow, String)>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT body, session FROM jobs WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.err())?;
        match row {
            Some((b, s)) => Ok(Some((
                serde_json::from_str(&b)
                    .map_err(|e| Error::Invalid(format!("a job record: {e}")))?,
                s,
            ))),
            None => Ok(None),
        }
    }
}

impl Catalog for SqliteCatalog {
    fn register(&mut self, a: &AgentRow) -> Result<Vec<String>> {
        let body = serde_json::to_string(a).expect("agent serializes");
        self.conn
            .execute(
                "INSERT INTO agents (name, body) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET body = ?2",
                params![a.name, body],
            )
            .map_err(self.err())?;
        let running = self.bodies(
            "SELECT body FROM jobs WHERE agent = ?1 AND state = 'running' AND session != ?2",
            params![a.name, a.session],
        )?;
        let mut failed = Vec::new();
        for mut j in running {
            j.state = "failed".into();
            j.finished = a.last_seen;
            j.message = format!(
                "agent {} restarted while the job ran; no save set of it is recorded as complete",
                a.name
            );
            self.put_job(&j, None)?;
            failed.push(j.id);
        }
        Ok(failed)
    }

    fn agents(&self) -> Result<Vec<AgentRow>> {
        self.json_rows("SELECT body FROM agents ORDER BY name", [], "an agent")
    }

    fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        Ok(self
            .json_rows(
                "SELECT body FROM agents WHERE name = ?1",
                [name],
                "an agent",
            )?
            .pop())
    }

    fn add_job(&mut self, j: &JobRow) -> Result<()> {
        let seq: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", [], |r| {
                r.get(0)
            })
            .map_err(self.err())?;
        self.conn
            .execute(
                "INSERT INTO jobs (id, seq, agent, state, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    j.id,
                    seq,
                    j.agent,
                    j.state,
                    serde_json::to_string(j).expect("job serializes")
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn queued_for(&self, agent: &str) -> Result<Vec<JobRow>> {
        self.bodies(
            "SELECT body FROM jobs WHERE agent = ?1 AND state = 'queued' ORDER BY seq",
            params![agent],
        )
    }

    fn accept(
        &mut self,
        job: &str,
        agent: &str,
        session: &str,
        now: i64,
    ) -> Result<std::result::Result<(), String>> {
        let Some((mut j, _)) = self.job_of(job)? else {
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
        if let Some((mut j, _)) = self.job_of(job)? {
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
        let Some((mut j, _)) = self.job_of(job)? else {
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
        let Some((mut j, _)) = self.job_of(job)? else {
            return Ok(None);
        };
        if j.state == "queued" || j.state == "running" {
            j.state = "cancelled".into();
            j.finished = now;
            self.put_job(&j, None)?;
        }
        Ok(Some(j))
    }

    fn job(&self, id: &str) -> Result<Option<JobRow>> {
        Ok(self.job_of(id)?.map(|(j, _)| j))
    }

    fn jobs(&self, limit: u32) -> Result<Vec<JobRow>> {
        self.bodies(
            "SELECT body FROM jobs ORDER BY seq DESC LIMIT ?1",
            params![limit],
        )
    }

    fn event(&mut self, now: i64, kind: &str, text: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO events (time, kind, text) VALUES (?1, ?2, ?3)",
                params![now, kind, text],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn events(&self, limit: u32) -> Result<Vec<(i64, String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT time, kind, text FROM events ORDER BY seq DESC LIMIT ?1")
            .map_err(self.err())?;
        let r = st
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|r| r.collect())
            .map_err(self.err());
        r
    }

    fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
            .map_err(self.err())?;
        let r = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|r| r.collect())
            .map_err(self.err());
        r
    }

    fn put_save_set(&mut self, s: &SaveSetRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO save_sets (id, state, body) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET state = ?2, body = ?3",
                params![s.id, s.state, serde_json::to_string(s).expect("save set serializes")],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn save_sets(&self) -> Result<Vec<SaveSetRecord>> {
        self.json_rows(
            "SELECT body FROM save_sets ORDER BY rowid",
            [],
            "a save set",
        )
    }

    fn put_volume(&mut self, v: &VolumeRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO volumes (volser, body) VALUES (?1, ?2) ON CONFLICT (volser) DO UPDATE SET body = ?2",
                params![v.volser, serde_json::to_string(v).expect("volume serializes")],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        self.json_rows("SELECT body FROM volumes ORDER BY volser", [], "a volume")
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = ?2",
                params![key, value],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn roles(&self) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT lpar, role FROM roles ORDER BY lpar")
            .map_err(self.err())?;
        let r = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|r| r.collect())
            .map_err(self.err());
        r
    }

    fn set_roles(&mut self, roles: &[(String, String)]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|source| Error::Catalog {
            path: self.path.clone(),
            source,
        })?;
        for (l, r) in roles {
            tx.execute(
                "INSERT INTO roles (lpar, role) VALUES (?1, ?2) ON CONFLICT (lpar) DO UPDATE SET role = ?2",
                params![l, r],
            )
            .map_err(|source| Error::Catalog { path: self.path.clone(), source })?;
        }
        tx.commit().map_err(|source| Error::Catalog {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(session: &str) -> AgentRow {
        AgentRow {
            name: "PROD1".into(),
            host: "h".into(),
            role: "production".into(),
            version: "0".into(),
            libraries: vec![],
            usage: vec![],
            watched: vec![],
            session: session.into(),
            last_seen: 10,
        }
    }

    #[test]
    fn a_job_is_accepted_once_and_a_restart_fails_the_running_one() {
        let d = tempfile::tempdir().unwrap();
        let mut c = SqliteCatalog::open(&d.path().join("c.db")).unwrap();
        c.register(&agent("s1")).unwrap();
        let j = JobRow {
            id: "J1".into(),
            control_group: "NIGHTLY".into(),
            agent: "PROD1".into(),
            state: "queued".into(),
            created: 1,
            started: 0,
            finished: 0,
            message: String::new(),
            entries_done: 0,
            entries_total: 1,
            bytes: 0,
            save_sets: vec![],
            output: String::new(),
            bytes_total: 0,
            objects: 0,
            current: String::new(),
            assignment: Assignment {
                library: "default".into(),
                level: "full".into(),
                compress: false,
                entries: vec![SaveItem {
                    path: "/home".into(),
                    include: vec![],
                    exclude: vec![],
                    library: String::new(),
                    command: String::new(),
                }],
                pre: vec![],
                post: vec![],
                step_timeout_seconds: 60,
                expire: vec![],
                shred: false,
                eject: vec![],
                import: vec![],
            },
        };
        c.add_job(&j).unwrap();
        assert_eq!(c.queued_for("PROD1").unwrap().len(), 1);
        assert!(c.accept("J1", "PROD1", "s1", 2).unwrap().is_ok());
        assert!(
            c.accept("J1", "PROD1", "s1", 2).unwrap().is_err(),
            "never twice"
        );
        assert!(c.queued_for("PROD1").unwrap().is_empty());
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
        assert_eq!(c.agent("PROD1").unwrap().unwrap().session, "s2");
        assert!(c.agent("NOPE").unwrap().is_none());
        // Entries written before library entries (path, include, exclude) still read.
        let old: SaveItem = serde_json::from_str(r#"["/home", ["*.db"], []]"#).unwrap();
        assert_eq!(
            (old.path.as_str(), old.include.len(), old.library.as_str()),
            ("/home", 1, "")
        );
    }
}
