//! Duplicates a save set's tape file onto cartridges of another media class (BRMS DUPMEDBRM): block for block, still encrypted, checked against the digest the save recorded.
//!
//! No key is involved: the blocks are copied as they are on tape. One drive
//! reads while another writes (a thread each, joined by a bounded queue of
//! blocks, so memory is the queue's, whatever the save set's size). The
//! digest of what was read must be the one the save wrote, or the copy is
//! abandoned (its tape file stays incomplete, never read as valid) and
//! nothing is recorded. A copy is recorded in the library's catalog only
//! once its trailer labels are written.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::error::{Error, Result};

use crate::saveset::catalog::{self, Copy, Place, Record};
use crate::tape::digest::BlockDigest;
use crate::tape::label::LabelDate;
use crate::tape::volume::{FileReader, FileSpec, FileWriter, Section, Target};
use crate::vtl::{CartRecord, Library};

/// Blocks in flight between the reading and the writing drive.
const QUEUE: usize = 16;

/// A finished copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    pub save_set: String,
    /// Its number (1 the first duplicate).
    pub copy: u8,
    /// Where it was read from: 0 the original, else a copy's number.
    pub from: u8,
    /// Cartridges it went on, in order.
    pub volumes: Vec<String>,
    pub sequence: u16,
    pub sections: Vec<Section>,
    pub blocks: u64,
    pub bytes: u64,
    pub digest: String,
    /// Whether the blocks read matched the digest recorded for them (when
    /// written, or by `scan` when it rebuilt the record; false only for
    /// records made before digests were kept).
    pub verified: bool,
    pub warnings: Vec<String>,
}

fn err(id: &str, reason: impl Into<String>) -> Error {
    Error::Copy {
        save_set: id.to_string(),
        reason: reason.into(),
    }
}

/// Volumes of a place, in order, each once.
pub fn volumes_of(sections: &[Section]) -> Vec<String> {
    let mut v: Vec<String> = sections.iter().map(|s| s.volser.clone()).collect();
    v.dedup();
    v
}

/// The places of `r` in the order to read them: those whose cartridges
/// are all in the library first (the original before copies), then the rest.
pub fn reading_order(l: &Library, r: &Record) -> Vec<Place> {
    let records = l.records().unwrap_or_default();
    ordered(l, &records, r)
}

fn ordered(l: &Library, records: &BTreeMap<String, CartRecord>, r: &Record) -> Vec<Place> {
    let mut places = r.places();
    places.sort_by_cached_key(|p| !l.holds(records, &volumes_of(&p.sections)));
    places
}

