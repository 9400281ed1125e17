//! The agent's own record of the save sets in a library (`LIBRARY/catalog/ID.json`): a cache that `scan` rebuilds from the cartridges.
//!
//! A record is written only after its tape file was closed and flushed, so
//! the catalog never names data that is not durable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::save::Level;
use crate::error::{Error, Result};
use crate::tape::volume::Section;
use crate::vtl::state::{read_json, write_atomic};

/// One save set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub key_id: String,
    pub source: String,
    pub level: Level,
    pub since: Option<i64>,
    pub started: i64,
    pub host: String,
    /// Cartridge the tape file starts on, and its file sequence number there.
    pub volume: String,
    pub sequence: u16,
    pub sections: Vec<Section>,
    pub objects: u64,
    pub bytes: u64,
    pub compression: bool,
    /// The tape file's keyless digest as the save wrote it (as `scan` read
    /// it, for a record it rebuilt; "" in records made before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Duplicates of the tape file on other cartridges, in the order made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<Copy>,
}

/// One duplicate of a save set's tape file (made block for block, still
/// encrypted under the same key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    /// 1 for the first duplicate (the labels' generation version).
    pub copy: u8,
    pub volume: String,
    pub sequence: u16,
    pub sections: Vec<Section>,
    pub media_class: String,
    pub made: i64,
    pub digest: String,
}

/// Where a save set's tape file can be read: the original or a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// 0 the original, then the copy's number.
    pub copy: u8,
    pub volume: String,
    pub sequence: u16,
    pub sections: Vec<Section>,
    /// Its keyless digest as recorded ("" not known).
    pub digest: String,
}

impl Place {
    /// "the original" or "copy N", for messages.
    pub fn what(&self) -> String {
        if self.copy == 0 {
            "the original".into()
        } else {
            format!("copy {}", self.copy)
        }
    }
}

impl Record {
    /// The original, then every copy.
    pub fn places(&self) -> Vec<Place> {
        let mut v = vec![Place {
            copy: 0,
            volume: self.volume.clone(),
            sequence: self.sequence,
            sections: self.sections.clone(),
            digest: self.digest.clone(),
        }];
        v.extend(self.copies.iter().map(|c| Place {
            copy: c.copy,
            volume: c.volume.clone(),
            sequence: c.sequence,
            sections: c.sections.clone(),
            digest: c.digest.clone(),
        }));
        v
    }
}

fn dir(library: &Path) -> PathBuf {
    library.join("catalog")
}

/// Removes a record (the save set is expired; its tape file stays until the cartridge is reused).
pub fn remove(library: &Path, id: &str) -> Result<()> {
    let p = dir(library).join(format!("{id}.json"));
    std::fs::remove_file(&p).map_err(|e| Error::io(p.display().to_string(), e))
}

/// Writes (or replaces) a record.
pub fn put(library: &Path, r: &Record) -> Result<()> {
    let d = dir(library);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(d.display().to_string(), e))?;
    write_atomic(
        &d.join(format!("{}.json", r.id)),
        &serde_json::to_vec_pretty(r).expect("record serializes"),
    )
}

/// Every record, oldest first.
pub fn all(library: &Path) -> Result<Vec<Record>> {
    let d = dir(library);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(d.display().to_string(), e)),
    };
    for e in rd {
        let p = e.map_err(|e| Error::io(d.display().to_string(), e))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            out.push(read_json::<Record>(&p)?);
        }
    }
    out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    Ok(out)
}

/// The record whose id starts with `prefix` (at least 6 hex digits, unique).
pub fn find(library: &Path, prefix: &str) -> Result<Record> {
    let lib = library.display().to_string();
    if prefix.len() < 6 {
        return Err(Error::Library {
            library: lib,
            reason: format!("save set id {prefix:?}: give at least 6 hex digits"),
        });
    }
    let mut found: Vec<Record> = all(library)?
        .into_iter()
        .filter(|r| r.id.starts_with(prefix))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Library { library: lib, reason: format!("has no save set {prefix} in its catalog (run `scan` to rebuild it from the cartridges)") }),
        n => Err(Error::Library { library: lib, reason: format!("{n} save sets start with {prefix}: give more digits") }),
    }
}

/// The reference moment of an incremental or cumulative save of `source`:
/// the start of the last save of any level (incremental) or of the last
/// full save (cumulative).
pub fn reference(library: &Path, source: &str, level: Level) -> Result<Option<(String, i64)>> {
    if level == Level::Full {
        return Ok(None);
    }
    let last = all(library)?
        .into_iter()
        .rfind(|r| r.source == source && (level == Level::Incremental || r.level == Level::Full));
    match last {
        Some(r) => Ok(Some((r.id, r.started))),
        None => Err(Error::Library {
            library: library.display().to_string(),
            reason: format!("has no earlier full save of {source}: run a full save first"),
        }),
    }
}
