//! cinta-controller: coordinates agents over gRPC (mutual TLS), keeps the catalog, and runs control groups and the night on the LPAR their target names.
//!
//! - [`state`]: the core every service and the scheduler use (the only `impl State`);
//!   [`grpc`]: AgentService and ConsoleService, the only room that knows the gRPC stack.
//! - [`access`]: operators, their roles, agents; who may call what.
//! - [`config`]: TOML: LPARs and roles, control groups, operators, the night.
//! - [`catalog`]: agents, jobs, events, save sets, volumes, objects (SQLite or PostgreSQL behind a trait).
//! - [`night`]: schedules and the nightly close: a pure state machine and its driver.
//! - [`housekeeping`]: the scheduler's tick; [`retention`], [`liveness`], [`metrics`].
//! - [`moves`]: where cartridges go next (move policies, vault rotation);
//!   [`media`]: the volumes inventory and the moves started and confirmed.
//! - [`find`]: object search and restore points.

pub mod access;
pub mod audit;
pub mod bench;
pub mod bench_audit;
pub mod bench_catalog;
pub mod bench_report;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod copies;
pub mod drills;
pub mod error;
pub mod events;
pub mod find;
pub mod grpc;
pub mod housekeeping;
pub mod liveness;
pub mod mail;
pub mod media;
pub mod metrics;
pub mod moves;
pub mod night;
pub mod recovery;
pub mod reports;
pub mod restores;
pub mod retention;
pub mod state;

pub use error::{Error, Result};
