//! The lines `cinta-agent serve` and the `save --wire` child it runs for each entry exchange on the child's standard output: one JSON object per line, the same types on both sides.
//!
//! Order: `progress` lines while the save runs, then `saved` once the save
//! set is complete and recorded in the library's catalog, then one `object`
//! line per object of its index (read back from tape with the key the save
//! used), then `indexed`. The child's standard error is free text (what went
//! wrong); its exit status says whether everything after `saved` worked too.

use serde::{Deserialize, Serialize};

/// How many changed objects a `saved` line names (all are counted).
pub const CHANGED_NAMED: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// Bytes read so far, objects, and the expected total (0: unknown, e.g. a save file).
    Progress {
        bytes: u64,
        objects: u64,
        total: u64,
    },
    Saved(Saved),
    Object(Object),
    /// Every object was sent.
    Indexed {
        objects: u64,
    },
}

/// A save set made and recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub save_set: String,
    pub key_id: String,
    pub source: String,
    /// Cartridges it is on, in order, each once.
    pub volumes: Vec<String>,
    pub objects: u64,
    pub bytes: u64,
    /// What the save warned of.
    pub warnings: Vec<String>,
    /// Objects that changed while read (the first [`CHANGED_NAMED`]), and how many.
    pub changed: Vec<String>,
    pub changed_count: u64,
}

/// One object of a save set's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub path: String,
    /// dir, file, symlink, hardlink, stream.
    pub kind: String,
    pub size: u64,
    pub mtime: i64,
    /// Changed while it was read (kept, flagged).
    pub changed: bool,
}

impl Line {
    /// The line as written (one line of JSON, no newline).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("wire lines serialize")
    }

    /// A line as read; Err names what is wrong with it.
    pub fn decode(line: &str) -> Result<Line, String> {
        serde_json::from_str(line)
            .map_err(|e| format!("unreadable line from the save ({e}): {line:.120}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        let lines = [
            Line::Progress {
                bytes: 1,
                objects: 2,
                total: 0,
            },
            Line::Saved(Saved {
                save_set: "ab".into(),
                key_id: "kmip:1".into(),
                source: "/d".into(),
                volumes: vec!["PR0001".into()],
                objects: 3,
                bytes: 4,
                warnings: vec!["w".into()],
                changed: vec!["d/x".into()],
                changed_count: 1,
            }),
            Line::Object(Object {
                path: "d/x".into(),
                kind: "file".into(),
                size: 9,
                mtime: -1,
                changed: true,
            }),
            Line::Indexed { objects: 3 },
        ];
        for l in lines {
            assert_eq!(Line::decode(&l.encode()).unwrap(), l);
        }
        assert!(Line::encode(&Line::Indexed { objects: 0 }).starts_with("{\"type\":\"indexed\""));
        assert!(Line::decode("{\"type\":\"nope\"}")
            .unwrap_err()
            .contains("unreadable"));
    }
}
