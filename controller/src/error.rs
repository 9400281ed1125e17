//! The controller's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The catalog's engine refused or could not be reached; `retry` says
    /// whether trying again can help (a connection lost, a busy database).
    #[error("catalog {at}: {message}")]
    Catalog {
        at: String,
        message: String,
        retry: bool,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
