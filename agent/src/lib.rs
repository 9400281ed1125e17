//! cinta agent library: the tape layer, the virtual tape library, the encrypted save-set stream, what a job does with them ([`jobs`]) and the lines the daemon and its save children exchange ([`wire`]).
pub mod copy;
pub mod daemon;
pub mod error;
pub mod io;
pub mod jobs;
pub mod keys;
pub mod kmip_keys;
pub mod saveset;
pub mod stream;
pub mod supervise;
pub mod tape;
pub mod vtl;
pub mod wire;

pub use error::{Error, Result};
