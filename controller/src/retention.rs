//! Retention: save sets recorded with their media policy's expiry, and the sweep that queues expiry jobs (by date or by versions, shredding keys when the policy says so) and records how those jobs ended.

use std::collections::BTreeMap;

use crate::catalog::{Assignment, SaveSetRecord, SaveSetRow};
use crate::state::{ended, State};

/// Records a finished job's save sets with the retention of its control group's media policy.
pub fn record_save_sets(state: &State, job_id: &str, sets: &[SaveSetRow]) {
    let Some(job) = state.catalog().job(job_id).ok().flatten() else {
        return;
    };
    let cfg = &state.cfg;
    let policy = cfg
        .control_group(&job.control_group)
        .and_then(|g| g.media_policy.as_deref())
        .and_then(|p| cfg.media_policy(p));
    let total: u64 = sets.iter().map(|s| s.bytes).sum();
    let ran = (job.finished - job.started).max(0);
    for s in sets {
        let rec = SaveSetRecord {
            id: s.id.clone(),
            agent: job.agent.clone(),
            library: job.assignment.library.clone(),
            control_group: job.control_group.clone(),
            source: s.source.clone(),
            key_id: s.key_id.clone(),
            volumes: s.volumes.clone(),
            created: job.finished,
            expires: policy
                .and_then(|p| p.retention_days)
                .map(|d| job.finished + 86_400 * i64::from(d))
                .unwrap_or(0),
            state: "active".into(),
            media_policy: policy.map(|p| p.name.clone()).unwrap_or_default(),
            shred: policy.is_some_and(|p| p.shred_on_expiry),
            versions: policy.and_then(|p| p.retention_versions).unwrap_or(0),
            expire_job: String::new(),
            level: job.assignment.level.clone(),
            job: job.id.clone(),
            bytes: s.bytes,
            seconds: if total == 0 {
                ran / sets.len().max(1) as i64
            } else {
                (ran as f64 * s.bytes as f64 / total as f64).round() as i64
            },
            changed: s.changed_count,
            copies: vec![],
            copy_job: String::new(),
            copy_tries: 0,
        };
        if let Err(e) = state.catalog().put_save_set(&rec) {
            tracing::error!(error = %e, "could not record a save set");
        }
        crate::media::record_save_set_volumes(state, &rec, job.finished);
        if let Err(e) = state.catalog().date_objects(&rec.id, rec.created) {
            tracing::error!(error = %e, save_set = %rec.id, "could not date the objects of a save set");
        }
    }
}

/// Queues expiry jobs for save sets past their date or beyond their
/// versions, and records the outcome of those jobs.
pub fn sweep(state: &State, now: i64) {
    let all = state.catalog().save_sets().unwrap_or_default();
    // Outcomes of expiry jobs already out.
    for mut s in all.iter().filter(|s| s.state == "expiring").cloned() {
        let job = state.catalog().job(&s.expire_job).ok().flatten();
        let Some(st) = job.map(|j| j.state).filter(|st| ended(st)) else {
            continue;
        };
        s.state = if st == "succeeded" {
            "expired"
        } else {
            "active"
        }
        .into();
        if s.state == "expired" {
            // Nothing of it can be restored any more: out of object searches.
            if let Err(e) = state.catalog().drop_objects(&s.id) {
                tracing::error!(error = %e, save_set = %s.id, "could not drop the objects of an expired save set");
            }
            state.event(
                "saveset.expired",
                &format!(
                    "save set {} of {} expired{}",
                    s.id,
                    s.agent,
                    if s.shred { " (key destroyed)" } else { "" }
                ),
            );
        }
        let _ = state.catalog().put_save_set(&s);
    }
    let mut groups: BTreeMap<(String, String, bool), Vec<SaveSetRecord>> = BTreeMap::new();
    for s in due(&all, now) {
        groups
            .entry((s.agent.clone(), s.library.clone(), s.shred))
            .or_default()
            .push(s);
    }
    for ((agent, library, shred), sets) in groups {
        let a = Assignment {
            expire: sets.iter().map(|s| s.id.clone()).collect(),
            shred,
            ..Assignment::chores(library)
        };
        let Ok(job) = state.queue_job("expire", &agent, a, "retention") else {
            continue;
        };
        for mut s in sets {
            s.state = "expiring".into();
            s.expire_job = job.id.clone();
            let _ = state.catalog().put_save_set(&s);
        }
    }
}

/// The active save sets past their date or beyond their versions; `all`
/// is in the order the save sets were recorded (later is newer).
pub fn due(all: &[SaveSetRecord], now: i64) -> Vec<SaveSetRecord> {
    let active: Vec<(usize, &SaveSetRecord)> = all
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == "active")
        .collect();
    let mut due = Vec::new();
    for &(i, s) in &active {
        let by_date = s.expires > 0 && s.expires <= now;
        let by_versions = s.versions > 0 && {
            let newer = active
                .iter()
                .filter(|(j, o)| {
                    *j > i
                        && o.agent == s.agent
                        && o.source == s.source
                        && o.media_policy == s.media_policy
                })
                .count();
            newer >= s.versions as usize
        };
        if by_date || by_versions {
            due.push(s.clone());
        }
    }
    due
}
