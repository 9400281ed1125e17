//! The catalog on PostgreSQL, for large sites: the same catalog code as on SQLite, over a connection owned by one thread of its own.
//!
//! The `postgres` client drives its own small runtime, which must not run
//! inside the controller's tokio threads; so one thread holds the
//! connection and the catalog sends it statements over a channel. A lost
//! connection is reopened on the next statement; a statement that failed
//! because the connection was lost says that a retry can help. Commits are
//! durable by the server's own rules (`synchronous_commit`, on by default).

use std::sync::mpsc;

use postgres::config::SslMode;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::{Sql, SqlCatalog, Val};
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    agent TEXT NOT NULL,
    state TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_agent ON jobs (agent, state);
CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS save_sets (
    seq BIGSERIAL,
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
";

type Rows = Vec<Vec<Val>>;

enum Req {
    Exec(Vec<(String, Vec<Val>)>, mpsc::SyncSender<Result<()>>),
    Rows(String, Vec<Val>, mpsc::SyncSender<Result<Rows>>),
}

pub struct Postgres {
    tx: mpsc::Sender<Req>,
    at: String,
}

/// Is `catalog` (the configuration's value) a PostgreSQL connection string?
pub fn is_url(catalog: &str) -> bool {
    catalog.starts_with("postgresql://") || catalog.starts_with("postgres://")
}

/// TLS to the server: its certificate must chain to `ca` and name the
/// URL's host; `cert` and `key` are this controller's, if the server asks.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// How to reach the server: its parsed URL and, with TLS, the connector.
#[derive(Clone)]
struct Target {
    config: postgres::Config,
    tls: Option<super::pg_tls::Rustls>,
}

/// Connects to the database `url` names (postgresql://user@host:port/db),
/// over TLS when `tls` is given (and then never without it), creating the
/// catalog's tables if they are not there.
pub fn open(url: &str, tls: Option<&TlsFiles>) -> Result<SqlCatalog<Postgres>> {
    let at = redact(url);
    let bad = |message: String| Error::Catalog {
        at: at.clone(),
        message,
        retry: false,
    };
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| bad(format!("not a PostgreSQL URL: {e}")))?;
    let tls = match tls {
        None => None,
        Some(t) => {
            if config.get_ssl_mode() == SslMode::Disable {
                return Err(bad(
                    "TLS is configured but the URL says sslmode=disable".into()
                ));
            }
            config.ssl_mode(SslMode::Require);
            let client = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => {
                    return Err(bad(
                        "give both cert and key for a client certificate, or neither".into(),
                    ))
                }
            };
            Some(super::pg_tls::Rustls::new(&t.ca, client).map_err(bad)?)
        }
    };
    let target = Target { config, tls };
    let (tx, rx) = mpsc::channel::<Req>();
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
    let a = at.clone();
    std::thread::Builder::new()
        .name("catalog-postgres".into())
        .spawn(move || serve(&target, &a, rx, ready_tx))
        .map_err(|e| Error::Io {
            what: "start the catalog thread".into(),
            source: e,
        })?;
    ready_rx.recv().map_err(|_| gone(&at))??;
    Ok(SqlCatalog::new(Postgres { tx, at }))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn gone(at: &str) -> Error {
    Error::Catalog {
        at: at.to_string(),
        message: "the catalog's connection thread has stopped".into(),
        retry: false,
    }
}

fn fail(at: &str, e: postgres::Error) -> Error {
    let retry = e.is_closed()
        || e.code().is_some_and(|c| {
            let c = c.code();
            // connection exceptions, serialization failures, deadlocks, shutdown
            c.starts_with("08") || c == "40001" || c == "40P01" || c.starts_with("57P")
        });
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // The causes too: "error performing TLS handshake: invalid peer certificate: ...".
            let mut m = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                m.push_str(&format!(": {c}"));
                cause = c.source();
            }
            m
        }
    };
    Error::Catalog {
        at: at.to_string(),
        message,
        retry,
    }
}

