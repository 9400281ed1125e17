//! Offsite copies (BRMS DUPMEDBRM): copy jobs for the save sets whose media policy asks for more copies than they have, their outcomes recorded with each copy's cartridges, retries, and the escalation when a save set stays with fewer copies than its policy asks.
//!
//! A copy is made on the agent that holds the save set's library, block
//! for block (no key leaves the key manager for it) and checked against the
//! digest the save recorded. Each copy's cartridges are volumes like any
//! other, with the policy's `copy_move_policy` (the vault). Expiry and
//! crypto-shredding take the save set, so every copy goes with it: the
//! agent's record of the save set holds its copies, and the key is one.

use std::collections::BTreeMap;

use crate::catalog::{Assignment, SaveSetCopy, SaveSetRecord};
use crate::error::{Error, Result};
use crate::night::machine::Level;
use crate::state::{ended, State};

/// Copy jobs a save set gets before the controller stops trying and
/// escalates (an operator starts more with `cintactl copy`).
pub const MAX_TRIES: u32 = 3;

/// A copy a job made (from the agent).
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub save_set: String,
    pub copy: u32,
    pub volumes: Vec<String>,
    pub bytes: u64,
    pub digest: String,
    pub verified: bool,
}

/// Copies `s`'s media policy asks for, the original counted (1: none).
pub fn wanted(state: &State, s: &SaveSetRecord) -> u32 {
    state
        .cfg
        .media_policy(&s.media_policy)
        .map_or(1, |p| p.copies)
}

/// Copies `s` has, the original counted.
pub fn have(s: &SaveSetRecord) -> u32 {
    1 + s.copies.len() as u32
}

/// Whether `s`'s copies may be made now: at once, or, with a
/// `copy_schedule`, once its first time after the save has come.
fn copy_time(state: &State, s: &SaveSetRecord, now: i64) -> bool {
    let Some(cron) = state
        .cfg
        .media_policy(&s.media_policy)
        .and_then(|p| p.copy_schedule.as_deref())
    else {
        return true;
    };
    let Ok(tz) = state.cfg.tz() else {
        return true;
    };
    crate::night::next_after(cron, tz, s.created).is_some_and(|t| t <= now)
}

/// Records the copies a job made. Only copies the job was asked for, of
/// save sets of its own agent, are taken (an agent cannot add cartridges
/// to another's save set); each is one record change and one event.
pub fn record(state: &State, job_id: &str, agent: &str, made: &[Made]) {
    if made.is_empty() {
        return;
    }
    let _one = state.copy_sweep.lock().unwrap_or_else(|p| p.into_inner());
    let Some(job) = state.catalog().job(job_id).ok().flatten() else {
        return;
    };
    let now = state.now();
    for m in made {
        if !job.assignment.copy.contains(&m.save_set) {
            tracing::warn!(job = job_id, save_set = %m.save_set, "a copy the job was not asked for is ignored");
            continue;
        }
        let found = state.catalog().save_set(&m.save_set).ok().flatten();
        let Some(mut s) = found.filter(|s| s.agent == agent) else {
            tracing::warn!(job = job_id, save_set = %m.save_set, "a copy of a save set not of this agent is ignored");
            continue;
        };
        if m.volumes.is_empty() || s.copies.iter().any(|c| c.copy == m.copy) {
            continue;
        }
        let policy = state.cfg.media_policy(&s.media_policy);
        let copy = SaveSetCopy {
            copy: m.copy,
            volumes: m.volumes.clone(),
            media_class: job.assignment.media_class.clone(),
            move_policy: policy
                .and_then(|p| p.copy_move_policy.clone())
                .unwrap_or_default(),
            made: now,
            job: job_id.to_string(),
            digest: m.digest.clone(),
            verified: m.verified,
        };
        s.copies.push(copy.clone());
        if let Err(e) = state.catalog().put_save_set(&s) {
            tracing::error!(error = %e, save_set = %s.id, "could not record a copy");
            continue;
        }
        crate::media::record_volumes(state, &s, &copy.volumes, &copy.move_policy, now);
        state.event(
            "saveset.copied",
            &format!(
                "save set {} of {}: copy {} on {} ({} bytes, {}){}",
                s.id,
                s.agent,
                m.copy,
                m.volumes.join(", "),
                m.bytes,
                if m.verified {
                    "every block checked against the digest the save recorded"
                } else {
                    "no digest recorded to check against"
                },
                if copy.move_policy.is_empty() {
                    String::new()
                } else {
                    format!("; its cartridges follow move policy {}", copy.move_policy)
                }
            ),
        );
    }
}

