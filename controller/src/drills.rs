//! Restore drills: the procedure's proof that backups restore. Servers are chosen at random (the seed recorded, so the choice can be made again), a bounded sample of each one's objects (the newest save set of every control group entry always among them) is restored to a scratch directory on its agent, every digest checked, the scratch copy removed, and the timings and result kept; a failed drill is an escalation.
//!
//! On a schedule (`[drills] cron`), a drill runs only when the quarter had
//! no restore request served: a served request is the proof already.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Assignment, RestoreItem};
use crate::error::{Error, Result};
use crate::night::machine::Level;
use crate::restores::Outcome;
use crate::state::State;

/// The catalog's records of drills.
const KIND: &str = "drill";

/// Drills are changed one at a time (the sweep and a job's result).
fn moving() -> std::sync::MutexGuard<'static, ()> {
    static MOVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MOVING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A deterministic generator for the choices (SplitMix64): the same seed
/// makes the same choice.
struct Choice(u64);

impl Choice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `v` in a random order (Fisher-Yates).
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// One save set's objects a drill restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub save_set: String,
    pub control_group: String,
    pub created: i64,
    pub volumes: Vec<String>,
    pub select: Vec<String>,
    pub bytes: u64,
}

/// One server of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub agent: String,
    pub library: String,
    pub samples: Vec<Sample>,
    /// The scratch directory restored into (removed after).
    pub to: String,
    pub job: String,
    /// running, passed, failed.
    pub state: String,
    pub message: String,
    pub started: i64,
    pub ended: i64,
    pub objects: u64,
    pub bytes: u64,
    pub outcomes: Vec<Outcome>,
}

/// A drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    pub id: String,
    pub created: i64,
    pub seed: u64,
    /// Who or what started it.
    pub by: String,
    /// running, passed, failed.
    pub state: String,
    pub servers: Vec<Server>,
    pub ended: i64,
}

fn save(state: &State, d: &Drill) -> Result<()> {
    let body = serde_json::to_string(d).expect("a drill serializes");
    state
        .catalog()
        .put_record(KIND, &d.id, d.created, d.state == "running", &body)
}

fn decode(body: &str) -> Result<Drill> {
    serde_json::from_str(body).map_err(|e| Error::Invalid(format!("catalog: a drill record: {e}")))
}

pub fn list(state: &State) -> Result<Vec<Drill>> {
    let bodies = state.catalog().records(KIND, true)?;
    bodies.iter().map(|b| decode(b)).collect()
}

pub fn get(state: &State, id: &str) -> Result<Drill> {
    let body = state.catalog().record(KIND, id)?;
    decode(&body.ok_or_else(|| Error::NotFound(format!("no drill {id}")))?)
}

/// The sample of one agent's save sets: the newest save set of each
/// control group always, objects chosen at random within the bounds.
fn sample(state: &State, agent: &str, choice: &mut Choice) -> Result<(String, Vec<Sample>)> {
    let p = &state.cfg.drills;
    let sets: Vec<_> = state
        .catalog()
        .save_sets()?
        .into_iter()
        .filter(|s| s.agent == agent && s.state == "active")
        .collect();
    // The newest save set of each entry of each control group.
    let mut newest: BTreeMap<(String, String), crate::catalog::SaveSetRecord> = BTreeMap::new();
    for s in sets {
        let k = (s.control_group.clone(), s.source.clone());
        match newest.get(&k) {
            Some(n) if n.created >= s.created => {}
            _ => {
                newest.insert(k, s);
            }
        }
    }
    let library = newest
        .values()
        .next()
        .map(|s| s.library.clone())
        .unwrap_or_default();
    let (mut count, mut bytes) = (0u32, 0u64);
    let mut out = Vec::new();
    for s in newest.into_values().filter(|s| s.library == library) {
        let mut files: Vec<_> = state
            .catalog()
            .objects_of(&s.id, 10_000)?
            .into_iter()
            .filter(|o| o.kind == "file" || o.kind == "stream")
            .collect();
        if files.is_empty() {
            continue;
        }
        choice.shuffle(&mut files);
        // At least one object of every newest save set: the smallest if
        // none chosen fits.
        let mut chosen: Vec<crate::catalog::ObjectRow> = Vec::new();
        for f in &files {
            if count < p.max_objects && bytes + f.size <= p.max_bytes {
                count += 1;
                bytes += f.size;
                chosen.push(f.clone());
            }
        }
        if chosen.is_empty() {
            let f = files
                .iter()
                .min_by_key(|o| o.size)
                .expect("one file")
                .clone();
            count += 1;
            bytes += f.size;
            chosen.push(f);
        }
        out.push(Sample {
            save_set: s.id.clone(),
            control_group: s.control_group.clone(),
            created: s.created,
            volumes: s.volumes.clone(),
            bytes: chosen.iter().map(|o| o.size).sum(),
            select: chosen.into_iter().map(|o| o.path).collect(),
        });
    }
    out.sort_by_key(|s| s.created);
    Ok((library, out))
}

