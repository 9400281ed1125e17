//! Restore requests, the datacenter's procedure: a request is checked against the policy (a copy within retention at or before the date asked, else refused with the nearest restore points and closed), run as a job on the agent holding the save sets' library, verified, retried, closed; every step with who and when.
//!
//! A request's record lives in the catalog and is written at every step,
//! so a controller restarted mid-request goes on from the same step (the
//! housekeeping tick looks at its job). Its job restores, oldest save set
//! first, exactly the objects the policy chose (per path the newest copy at
//! or before the date), replacing what the destination holds, so the
//! newest copy of each path is what stays.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Assignment, RestoreItem};
use crate::error::{Error, Result};
use crate::night::machine::Level;
use crate::state::State;

/// The catalog's records of restore requests.
const KIND: &str = "restore";

/// Requests are changed one at a time (the sweep, a job's result and the
/// console all change them): read, change and write under this.
fn moving() -> std::sync::MutexGuard<'static, ()> {
    static MOVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MOVING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Objects one request may restore: each is named in the job (a larger
/// restore is asked for in parts).
pub const MAX_OBJECTS: usize = 10_000;

/// What was asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub server: String,
    pub paths: Vec<String>,
    pub at: i64,
    pub to: String,
    pub original: bool,
    pub ticket: String,
    pub urgent: bool,
    pub requester: String,
    pub email: String,
    pub reason: String,
    /// An IBM i library's save file is restored into this library.
    #[serde(default)]
    pub into_library: String,
}

/// One step of a request's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub time: i64,
    pub state: String,
    pub who: String,
    pub note: String,
}

/// What restoring one save set did (from the agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub save_set: String,
    pub to: String,
    pub objects: u64,
    pub bytes: u64,
    pub failed: Vec<String>,
    pub damaged: Vec<String>,
    /// What copies served when the first place read could not.
    #[serde(default)]
    pub from_copies: Vec<String>,
}

/// One try at the restore: its job and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub job: String,
    pub started: i64,
    pub ended: i64,
    /// running, succeeded, failed.
    pub state: String,
    pub message: String,
    pub outcomes: Vec<Outcome>,
}

/// The objects of one save set the request restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    pub save_set: String,
    pub created: i64,
    pub volumes: Vec<String>,
    pub select: Vec<String>,
    /// The class of its data ("" none): a class needs a second person's approval.
    #[serde(default)]
    pub data_class: String,
    /// Bytes of the objects chosen.
    #[serde(default)]
    pub bytes: u64,
    /// An IBM i library's save file: the command restoring it (RSTLIB).
    #[serde(default)]
    pub command: String,
    /// The cartridges of each copy of the save set (`volumes` is the
    /// original's): the agent reads a copy when the original cannot serve.
    #[serde(default)]
    pub copies: Vec<Vec<String>>,
}

/// A restore request and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub created: i64,
    pub spec: Spec,
    /// restoring, verified, failed, closed.
    pub state: String,
    /// served, refused, failed, cancelled ("" while open).
    pub outcome: String,
    pub requested_by: String,
    pub agent: String,
    pub library: String,
    pub plan: Vec<PlanItem>,
    pub attempts: Vec<Attempt>,
    pub history: Vec<Step>,
    pub refusal: String,
    /// Restore points that exist nearest the date asked (save set times).
    pub nearest: Vec<i64>,
    pub objects: u64,
    pub bytes: u64,
    /// When the next attempt starts, after a failed one (0: none waiting).
    #[serde(default)]
    pub retry_at: i64,
    /// While cartridges are recalled: when the last is expected back, and
    /// the restore's own time then, estimated (0: not known).
    #[serde(default)]
    pub back_by: i64,
    #[serde(default)]
    pub restore_seconds: i64,
}

impl Request {
    fn step(&mut self, time: i64, state: &str, who: &str, note: String) {
        self.state = state.to_string();
        self.history.push(Step {
            time,
            state: state.to_string(),
            who: who.to_string(),
            note,
        });
    }

    fn open(&self) -> bool {
        self.state != "closed"
    }

    /// The data classes the request restores (each needs approval).
    fn classes(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .plan
            .iter()
            .filter(|p| !p.data_class.is_empty())
            .map(|p| p.data_class.clone())
            .collect();
        c.sort();
        c.dedup();
        c
    }
}

