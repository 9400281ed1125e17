//! The controller's clock: the system's, or a file holding the time (seconds since 1970) that tests and demos move forward.
//!
//! Everything the scheduler decides depends on `Clock::now`, so a night can
//! be driven hour by hour without sleeping.

use std::path::PathBuf;

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

/// Reads the time from a file on every call (for tests and demos; `clock_file` in the configuration).
pub struct FileClock(pub PathBuf);

impl Clock for FileClock {
    fn now(&self) -> i64 {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| SystemClock.now())
    }
}
