//! What a library keeps on disk: its configuration and one state file per cartridge, each replaced atomically.
//!
//! Every library operation changes at most one cartridge's state file at a
//! time, by writing a temporary file, syncing it, renaming it over the old
//! one and syncing the directory. A crash leaves each cartridge either
//! before or after the change, never half-way, so the library is always
//! consistent.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Format version of library.json.
pub const FORMAT: u32 = 1;

/// A library's shape, fixed at creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    pub format: u32,
    pub name: String,
    pub slots: u32,
    pub drives: u32,
    pub ie_ports: u32,
    /// Capacity of new cartridges, bytes.
    pub capacity: u64,
    /// Early-warning margin of new cartridges, bytes before the end.
    pub early_warning: u64,
}

/// Lifecycle state of a cartridge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CartState {
    /// Labelled, holds nothing wanted: can be written from the start.
    Scratch,
    /// Holds data and has room for more.
    Active,
    /// Holds data up to early warning.
    Full,
    /// Holds data no longer retained: can be relabelled as scratch.
    Expired,
    /// Unusable until an operator acts (label mismatch, damage).
    Error,
}

impl std::fmt::Display for CartState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CartState::Scratch => "scratch",
            CartState::Active => "active",
            CartState::Full => "full",
            CartState::Expired => "expired",
            CartState::Error => "error",
        })
    }
}

/// Where a cartridge is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// Storage slot, numbered from 1.
    Slot(u32),
    /// Drive, numbered from 0.
    Drive(u32),
    /// Import/export port, numbered from 1.
    Ie(u32),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Slot(n) => write!(f, "slot {n}"),
            Location::Drive(n) => write!(f, "drive {n}"),
            Location::Ie(n) => write!(f, "import/export port {n}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, n) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected slot:N, drive:N or ie:N"))?;
        let n: u32 = n
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a number"))?;
        match kind {
            "slot" => Ok(Location::Slot(n)),
            "drive" => Ok(Location::Drive(n)),
            "ie" => Ok(Location::Ie(n)),
            _ => Err(format!("{s:?}: expected slot:N, drive:N or ie:N")),
        }
    }
}

/// One cartridge's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CartRecord {
    pub barcode: String,
    pub state: CartState,
    pub location: Location,
    /// The slot a cartridge returns to when unloaded.
    pub home_slot: Option<u32>,
    pub capacity: u64,
    pub early_warning: u64,
    /// Last thing an operator should know (crash found on load, error cause).
    pub note: Option<String>,
    /// Seconds since 1970 of the last change.
    pub updated: u64,
    /// Seconds since 1970 of the last write.
    pub last_written: Option<u64>,
    /// BRMS-style media class (e.g. "LTO9"): saves asking for a class write
    /// only on cartridges of it ("" none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_class: String,
}

/// Seconds since 1970.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |e| Error::io(path.display().to_string(), e);
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Reads a JSON state file, naming it on error.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Library {
        library: path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reason: format!("{} is damaged: {e}", path.display()),
    })
}
