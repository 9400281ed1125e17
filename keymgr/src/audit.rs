//! The audit trail: one JSON line per operation (time, client, group, operation, object, result), appended to a file and flushed per message.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Seconds since 1970, UTC.
    pub time: i64,
    /// SHA-256 fingerprint of the client certificate.
    pub client: String,
    pub subject: String,
    pub group: String,
    pub operation: String,
    pub object: Option<String>,
    /// success, failure, undone, refused (client not accepted), invalid (unreadable request).
    pub result: String,
    pub reason: Option<String>,
}

/// The append-only audit file.
pub struct Audit {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Audit> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir(d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let f = crate::private::open_append(path)
            .map_err(|e| Error::io(format!("audit log {}", path.display()), e))?;
        Ok(Audit {
            path: path.to_owned(),
            out: BufWriter::new(f),
        })
    }

    /// Appends records and hands them to the kernel.
    pub fn write(&mut self, records: &[Record]) -> Result<()> {
        for r in records {
            serde_json::to_writer(&mut self.out, r)
                .map_err(|e| Error::io(format!("audit log {}", self.path.display()), e.into()))?;
            self.out
                .write_all(b"\n")
                .map_err(|e| Error::io(format!("audit log {}", self.path.display()), e))?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io(format!("audit log {}", self.path.display()), e))
    }
}

/// Reads the last `n` records (all if `n` is 0).
pub fn read(path: &Path, n: usize) -> Result<Vec<Record>> {
    let f = File::open(path).map_err(|e| Error::io(format!("audit log {}", path.display()), e))?;
    let mut out = std::collections::VecDeque::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("audit log {}", path.display()), e))?;
        let r: Record = serde_json::from_str(&line).map_err(|e| {
            Error::Invalid(format!("audit log {} line {}: {e}", path.display(), i + 1))
        })?;
        out.push_back(r);
        if n > 0 && out.len() > n {
            out.pop_front();
        }
    }
    Ok(out.into())
}
