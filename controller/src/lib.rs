//! cinta-controller: coordinates agents over gRPC (mutual TLS), keeps the catalog, and runs control groups on the LPAR their target names.
//!
//! - [`config`]: TOML: LPARs and roles, control groups.
//! - [`catalog`]: agents, jobs, events (SQLite behind a trait).
//! - [`moves`]: where cartridges go next (move policies, vault rotation);
//!   [`media`]: the volumes inventory and the moves started and confirmed.
//! - [`find`]: object search and restore points.
//! - [`night`]: schedules and the nightly close, driven by [`clock`].
//! - [`service`]: AgentService and ConsoleService.

pub mod bench;
pub mod bench_catalog;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod find;
pub mod media;
pub mod moves;
pub mod night;
pub mod service;

pub use error::{Error, Result};
