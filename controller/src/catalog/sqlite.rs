//! The catalog on SQLite: one file, WAL, `synchronous=FULL` (what is committed survives a power cut).

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::{Sql, SqlCatalog, Val};
use crate::error::{Error, Result};

const SCHEMA: &str = "
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
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
";

pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

/// Opens (creating if needed) the catalog file at `path`.
pub fn open(path: &Path) -> Result<SqlCatalog<Sqlite>> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::Io {
            what: format!("create {}", d.display()),
            source: e,
        })?;
    }
    let err = |e: rusqlite::Error| fail(path, e);
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.execute_batch(super::COMMON_SCHEMA)
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(err)?;
    Ok(SqlCatalog::new(Sqlite {
        conn,
        path: path.to_owned(),
    }))
}

fn fail(path: &Path, e: rusqlite::Error) -> Error {
    let retry = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    Error::Catalog {
        at: path.display().to_string(),
        message: e.to_string(),
        retry,
    }
}

fn bind(p: &[Val]) -> Vec<rusqlite::types::Value> {
    p.iter()
        .map(|v| match v {
            Val::Int(i) => rusqlite::types::Value::Integer(*i),
            Val::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Val::Null => rusqlite::types::Value::Null,
        })
        .collect()
}

impl Sql for Sqlite {
    fn at(&self) -> String {
        self.path.display().to_string()
    }

    fn exec(&mut self, stmts: &[(&str, Vec<Val>)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| fail(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for (sql, p) in stmts {
            tx.prepare_cached(sql)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(bind(p))))
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn rows(&self, sql: &str, p: &[Val]) -> Result<Vec<Vec<Val>>> {
        let err = |e| fail(&self.path, e);
        let mut st = self.conn.prepare_cached(sql).map_err(err)?;
        let n = st.column_count();
        let rows = st
            .query_map(rusqlite::params_from_iter(bind(p)), |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Integer(v) => Val::Int(v),
                            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                            ValueRef::Null => Val::Null,
                            ValueRef::Real(f) => Val::Int(f as i64),
                            ValueRef::Blob(b) => Val::Text(String::from_utf8_lossy(b).into_owned()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Val>>>()
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?;
        Ok(rows)
    }

    fn insertion_order(&self) -> &'static str {
        "rowid"
    }
}
