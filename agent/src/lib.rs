//! cinta agent library: the tape layer and the virtual tape library.
pub mod error;
pub mod tape;
pub mod vtl;

pub use error::{Error, Result};