/// Copies save set `id` of `l` onto cartridges of `media_class` (appended
/// to the last active one of that class, or a scratch one), and records
/// the copy in the library's catalog.
pub fn copy(l: &Library, id: &str, media_class: &str, date: LabelDate) -> Result<Copied> {
    let r = catalog::find(l.dir(), id)?;
    let id = r.id.clone();
    if media_class.is_empty() {
        return Err(err(
            &id,
            "name the media class of the copy's cartridges: a copy goes on another set than the original",
        ));
    }
    crate::vtl::check_media_class(media_class).map_err(|m| err(&id, m))?;
    let records = l.records()?;
    for p in r.places() {
        for v in volumes_of(&p.sections) {
            if records
                .get(&v)
                .is_some_and(|c| c.media_class == media_class)
            {
                return Err(err(
                    &id,
                    format!(
                        "cartridge {v} holding {} is of media class {media_class}: a copy must go on cartridges of another class",
                        p.what()
                    ),
                ));
            }
        }
    }
    if l.config().drives < 2 {
        return Err(err(
            &id,
            format!(
                "a copy reads on one drive and writes on another; library {} has {}",
                l.dir().display(),
                l.config().drives
            ),
        ));
    }
    let from = ordered(l, &records, &r).swap_remove(0);
    let expected = from.digest.clone();
    let number = r
        .copies
        .iter()
        .map(|c| c.copy)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| err(&id, "it has 255 copies, the most labels can number"))?;
    let mut read_session = l.session()?;
    let mut write_session = l.session()?;
    write_session.set_media_class(media_class);
    let mut reader = FileReader::open(&mut read_session, &from.volume, from.sequence)?;
    let spec = FileSpec {
        file_id: reader.header().file_id.clone(),
        created: reader.header().created.or(Some(date)),
        expires: reader.header().expires,
        max_block: reader.header2().max_block,
        copy: number,
    };
    let target = Library::latest_in(&records, media_class).map_or(Target::Scratch, Target::Append);
    let mut writer = FileWriter::begin(&mut write_session, target, spec)?;
    let (tx, rx) = sync_channel::<Result<Vec<u8>>>(QUEUE);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let read = std::thread::scope(|s| {
        s.spawn(|| read_blocks(&mut reader, tx, back_rx));
        write_blocks(&mut writer, rx, back_tx)
    });
    drop(reader);
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            // The copy's tape file stays incomplete: never read, written over.
            drop(writer);
            return Err(e);
        }
    };
    // The writer digested every block it wrote: the blocks read, in order.
    let read_digest = writer.digest().text();
    let blocks = writer.digest().blocks();
    let mut warnings = Vec::new();
    let verified = !expected.is_empty();
    if verified && read_digest != expected {
        drop(writer);
        return Err(err(
            &id,
            format!(
                "the blocks read from cartridge {} (file {}) do not match the digest recorded when they were written ({read_digest} read, {expected} recorded): the tape file changed or is damaged; `cinta-agent verify --save-set {id}` names the objects it costs",
                from.volume,
                from.sequence,
            ),
        ));
    }
    if !verified {
        warnings.push(format!(
            "save set {id} has no recorded digest (made before digests were kept; `scan` records one): the copy holds what was read from cartridge {}, checked against nothing",
            from.volume
        ));
    }
    let file = writer.finish()?;
    warnings.extend(file.warnings.iter().cloned());
    let copy = Copy {
        copy: number,
        volume: file.sections[0].volser.clone(),
        sequence: file.sequence,
        sections: file.sections.clone(),
        media_class: media_class.to_string(),
        made: date_seconds(),
        digest: file.digest.clone(),
    };
    // Read again: the record may have changed while the copy ran.
    let mut now = catalog::find(l.dir(), &id)?;
    if now.copies.iter().any(|c| c.copy == number) {
        return Err(err(
            &id,
            format!("another copy numbered {number} was recorded while this one was made; this one (on {}) is not recorded", copy.volume),
        ));
    }
    if now.digest.is_empty() && from.copy == 0 {
        now.digest = file.digest.clone();
    }
    now.copies.push(copy);
    catalog::put(l.dir(), &now)?;
    Ok(Copied {
        save_set: id,
        copy: number,
        from: from.copy,
        volumes: volumes_of(&file.sections),
        sequence: file.sequence,
        sections: file.sections,
        blocks,
        bytes,
        digest: file.digest,
        verified,
        warnings,
    })
}

/// The keyless digest of the tape file `sequence` starting on `volume`,
/// read block by block (`scan` rebuilds a record's digest with it).
pub fn digest_of<C: crate::tape::volume::Changer + ?Sized>(
    changer: &mut C,
    volume: &str,
    sequence: u16,
) -> Result<String> {
    let mut r = FileReader::open(changer, volume, sequence)?;
    let mut d = BlockDigest::new();
    let mut buf = Vec::new();
    while r.read_block(&mut buf)? {
        d.update(&buf);
    }
    Ok(d.text())
}

fn date_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The reading drive's side: every data block of the file, in order, then
/// the end (the channel closes); a read error is sent and ends it.
fn read_blocks<C: crate::tape::volume::Changer + ?Sized>(
    reader: &mut FileReader<'_, C>,
    tx: SyncSender<Result<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        match reader.read_block(&mut buf) {
            Ok(true) => {
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Ok(false) => return,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The writing drive's side: writes each block as it comes (the writer
/// digests it); the bytes written.
fn write_blocks<C: crate::tape::volume::Changer + ?Sized>(
    writer: &mut FileWriter<'_, C>,
    rx: Receiver<Result<Vec<u8>>>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<u64> {
    let mut bytes = 0u64;
    for block in rx {
        let block = block?;
        writer.write_block(&block)?;
        bytes += block.len() as u64;
        let _ = back.send(block);
    }
    Ok(bytes)
}