/// A request waiting for approval, named; anything else refused.
fn awaiting(state: &State, id: &str) -> Result<Request> {
    let r = get(state, id)?;
    if r.state != "awaiting approval" {
        return Err(Error::Precondition(format!(
            "restore request {id} is {}, not awaiting approval",
            r.state
        )));
    }
    Ok(r)
}

/// The second person approves: the restore starts. Neither the operator
/// who made the request nor its requester may.
pub fn approve(state: &State, id: &str, who: &str, note: &str) -> Result<Request> {
    let _one = moving();
    let mut r = awaiting(state, id)?;
    if who == r.requested_by || who.eq_ignore_ascii_case(r.spec.requester.trim()) {
        let why = format!(
            "{who} may not approve restore request {id}: the two-person rule needs an approver other than the operator who made it ({}) and its requester ({})",
            r.requested_by, r.spec.requester
        );
        return Err(state.refused(why));
    }
    let now = state.now();
    r.history.push(Step {
        time: now,
        state: "approved".into(),
        who: who.to_string(),
        note: note.to_string(),
    });
    state.event(
        "restore.approved",
        &format!("restore request {id} approved by {who}"),
    );
    proceed(state, &mut r, who)?;
    Ok(r)
}

/// Attaches the ticket an urgent request was made without.
pub fn attach_ticket(state: &State, id: &str, ticket: &str, who: &str) -> Result<Request> {
    let _one = moving();
    let mut r = get(state, id)?;
    let ticket = ticket.trim();
    if ticket.is_empty() {
        return Err(Error::Invalid("give the ticket number".into()));
    }
    if !r.spec.ticket.is_empty() {
        return Err(Error::Precondition(format!(
            "restore request {id} has ticket {} already",
            r.spec.ticket
        )));
    }
    r.spec.ticket = ticket.to_string();
    r.history.push(Step {
        time: state.now(),
        state: "ticket".into(),
        who: who.to_string(),
        note: format!("ticket {ticket} attached"),
    });
    save(state, &r)?;
    state.event(
        "restore.ticket",
        &format!("restore request {id}: ticket {ticket} attached by {who}"),
    );
    Ok(r)
}

/// The restored data was handed to the requester.
pub fn deliver(state: &State, id: &str, who: &str, note: &str) -> Result<Request> {
    let _one = moving();
    let mut r = get(state, id)?;
    if r.state != "verified" {
        return Err(Error::Precondition(format!(
            "restore request {id} is {}: only a verified restore is delivered",
            r.state
        )));
    }
    let now = state.now();
    r.step(now, "delivered", who, note.to_string());
    save(state, &r)?;
    state.event(
        "restore.delivered",
        &format!("restore request {id} delivered by {who}"),
    );
    notify(
        state,
        &r,
        "delivered",
        format!("Delivered by {who}. {note}"),
    );
    Ok(r)
}

/// An approver refuses the request: it is closed.
pub fn reject(state: &State, id: &str, who: &str, note: &str) -> Result<Request> {
    let _one = moving();
    let mut r = awaiting(state, id)?;
    let now = state.now();
    r.outcome = "rejected".into();
    r.history.push(Step {
        time: now,
        state: "rejected".into(),
        who: who.to_string(),
        note: note.to_string(),
    });
    r.step(now, "closed", who, "rejected".into());
    save(state, &r)?;
    state.event_at(
        Level::Warn,
        "restore.rejected",
        &format!("restore request {id} rejected by {who}: {note}"),
    );
    notify(
        state,
        &r,
        "rejected",
        format!("Rejected by {who}: {note}. It is closed."),
    );
    Ok(r)
}

