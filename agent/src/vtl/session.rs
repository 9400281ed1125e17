//! A job's use of the library: one drive held for the job, cartridges mounted and given back through [`Changer`].

use std::collections::BTreeMap;

use super::lock::{self, Lock};
use super::state::{self, CartState, Location};
use super::Library;
use crate::error::{Error, Result};
use crate::tape::volume::{self, Changer, Mounted, Outcome};
use crate::tape::TapeDevice;

/// A job holding one drive of a library.
pub struct Session<'l> {
    lib: &'l Library,
    drive: u32,
    _drive_lock: Lock,
    /// Cartridges this job holds (claimed or mounted), with their locks.
    held: BTreeMap<String, Lock>,
    /// Only scratch cartridges of this media class are claimed ("": only
    /// cartridges without a class; a classed cartridge is kept for the
    /// policies that ask for its class, e.g. the offsite copies' set).
    media_class: String,
}

impl<'l> Session<'l> {
    pub(super) fn start(lib: &'l Library) -> Result<Self> {
        let mut busy = Vec::new();
        for d in 0..lib.config.drives {
            match lock::try_lock(&lib.drive_lock_path(d), &format!("drive {d}")) {
                Ok(l) => {
                    return Ok(Session {
                        lib,
                        drive: d,
                        _drive_lock: l,
                        held: BTreeMap::new(),
                        media_class: String::new(),
                    })
                }
                Err(Error::Busy { holder, .. }) => busy.push(format!("drive {d}: {holder}")),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy {
            what: format!("every drive of library {}", lib.dir.display()),
            holder: busy.join("; "),
        })
    }

    /// Claims only scratch cartridges of `class` from now on ("": of none).
    pub fn set_media_class(&mut self, class: &str) {
        self.media_class = class.to_string();
    }

    fn hold(&mut self, barcode: &str) -> Result<()> {
        if !self.held.contains_key(barcode) {
            let l = self.lib.lock_cartridge(barcode)?;
            self.held.insert(barcode.to_string(), l);
        }
        Ok(())
    }

    /// Checks the VOL1 label against the barcode as the cartridge loads.
    fn check_label(&self, dev: &mut dyn TapeDevice, barcode: &str) -> Result<()> {
        volume::read_vol1(dev, barcode, Some(barcode))?;
        dev.rewind()
    }
}

impl Changer for Session<'_> {
    fn claim_scratch(&mut self) -> Result<String> {
        let _g = self.lib.state_lock()?;
        let recs = self.lib.records()?;
        let mut counts: BTreeMap<CartState, usize> = BTreeMap::new();
        for r in recs.values() {
            *counts.entry(r.state).or_default() += 1;
        }
        for r in recs.values() {
            if r.state != CartState::Scratch
                || r.media_class != self.media_class
                || matches!(r.location, Location::Ie(_))
                || self.held.contains_key(&r.barcode)
            {
                continue;
            }
            let Ok(l) = self.lib.lock_cartridge(&r.barcode) else {
                continue;
            };
            let mut rec = r.clone();
            rec.state = CartState::Active;
            rec.last_written = Some(state::now());
            self.lib.save(&mut rec)?;
            self.held.insert(rec.barcode.clone(), l);
            return Ok(rec.barcode);
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let class = if self.media_class.is_empty() {
            String::new()
        } else {
            format!(" of media class {}", self.media_class)
        };
        Err(self.lib.err(format!(
            "has no scratch cartridge{class} to write on ({} cartridges: {})",
            recs.len(),
            if summary.is_empty() {
                "none".into()
            } else {
                summary.join(", ")
            }
        )))
    }

    fn mount(&mut self, barcode: &str) -> Result<Mounted> {
        self.hold(barcode)?;
        let mut rec = self.lib.record(barcode)?;
        match (rec.state, rec.location) {
            (CartState::Error, _) => {
                return Err(self.lib.err(format!(
                    "cartridge {barcode} is in error state: {}",
                    rec.note.as_deref().unwrap_or("no note")
                )))
            }
            (_, Location::Ie(p)) => {
                return Err(self.lib.err(format!(
                    "cartridge {barcode} is in import/export port {p}; import it first"
                )))
            }
            _ => {}
        }
        if rec.location != Location::Drive(self.drive) {
            let _g = self.lib.state_lock()?;
            let recs = self.lib.records()?;
            // A cartridge left in this drive by a job that ended goes home first.
            if let Some(other) = self.lib.occupant(&recs, Location::Drive(self.drive)) {
                let _c = self.lib.lock_cartridge(&other.barcode)?;
                let home = self.lib.home_for(&recs, other)?;
                self.lib
                    .relocate(&recs, &other.barcode, Location::Slot(home))?;
            }
            let recs = self.lib.records()?;
            self.lib
                .relocate(&recs, barcode, Location::Drive(self.drive))?;
            rec = recs[barcode].clone();
        }
        let mut cart = match self.lib.open_image(&rec) {
            Ok(c) => c,
            Err(e) => {
                self.reject(barcode, &e.to_string());
                return Err(e);
            }
        };
        let report = cart.report().clone();
        if report.crashed() {
            let note = format!(
                "the last writer stopped without closing it ({} torn bytes after the last complete record); incomplete tape files are not readable",
                report.torn_bytes
            );
            tracing::warn!(cartridge = barcode, "{note}");
            let _g = self.lib.state_lock()?;
            let mut r = self.lib.record(barcode)?;
            r.note = Some(note);
            self.lib.save(&mut r)?;
        }
        if let Err(e) = self.check_label(&mut cart, barcode) {
            drop(cart);
            self.reject(barcode, &e.to_string());
            return Err(e);
        }
        Ok(Mounted {
            volser: barcode.to_string(),
            device: Box::new(cart),
        })
    }

    fn dismount(&mut self, mut m: Mounted, outcome: Outcome) -> Result<()> {
        m.device.unload()?;
        drop(m.device);
        {
            let _g = self.lib.state_lock()?;
            let mut rec = self.lib.record(&m.volser)?;
            match outcome {
                Outcome::Written { full } => {
                    rec.state = if full {
                        CartState::Full
                    } else {
                        CartState::Active
                    };
                    rec.last_written = Some(state::now());
                    rec.note = None;
                }
                Outcome::Read => {}
            }
            self.lib.save(&mut rec)?;
            let recs = self.lib.records()?;
            let home = self.lib.home_for(&recs, &rec)?;
            self.lib
                .relocate(&recs, &rec.barcode, Location::Slot(home))?;
        }
        self.held.remove(&m.volser);
        Ok(())
    }
}

impl Session<'_> {
    /// A cartridge that cannot be used: in error state, back in its slot and
    /// let go, so the drive is free for another (best effort: the error
    /// that made it unusable is the one reported).
    fn reject(&mut self, barcode: &str, why: &str) {
        if let Err(e) = self.mark_error(barcode, why) {
            tracing::error!(cartridge = barcode, error = %e, "could not put the cartridge in error state");
        }
        let home = (|| -> Result<()> {
            let _g = self.lib.state_lock()?;
            let recs = self.lib.records()?;
            let rec = self.lib.record(barcode)?;
            let home = self.lib.home_for(&recs, &rec)?;
            self.lib.relocate(&recs, barcode, Location::Slot(home))
        })();
        if let Err(e) = home {
            tracing::warn!(cartridge = barcode, error = %e, "could not take the cartridge back to its slot");
        }
        self.held.remove(barcode);
    }

    fn mark_error(&self, barcode: &str, why: &str) -> Result<()> {
        let _g = self.lib.state_lock()?;
        let mut r = self.lib.record(barcode)?;
        r.state = CartState::Error;
        r.note = Some(why.to_string());
        self.lib.save(&mut r)
    }
}