fn connect(t: &Target, at: &str) -> Result<Client> {
    let mut c = match &t.tls {
        Some(tls) => t.config.connect(tls.clone()),
        None => t.config.connect(NoTls),
    }
    .map_err(|e| fail(at, e))?;
    c.batch_execute(super::COMMON_SCHEMA)
        .and_then(|()| c.batch_execute(SCHEMA))
        .map_err(|e| fail(at, e))?;
    Ok(c)
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut it = sql.chars().peekable();
    while let Some(c) = it.next() {
        if c == '?' && it.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn params(p: &[Val]) -> Vec<Box<dyn ToSql + Sync>> {
    p.iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Val::Int(i) => Box::new(*i),
                Val::Text(s) => Box::new(s.clone()),
                Val::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn read(row: &postgres::Row) -> std::result::Result<Vec<Val>, postgres::Error> {
    (0..row.len())
        .map(|i| {
            let t = row.columns()[i].type_().clone();
            Ok(if t == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)?
                    .map_or(Val::Null, Val::Int)
            } else if t == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)?
                    .map_or(Val::Null, |v| Val::Int(v.into()))
            } else {
                row.try_get::<_, Option<String>>(i)?
                    .map_or(Val::Null, Val::Text)
            })
        })
        .collect()
}

/// Statements prepared on the current connection, by their SQL.
type Prepared = std::collections::HashMap<String, postgres::Statement>;

fn prepared(
    c: &mut Client,
    cache: &mut Prepared,
    sql: &str,
) -> std::result::Result<postgres::Statement, postgres::Error> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = c.prepare(&dollars(sql))?;
    cache.insert(sql.to_string(), st.clone());
    Ok(st)
}

fn exec(
    c: &mut Client,
    cache: &mut Prepared,
    stmts: &[(String, Vec<Val>)],
) -> std::result::Result<(), postgres::Error> {
    let sts = stmts
        .iter()
        .map(|(sql, _)| prepared(c, cache, sql))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut tx = c.transaction()?;
    for ((_, p), st) in stmts.iter().zip(&sts) {
        let b = params(p);
        let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|x| x.as_ref()).collect();
        tx.execute(st, &refs)?;
    }
    tx.commit()
}

fn rows(
    c: &mut Client,
    cache: &mut Prepared,
    sql: &str,
    p: &[Val],
) -> std::result::Result<Rows, postgres::Error> {
    let b = params(p);
    let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|x| x.as_ref()).collect();
    let st = prepared(c, cache, sql)?;
    c.query(&st, &refs)?.iter().map(read).collect()
}

/// The connection's thread: answers requests until the catalog is dropped.
fn serve(t: &Target, at: &str, rx: mpsc::Receiver<Req>, ready: mpsc::SyncSender<Result<()>>) {
    let mut client = match connect(t, at) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut cache = Prepared::new();
    while let Ok(req) = rx.recv() {
        // A connection lost earlier is opened again for this request.
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            cache.clear();
            client = connect(t, at).ok();
        }
        let Some(c) = client.as_mut() else {
            let e = Error::Catalog {
                at: at.to_string(),
                message: "cannot reach the database".into(),
                retry: true,
            };
            match req {
                Req::Exec(_, r) => drop(r.send(Err(e))),
                Req::Rows(_, _, r) => drop(r.send(Err(e))),
            }
            continue;
        };
        match req {
            Req::Exec(stmts, r) => {
                let _ = r.send(exec(c, &mut cache, &stmts).map_err(|e| fail(at, e)));
            }
            Req::Rows(sql, p, r) => {
                let _ = r.send(rows(c, &mut cache, &sql, &p).map_err(|e| fail(at, e)));
            }
        }
    }
}

impl Sql for Postgres {
    fn at(&self) -> String {
        self.at.clone()
    }

    fn exec(&mut self, stmts: &[(&str, Vec<Val>)]) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let owned = stmts
            .iter()
            .map(|(s, p)| (s.to_string(), p.clone()))
            .collect();
        self.tx
            .send(Req::Exec(owned, tx))
            .map_err(|_| gone(&self.at))?;
        rx.recv().map_err(|_| gone(&self.at))?
    }

    fn rows(&self, sql: &str, p: &[Val]) -> Result<Vec<Vec<Val>>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Req::Rows(sql.to_string(), p.to_vec(), tx))
            .map_err(|_| gone(&self.at))?;
        rx.recv().map_err(|_| gone(&self.at))?
    }

    fn insertion_order(&self) -> &'static str {
        "seq"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_urls() {
        assert_eq!(
            dollars("UPDATE t SET a = ?2 WHERE id = ?1 AND b = '?'"),
            "UPDATE t SET a = $2 WHERE id = $1 AND b = '?'"
        );
        assert_eq!(
            redact("postgresql://cinta:s3cret@db.example:5432/cinta"),
            "postgresql://cinta@db.example:5432/cinta"
        );
        assert!(is_url("postgres://x/y") && !is_url("catalog.db"));
    }
}
