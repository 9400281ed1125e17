//! The recovery report (as BRMS's STRRCYBRM): to bring an LPAR, or one control group of it, back to a point in time, the save sets to restore in order (each source's full, then its cumulative and incrementals), each cartridge with where it is and how long its recall takes, the commands in order, the estimated time, and the risks to know of.

use std::collections::BTreeMap;

use crate::catalog::{JobRow, SaveSetRecord};
use crate::error::{Error, Result};
use crate::moves::HOME;
use crate::state::State;

/// A cartridge of a save set to restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cartridge {
    pub volser: String,
    /// `*HOME` (in its library) or a location.
    pub location: String,
    pub in_transit_to: String,
    /// Hours a standard and an emergency recall take (0 when in its library).
    pub recall_hours: u32,
    pub emergency_recall_hours: u32,
}

/// One save set to restore, in its place in the order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub order: u32,
    pub save_set: String,
    pub control_group: String,
    pub source: String,
    pub level: String,
    pub created: i64,
    pub library: String,
    pub bytes: u64,
    /// Restore time estimated from the time its save took.
    pub estimated_seconds: i64,
    pub cartridges: Vec<Cartridge>,
    pub command: String,
    /// Objects that changed while they were saved.
    pub changed: u64,
    /// Copies of it (each on its own cartridges).
    pub copies: u32,
}

/// What `cintactl report recovery` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub lpar: String,
    pub at: i64,
    pub control_group: String,
    pub steps: Vec<Step>,
    /// Until the last cartridge away is back (standard recall).
    pub recall_seconds: i64,
    pub restore_seconds: i64,
    pub total_seconds: i64,
    pub attention: Vec<String>,
}

/// How far back failed runs are listed as risks.
const RECENT: i64 = 7 * 86_400;

fn is_full(level: &str) -> bool {
    level.is_empty() || level == "full"
}

/// The save sets one source needs, newest first in `sets`: back to its
/// last full; a cumulative ends the incrementals before it.
fn chain(sets: &[&SaveSetRecord]) -> Vec<SaveSetRecord> {
    let mut out = Vec::new();
    let mut cumulative_taken = false;
    for s in sets {
        match s.level.as_str() {
            "incr" if !cumulative_taken => out.push((*s).clone()),
            "incr" => {}
            "cuml" if !cumulative_taken => {
                cumulative_taken = true;
                out.push((*s).clone());
            }
            "cuml" => {}
            _ => {
                out.push((*s).clone());
                break;
            }
        }
    }
    if out.last().is_some_and(|s| !is_full(&s.level)) {
        // No full under them: nothing restores from these alone.
        return Vec::new();
    }
    out.reverse();
    out
}