/// Records how copy jobs out ended, then queues copy jobs for the active
/// save sets with fewer copies than their policy asks (right after the
/// save, or at the policy's `copy_schedule`), up to [`MAX_TRIES`] jobs
/// each; one that stays short escalates once.
pub fn sweep(state: &State) {
    if !state.cfg.media_policies.iter().any(|p| p.copies > 1) {
        return;
    }
    let _one = state.copy_sweep.lock().unwrap_or_else(|p| p.into_inner());
    let now = state.now();
    let all = state.catalog().save_sets().unwrap_or_default();
    let mut due: Vec<SaveSetRecord> = Vec::new();
    for s in all {
        if s.state != "active" || have(&s) >= wanted(state, &s) {
            if !s.copy_job.is_empty() {
                mark(state, &s.id, |r| r.copy_job.clear());
            }
            continue;
        }
        if !s.copy_job.is_empty() {
            let job = state.catalog().job(&s.copy_job).ok().flatten();
            let Some(job) = job.filter(|j| ended(&j.state)) else {
                continue;
            };
            mark(state, &s.id, |r| r.copy_job.clear());
            if s.copy_tries >= MAX_TRIES {
                state.event_at(
                    Level::Error,
                    "copy.failed",
                    &format!(
                        "save set {} of {} has {} of the {} copies media policy {} asks for, after {} copy jobs (the last, {}: {}); `cintactl copy {}` tries again",
                        s.id,
                        s.agent,
                        have(&s),
                        wanted(state, &s),
                        s.media_policy,
                        s.copy_tries,
                        job.id,
                        job.message,
                        s.id
                    ),
                );
                continue;
            }
            state.event_at(
                Level::Warn,
                "copy.retry",
                &format!(
                    "save set {} of {}: copy job {} ended without its copy ({}); trying again",
                    s.id, s.agent, job.id, job.message
                ),
            );
        }
        if s.copy_tries < MAX_TRIES && copy_time(state, &s, now) {
            due.push(s);
        }
    }
    if let Err(e) = queue(state, due, "controller") {
        tracing::error!(error = %e, "could not queue copy jobs");
    }
}

/// Queues one copy job per agent, library and copy media class for `sets`,
/// and marks each with its job.
fn queue(state: &State, sets: Vec<SaveSetRecord>, who: &str) -> Result<Vec<String>> {
    let mut groups: BTreeMap<(String, String, String), Vec<SaveSetRecord>> = BTreeMap::new();
    for s in sets {
        let class = state
            .cfg
            .media_policy(&s.media_policy)
            .and_then(|p| p.copy_media_class.clone())
            .unwrap_or_default();
        groups
            .entry((s.agent.clone(), s.library.clone(), class))
            .or_default()
            .push(s);
    }
    let mut jobs = Vec::new();
    for ((agent, library, class), sets) in groups {
        let a = Assignment {
            copy: sets.iter().map(|s| s.id.clone()).collect(),
            media_class: class,
            ..Assignment::chores(library)
        };
        let job = state.queue_job("copy", &agent, a, who)?;
        for s in sets {
            mark(state, &s.id, |r| {
                r.copy_job = job.id.clone();
                r.copy_tries = s.copy_tries + 1;
            });
        }
        jobs.push(job.id);
    }
    Ok(jobs)
}

/// Changes a save set's copy fields on its record as it is now (not on an
/// older read of it: retention may have moved it on meanwhile).
fn mark(state: &State, id: &str, change: impl FnOnce(&mut SaveSetRecord)) {
    let found = state.catalog().save_set(id);
    let Ok(Some(mut r)) = found else {
        return;
    };
    change(&mut r);
    if let Err(e) = state.catalog().put_save_set(&r) {
        tracing::error!(error = %e, save_set = id, "could not record a save set's copy job");
    }
}

/// `cintactl copy`: copy jobs now for the save sets named (or every
/// active one short of copies), whatever their tries so far. Returns
/// the jobs queued.
pub fn copy_now(state: &State, ids: &[String], who: &str) -> Result<Vec<String>> {
    let _one = state.copy_sweep.lock().unwrap_or_else(|p| p.into_inner());
    let all = state.catalog().save_sets()?;
    let mut sets = Vec::new();
    for id in ids {
        let s = all
            .iter()
            .find(|s| &s.id == id || (id.len() >= 6 && s.id.starts_with(id.as_str())))
            .ok_or_else(|| Error::NotFound(format!("save set {id}")))?;
        if s.state != "active" {
            return Err(Error::Precondition(format!(
                "save set {} is {}: only active save sets are copied",
                s.id, s.state
            )));
        }
        if have(s) >= wanted(state, s) {
            return Err(Error::Precondition(format!(
                "save set {} has the {} copies media policy {:?} asks for",
                s.id,
                have(s),
                s.media_policy
            )));
        }
        if !s.copy_job.is_empty() {
            return Err(Error::Precondition(format!(
                "save set {} has copy job {} out",
                s.id, s.copy_job
            )));
        }
        sets.push(s.clone());
    }
    if ids.is_empty() {
        sets = all
            .into_iter()
            .filter(|s| s.state == "active" && s.copy_job.is_empty() && have(s) < wanted(state, s))
            .collect();
    }
    for s in &mut sets {
        s.copy_tries = 0;
    }
    queue(state, sets, who)
}
