//! Object search for restore requests: which save sets hold what, where their cartridges are now, and the restore point for a time.

use std::collections::BTreeMap;

use crate::catalog::{ObjectRow, SaveSetRecord, VolumeRecord};
use crate::error::{Error, Result};
use crate::state::State;

/// Rows read from the catalog for one search, at most (a restore point
/// looks at every copy of a path before choosing one).
const SCAN: u32 = 10_000;

/// An object found, with its save set and that save set's cartridges
/// (the original's, then its copies').
pub struct Found {
    pub object: ObjectRow,
    pub save_set: SaveSetRecord,
    pub volumes: Vec<VolumeRecord>,
}

/// Objects matching `glob` in active save sets (of `agent`, if not
/// empty); with `at` > 0, per path only the newest copy made at or
/// before `at`. Returns at most `limit` and whether more matched.
pub fn find_objects(
    state: &State,
    glob: &str,
    agent: &str,
    at: i64,
    limit: usize,
) -> Result<(Vec<Found>, bool)> {
    if glob.trim().is_empty() {
        return Err(Error::Invalid("give a pattern, e.g. '*/ledger.dat'".into()));
    }
    let exact = !glob.contains(['*', '?']);
    let rows = if exact && at > 0 && agent.is_empty() {
        // One path at one time: one index lookup.
        state
            .catalog()
            .restore_point(glob, at)?
            .into_iter()
            .collect()
    } else {
        state.catalog().find_objects(glob, SCAN)?
    };
    let scanned_all = rows.len() < SCAN as usize;
    let sets = state.save_set_map()?;
    let vols = state.volume_map()?;
    let mut found: Vec<Found> = rows
        .into_iter()
        .filter_map(|(id, object)| {
            let s = sets.get(&id)?;
            let usable = s.state != "expired" && (agent.is_empty() || s.agent == agent);
            (usable && (at == 0 || s.created <= at)).then(|| Found {
                object,
                // The original's cartridges, then every copy's.
                volumes: s
                    .places()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| vols.get(v).cloned())
                    .collect(),
                save_set: s.clone(),
            })
        })
        .collect();
    if at > 0 {
        // The restore point: per path, the newest copy at or before `at`.
        let mut newest: BTreeMap<String, Found> = BTreeMap::new();
        for f in found {
            match newest.get(&f.object.path) {
                Some(o) if o.save_set.created >= f.save_set.created => {}
                _ => {
                    newest.insert(f.object.path.clone(), f);
                }
            }
        }
        found = newest.into_values().collect();
    }
    let more = found.len() > limit || !scanned_all;
    found.truncate(limit);
    Ok((found, more))
}
