//! The media inventory on the controller: volumes learnt from the save sets jobs report, their moves started and confirmed (BRMS MOVMEDBRM / VFYMOVBRM), and the jobs that take cartridges out of and into libraries.

use std::collections::BTreeMap;

use crate::catalog::{Assignment, SaveSetRecord};
use crate::error::Result;
use crate::moves::{next_move, place, Due, Policy, VolumeRecord, HOME};
use crate::state::State;

/// A volume with what is due for it.
pub struct VolumeView {
    pub v: VolumeRecord,
    /// Every save set on it has expired.
    pub expired: bool,
    pub due: Option<Due>,
}

/// Records the volumes a save set's original was written to (new ones at
/// home), with its media policy's move policy.
pub fn record_save_set_volumes(state: &State, s: &SaveSetRecord, now: i64) {
    let move_policy = state
        .cfg
        .media_policy(&s.media_policy)
        .and_then(|p| p.move_policy.clone())
        .unwrap_or_default();
    record_volumes(state, s, &s.volumes, &move_policy, now);
}

/// Records `volumes` as holding save set `s` (new ones at home), following
/// `move_policy` (an original's or a copy's).
pub fn record_volumes(
    state: &State,
    s: &SaveSetRecord,
    volumes: &[String],
    move_policy: &str,
    now: i64,
) {
    let site = state
        .cfg
        .lpars
        .iter()
        .find(|l| l.name == s.agent)
        .map(|l| l.site.clone())
        .unwrap_or_default();
    let known = state.catalog().volumes().unwrap_or_default();
    for volser in volumes {
        let mut v = known
            .iter()
            .find(|v| &v.volser == volser)
            .cloned()
            .unwrap_or_else(|| VolumeRecord {
                volser: volser.clone(),
                agent: s.agent.clone(),
                library: s.library.clone(),
                site: site.clone(),
                first_written: now,
                last_written: now,
                save_sets: vec![],
                move_policy: String::new(),
                location: HOME.into(),
                since: now,
                in_transit_to: String::new(),
                move_job: String::new(),
                carry_to: String::new(),
                kept_at: String::new(),
            });
        v.last_written = now;
        if !v.save_sets.contains(&s.id) {
            v.save_sets.push(s.id.clone());
        }
        v.move_policy = move_policy.to_string();
        if let Err(e) = state.catalog().put_volume(&v) {
            tracing::error!(error = %e, volser = %v.volser, "could not record a volume");
        }
    }
}

/// Every volume with whether it has expired and its next move.
pub fn volumes_view(state: &State) -> Result<Vec<VolumeView>> {
    let sets = state.catalog().save_sets()?;
    let set_state: BTreeMap<&str, &str> = sets
        .iter()
        .map(|s| (s.id.as_str(), s.state.as_str()))
        .collect();
    let vols = state.catalog().volumes()?;
    Ok(vols
        .into_iter()
        .map(|v| {
            let expired = !v.save_sets.is_empty()
                && v.save_sets
                    .iter()
                    .all(|id| set_state.get(id.as_str()) == Some(&"expired"));
            let steps: Vec<(String, u32)> = state
                .cfg
                .move_policy(&v.move_policy)
                .map(|p| {
                    p.steps
                        .iter()
                        .map(|s| (s.location.clone(), s.days))
                        .collect()
                })
                .unwrap_or_default();
            let policy = (!steps.is_empty()).then_some(Policy { steps: &steps });
            let due = next_move(&v, policy.as_ref(), expired);
            VolumeView { v, expired, due }
        })
        .collect())
}

/// Starts the moves due now (of `only`, or of every volume): a volume in
/// its library leaves through the import/export port (a job on its
/// agent); one elsewhere is simply on its way. Returns the volumes now
/// in transit and, for each named volume that could not go, why.
pub fn start_moves(
    state: &State,
    only: &[String],
    who: &str,
) -> Result<(Vec<VolumeRecord>, Vec<String>)> {
    let now = state.now();
    let view = volumes_view(state)?;
    let mut refused = Vec::new();
    for name in only {
        match view.iter().find(|w| &w.v.volser == name) {
            None => refused.push(format!("{name}: no such volume in the catalog")),
            Some(w) if !w.v.in_transit_to.is_empty() => refused.push(format!(
                "{name}: already on its way to {}",
                place(&w.v, &w.v.in_transit_to)
            )),
            Some(w) => match &w.due {
                None => refused.push(format!("{name}: no move is due")),
                Some(d) if d.at > now => refused.push(format!(
                    "{name}: its move to {} is not due until {}",
                    place(&w.v, &d.to),
                    d.at
                )),
                Some(_) => {}
            },
        }
    }
    let due: Vec<(VolumeRecord, Due)> = view
        .into_iter()
        .filter(|w| only.is_empty() || only.contains(&w.v.volser))
        .filter(|w| w.v.in_transit_to.is_empty())
        .filter_map(|w| w.due.filter(|d| d.at <= now).map(|d| (w.v, d)))
        .collect();
    let mut ejects: BTreeMap<(String, String), Vec<(VolumeRecord, Due)>> = BTreeMap::new();
    let mut started = Vec::new();
    for (mut v, d) in due {
        if v.location == HOME {
            ejects
                .entry((v.agent.clone(), v.library.clone()))
                .or_default()
                .push((v, d));
        } else {
            v.in_transit_to = d.to.clone();
            state.catalog().put_volume(&v)?;
            state.event(
                "media.move",
                &format!(
                    "{} leaves {} for {} ({}; by {who})",
                    v.volser,
                    place(&v, &v.location),
                    place(&v, &d.to),
                    d.why
                ),
            );
            started.push(v);
        }
    }
    for ((agent, library), vols) in ejects {
        let a = Assignment {
            eject: vols.iter().map(|(v, _)| v.volser.clone()).collect(),
            ..Assignment::chores(library)
        };
        let job = match state.queue_job("eject", &agent, a, who) {
            Ok(j) => j,
            Err(e) => {
                refused.extend(vols.iter().map(|(v, _)| format!("{}: {}", v.volser, e)));
                continue;
            }
        };
        for (mut v, d) in vols {
            v.in_transit_to = d.to.clone();
            v.move_job = job.id.clone();
            state.catalog().put_volume(&v)?;
            state.event(
                "media.move",
                &format!(
                    "{} leaves {} for {} through the import/export port (job {}; {}; by {who})",
                    v.volser,
                    place(&v, HOME),
                    place(&v, &d.to),
                    job.id,
                    d.why
                ),
            );
            started.push(v);
        }
    }
    Ok((started, refused))
}