/// Starts a drill: `servers` chosen at random with `seed` (a random seed
/// when None) among the agents with active save sets.
pub fn run(state: &State, seed: Option<u64>, who: &str) -> Result<Drill> {
    let seed = seed
        .unwrap_or_else(|| u64::from_str_radix(&crate::state::random_id()[..16], 16).unwrap_or(1));
    let mut choice = Choice(seed);
    let mut agents: Vec<String> = state
        .catalog()
        .save_sets()?
        .into_iter()
        .filter(|s| s.state == "active")
        .map(|s| s.agent)
        .collect();
    agents.sort();
    agents.dedup();
    if agents.is_empty() {
        return Err(Error::Precondition(
            "no agent has a save set to restore: nothing to drill".into(),
        ));
    }
    choice.shuffle(&mut agents);
    agents.truncate(state.cfg.drills.servers as usize);
    let now = state.now();
    let id = format!("D{now}-{}", &crate::state::random_id()[..6]);
    let mut d = Drill {
        id: id.clone(),
        created: now,
        seed,
        by: who.to_string(),
        state: "running".into(),
        servers: vec![],
        ended: 0,
    };
    for agent in agents {
        let (library, samples) = sample(state, &agent, &mut choice)?;
        let to = format!(
            "{}/{id}/{agent}",
            state.cfg.drills.scratch.trim_end_matches('/')
        );
        let a = Assignment {
            restores: samples
                .iter()
                .map(|s| RestoreItem {
                    save_set: s.save_set.clone(),
                    select: s.select.clone(),
                    to: to.clone(),
                    replace: true,
                    command: String::new(),
                })
                .collect(),
            // The scratch copy goes whatever came of the restore.
            post: vec![format!("rm -rf -- '{to}'")],
            ..Assignment::chores(library.clone())
        };
        let job = state.queue_job(&format!("drill {id}"), &agent, a, who)?;
        d.servers.push(Server {
            agent,
            library,
            samples,
            to,
            job: job.id,
            state: "running".into(),
            message: String::new(),
            started: now,
            ended: 0,
            objects: 0,
            bytes: 0,
            outcomes: vec![],
        });
    }
    save(state, &d)?;
    state.event(
        "drill.started",
        &format!(
            "drill {id} (seed {seed}, by {who}) on {}",
            d.servers
                .iter()
                .map(|s| s.agent.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(d)
}

/// What an agent said of a drill's job it finished.
/// Whether the job was a drill's.
pub fn record_outcomes(state: &State, job: &str, outcomes: &[Outcome]) -> bool {
    let _one = moving();
    let Ok(open) = state.catalog().records(KIND, false) else {
        return false;
    };
    for b in open {
        let Ok(mut d) = decode(&b) else { continue };
        if let Some(s) = d.servers.iter_mut().find(|s| s.job == job) {
            s.outcomes = outcomes.to_vec();
            if let Err(e) = save(state, &d) {
                tracing::error!(drill = %d.id, error = %e, "could not record a drill's outcome");
            }
            return true;
        }
    }
    false
}

/// Ends the drills whose jobs have all ended. Runs with the housekeeping sweeps.
pub fn tick(state: &State) {
    let _one = moving();
    let Ok(open) = state.catalog().records(KIND, false) else {
        return;
    };
    for b in open {
        let Ok(mut d) = decode(&b) else { continue };
        if let Err(e) = advance(state, &mut d) {
            tracing::error!(drill = %d.id, error = %e, "a drill could not go on");
        }
    }
}

fn advance(state: &State, d: &mut Drill) -> Result<()> {
    let mut changed = false;
    for s in d.servers.iter_mut().filter(|s| s.state == "running") {
        let Some(j) = state.catalog().job(&s.job)? else {
            continue;
        };
        if !crate::state::ended(&j.state) {
            continue;
        }
        changed = true;
        s.ended = j.finished.max(j.started);
        s.started = j.started.max(s.started);
        s.message = j.message.clone();
        s.objects = s.outcomes.iter().map(|o| o.objects).sum();
        s.bytes = s.outcomes.iter().map(|o| o.bytes).sum();
        let whole = j.state == "succeeded"
            && s.outcomes.len() == s.samples.len()
            && s.outcomes
                .iter()
                // Damage a copy made good is in the outcome, not a failure.
                .all(|o| {
                    o.failed.is_empty() && (o.damaged.is_empty() || !o.from_copies.is_empty())
                });
        s.state = if whole { "passed" } else { "failed" }.into();
    }
    if !changed {
        return Ok(());
    }
    if d.servers.iter().any(|s| s.state == "running") {
        return save(state, d);
    }
    let now = state.now();
    d.ended = now;
    let failed: Vec<String> = d
        .servers
        .iter()
        .filter(|s| s.state == "failed")
        .map(|s| format!("{}: {}", s.agent, s.message))
        .collect();
    d.state = if failed.is_empty() {
        "passed"
    } else {
        "failed"
    }
    .into();
    save(state, d)?;
    if failed.is_empty() {
        state.event(
            "drill.passed",
            &format!(
                "drill {}: {} servers restored {} objects, every digest checked",
                d.id,
                d.servers.len(),
                d.servers.iter().map(|s| s.objects).sum::<u64>()
            ),
        );
    } else {
        state.event_at(
            Level::Error,
            "drill.failed",
            &format!("drill {} failed: {}", d.id, failed.join("; ")),
        );
    }
    Ok(())
}

/// The schedule's drill: when `[drills] cron` fell in (last, now], a drill
/// runs unless a restore request was served this quarter.
pub fn due(state: &State, last: i64, now: i64) {
    let Some(cron) = &state.cfg.drills.cron else {
        return;
    };
    let Ok(tz) = state.cfg.tz() else { return };
    if crate::night::next_after(cron, tz, last).is_none_or(|t| t > now) {
        return;
    }
    let since = quarter_start(tz, now);
    let served = crate::restores::list(state, true).map(|rs| {
        rs.iter()
            .filter(|r| r.state == "verified" || r.outcome == "served")
            .filter(|r| r.history.last().is_some_and(|h| h.time >= since))
            .count()
    });
    match served {
        Ok(n) if n > 0 => state.event(
            "drill.skipped",
            &format!(
                "the scheduled drill is not needed: {n} restore requests were served this quarter"
            ),
        ),
        _ => {
            if let Err(e) = run(state, None, "schedule") {
                state.event_at(
                    Level::Error,
                    "drill.failed",
                    &format!("the scheduled drill could not start: {e}"),
                );
            }
        }
    }
}

/// The start of the quarter holding `t`, in `tz`.
fn quarter_start(tz: chrono_tz::Tz, t: i64) -> i64 {
    use chrono::{Datelike, TimeZone};
    let local = tz.timestamp_opt(t, 0).single();
    let Some(l) = local else { return t };
    let month = (l.month0() / 3) * 3 + 1;
    tz.with_ymd_and_hms(l.year(), month, 1, 0, 0, 0)
        .earliest()
        .map_or(t, |d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_choice() {
        let pick = |seed| {
            let mut v = vec!["A", "B", "C", "D"];
            Choice(seed).shuffle(&mut v);
            v
        };
        assert_eq!(pick(42), pick(42));
        assert_ne!(pick(42), pick(43));
        let tz: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
        use chrono::TimeZone;
        let t = tz
            .with_ymd_and_hms(2026, 11, 24, 20, 0, 0)
            .unwrap()
            .timestamp();
        let q = tz
            .with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(quarter_start(tz, t), q);
    }
}
