//! What a job does with a library, the same for the command line and the daemon: save an entry and record it in the library's catalog, read a save set's objects back from tape, expire a save set (destroying its key when asked).

use crate::error::{Error, Result};
use crate::keys::KeySource;
use crate::kmip_keys::{KmipKeySource, PREFIX};
use crate::saveset::catalog::{self, Record};
use crate::saveset::format::FLAG_CHANGED;
use crate::saveset::read::SaveSet;
use crate::saveset::save::{self, Progress, SaveOptions, SaveReport};
use crate::tape::volume::Target;
use crate::vtl::Library;
use crate::wire;

/// Saves `opts` onto `target` in `l` (only on cartridges of `media_class`,
/// if not empty) and records the save set in the library's catalog once
/// its tape file is complete.
pub fn save_and_record(
    l: &Library,
    keys: &mut dyn KeySource,
    opts: &SaveOptions,
    target: Target,
    media_class: &str,
    progress: &Progress,
) -> Result<SaveReport> {
    let mut session = l.session()?;
    session.set_media_class(media_class);
    let report = save::save(&mut session, target, keys, opts, progress)?;
    let first = &report.file.sections[0];
    let info = &report.info;
    let rec = Record {
        id: report.save_set.clone(),
        key_id: report.key_id.clone(),
        source: info.source.clone(),
        level: info.level,
        since: info.since,
        started: info.started,
        host: info.host.clone(),
        volume: first.volser.clone(),
        sequence: report.file.sequence,
        sections: report.file.sections.clone(),
        objects: report.objects,
        bytes: report.bytes,
        compression: opts.compression,
        digest: report.file.digest.clone(),
        copies: vec![],
    };
    catalog::put(l.dir(), &rec)?;
    Ok(report)
}

/// What a finished save tells the controller.
pub fn saved(report: &SaveReport) -> wire::Saved {
    wire::Saved {
        save_set: report.save_set.clone(),
        key_id: report.key_id.clone(),
        source: report.info.source.clone(),
        volumes: crate::copy::volumes_of(&report.file.sections),
        objects: report.objects,
        bytes: report.bytes,
        warnings: report.warnings.clone(),
        changed: report
            .changed
            .iter()
            .take(wire::CHANGED_NAMED)
            .cloned()
            .collect(),
        changed_count: report.changed.len() as u64,
    }
}

/// Reads save set `id`'s index back from tape and gives each object to
/// `each`, in index order; the number of objects.
pub fn objects(
    l: &Library,
    keys: &mut dyn KeySource,
    id: &str,
    mut each: impl FnMut(wire::Object) -> Result<()>,
) -> Result<u64> {
    let r = catalog::find(l.dir(), id)?;
    let mut session = l.session()?;
    let mut ss = SaveSet::open(&mut session, &r.volume, r.sequence, keys)?;
    let mut n = 0;
    for e in ss.index()? {
        let e = e?;
        let kind = serde_json::to_value(e.meta.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        each(wire::Object {
            path: crate::saveset::names::escape(&e.meta.path),
            kind,
            size: e.meta.size,
            mtime: e.meta.mtime.0,
            changed: e.flags & FLAG_CHANGED != 0,
        })?;
        n += 1;
    }
    Ok(n)
}

/// An expired save set: its record, and whether its key was destroyed.
pub struct Expired {
    pub record: Record,
    pub shredded: bool,
}

/// Expires save set `id` of `l`: with `shred`, its key is destroyed on the
/// key manager first (every copy of it is unreadable from then on), then
/// its record leaves the catalog (its tape file stays until the cartridge
/// is reused).
pub fn expire(l: &Library, id: &str, shred: Option<&mut KmipKeySource>) -> Result<Expired> {
    let r = catalog::find(l.dir(), id)?;
    let shredded = match shred {
        Some(keys) => {
            if !r.key_id.starts_with(PREFIX) {
                return Err(Error::Key {
                    key_id: r.key_id.clone(),
                    reason: format!(
                        "save set {} is encrypted with a key from a key file; one save set's key cannot be destroyed alone (crypto-shredding needs the key manager)",
                        r.id
                    ),
                });
            }
            keys.shred(&r.key_id)?;
            true
        }
        None => false,
    };
    catalog::remove(l.dir(), &r.id)?;
    Ok(Expired {
        record: r,
        shredded,
    })
}
