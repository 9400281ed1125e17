//! The virtual tape library: a directory of slots, drives, import/export ports and SIMH cartridges.
//!
//! ```text
//! LIBRARY/
//!   library.json          shape: slots, drives, ports, cartridge size (fixed at creation)
//!   library.lock          held briefly by every state change
//!   cartridges/BC.tap     the cartridge image (SIMH), BC.tap.idx its index
//!   cartridges/BC.json    its state and location (replaced atomically)
//!   cartridges/BC.lock    held by the job using the cartridge
//!   drives/N.lock         held by the job using drive N
//! ```
//!
//! A cartridge's location lives only in its own state file, so the slot map
//! is derived, never stored twice. Locks are flocks: they end with the
//! process that holds them.

pub mod lock;
pub mod session;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tape::label;
use crate::tape::vcart::{self, Cartridge};
use crate::tape::volume::{self, VolumeInfo};
pub use session::Session;
pub use state::{CartRecord, CartState, LibraryConfig, Location};

/// Owner written into VOL1 labels of new cartridges.
pub const OWNER: &str = "CINTA";

/// A virtual tape library on disk.
#[derive(Debug, Clone)]
pub struct Library {
    dir: PathBuf,
    config: LibraryConfig,
}

/// A cartridge with how much of it is used.
#[derive(Debug, Clone, Serialize)]
pub struct CartView {
    #[serde(flatten)]
    pub record: CartRecord,
    /// Bytes of the image on disk.
    pub used: u64,
}

/// Contents of a cartridge, for `dump`.
#[derive(Debug, Clone, Serialize)]
pub struct Dump {
    pub barcode: String,
    pub state: CartState,
    pub used: u64,
    pub capacity: u64,
    pub crashed_writer: bool,
    pub torn_bytes: u64,
    pub vol1_owner: String,
    pub files: Vec<DumpFile>,
    pub append_at: Option<u64>,
}

/// One tape file in a dump.
#[derive(Debug, Clone, Serialize)]
pub struct DumpFile {
    pub sequence: u16,
    pub section: u16,
    pub file_id: String,
    pub file_set_id: String,
    pub created: String,
    pub header_block: u64,
    pub first_block: u64,
    pub blocks: u64,
    pub max_block: u32,
    /// "EOF", "EOV -> NEXT" or "incomplete".
    pub end: String,
}

fn valid_barcode(b: &str) -> bool {
    label::check_volser(b).is_ok() && b.len() == 6
}