/// Tells the requester and the help desk what happened, by mail (queued:
/// never waits, retried until sent).
fn notify(state: &State, r: &Request, what: &str, body: String) {
    let mut to: Vec<String> = Vec::new();
    if !r.spec.email.is_empty() {
        to.push(r.spec.email.clone());
    }
    if let Some(h) = &state.mail.help_desk {
        if !to.contains(h) {
            to.push(h.clone());
        }
    }
    if to.is_empty() {
        return;
    }
    let ticket = if r.spec.ticket.is_empty() {
        "URGENT, no ticket".to_string()
    } else {
        r.spec.ticket.clone()
    };
    let body = format!(
        "{body}\n\nRestore request {} ({ticket}) for {}: {} from {}, as at {} (UTC), into {} on {}.\nAsked by {} for: {}\n\n-- cinta, `cintactl restore show {}`\n",
        r.id,
        r.spec.requester,
        r.spec.paths.join(" "),
        r.spec.server,
        chrono::DateTime::from_timestamp(r.spec.at, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        r.spec.to,
        r.agent,
        r.requested_by,
        r.spec.reason,
        r.id
    );
    state.mail.send(crate::mail::Mail {
        to,
        subject: format!("[{ticket}] restore request {}: {what}", r.id),
        body,
    });
}

fn save(state: &State, r: &Request) -> Result<()> {
    let body = serde_json::to_string(r).expect("a request serializes");
    state
        .catalog()
        .put_record(KIND, &r.id, r.created, r.open(), &body)
}

fn decode(body: &str) -> Result<Request> {
    serde_json::from_str(body)
        .map_err(|e| Error::Invalid(format!("catalog: a restore request record: {e}")))
}

/// Restore requests, oldest first (only open ones unless `all`).
pub fn list(state: &State, all: bool) -> Result<Vec<Request>> {
    let bodies = state.catalog().records(KIND, all)?;
    bodies.iter().map(|b| decode(b)).collect()
}

pub fn get(state: &State, id: &str) -> Result<Request> {
    let body = state.catalog().record(KIND, id)?;
    decode(&body.ok_or_else(|| Error::NotFound(format!("no restore request {id}")))?)
}

/// Checks what is asked, before anything is recorded.
fn check(state: &State, spec: &mut Spec) -> Result<()> {
    let known = state.cfg.lpars.iter().any(|l| l.name == spec.server)
        || state.catalog().agent(&spec.server)?.is_some();
    if spec.server.is_empty() || !known {
        return Err(Error::NotFound(format!(
            "no server {:?}: name an LPAR or agent of the configuration",
            spec.server
        )));
    }
    spec.paths.retain(|p| !p.trim().is_empty());
    if spec.paths.is_empty() {
        return Err(Error::Invalid(
            "name what to restore: paths or globs as `cintactl find` takes them".into(),
        ));
    }
    if !spec.into_library.is_empty() {
        crate::config::check_library_name(&spec.into_library)
            .map_err(|e| Error::Invalid(format!("library {:?}: {e}", spec.into_library)))?;
        if !spec.to.is_empty() || spec.original {
            return Err(Error::Invalid(
                "a library is restored into a library (--into-library), not a directory".into(),
            ));
        }
    } else if spec.original {
        if !spec.to.is_empty() && spec.to != "/" {
            return Err(Error::Invalid(
                "give a destination or the original place, not both".into(),
            ));
        }
        spec.to = "/".into();
    } else if !spec.to.starts_with('/') || spec.to == "/" {
        return Err(Error::Invalid(format!(
            "the destination {:?} must be an absolute directory on {} (the original place is asked for explicitly)",
            spec.to, spec.server
        )));
    }
    if spec.ticket.trim().is_empty() && !spec.urgent {
        return Err(Error::Invalid(
            "a restore request needs its ticket number (an urgent one may come without, flagged until one is attached)".into(),
        ));
    }
    if spec.requester.trim().is_empty() {
        return Err(Error::Invalid("name the requester".into()));
    }
    let e = &spec.email;
    let plausible = e.len() <= 254
        && e.split('@').count() == 2
        && !e.starts_with('@')
        && !e.ends_with('@')
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    if !e.is_empty() && !plausible {
        return Err(Error::Invalid(format!(
            "{e:?} is not a mail address the requester can be told at"
        )));
    }
    if spec.at <= 0 {
        spec.at = state.now();
    }
    Ok(())
}

/// Restore points (save set times) of what `patterns` match on `server`,
/// nearest `at` first, at most six.
fn nearest(state: &State, patterns: &[String], server: &str, at: i64) -> Result<Vec<i64>> {
    let mut times = std::collections::BTreeSet::new();
    for p in patterns {
        let (found, _) = crate::find::find_objects(state, p, server, 0, MAX_OBJECTS)?;
        times.extend(found.iter().map(|f| f.save_set.created));
    }
    let mut t: Vec<i64> = times.into_iter().collect();
    t.sort_by_key(|x| (x - at).abs());
    t.truncate(6);
    t.sort();
    Ok(t)
}

/// Records a restore request from `who` and, when the policy covers it,
/// starts its first attempt; one it does not cover is refused and closed.
pub fn request(state: &State, mut spec: Spec, who: &str) -> Result<Request> {
    check(state, &mut spec)?;
    let now = state.now();
    let mut plan: BTreeMap<String, PlanItem> = BTreeMap::new();
    let mut library = String::new();
    let mut missing = Vec::new();
    let mut count = 0;
    for p in &spec.paths {
        let (found, more) =
            crate::find::find_objects(state, p, &spec.server, spec.at, MAX_OBJECTS)?;
        if more {
            return Err(Error::Invalid(format!(
                "{p} matches more than {MAX_OBJECTS} objects: ask for a smaller part"
            )));
        }
        if found.is_empty() {
            missing.push(p.clone());
        }
        for f in found {
            if !library.is_empty() && library != f.save_set.library {
                return Err(Error::Invalid(format!(
                    "the copies lie in two libraries ({library}, {}): ask for each apart",
                    f.save_set.library
                )));
            }
            library = f.save_set.library.clone();
            count += 1;
            let item = plan
                .entry(f.save_set.id.clone())
                .or_insert_with(|| PlanItem {
                    save_set: f.save_set.id.clone(),
                    created: f.save_set.created,
                    volumes: f.save_set.volumes.clone(),
                    copies: f
                        .save_set
                        .copies
                        .iter()
                        .map(|c| c.volumes.clone())
                        .collect(),
                    select: vec![],
                    data_class: state
                        .cfg
                        .data_class_of(&f.save_set.control_group, &f.save_set.source)
                        .unwrap_or_default(),
                    bytes: 0,
                    command: String::new(),
                });
            // An IBM i library's save file goes back through RSTLIB, into
            // the library named; files go to a directory.
            let library = state
                .cfg
                .library_of(&f.save_set.control_group, &f.save_set.source);
            match (&library, spec.into_library.is_empty()) {
                (Some(lib), false) => {
                    item.command = state
                        .cfg
                        .restore_library_command(&spec.server, lib, &spec.into_library)
                }
                (Some(lib), true) => {
                    return Err(Error::Invalid(format!(
                        "{} is library {lib}'s save file: say which library to restore it into (--into-library)",
                        f.object.path
                    )))
                }
                (None, false) => {
                    return Err(Error::Invalid(format!(
                        "{} is not a library's save file: give a destination directory (--to)",
                        f.object.path
                    )))
                }
                (None, true) => {}
            }
            if !item.select.contains(&f.object.path) {
                item.select.push(f.object.path.clone());
                item.bytes += f.object.size;
            }
        }
    }
    if count > MAX_OBJECTS {
        return Err(Error::Invalid(format!(
            "the request matches more than {MAX_OBJECTS} objects: ask for a smaller part"
        )));
    }
    let mut plan: Vec<PlanItem> = plan.into_values().collect();
    plan.sort_by_key(|p| (p.created, p.save_set.clone()));
    let mut r = Request {
        id: format!("R{now}-{}", &crate::state::random_id()[..6]),
        created: now,
        agent: spec.server.clone(),
        spec,
        state: String::new(),
        outcome: String::new(),
        requested_by: who.to_string(),
        library,
        plan,
        attempts: vec![],
        history: vec![],
        refusal: String::new(),
        nearest: vec![],
        objects: 0,
        bytes: 0,
        retry_at: 0,
        back_by: 0,
        restore_seconds: 0,
    };
    let ticket = if r.spec.ticket.is_empty() {
        "no ticket yet (urgent)".to_string()
    } else {
        format!("ticket {}", r.spec.ticket)
    };
    r.step(
        now,
        "requested",
        who,
        format!(
            "for {} <{}>, {ticket}: {}",
            r.spec.requester, r.spec.email, r.spec.reason
        ),
    );
    if !missing.is_empty() {
        r.refusal = format!(
            "no copy of {} on {} at or before the date asked is kept (retention)",
            missing.join(", "),
            r.agent
        );
        r.nearest = nearest(state, &missing, &r.agent, r.spec.at)?;
        r.outcome = "refused".into();
        r.step(now, "refused", "controller", r.refusal.clone());
        r.step(now, "closed", "controller", "refused by the policy".into());
        save(state, &r)?;
        state.event(
            "restore.refused",
            &format!("restore request {} ({ticket}) refused: {}", r.id, r.refusal),
        );
        let near: Vec<String> = r
            .nearest
            .iter()
            .filter_map(|t| chrono::DateTime::from_timestamp(*t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .collect();
        notify(
            state,
            &r,
            "refused",
            format!(
                "Refused: {}.\nRestore points that exist nearest the date asked: {}.",
                r.refusal,
                if near.is_empty() {
                    "none".to_string()
                } else {
                    near.join(", ")
                }
            ),
        );
        return Ok(r);
    }
    let classes = r.classes();
    if !classes.is_empty() {
        r.step(
            now,
            "awaiting approval",
            "controller",
            format!(
                "{} data: an approver other than {} and {} approves it (`cintactl restore approve {}`)",
                classes.join(", "),
                r.requested_by,
                r.spec.requester,
                r.id
            ),
        );
        save(state, &r)?;
        state.event(
            "restore.approval_needed",
            &format!(
                "restore request {} ({ticket}) by {who} for {}: {} data, waiting for an approver",
                r.id,
                r.spec.requester,
                classes.join(", ")
            ),
        );
        notify(
            state,
            &r,
            "approval needed",
            format!(
                "Received. It restores {} data: a second person with the approver role approves it before it runs.",
                classes.join(", ")
            ),
        );
        return Ok(r);
    }
    save(state, &r)?;
    state.event(
        "restore.requested",
        &format!(
            "restore request {} ({ticket}) by {who} for {}: {} objects from {} save sets into {} on {}",
            r.id,
            r.spec.requester,
            count,
            r.plan.len(),
            r.spec.to,
            r.agent
        ),
    );
    notify(
        state,
        &r,
        "received",
        "Received: it is being served.".to_string(),
    );
    proceed(state, &mut r, who)?;
    Ok(r)
}

/// Cartridges the plan needs that are away from their library. A save
/// set needs nothing recalled when the cartridges of its original or of
/// one of its copies are all home (the agent reads whichever is there);
/// otherwise the place that comes back soonest is recalled.
fn away(state: &State, r: &Request) -> Result<Vec<crate::catalog::VolumeRecord>> {
    let vols = state.volume_map()?;
    let is_away = |v: &crate::catalog::VolumeRecord| {
        v.location != crate::moves::HOME || !v.in_transit_to.is_empty()
    };
    let mut out: Vec<crate::catalog::VolumeRecord> = Vec::new();
    for p in &r.plan {
        let places = std::iter::once(&p.volumes).chain(&p.copies);
        let mut best: Option<(i64, Vec<crate::catalog::VolumeRecord>)> = None;
        for place in places {
            let gone: Vec<_> = place
                .iter()
                .filter_map(|n| vols.get(n))
                .filter(|v| is_away(v))
                .cloned()
                .collect();
            let back = gone
                .iter()
                .map(|v| state.cfg.recall_seconds(&v.location, r.spec.urgent))
                .max()
                .unwrap_or(0);
            if best.as_ref().is_none_or(|(b, _)| back < *b) {
                best = Some((back, gone));
            }
        }
        for v in best.map(|b| b.1).unwrap_or_default() {
            if !out.iter().any(|o| o.volser == v.volser) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Bytes a second the agent's library has moved, from its jobs (0: not measured yet).
fn measured_rate(state: &State, agent: &str, library: &str) -> Result<f64> {
    let (mut bytes, mut secs) = (0u64, 0i64);
    for j in state.catalog().jobs(200)? {
        if j.agent == agent
            && j.assignment.library == library
            && j.state == "succeeded"
            && j.bytes > 0
            && j.finished > j.started
            && j.started > 0
        {
            bytes += j.bytes;
            secs += j.finished - j.started;
        }
    }
    Ok(if secs > 0 {
        bytes as f64 / secs as f64
    } else {
        0.0
    })
}

/// The restore starts, or, when cartridges it needs are at a vault, they
/// are recalled (their move home started) and the request waits in
/// `recall`, with when they should be back and the restore's time estimated.
fn proceed(state: &State, r: &mut Request, who: &str) -> Result<()> {
    let away = away(state, r)?;
    if away.is_empty() {
        return start_attempt(state, r, who);
    }
    let now = state.now();
    let mut lines = Vec::new();
    let mut back_by = now;
    for mut v in away {
        let from = if v.in_transit_to.is_empty() {
            v.location.clone()
        } else {
            v.in_transit_to.clone()
        };
        let back = now + state.cfg.recall_seconds(&v.location, r.spec.urgent);
        back_by = back_by.max(back);
        if v.in_transit_to.is_empty() {
            v.in_transit_to = crate::moves::HOME.into();
            state.catalog().put_volume(&v)?;
            state.event(
                "media.move",
                &format!(
                    "{} recalled from {from} for restore request {} (by {who})",
                    v.volser, r.id
                ),
            );
        }
        lines.push(format!(
            "{} at {from}: {} recall",
            v.volser,
            if r.spec.urgent {
                "emergency"
            } else {
                "standard"
            }
        ));
    }
    let bytes: u64 = r.plan.iter().map(|p| p.bytes).sum();
    let rate = measured_rate(state, &r.agent, &r.library)?;
    r.back_by = back_by;
    r.restore_seconds = if rate > 0.0 {
        (bytes as f64 / rate).ceil() as i64
    } else {
        0
    };
    let estimate = if rate > 0.0 {
        format!(
            "then about {} s to restore {bytes} bytes at {:.1} MB/s measured on library {}",
            r.restore_seconds,
            rate / 1e6,
            r.library
        )
    } else {
        format!(
            "then {bytes} bytes to restore (no rate measured on library {} yet)",
            r.library
        )
    };
    let note = format!(
        "{}; back in {} h, {estimate}; the request goes on when they are home (`cintactl moves confirm`)",
        lines.join(", "),
        (back_by - now + 3599) / 3600
    );
    r.step(now, "recall", who, note.clone());
    save(state, r)?;
    state.event(
        "restore.recall",
        &format!("restore request {}: {note}", r.id),
    );
    Ok(())
}

/// Queues the next attempt's job and records it.
fn start_attempt(state: &State, r: &mut Request, who: &str) -> Result<()> {
    let a = Assignment {
        restores: r
            .plan
            .iter()
            .map(|p| RestoreItem {
                save_set: p.save_set.clone(),
                select: p.select.clone(),
                to: r.spec.to.clone(),
                replace: true,
                command: p.command.clone(),
            })
            .collect(),
        ..Assignment::chores(r.library.clone())
    };
    let job = state.queue_job(&format!("restore {}", r.id), &r.agent, a, who)?;
    let now = state.now();
    r.attempts.push(Attempt {
        job: job.id.clone(),
        started: now,
        ended: 0,
        state: "running".into(),
        message: String::new(),
        outcomes: vec![],
    });
    let n = r.attempts.len();
    r.retry_at = 0;
    r.step(
        now,
        "restoring",
        who,
        format!("attempt {n}: job {}", job.id),
    );
    save(state, r)
}

/// What the agent said of a restore job it finished (before the tick
/// looks at the job).
/// Whether the job was a request's.
pub fn record_outcomes(state: &State, job: &str, outcomes: &[Outcome]) -> bool {
    let _one = moving();
    let found = list(state, false).map(|rs| {
        rs.into_iter()
            .find(|r| r.attempts.last().is_some_and(|a| a.job == job))
    });
    match found {
        Ok(Some(mut r)) => {
            if let Some(a) = r.attempts.last_mut() {
                a.outcomes = outcomes.to_vec();
            }
            if let Err(e) = save(state, &r) {
                tracing::error!(request = %r.id, error = %e, "could not record a restore's outcome");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %e, "could not read the restore requests");
            false
        }
    }
}

/// Moves every restoring request on whose job ended: verified, tried
/// again, or failed. Runs with the housekeeping sweeps.
pub fn tick(state: &State) {
    let _one = moving();
    let open = match list(state, false) {
        Ok(rs) => rs,
        Err(e) => {
            tracing::error!(error = %e, "could not read the restore requests");
            return;
        }
    };
    for mut r in open
        .into_iter()
        .filter(|r| r.state == "restoring" || r.state == "recall")
    {
        let r_ = if r.state == "recall" {
            recalled(state, &mut r)
        } else {
            advance(state, &mut r)
        };
        if let Err(e) = r_ {
            tracing::error!(request = %r.id, error = %e, "a restore request could not go on");
        }
    }
}

/// A request waiting for its cartridges goes on once all are home.
fn recalled(state: &State, r: &mut Request) -> Result<()> {
    if away(state, r)?.is_empty() {
        start_attempt(state, r, "controller")?;
    }
    Ok(())
}

fn advance(state: &State, r: &mut Request) -> Result<()> {
    let Some(a) = r.attempts.last() else {
        return Ok(());
    };
    // A failed attempt waits its time, then the next starts.
    if a.state != "running" {
        if r.retry_at > 0 && state.now() >= r.retry_at {
            return start_attempt(state, r, "controller");
        }
        return Ok(());
    }
    let job = match state.catalog().job(&a.job)? {
        Some(j) if crate::state::ended(&j.state) => j,
        _ => return Ok(()),
    };
    let now = state.now();
    let n = r.attempts.len();
    let a = r.attempts.last_mut().expect("one attempt at least");
    a.ended = job.finished.max(now);
    a.state = if job.state == "succeeded" {
        "succeeded".into()
    } else {
        "failed".into()
    };
    a.message = job.message.clone();
    let whole = job.state == "succeeded"
        && a.outcomes.len() == r.plan.len()
        && a.outcomes.iter().all(|o| o.failed.is_empty());
    if whole {
        r.objects = a.outcomes.iter().map(|o| o.objects).sum();
        r.bytes = a.outcomes.iter().map(|o| o.bytes).sum();
        let note = format!(
            "{} objects, {} bytes restored into {} on {}, every digest checked against the save sets' index",
            r.objects, r.bytes, r.spec.to, r.agent
        );
        r.step(now, "verified", "controller", note.clone());
        save(state, r)?;
        state.event(
            "restore.verified",
            &format!("restore request {}: {note}", r.id),
        );
        notify(state, r, "restored and verified", format!("Done: {note}."));
        return Ok(());
    }
    let why = if job.message.is_empty() {
        job.state.clone()
    } else {
        job.message.clone()
    };
    if job.state != "cancelled" && (n as u32) < state.cfg.restore.attempts {
        let after = i64::from(state.cfg.restore.retry_after_seconds);
        r.retry_at = now + after;
        state.event_at(
            Level::Warn,
            "restore.retry",
            &format!(
                "restore request {}: attempt {n} failed ({why}); tried again in {after} s",
                r.id
            ),
        );
        r.history.push(Step {
            time: now,
            state: "failed".into(),
            who: "controller".into(),
            note: format!("attempt {n}: {why}; the next in {after} s"),
        });
        return save(state, r);
    }
    r.outcome = "failed".into();
    r.step(
        now,
        "failed",
        "controller",
        format!("attempt {n} of {}: {why}", state.cfg.restore.attempts),
    );
    save(state, r)?;
    state.event_at(
        Level::Error,
        "restore.failed",
        &format!("restore request {} failed after {n} attempts: {why}", r.id),
    );
    notify(
        state,
        r,
        "failed",
        format!(
            "It could not be restored after {n} attempts: {why}. The operators have been alerted."
        ),
    );
    Ok(())
}

/// Closes a request (a restore still running is cancelled).
pub fn close(state: &State, id: &str, who: &str, note: &str) -> Result<Request> {
    let _one = moving();
    let mut r = get(state, id)?;
    if !r.open() {
        return Err(Error::Precondition(format!(
            "restore request {id} is closed already"
        )));
    }
    if matches!(
        r.state.as_str(),
        "restoring" | "recall" | "awaiting approval"
    ) {
        if let Some(a) = r.attempts.last_mut().filter(|a| a.state == "running") {
            let _ = state.cancel_job(&a.job, who);
            a.state = "failed".into();
            a.message = format!("cancelled by {who}");
            a.ended = state.now();
        }
        r.retry_at = 0;
        r.outcome = "cancelled".into();
    } else if r.state == "verified" || r.state == "delivered" {
        r.outcome = "served".into();
    }
    let now = state.now();
    r.step(now, "closed", who, note.to_string());
    save(state, &r)?;
    state.event(
        "restore.closed",
        &format!("restore request {id} closed by {who} ({})", r.outcome),
    );
    notify(
        state,
        &r,
        "closed",
        format!("Closed by {who} ({}). {note}", r.outcome),
    );
    Ok(r)
}
