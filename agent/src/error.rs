//! The one error type of the agent library; every variant names the cartridge, device, slot or library it concerns.

use std::io;

/// Result alias of the agent library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the tape layer and the virtual tape library.
///
/// Each message names what it concerns (a cartridge barcode, a device path, a
/// slot, a library directory) so an operator can act on it alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a device, cartridge or library file.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A file that should be a SIMH `.tap` cartridge is not one.
    #[error("{file}: not a SIMH tape cartridge: {reason}")]
    NotSimh { file: String, reason: String },
    /// A record of a cartridge is damaged (lengths disagree, runs past the end).
    #[error("{device}: damaged record at byte {offset}: {reason}")]
    CorruptRecord {
        device: String,
        offset: u64,
        reason: String,
    },
    /// A read or space ran into the end of recorded data.
    #[error("{device}: read past end of data at block {block}")]
    EndOfData { device: String, block: u64 },
    /// A backward space ran into the beginning of the tape.
    #[error("{device}: beginning of tape reached ({residual} not spaced)")]
    BeginningOfTape { device: String, residual: u64 },
    /// Spacing over blocks stopped at a filemark (SCSI semantics).
    #[error("{device}: filemark reached while spacing over blocks ({residual} not spaced)")]
    FilemarkHit { device: String, residual: u64 },
    /// The physical end of the medium: nothing was written.
    #[error(
        "{device}: end of medium: no room for {needed} more bytes (used {used} of {capacity})"
    )]
    EndOfMedium {
        device: String,
        needed: u64,
        used: u64,
        capacity: u64,
    },
    /// A block size outside what the device and format allow.
    #[error("{device}: block of {len} bytes refused: {reason}")]
    BadBlockSize {
        device: String,
        len: usize,
        reason: &'static str,
    },
    /// A standard label that cannot be decoded or encoded.
    #[error("{label} label: {reason}")]
    Label { label: String, reason: String },
    /// A volume whose contents are not what they must be (labels, sequence, incomplete files).
    #[error("cartridge {volser}: {reason}")]
    Volume { volser: String, reason: String },
    /// A virtual tape library operation that cannot be done.
    #[error("library {library}: {reason}")]
    Library { library: String, reason: String },
    /// A drive or cartridge is in use by another job; retrying later can help.
    #[error("{what} is in use by {holder}")]
    Busy { what: String, holder: String },
    /// A save set header that is not one this agent can read.
    #[error("save set header: {reason}")]
    StreamHeader { reason: String },
    /// The header tag does not verify under the key: the wrong key (the
    /// header passed its own check: `intact`), or, for a header of format
    /// 1 that has no check, the wrong key or a damaged header.
    #[error("save set {save_set}: the key {key_id:?} does not open it ({})", wrong_key_why(*.intact))]
    WrongKey {
        save_set: String,
        key_id: String,
        intact: bool,
    },
    /// A sealed segment that cannot be sealed or opened.
    #[error("segment {segment}: {reason}")]
    Segment { segment: u64, reason: String },
    /// A key source failed to give or make a key.
    #[error("key {key_id:?}: {reason}")]
    Key { key_id: String, reason: String },
    /// A tape block of a save set that cannot be used, with where it is.
    #[error("cartridge {volume} block {block} (segment {segment}): {reason}")]
    Damaged {
        volume: String,
        block: u64,
        segment: u64,
        reason: String,
    },
    /// A save set's records or index that do not decode.
    #[error("save set format: {reason}")]
    Format { reason: String },
    /// The device or back-end cannot do this operation.
    #[error("{device}: {reason}")]
    Unsupported { device: String, reason: String },
    /// A save set's tape file could not be duplicated.
    #[error("copy of save set {save_set}: {reason}")]
    Copy { save_set: String, reason: String },
}

fn wrong_key_why(intact: bool) -> &'static str {
    if intact {
        "the header passed its own check: this is not the key it was saved with"
    } else {
        "wrong key, or the header is damaged"
    }
}

impl Error {
    /// Wraps an I/O error with the name of what it happened on.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
