//! The key manager's one error type: what went wrong, named, and whether it is the operator's to fix.

use std::path::PathBuf;

/// Everything the key manager's library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keystore {path}: {message}")]
    Keystore { path: PathBuf, message: String },
    #[error("keystore {path}: {source}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the master key does not open keystore {path} (it was made or last rotated with master key {expected}; this one is {given})")]
    WrongMasterKey {
        path: PathBuf,
        expected: String,
        given: String,
    },
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("configuration {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("certificates: {0}")]
    Pki(String),
    #[error("backup {path}: {message}")]
    Backup { path: PathBuf, message: String },
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
