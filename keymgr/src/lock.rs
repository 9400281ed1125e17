//! The serving lock: `KEYSTORE.lock`, held (flock) by a running server and by commands that replace the master key or the keystore.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A held lock; dropping it (or the process dying) releases it.
pub struct Lock {
    _file: Flock<File>,
}

pub fn path_for(keystore: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", keystore.display()))
}

/// Takes the keystore's lock for `what`, or says who holds it.
pub fn take(keystore: &Path, what: &str) -> Result<Lock> {
    let path = path_for(keystore);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(mut l) => {
            let stamp = format!("{what} (process {})", std::process::id());
            let r = l
                .set_len(0)
                .and_then(|()| l.rewind())
                .and_then(|()| l.write_all(stamp.as_bytes()));
            r.map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
            Ok(Lock { _file: l })
        }
        Err((mut f, _)) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            Err(Error::Busy(format!(
                "keystore {} is in use by {}; stop it first",
                keystore.display(),
                if holder.is_empty() {
                    "another process".into()
                } else {
                    holder
                }
            )))
        }
    }
}