impl Library {
    /// Creates a library in `dir` (which must not exist or be empty).
    pub fn create(dir: &Path, config: LibraryConfig) -> Result<Self> {
        let lib = Library {
            dir: dir.to_path_buf(),
            config,
        };
        if lib.config.slots == 0 || lib.config.drives == 0 {
            return Err(lib.err("needs at least one slot and one drive"));
        }
        if lib.config.early_warning >= lib.config.capacity {
            return Err(
                lib.err("the early-warning margin must be smaller than the cartridge capacity")
            );
        }
        if dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir.display().to_string(), e))?
                .next()
                .is_some()
        {
            return Err(
                lib.err("directory is not empty; a library is created in a new or empty directory")
            );
        }
        for sub in ["cartridges", "drives"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        let json = serde_json::to_vec_pretty(&lib.config).expect("config serializes");
        state::write_atomic(&dir.join("library.json"), &json)?;
        Ok(lib)
    }

    /// Opens an existing library.
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg = dir.join("library.json");
        if !cfg.exists() {
            return Err(Error::Library {
                library: dir.display().to_string(),
                reason: "not a cinta library (no library.json)".into(),
            });
        }
        let config: LibraryConfig = state::read_json(&cfg)?;
        if config.format != state::FORMAT {
            return Err(Error::Library {
                library: dir.display().to_string(),
                reason: format!(
                    "library format {} is not supported (this agent reads {})",
                    config.format,
                    state::FORMAT
                ),
            });
        }
        Ok(Library {
            dir: dir.to_path_buf(),
            config,
        })
    }

    pub fn config(&self) -> &LibraryConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Library {
            library: self.dir.display().to_string(),
            reason: reason.into(),
        }
    }

    fn cart_file(&self, barcode: &str, ext: &str) -> PathBuf {
        self.dir.join("cartridges").join(format!("{barcode}.{ext}"))
    }

    /// Path of a cartridge's SIMH image.
    pub fn image_path(&self, barcode: &str) -> PathBuf {
        self.cart_file(barcode, "tap")
    }

    fn drive_lock_path(&self, drive: u32) -> PathBuf {
        self.dir.join("drives").join(format!("{drive}.lock"))
    }

    fn state_lock(&self) -> Result<lock::Lock> {
        lock::lock(&self.dir.join("library.lock"))
    }

    fn lock_cartridge(&self, barcode: &str) -> Result<lock::Lock> {
        lock::try_lock(
            &self.cart_file(barcode, "lock"),
            &format!("cartridge {barcode}"),
        )
    }

    fn save(&self, rec: &mut CartRecord) -> Result<()> {
        rec.updated = state::now();
        let json = serde_json::to_vec_pretty(rec).expect("record serializes");
        state::write_atomic(&self.cart_file(&rec.barcode, "json"), &json)
    }

    /// Every cartridge, by barcode. Fails if two claim the same place.
    pub fn records(&self) -> Result<BTreeMap<String, CartRecord>> {
        let mut out = BTreeMap::new();
        let dir = self.dir.join("cartridges");
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(dir.display().to_string(), e))? {
            let path = entry
                .map_err(|e| Error::io(dir.display().to_string(), e))?
                .path();
            if path.extension().is_some_and(|e| e == "json") {
                let rec: CartRecord = state::read_json(&path)?;
                out.insert(rec.barcode.clone(), rec);
            }
        }
        let mut seen: BTreeMap<Location, &str> = BTreeMap::new();
        for r in out.values() {
            if let Some(other) = seen.insert(r.location, &r.barcode) {
                return Err(self.err(format!(
                    "inconsistent: cartridges {other} and {} are both in {}",
                    r.barcode, r.location
                )));
            }
        }
        Ok(out)
    }

    /// One cartridge's record.
    pub fn record(&self, barcode: &str) -> Result<CartRecord> {
        let p = self.cart_file(barcode, "json");
        if !p.exists() {
            return Err(self.err(format!("has no cartridge {barcode}")));
        }
        state::read_json(&p)
    }

    /// Every cartridge with its used bytes.
    pub fn list(&self) -> Result<Vec<CartView>> {
        Ok(self
            .records()?
            .into_values()
            .map(|record| {
                let used =
                    std::fs::metadata(self.image_path(&record.barcode)).map_or(0, |m| m.len());
                CartView { record, used }
            })
            .collect())
    }

    /// The active cartridge of `class` ("": of none) written last that is
    /// in the library, to append the next tape file to.
    pub fn latest_active(&self, class: &str) -> Result<Option<String>> {
        Ok(Library::latest_in(&self.records()?, class))
    }

    /// [`Library::latest_active`] among `records` (as [`Library::records`] read them).
    pub fn latest_in(records: &BTreeMap<String, CartRecord>, class: &str) -> Option<String> {
        records
            .values()
            .filter(|r| {
                r.state == CartState::Active
                    && !matches!(r.location, Location::Ie(_))
                    && r.media_class == class
            })
            .max_by_key(|r| r.last_written)
            .map(|r| r.barcode.clone())
    }

    /// Whether every cartridge of `volumes` is in the library and usable
    /// (not in error state, not in an import/export port), by `records`.
    pub fn holds(&self, records: &BTreeMap<String, CartRecord>, volumes: &[String]) -> bool {
        volumes.iter().all(|v| {
            records.get(v).is_some_and(|r| {
                r.state != CartState::Error
                    && !matches!(r.location, Location::Ie(_))
                    && self.image_path(v).exists()
            })
        })
    }

    /// Who holds a drive, if anyone.
    pub fn drive_holder(&self, drive: u32) -> Option<String> {
        match lock::try_lock(&self.drive_lock_path(drive), "drive") {
            Ok(_) => None,
            Err(Error::Busy { holder, .. }) => Some(holder),
            Err(e) => Some(e.to_string()),
        }
    }

    fn free(
        &self,
        recs: &BTreeMap<String, CartRecord>,
        want: fn(u32) -> Location,
        count: u32,
    ) -> Option<u32> {
        (1..=count).find(|&n| !recs.values().any(|r| r.location == want(n)))
    }

    fn check_place(&self, loc: Location) -> Result<()> {
        let ok = match loc {
            Location::Slot(n) => (1..=self.config.slots).contains(&n),
            Location::Drive(n) => n < self.config.drives,
            Location::Ie(n) => (1..=self.config.ie_ports).contains(&n),
        };
        if ok {
            Ok(())
        } else {
            Err(self.err(format!(
                "has no {loc} (slots 1-{}, drives 0-{}, import/export ports 1-{})",
                self.config.slots,
                self.config.drives - 1,
                self.config.ie_ports
            )))
        }
    }

    fn occupant<'a>(
        &self,
        recs: &'a BTreeMap<String, CartRecord>,
        loc: Location,
    ) -> Option<&'a CartRecord> {
        recs.values().find(|r| r.location == loc)
    }

    /// Adds a new cartridge, labelled with its barcode, as scratch in a free
    /// slot (or the given one).
    pub fn add(
        &self,
        barcode: &str,
        slot: Option<u32>,
        capacity: Option<u64>,
        media_class: &str,
    ) -> Result<CartRecord> {
        check_media_class(media_class).map_err(|m| self.err(m))?;
        if !valid_barcode(barcode) {
            return Err(self.err(format!(
                "barcode {barcode:?} must be 6 upper-case letters or digits"
            )));
        }
        let _g = self.state_lock()?;
        let recs = self.records()?;
        if recs.contains_key(barcode) {
            return Err(self.err(format!("already has a cartridge {barcode}")));
        }
        let slot = match slot {
            Some(s) => {
                self.check_place(Location::Slot(s))?;
                if let Some(o) = self.occupant(&recs, Location::Slot(s)) {
                    return Err(self.err(format!("slot {s} holds cartridge {}", o.barcode)));
                }
                s
            }
            None => self
                .free(&recs, Location::Slot, self.config.slots)
                .ok_or_else(|| {
                    self.err(format!(
                        "has no free slot for {barcode} (all {} full)",
                        self.config.slots
                    ))
                })?,
        };
        let capacity = capacity.unwrap_or(self.config.capacity);
        let early_warning = self.config.early_warning.min(capacity / 2);
        // An image without a state file is a half-done add: nothing committed, replace it.
        let image = self.image_path(barcode);
        for p in [image.clone(), vcart::index_path(&image)] {
            let _ = std::fs::remove_file(p);
        }
        let mut cart = Cartridge::create(&image, barcode, capacity, early_warning)?;
        volume::label_volume(&mut cart, barcode, OWNER)?;
        drop(cart);
        let mut rec = CartRecord {
            barcode: barcode.to_string(),
            state: CartState::Scratch,
            location: Location::Slot(slot),
            home_slot: Some(slot),
            capacity,
            early_warning,
            note: None,
            updated: 0,
            last_written: None,
            media_class: media_class.to_string(),
        };
        self.save(&mut rec)?;
        Ok(rec)
    }

    /// Writes a new VOL1 on a scratch, expired or (with `force`) error
    /// cartridge, making it scratch. Refuses cartridges that hold data.
    pub fn label(&self, barcode: &str, force: bool) -> Result<()> {
        let _g = self.state_lock()?;
        let mut rec = self.record(barcode)?;
        match rec.state {
            CartState::Scratch | CartState::Expired => {}
            CartState::Error if force => {}
            CartState::Error => {
                return Err(self.err(format!(
                    "cartridge {barcode} is in error state ({}); relabel with --force to erase it",
                    rec.note.as_deref().unwrap_or("no note")
                )))
            }
            s => {
                return Err(self.err(format!(
                    "cartridge {barcode} is {s}: it holds data; expire it before relabelling"
                )))
            }
        }
        let _c = self.lock_cartridge(barcode)?;
        let image = self.image_path(barcode);
        let mut cart = match Cartridge::open(&image, barcode, rec.capacity, rec.early_warning) {
            Ok(c) => c,
            Err(_) if force => {
                let _ = std::fs::remove_file(&image);
                Cartridge::create(&image, barcode, rec.capacity, rec.early_warning)?
            }
            Err(e) => return Err(e),
        };
        volume::label_volume(&mut cart, barcode, OWNER)?;
        drop(cart);
        rec.state = CartState::Scratch;
        rec.note = None;
        self.save(&mut rec)
    }

    /// Takes a cartridge out of error state after a repair, keeping its
    /// data: its image must open and its VOL1 label name it; it becomes
    /// scratch if it holds no tape file, full if its last file continues on
    /// another cartridge, active otherwise. Returns the new state.
    pub fn clear_error(&self, barcode: &str) -> Result<CartState> {
        let _g = self.state_lock()?;
        let mut rec = self.record(barcode)?;
        if rec.state != CartState::Error {
            return Err(self.err(format!(
                "cartridge {barcode} is {}, not in error state: nothing to clear",
                rec.state
            )));
        }
        let _c = self.lock_cartridge(barcode)?;
        let still = |e: Error| {
            self.err(format!(
                "cartridge {barcode} is still not usable, so it stays in error state: {e}"
            ))
        };
        let mut cart = self.open_image(&rec).map_err(still)?;
        volume::read_vol1(&mut cart, barcode, Some(barcode)).map_err(still)?;
        let info = volume::inspect(&mut cart, barcode).map_err(still)?;
        drop(cart);
        rec.state = if info.files.is_empty() && info.incomplete.is_none() {
            CartState::Scratch
        } else if info.append_at.is_none() {
            CartState::Full
        } else {
            CartState::Active
        };
        rec.note = None;
        self.save(&mut rec)?;
        Ok(rec.state)
    }

    /// Marks an active or full cartridge expired (its data no longer retained).
    pub fn expire(&self, barcode: &str) -> Result<()> {
        let _g = self.state_lock()?;
        let mut rec = self.record(barcode)?;
        if !matches!(rec.state, CartState::Active | CartState::Full) {
            return Err(self.err(format!(
                "cartridge {barcode} is {}: only active or full cartridges expire",
                rec.state
            )));
        }
        rec.state = CartState::Expired;
        self.save(&mut rec)
    }

    /// Moves a cartridge to `to`. The caller holds the state lock and the
    /// cartridge is not in use by anyone else.
    fn relocate(
        &self,
        recs: &BTreeMap<String, CartRecord>,
        barcode: &str,
        to: Location,
    ) -> Result<()> {
        self.check_place(to)?;
        let mut rec = recs
            .get(barcode)
            .cloned()
            .ok_or_else(|| self.err(format!("has no cartridge {barcode}")))?;
        if rec.location == to {
            return Ok(());
        }
        if let Some(o) = self.occupant(recs, to) {
            return Err(self.err(format!("{to} holds cartridge {}", o.barcode)));
        }
        // A cartridge remembers the last slot it sat in, to go back there.
        if let Location::Slot(s) = rec.location {
            rec.home_slot = Some(s);
        }
        if let Location::Slot(s) = to {
            rec.home_slot = Some(s);
        }
        rec.location = to;
        self.save(&mut rec)
    }

    /// Moves a cartridge (not in use) to a free place.
    pub fn move_to(&self, barcode: &str, to: Location) -> Result<()> {
        let _g = self.state_lock()?;
        let recs = self.records()?;
        let _c = self.lock_cartridge(barcode)?;
        self.relocate(&recs, barcode, to)
    }

    /// Loads a cartridge into a drive (the first empty one if not given).
    pub fn load(&self, barcode: &str, drive: Option<u32>) -> Result<u32> {
        let _g = self.state_lock()?;
        let recs = self.records()?;
        let drive = match drive {
            Some(d) => d,
            None => (0..self.config.drives)
                .find(|&d| self.occupant(&recs, Location::Drive(d)).is_none())
                .ok_or_else(|| self.err("has no empty drive"))?,
        };
        if let Some(rec) = recs.get(barcode) {
            if matches!(rec.location, Location::Ie(_)) {
                return Err(self.err(format!(
                    "cartridge {barcode} is in {}; import it first",
                    rec.location
                )));
            }
        }
        let _c = self.lock_cartridge(barcode)?;
        self.relocate(&recs, barcode, Location::Drive(drive))?;
        Ok(drive)
    }

    /// Where the cartridge in `drive` goes back to: its home slot, or any free one.
    fn home_for(&self, recs: &BTreeMap<String, CartRecord>, rec: &CartRecord) -> Result<u32> {
        rec.home_slot
            .filter(|&s| self.occupant(recs, Location::Slot(s)).is_none())
            .or_else(|| self.free(recs, Location::Slot, self.config.slots))
            .ok_or_else(|| self.err(format!("has no free slot to put {} back into", rec.barcode)))
    }

    /// Returns the cartridge in a drive to its home slot (or a free one).
    pub fn unload(&self, drive: u32) -> Result<String> {
        self.check_place(Location::Drive(drive))?;
        let _g = self.state_lock()?;
        let recs = self.records()?;
        let rec = self
            .occupant(&recs, Location::Drive(drive))
            .ok_or_else(|| self.err(format!("drive {drive} is empty")))?;
        let _c = self.lock_cartridge(&rec.barcode)?;
        let home = self.home_for(&recs, rec)?;
        self.relocate(&recs, &rec.barcode, Location::Slot(home))?;
        Ok(rec.barcode.clone())
    }

    /// Moves a cartridge to a free import/export port, to be taken out.
    pub fn export(&self, barcode: &str) -> Result<u32> {
        let recs = self.records()?;
        let port = self
            .free(&recs, Location::Ie, self.config.ie_ports)
            .ok_or_else(|| self.err("has no free import/export port"))?;
        if matches!(recs.get(barcode).map(|r| r.location), Some(Location::Drive(d)) if d < self.config.drives)
        {
            self.unload(match recs[barcode].location {
                Location::Drive(d) => d,
                _ => unreachable!(),
            })?;
        }
        self.move_to(barcode, Location::Ie(port))?;
        Ok(port)
    }

    /// Moves cartridges from the import/export ports into free slots (all, or one).
    pub fn import(&self, barcode: Option<&str>) -> Result<Vec<(String, u32)>> {
        let mut done = Vec::new();
        let recs = self.records()?;
        let waiting: Vec<String> = recs
            .values()
            .filter(|r| {
                matches!(r.location, Location::Ie(_)) && barcode.is_none_or(|b| b == r.barcode)
            })
            .map(|r| r.barcode.clone())
            .collect();
        if let Some(b) = barcode {
            if waiting.is_empty() {
                return Err(self.err(format!("cartridge {b} is not in an import/export port")));
            }
        }
        for b in waiting {
            let recs = self.records()?;
            let slot = self
                .free(&recs, Location::Slot, self.config.slots)
                .ok_or_else(|| self.err(format!("has no free slot to import {b} into")))?;
            self.move_to(&b, Location::Slot(slot))?;
            done.push((b, slot));
        }
        Ok(done)
    }

    /// Puts a cartridge image from outside (another library, the vault)
    /// into a free import/export port. The image must be a labelled SIMH
    /// cartridge; its VOL1 serial is its barcode and must match `barcode`
    /// if one is given. Nothing is kept when it is refused.
    pub fn insert(
        &self,
        file: &Path,
        barcode: Option<&str>,
        capacity: Option<u64>,
        media_class: &str,
    ) -> Result<CartRecord> {
        check_media_class(media_class).map_err(|m| self.err(m))?;
        let name = file.display().to_string();
        let capacity = capacity.unwrap_or(self.config.capacity);
        let mut probe = Cartridge::open(file, &name, u64::MAX / 2, 0).map_err(|e| match e {
            Error::Io { source, .. } => Error::io(format!("cartridge file {name}"), source),
            other => other,
        })?;
        let used = probe.used();
        let vol1 = volume::read_vol1(&mut probe, &name, barcode)?;
        drop(probe);
        let bc = vol1.volser.clone();
        if !valid_barcode(&bc) {
            return Err(self.err(format!(
                "{name}: volume serial {bc:?} is not a 6-character barcode"
            )));
        }
        if used > capacity {
            return Err(self.err(format!(
                "{name}: holds {used} bytes, more than the {capacity}-byte capacity"
            )));
        }
        let _g = self.state_lock()?;
        let recs = self.records()?;
        if recs.contains_key(&bc) {
            return Err(self.err(format!("already has a cartridge {bc}")));
        }
        let port = self
            .free(&recs, Location::Ie, self.config.ie_ports)
            .ok_or_else(|| self.err("has no free import/export port"))?;
        let image = self.image_path(&bc);
        let tmp = image.with_extension("tap.importing");
        std::fs::copy(file, &tmp).map_err(|e| Error::io(format!("copying {name}"), e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(tmp.display().to_string(), e))?;
        let _ = std::fs::remove_file(vcart::index_path(&image));
        std::fs::rename(&tmp, &image).map_err(|e| Error::io(image.display().to_string(), e))?;
        let early_warning = self.config.early_warning.min(capacity / 2);
        let mut cart = Cartridge::open(&image, &bc, capacity, early_warning)?;
        let info = volume::inspect(&mut cart, &bc);
        drop(cart);
        let (state, note) = match info {
            Ok(i) if i.files.is_empty() && i.incomplete.is_none() => (CartState::Scratch, None),
            Ok(i) if i.append_at.is_none() => (CartState::Full, None),
            Ok(_) => (CartState::Active, None),
            Err(e) => (CartState::Error, Some(e.to_string())),
        };
        let mut rec = CartRecord {
            barcode: bc,
            state,
            location: Location::Ie(port),
            home_slot: None,
            capacity,
            early_warning,
            note,
            updated: 0,
            last_written: None,
            media_class: media_class.to_string(),
        };
        self.save(&mut rec)?;
        Ok(rec)
    }

    /// Takes a cartridge out of an import/export port to `to` (a file path).
    pub fn remove(&self, barcode: &str, to: &Path) -> Result<()> {
        let _g = self.state_lock()?;
        let rec = self.record(barcode)?;
        if !matches!(rec.location, Location::Ie(_)) {
            return Err(self.err(format!(
                "cartridge {barcode} is in {}; export it to an import/export port first",
                rec.location
            )));
        }
        if to.exists() {
            return Err(self.err(format!("{} exists; not overwritten", to.display())));
        }
        let _c = self.lock_cartridge(barcode)?;
        let image = self.image_path(barcode);
        std::fs::copy(&image, to).map_err(|e| {
            Error::io(
                format!("copying cartridge {barcode} to {}", to.display()),
                e,
            )
        })?;
        std::fs::File::open(to)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(to.display().to_string(), e))?;
        // The state file goes first: a crash now leaves an image without
        // state, which `add` or `insert` replaces.
        std::fs::remove_file(self.cart_file(barcode, "json"))
            .map_err(|e| Error::io(format!("cartridge {barcode}"), e))?;
        for p in [vcart::index_path(&image), image] {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    /// Opens a cartridge's image (the caller holds its lock).
    pub(crate) fn open_image(&self, rec: &CartRecord) -> Result<Cartridge> {
        Cartridge::open(
            &self.image_path(&rec.barcode),
            &rec.barcode,
            rec.capacity,
            rec.early_warning,
        )
    }

    /// Labels, tape files and block counts of a cartridge.
    pub fn dump(&self, barcode: &str) -> Result<Dump> {
        let rec = self.record(barcode)?;
        let _c = self.lock_cartridge(barcode)?;
        let mut cart = self.open_image(&rec)?;
        let report = cart.report().clone();
        let info: VolumeInfo = volume::inspect(&mut cart, barcode)?;
        let used = cart.used();
        drop(cart);
        let mut files: Vec<DumpFile> = Vec::new();
        for (f, complete) in info
            .files
            .iter()
            .map(|f| (f, true))
            .chain(info.incomplete.iter().map(|f| (f, false)))
        {
            let end = match &f.trailer {
                _ if !complete => "incomplete".to_string(),
                Some((_, t2)) if f.continues() => format!("EOV -> {}", t2.next_volser),
                _ => "EOF".to_string(),
            };
            files.push(DumpFile {
                sequence: f.hdr1.sequence,
                section: f.hdr1.section,
                file_id: f.hdr1.file_id.clone(),
                file_set_id: f.hdr1.file_set_id.clone(),
                created: f
                    .hdr1
                    .created
                    .map_or("-".into(), |d| format!("{}/{:03}", d.year, d.day)),
                header_block: f.header_block,
                first_block: f.first_block,
                blocks: f.blocks,
                max_block: f.hdr2.max_block,
                end,
            });
        }
        Ok(Dump {
            barcode: barcode.to_string(),
            state: rec.state,
            used,
            capacity: rec.capacity,
            crashed_writer: report.crashed(),
            torn_bytes: report.torn_bytes,
            vol1_owner: info.vol1.owner,
            files,
            append_at: info.append_at,
        })
    }

    /// Starts a job session on a free drive.
    pub fn session(&self) -> Result<Session<'_>> {
        Session::start(self)
    }
}

/// A media class name: 1-10 upper-case letters, digits, `_` or `-` ("" none).
pub fn check_media_class(c: &str) -> std::result::Result<(), String> {
    if c.len() > 10
        || !c
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || "_-".contains(ch))
    {
        return Err(format!(
            "media class {c:?}: up to 10 upper-case letters, digits, _ or -"
        ));
    }
    Ok(())
}