/// Confirms that volumes in transit have arrived (all of them with
/// `all`). A volume arriving home is taken into its library from the
/// import/export port by a job on its agent, and counts as home only
/// once that job succeeded.
pub fn confirm_moves(
    state: &State,
    only: &[String],
    all: bool,
    who: &str,
) -> Result<(Vec<VolumeRecord>, Vec<String>)> {
    let now = state.now();
    let vols = state.catalog().volumes()?;
    let mut refused = Vec::new();
    let mut done = Vec::new();
    for name in only {
        match vols.iter().find(|v| &v.volser == name) {
            None => refused.push(format!("{name}: no such volume in the catalog")),
            Some(v) if v.in_transit_to.is_empty() => refused.push(format!(
                "{name}: not in transit (it is at {})",
                place(v, &v.location)
            )),
            Some(v) if !v.move_job.is_empty() => refused.push(format!(
                "{name}: job {} is still moving it; confirm once it has ended",
                v.move_job
            )),
            Some(_) => {}
        }
    }
    let mut imports: BTreeMap<(String, String), Vec<VolumeRecord>> = BTreeMap::new();
    for mut v in vols {
        let chosen = if all { true } else { only.contains(&v.volser) };
        if !chosen || v.in_transit_to.is_empty() || !v.move_job.is_empty() {
            continue;
        }
        if v.in_transit_to == HOME {
            imports
                .entry((v.agent.clone(), v.library.clone()))
                .or_default()
                .push(v);
            continue;
        }
        v.location = std::mem::take(&mut v.in_transit_to);
        v.since = now;
        if v.location == v.carry_to {
            v.kept_at = std::mem::take(&mut v.carry_to);
        }
        state.catalog().put_volume(&v)?;
        state.event(
            "media.moved",
            &format!(
                "{} arrived at {} (confirmed by {who})",
                v.volser, v.location
            ),
        );
        done.push(v);
    }
    for ((agent, library), vols) in imports {
        let a = Assignment {
            import: vols.iter().map(|v| v.volser.clone()).collect(),
            ..Assignment::chores(library)
        };
        match state.queue_job("import", &agent, a, who) {
            Ok(job) => {
                for mut v in vols {
                    v.move_job = job.id.clone();
                    state.catalog().put_volume(&v)?;
                    done.push(v);
                }
            }
            Err(e) => refused.extend(vols.iter().map(|v| format!("{}: {}", v.volser, e))),
        }
    }
    Ok((done, refused))
}

/// Orders `volumes` carried to `to` (outside their move policy): the
/// contingency save's cartridges, for the main site.
pub fn order_carry(state: &State, volumes: &[String], to: &str) {
    // (The list first: the catalog's lock must not be held across the loop.)
    let all = state.catalog().volumes().unwrap_or_default();
    for mut v in all {
        if volumes.contains(&v.volser) && v.location == HOME {
            v.carry_to = to.to_string();
            let _ = state.catalog().put_volume(&v);
        }
    }
}

/// Outcomes of eject and import jobs: an eject that worked leaves the
/// volume in transit; one that failed leaves it home. An import that
/// worked brings it home; one that failed leaves it in transit.
pub fn media_jobs(state: &State, now: i64) {
    let vols = state.catalog().volumes().unwrap_or_default();
    for mut v in vols.into_iter().filter(|v| !v.move_job.is_empty()) {
        let Some(job) = state.catalog().job(&v.move_job).ok().flatten() else {
            continue;
        };
        if !crate::state::ended(&job.state) {
            continue;
        }
        let ok = job.state == "succeeded";
        let job_id = std::mem::take(&mut v.move_job);
        if v.in_transit_to == HOME {
            if ok {
                v.location = HOME.into();
                v.in_transit_to.clear();
                v.since = now;
                state.event(
                    "media.moved",
                    &format!("{} is back in {}", v.volser, place(&v, HOME)),
                );
            } else {
                state.event(
                    "media.move_failed",
                    &format!(
                        "{} could not be taken into {} (job {job_id}: {}); still in transit",
                        v.volser,
                        place(&v, HOME),
                        job.message
                    ),
                );
            }
        } else if !ok {
            let to = std::mem::take(&mut v.in_transit_to);
            state.event(
                "media.move_failed",
                &format!(
                    "{} could not leave {} for {to} (job {job_id}: {}); it stays",
                    v.volser,
                    place(&v, HOME),
                    job.message
                ),
            );
        }
        let _ = state.catalog().put_volume(&v);
    }
}
