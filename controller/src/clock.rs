//! The controller's clock: the system's, or a file holding the time (seconds since 1970) that tests and demos move forward.
//!
//! Everything the scheduler decides depends on `Clock::now`, so a night can
//! be driven hour by hour without sleeping.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::{Error, Result};

pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// Reads the time from a file on every call (for tests and demos;
/// `clock_file` in the configuration). A read that does not give a time
/// (the file empty, half-written or gone) keeps the last time read, with a
/// warning: it never jumps to the system clock, which would start a new
/// night over an unfinished one.
pub struct FileClock {
    path: PathBuf,
    last: Mutex<i64>,
}

impl FileClock {
    /// The file must hold a time when the controller starts.
    pub fn open(path: PathBuf) -> Result<FileClock> {
        let t = read(&path)
            .map_err(|why| Error::Invalid(format!("clock file {}: {why}", path.display())))?;
        Ok(FileClock {
            path,
            last: Mutex::new(t),
        })
    }
}

fn read(path: &std::path::Path) -> std::result::Result<i64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    s.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a time (seconds since 1970)", s.trim()))
}

impl Clock for FileClock {
    fn now(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match read(&self.path) {
            Ok(t) => *last = t,
            Err(why) => tracing::warn!(
                file = %self.path.display(),
                "the clock file did not give a time ({why}); keeping {}",
                *last
            ),
        }
        *last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_file_read_half_written_keeps_the_last_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("clock");
        assert!(
            FileClock::open(p.clone()).is_err(),
            "no file: refused at start"
        );
        std::fs::write(&p, "").unwrap();
        assert!(
            FileClock::open(p.clone()).is_err(),
            "empty: refused at start"
        );
        std::fs::write(&p, "1000\n").unwrap();
        let c = FileClock::open(p.clone()).unwrap();
        std::fs::write(&p, "2000").unwrap();
        assert_eq!(c.now(), 2000);
        for bad in ["", "20", "x"] {
            std::fs::write(&p, bad).unwrap();
            let t = c.now();
            assert!(t == 2000 || (bad == "20" && t == 20), "{bad:?}: {t}");
            std::fs::write(&p, "2000").unwrap();
            c.now();
        }
        std::fs::remove_file(&p).unwrap();
        assert_eq!(c.now(), 2000);
    }
}
