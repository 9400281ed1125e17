//! The controller's one error type: what went wrong, in the domain's terms (grpc/ maps it to status codes).

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
    /// What was named does not exist (a job, a control group, an LPAR).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or names something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but the system is not in a state to do it
    /// (no night in progress, a session ended, a save set that is another job's).
    #[error("{0}")]
    Precondition(String),
    /// The caller's identity may not do this (names the identity and the role needed).
    #[error("{0}")]
    PermissionDenied(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
