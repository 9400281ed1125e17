//! cinta agent library: the tape layer, the virtual tape library and the encrypted save-set stream.
pub mod daemon;
pub mod error;
pub mod io;
pub mod keys;
pub mod kmip_keys;
pub mod saveset;
pub mod stream;
pub mod tape;
pub mod vtl;

pub use error::{Error, Result};