/// The plan for `lpar` (one control group if not empty) at `at`.
pub fn plan(state: &State, lpar: &str, at: i64, group: &str) -> Result<Plan> {
    if !state.cfg.lpars.iter().any(|l| l.name == lpar) {
        return Err(Error::Invalid(format!(
            "{lpar} is no LPAR of this controller's configuration"
        )));
    }
    if !group.is_empty() && state.cfg.control_group(group).is_none() {
        return Err(Error::Invalid(format!("no control group {group:?}")));
    }
    let all = state.catalog().save_sets()?;
    let vols = state.volume_map()?;
    // Per (control group, source): the save sets usable at `at`, newest first.
    let mut by_source: BTreeMap<(String, String), Vec<&SaveSetRecord>> = BTreeMap::new();
    for s in &all {
        if s.agent == lpar
            && s.state != "expired"
            && s.created <= at
            && (group.is_empty() || s.control_group == group)
        {
            by_source
                .entry((s.control_group.clone(), s.source.clone()))
                .or_default()
                .push(s);
        }
    }
    let mut attention = Vec::new();
    let mut picked = Vec::new();
    for ((g, source), mut sets) in by_source {
        sets.sort_by_key(|s| std::cmp::Reverse(s.created));
        let c = chain(&sets);
        if c.is_empty() {
            attention.push(format!(
                "{g} {source}: no full save at or before the time asked; its incrementals alone restore nothing"
            ));
        }
        picked.extend(c);
    }
    // Fulls first, then what builds on them, each in the order it was made.
    picked.sort_by_key(|s| (!is_full(&s.level), s.created));
    let mut steps = Vec::new();
    let mut recall = 0i64;
    for (i, s) in picked.into_iter().enumerate() {
        let cartridges_of = |volumes: &[String]| -> Vec<Cartridge> {
            volumes
                .iter()
                .map(|v| {
                    let r = vols.get(v);
                    let location = r.map_or_else(|| HOME.to_string(), |r| r.location.clone());
                    let in_transit_to = r.map(|r| r.in_transit_to.clone()).unwrap_or_default();
                    let away = location != HOME;
                    let hours = |urgent| {
                        if away {
                            (state.cfg.recall_seconds(&location, urgent) / 3600) as u32
                        } else {
                            0
                        }
                    };
                    Cartridge {
                        recall_hours: hours(false),
                        emergency_recall_hours: hours(true),
                        volser: v.clone(),
                        location,
                        in_transit_to,
                    }
                })
                .collect()
        };
        // The copy that is back soonest (one at home: at once), the
        // original first among equals: the agent reads it, and what it
        // cannot give from the next.
        let places = s.places();
        let mut each: Vec<Vec<Cartridge>> = places.iter().map(|p| cartridges_of(p)).collect();
        let copy = (0..each.len())
            .min_by_key(|&i| {
                let wait = each[i]
                    .iter()
                    .map(|k| (!k.in_transit_to.is_empty(), k.recall_hours))
                    .max()
                    .unwrap_or_default();
                (wait, i)
            })
            .expect("a save set has its original");
        if copy > 0 {
            attention.push(format!(
                "save set {}: copy {copy} ({}) is read, being back sooner than the original ({} at {})",
                s.id,
                places[copy].join(", "),
                s.volumes.join(", "),
                each[0]
                    .iter()
                    .map(|c| c.location.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let cartridges = each.swap_remove(copy);
        for c in &cartridges {
            recall = recall.max(i64::from(c.recall_hours) * 3600);
            if !c.in_transit_to.is_empty() {
                attention.push(format!(
                    "cartridge {} (save set {}) is in transit to {}: confirm where it is before recalling it",
                    c.volser, s.id, c.in_transit_to
                ));
            }
        }
        if s.changed > 0 {
            attention.push(format!(
                "save set {} ({} {}): {} objects changed while they were saved; check them after the restore",
                s.id, s.control_group, s.source, s.changed
            ));
        }
        if places.len() == 1 {
            attention.push(format!(
                "save set {} has a single copy: a damaged or lost cartridge ({}) loses what only it holds",
                s.id,
                s.volumes.join(", ")
            ));
        }
        let copies = places.len() as u32;
        steps.push(Step {
            order: i as u32 + 1,
            command: format!(
                "cinta-agent restore {} --kmip kmip.toml --save-set {} --to /  # on {}",
                s.library, s.id, s.agent
            ),
            save_set: s.id,
            control_group: s.control_group,
            source: s.source,
            level: if s.level.is_empty() {
                "full".into()
            } else {
                s.level
            },
            created: s.created,
            library: s.library,
            bytes: s.bytes,
            estimated_seconds: s.seconds.max(1),
            cartridges,
            changed: s.changed,
            copies,
        });
    }
    if steps.is_empty() {
        attention.insert(
            0,
            format!(
                "{lpar} has no save set at or before the time asked{}",
                if group.is_empty() {
                    String::new()
                } else {
                    format!(" in {group}")
                }
            ),
        );
    }
    // Runs that failed in the week before: what they would have saved is not here.
    let jobs: Vec<JobRow> = state.catalog().jobs(10_000)?;
    for j in jobs.iter().filter(|j| {
        j.agent == lpar
            && j.state == "failed"
            && j.created <= at
            && j.created > at - RECENT
            && state.cfg.control_group(&j.control_group).is_some()
            && (group.is_empty() || j.control_group == group)
    }) {
        attention.push(format!(
            "the run of {} (job {}) failed: {}; what it would have saved is not in this plan",
            j.control_group, j.id, j.message
        ));
    }
    let restore: i64 = steps.iter().map(|s| s.estimated_seconds).sum();
    Ok(Plan {
        lpar: lpar.to_string(),
        at,
        control_group: group.to_string(),
        steps,
        recall_seconds: recall,
        restore_seconds: restore,
        total_seconds: recall + restore,
        attention,
    })
}
