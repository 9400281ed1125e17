//! The load generator of `cinta-keymgr bench`: KMIP round trips per second and latency percentiles against any KMIP server, over N concurrent connections.
//!
//! Each connection is its own thread with its own TLS session (handshakes
//! happen before the clock starts). `create-get` does Create then Get of the
//! new key per round trip; `get` fetches one key per connection over and over.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cinta_kmip::message::Version;
use cinta_kmip_client::{Client, Config};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mode {
    /// Create an AES-256 key, then Get it.
    CreateGet,
    /// Get the same key again and again.
    Get,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub server: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub version: Version,
    pub connections: usize,
    pub duration: Duration,
    pub mode: Mode,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub mode: Mode,
    pub connections: usize,
    pub round_trips: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

pub fn run(plan: &Plan) -> Result<Report> {
    let barrier = Arc::new(Barrier::new(plan.connections));
    let mut threads = Vec::new();
    for i in 0..plan.connections {
        let plan = plan.clone();
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(
            move || -> Result<(Vec<u32>, u64, f64)> {
                let mut cfg = Config::new(plan.server.clone(), &plan.cert, &plan.key, &plan.ca);
                cfg.version = plan.version;
                cfg.retry_for = Duration::from_secs(5);
                let mut c = Client::new(cfg).map_err(|e| Error::Invalid(e.to_string()))?;
                // Connects (handshake) and, for Get, makes the key to fetch.
                let fixed = c
                    .create_active_aes256(&format!("bench-{i}-{}", std::process::id()), &[])
                    .map_err(|e| Error::Invalid(format!("set-up: {e}")))?;
                barrier.wait();
                let start = Instant::now();
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                let mut n = 0u64;
                while start.elapsed() < plan.duration {
                    let t = Instant::now();
                    let ok = match plan.mode {
                        Mode::CreateGet => c
                            .create_aes256(&format!("bench-{i}-{n}"), &[])
                            .and_then(|u| c.get_key(&u))
                            .is_ok(),
                        Mode::Get => c.get_key(&fixed).is_ok(),
                    };
                    if !ok {
                        errors += 1;
                    }
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    n += 1;
                }
                Ok((lat, errors, start.elapsed().as_secs_f64()))
            },
        ));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut secs: f64 = 0.0;
    for t in threads {
        let (lat, e, s) = t
            .join()
            .map_err(|_| Error::Invalid("a bench thread panicked".into()))??;
        all.extend(lat);
        errors += e;
        secs = secs.max(s);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i] as f64 / 1000.0
    };
    Ok(Report {
        mode: plan.mode,
        connections: plan.connections,
        round_trips: all.len() as u64,
        seconds: secs,
        per_second: all.len() as f64 / secs.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map(|m| *m as f64 / 1000.0).unwrap_or(0.0),
        errors,
    })
}
