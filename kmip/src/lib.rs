//! KMIP's TTLV encoding, shared by the key server (cinta-keymgr) and the agent's KMIP client. No I/O here.
//!
//! - [`message`]: request and response envelopes, batches, results, versions.
//! - [`ttlv`]: items (tag, type, length, value) to and from bytes, with
//!   limits on size, depth and item count; message framing for a stream.
//!
//! Operations, attributes and versions are layered on these items by the
//! key manager; this crate knows only the encoding.

pub mod message;
pub mod ttlv;

pub use ttlv::{Error, Item, Value};
