//! cinta-keymgr: a KMIP key server over mutual TLS, keys wrapped under a master key in one SQLite file, clients onboarded into device groups.
//!
//! - [`config`]: the TOML configuration.
//! - [`master`]: the master key (file or Argon2id passphrase) and key wrapping.
//! - [`store`]: the SQLite keystore: objects, clients, groups.
//! - [`attrs`]: attributes, one form inside, each version's spelling outside.
//! - [`ops`]: the KMIP operations and lifecycle rules, a batch per transaction.
//! - [`fault`]: result reasons and messages of failed operations.
//! - [`private`]: its files 0600 and directories 0700, whatever the umask.
//! - [`admission`]: connection slots, accepted clients apart from all others.

pub mod admission;
pub mod attrs;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fault;
pub mod master;
pub mod ops;
pub mod store;

pub use error::{Error, Result};
pub mod audit;
pub mod backup;
pub mod bench;
pub mod lock;
pub mod pki;
pub mod private;
pub mod server;
pub mod tls;
