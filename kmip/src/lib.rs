//! KMIP's TTLV encoding, shared by the key server (cinta-keymgr) and the agent's KMIP client. No I/O here.
//!
//! - [`message`]: request and response envelopes, batches, results, versions.
//! - [`spec`]: the specification's numbers: tags, enumerations, and which
//!   attribute exists in which version.
//! - [`ttlv`]: items (tag, type, length, value) to and from bytes, with
//!   limits on size, depth and item count; message framing for a stream.
//!
//! Operations and their rules are layered on these items by the key
//! manager; this crate knows the encoding and the numbers.

pub mod message;
pub mod spec;
pub mod ttlv;

pub use ttlv::{Error, Item, Value};
