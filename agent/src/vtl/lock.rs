//! Exclusive locks that die with their holder: flock(2) on a lock file that names the holder.
//!
//! The kernel drops an flock when the process holding it exits, however it
//! exits, so a crashed job never leaves a drive or cartridge locked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A held lock; dropping it releases it.
pub struct Lock {
    _file: Flock<File>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))
}

fn stamp(mut f: Flock<File>, path: &Path) -> Result<Lock> {
    let who = format!(
        "process {} ({})",
        std::process::id(),
        std::env::args().next().unwrap_or_default()
    );
    let r = f
        .set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(who.as_bytes()));
    r.map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
    Ok(Lock { _file: f })
}

/// Takes the lock if it is free; otherwise [`Error::Busy`] naming `what` and its holder.
pub fn try_lock(path: &Path, what: &str) -> Result<Lock> {
    match Flock::lock(open(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(f) => stamp(f, path),
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(Error::Busy {
                what: what.to_string(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder
                },
            })
        }
        Err((_, e)) => Err(Error::io(format!("lock {}", path.display()), e.into())),
    }
}

/// Waits for the lock (held only for short state changes).
pub fn lock(path: &Path) -> Result<Lock> {
    match Flock::lock(open(path)?, FlockArg::LockExclusive) {
        Ok(f) => stamp(f, path),
        Err((_, e)) => Err(Error::io(format!("lock {}", path.display()), e.into())),
    }
}
