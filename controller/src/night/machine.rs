//! The night as a state machine: `step(night, plan, observed)` gives the next record and the actions to carry out. Pure: no I/O, no catalog, no clock (the time is observed).
//!
//! The driver ([`super::driver`]) gathers [`Observed`] (the time, how the
//! job the step waits for ended, whether the contingency agent is
//! connected), calls [`step`], carries out the [`Action`]s (queue a probe or
//! a save and put its job id where the night waits for it; raise an event)
//! and persists the record.

use super::probe;
use super::{Night, Outcome, Step};
use crate::config::NightPlan;

/// How a job the night waited for ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub id: String,
    /// succeeded, failed, cancelled; "not run" when it could not be queued.
    pub state: String,
    pub output: String,
    pub message: String,
    /// What its save sets warned of (warnings and objects changed while saved).
    pub warnings: u64,
}

impl Ended {
    pub fn ok(&self) -> bool {
        self.state == "succeeded"
    }

    /// What went wrong, for a note.
    fn why(&self) -> String {
        if self.message.is_empty() {
            self.state.clone()
        } else {
            self.message.clone()
        }
    }
}

/// What the driver saw this tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The schedule clock.
    pub now: i64,
    /// The job the current step waits for ([`Night::waiting_on`]), once it has ended.
    pub ended: Option<Ended>,
    /// The LPAR holding the contingency role, and whether its agent is connected.
    pub contingency: String,
    pub contingency_up: bool,
    /// The cartridges the contingency save wrote (read at catch-up).
    pub contingency_volumes: Vec<String>,
}

/// The LPAR a probe or save goes to: the one holding this role now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Production,
    Contingency,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Production => "production",
            Role::Contingency => "contingency",
        }
    }
}

/// Where the job id of a queued save goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    PreClose,
    PostClose,
    Contingency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue `command` on the LPAR holding `role`; its job becomes the
    /// step's (`step_job`). `note`: say so in the timeline.
    Probe {
        role: Role,
        label: &'static str,
        command: String,
        note: bool,
    },
    /// Queue control group `group` (on its target, or on the LPAR holding
    /// `on`); its job id goes to `slot`.
    Save {
        slot: Slot,
        group: String,
        on: Option<Role>,
    },
    Event {
        level: Level,
        kind: &'static str,
        text: String,
    },
    /// The contingency save's cartridges must go to the main site.
    CarryToMain { volumes: Vec<String> },
}

/// Backoff before retry `attempt` (1-based) of a failed step: 1, 2, 4, 8, then 15 minutes.
pub fn backoff_seconds(attempt: u32) -> i64 {
    60 * (1i64 << attempt.saturating_sub(1).min(4)).min(15)
}

/// The night started by the schedule: its pre-close save.
pub fn start(id: String, deadline: i64, plan: &NightPlan) -> (Night, Vec<Action>) {
    let n = Night::new(id.clone(), deadline);
    let actions = vec![
        Action::Save {
            slot: Slot::PreClose,
            group: plan.pre_close.clone(),
            on: None,
        },
        Action::Event {
            level: Level::Info,
            kind: "night.started",
            text: format!("night {id} started"),
        },
    ];
    (n, actions)
}

/// A new night is due while `n` has not finished: it is not replaced, it is escalated.
pub fn overlap(n: &Night, new_id: &str, now: i64) -> (Night, Vec<Action>) {
    let mut m = Machine::new(n, now);
    m.escalate(
        Level::Error,
        format!(
            "night {new_id} is due but night {} is not finished ({}); it is not replaced: finish or acknowledge it",
            n.id,
            n.state.as_str()
        ),
    );
    m.done()
}

/// One step of the night.
pub fn step(n: &Night, plan: &NightPlan, obs: &Observed) -> (Night, Vec<Action>) {
    let mut m = Machine::new(n, obs.now);
    m.advance(plan, obs);
    m.late(obs);
    m.done()
}

struct Machine {
    n: Night,
    now: i64,
    actions: Vec<Action>,
}

impl Machine {
    fn new(n: &Night, now: i64) -> Machine {
        Machine {
            n: n.clone(),
            now,
            actions: vec![],
        }
    }

    fn done(self) -> (Night, Vec<Action>) {
        (self.n, self.actions)
    }

    fn note(&mut self, text: impl Into<String>) {
        self.n.note(self.now, text);
    }

    fn event(&mut self, level: Level, kind: &'static str, text: String) {
        self.actions.push(Action::Event { level, kind, text });
    }

    /// An escalation: in the timeline and as an event of its own.
    fn escalate(&mut self, level: Level, why: String) {
        self.n.escalated = true;
        self.note(format!("ESCALATION: {why}"));
        let text = format!("night {}: {why}", self.n.id);
        self.event(level, "night.escalated", text);
    }

    fn probe(&mut self, role: Role, to: Step, command: &str) {
        self.n.state = to;
        self.n.step_job.clear();
        self.actions.push(Action::Probe {
            role,
            label: to.as_str(),
            command: command.to_string(),
            note: true,
        });
    }

    fn save(&mut self, slot: Slot, group: &str, on: Option<Role>) {
        self.actions.push(Action::Save {
            slot,
            group: group.to_string(),
            on,
        });
    }

    /// The save on the contingency LPAR (its job id goes to `contingency_job`).
    fn contingency_save(&mut self, plan: &NightPlan) {
        self.n.state = Step::ContingencySave;
        self.n.contingency_job.clear();
        self.save(Slot::Contingency, &plan.post_close, Some(Role::Contingency));
    }

    /// Who acknowledged tonight's escalation, if someone did.
    fn acknowledged(&self) -> Option<String> {
        (!self.n.acknowledged_by.is_empty()).then(|| self.n.acknowledged_by.clone())
    }

    fn post_close(&mut self, plan: &NightPlan) {
        self.n.state = Step::PostClose;
        self.save(Slot::PostClose, &plan.post_close, None);
    }

    /// Ends the night without its save.
    fn give_up(&mut self, why: &str) {
        self.escalate(Level::Error, format!("{why}; no post-close save tonight"));
        let text = format!("night {}: {why}", self.n.id);
        self.event(Level::Error, "night.failed", text);
        self.finish("");
    }

    /// The night is done; its outcome follows from what was saved and what escalated.
    fn finish(&mut self, how: &str) {
        let outcome = if !self.n.saved {
            Outcome::Failed
        } else if self.n.escalated || self.n.warnings > 0 {
            Outcome::Degraded
        } else {
            Outcome::Ok
        };
        self.n.state = Step::Done;
        self.n.outcome = Some(outcome);
        self.n.retry_pending = false;
        if !how.is_empty() {
            self.note(format!("night done ({how}): {}", outcome.as_str()));
        }
        let level = match outcome {
            Outcome::Ok => Level::Info,
            Outcome::Degraded => Level::Warn,
            Outcome::Failed => Level::Error,
        };
        let text = format!(
            "night {}: {}{}",
            self.n.id,
            outcome.as_str(),
            if how.is_empty() {
                String::new()
            } else {
                format!(" ({how})")
            }
        );
        self.event(level, "night.done", text);
    }

    fn advance(&mut self, plan: &NightPlan, obs: &Observed) {
        let ended = obs.ended.clone();
        match self.n.state {
            Step::PreClose => {
                let Some(j) = ended else { return };
                self.note(format!("pre-close save {}; close window open", j.state));
                if !j.ok() {
                    self.escalate(
                        Level::Warn,
                        format!("the pre-close save {}: {}", j.state, j.why()),
                    );
                }
                self.n.state = Step::CloseWindow;
                self.n.step_job.clear();
                self.close_window(plan, None);
            }
            Step::CloseWindow => self.close_window(plan, ended),
            Step::QuiesceCheck | Step::QuiesceRecheck | Step::QuiesceFinal => {
                let Some(j) = ended else { return };
                self.quiesce(plan, &j);
            }
            Step::QuiesceWait => {
                if self.now >= self.n.wait_until {
                    if let Some(p) = &plan.quiesce_probe {
                        self.probe(Role::Production, Step::QuiesceRecheck, p);
                    }
                }
            }
            Step::Signoff => {
                let Some(j) = ended else { return };
                self.note(if j.ok() {
                    format!("sign-off ran: {}", j.output.trim())
                } else {
                    format!("sign-off failed: {}", j.why())
                });
                if let Some(p) = &plan.quiesce_probe {
                    self.probe(Role::Production, Step::QuiesceFinal, p);
                }
            }
            Step::ReplicationCheck => {
                let (Some(j), Some(c)) = (ended, &plan.contingency) else {
                    return;
                };
                match probe::replication(&j.output).filter(|_| j.ok()) {
                    Some(r) if r.backlog <= c.max_backlog && r.latency <= c.max_latency_seconds => {
                        self.note(format!(
                            "replication healthy (backlog {}, latency {}s)",
                            r.backlog, r.latency
                        ));
                        self.probe(Role::Contingency, Step::Suspend, &c.suspend);
                    }
                    Some(r) => {
                        // Only the limits exceeded, each as it stands.
                        let mut over = Vec::new();
                        if r.backlog > c.max_backlog {
                            over.push(format!("backlog {} > {} allowed", r.backlog, c.max_backlog));
                        }
                        if r.latency > c.max_latency_seconds {
                            over.push(format!(
                                "latency {}s > {}s allowed",
                                r.latency, c.max_latency_seconds
                            ));
                        }
                        self.give_up(&format!(
                            "replication unhealthy ({}); the contingency copy is not current",
                            over.join(", ")
                        ))
                    }
                    None => self.give_up(&format!(
                        "the replication probe did not answer ({}: {})",
                        j.state, j.message
                    )),
                }
            }
            Step::Suspend => {
                let (Some(j), Some(c)) = (ended, &plan.contingency) else {
                    return;
                };
                if !j.ok() {
                    self.note(format!("suspending apply failed: {}", j.why()));
                    self.escalate(
                        Level::Error,
                        "apply could not be suspended; no contingency save".into(),
                    );
                    // Whatever state apply is in, ask for it running again.
                    self.n.apply_suspended = true;
                    self.n.attempts = 1;
                    self.probe(Role::Contingency, Step::Resume, &c.resume);
                    return;
                }
                self.n.recovery_point = j.output.trim().to_string();
                self.n.apply_suspended = true;
                let rp = self.n.recovery_point.clone();
                self.note(format!("apply suspended; {rp}"));
                self.n.attempts = 1;
                self.contingency_save(plan);
            }
            Step::ContingencySave => {
                let Some(c) = &plan.contingency else { return };
                if self.n.retry_pending {
                    if let Some(who) = self.acknowledged() {
                        self.note(format!(
                            "{who} acknowledged: the contingency save is not tried again"
                        ));
                        self.n.retry_pending = false;
                        self.n.attempts = 1;
                        self.probe(Role::Contingency, Step::Resume, &c.resume);
                    } else if self.retry_due(obs) {
                        self.n.retry_pending = false;
                        self.n.attempts += 1;
                        let a = self.n.attempts;
                        self.note(format!(
                            "contingency save: attempt {a} of {} (apply still suspended at the recovery point)",
                            c.save_attempts
                        ));
                        self.contingency_save(plan);
                    }
                    return;
                }
                let Some(j) = ended else { return };
                self.note(format!("contingency save {} {}", j.id, j.state));
                if j.ok() {
                    self.n.saved = true;
                    self.warned(&j, "contingency save");
                } else {
                    self.escalate(
                        Level::Error,
                        format!("the contingency save failed: {}", j.why()),
                    );
                    if self.n.attempts < c.save_attempts {
                        self.wait_for_retry(obs, "save again");
                        return;
                    }
                }
                self.n.attempts = 1;
                self.probe(Role::Contingency, Step::Resume, &c.resume);
            }
            Step::Resume => {
                let Some(c) = &plan.contingency else { return };
                if self.n.retry_pending {
                    if let Some(who) = self.acknowledged() {
                        self.note(format!(
                            "{who} acknowledged: resume is no longer retried; apply is left suspended"
                        ));
                        self.finish("apply left suspended, acknowledged");
                    } else if self.retry_due(obs) {
                        self.n.retry_pending = false;
                        self.n.attempts += 1;
                        let a = self.n.attempts;
                        self.note(format!("resuming apply: attempt {a}"));
                        self.probe(Role::Contingency, Step::Resume, &c.resume);
                    }
                    return;
                }
                let Some(j) = ended else { return };
                if j.ok() {
                    self.note("apply resumed");
                    self.probe(Role::Contingency, Step::CatchUp, &c.replication_probe);
                } else {
                    let a = self.n.attempts;
                    self.escalate(
                        Level::Error,
                        format!(
                            "apply could not be resumed (attempt {a}): {}; it stays suspended until resume works or an operator acknowledges (`cintactl tonight ack`)",
                            j.why()
                        ),
                    );
                    self.wait_for_retry(obs, "resume apply");
                }
            }
            Step::CatchUp => {
                let Some(j) = ended else { return };
                let r = probe::replication(&j.output).filter(|_| j.ok());
                if let Some(r) = r.as_ref().filter(|r| r.apply_stopped()) {
                    let a = r.apply.clone().unwrap_or_default();
                    self.escalate(
                        Level::Error,
                        format!("apply is not running after resume (apply={a}); resuming again"),
                    );
                    self.n.state = Step::Resume;
                    self.wait_for_retry(obs, "resume apply");
                    return;
                }
                match r {
                    Some(r) => self.note(format!(
                        "replication catching up: backlog {}, latency {}s",
                        r.backlog, r.latency
                    )),
                    None => self.note(format!(
                        "replication after resume: {}",
                        if j.ok() { j.output.trim() } else { &j.message }
                    )),
                }
                self.n.apply_suspended = false;
                if !obs.contingency_volumes.is_empty() {
                    self.actions.push(Action::CarryToMain {
                        volumes: obs.contingency_volumes.clone(),
                    });
                }
                self.finish("contingency fallback");
            }
            Step::PostClose => {
                let Some(j) = ended else { return };
                self.note(format!("post-close save {}; night done", j.state));
                if j.ok() {
                    self.n.saved = true;
                    self.warned(&j, "post-close save");
                } else {
                    self.escalate(
                        Level::Error,
                        format!("the post-close save {}: {}", j.state, j.why()),
                    );
                }
                self.finish("");
            }
            Step::Done => {}
        }
    }

    /// A save that worked with warnings (objects changed while saved):
    /// said in the timeline, and the night is not plainly ok.
    fn warned(&mut self, j: &Ended, what: &str) {
        if j.warnings > 0 {
            self.n.warnings += j.warnings;
            self.note(format!(
                "WARNING: the {what} {} has {} warnings (objects changed while saved, files left out): `cintactl job {}`",
                j.id, j.warnings, j.id
            ));
        }
    }

    /// The close window: the close probe (when configured) until the close
    /// is finished, then the quiesce check or the post-close save.
    fn close_window(&mut self, plan: &NightPlan, ended: Option<Ended>) {
        if self.n.close_finished.is_none() {
            let Some(cmd) = &plan.close_probe else { return };
            if let Some(j) = ended {
                self.n.step_job.clear();
                if j.ok() && probe::close_finished(&j.output) {
                    self.n.close_finished = Some(self.now);
                    self.note("close finished (reported by the close probe on production)");
                    let text = format!("night {}: close finished (probe)", self.n.id);
                    self.event(Level::Info, "close.signal", text);
                }
            } else if self.n.step_job.is_empty() && self.now >= self.n.wait_until {
                self.n.wait_until =
                    self.now + 60 * i64::from(plan.close_probe_every_minutes.max(1));
                self.actions.push(Action::Probe {
                    role: Role::Production,
                    label: "close-probe",
                    command: cmd.clone(),
                    note: false,
                });
                return;
            }
        }
        if self.n.close_finished.is_some() {
            match &plan.quiesce_probe {
                Some(p) => self.probe(Role::Production, Step::QuiesceCheck, p),
                None => self.post_close(plan),
            }
        }
    }

    fn quiesce(&mut self, plan: &NightPlan, j: &Ended) {
        let users = probe::users(&j.output).filter(|_| j.ok());
        if users == Some(0) {
            self.note("production is quiet");
            self.post_close(plan);
            return;
        }
        let why = match users {
            Some(u) => format!("{u} users still signed on"),
            None => format!(
                "the quiesce probe did not answer ({}: {})",
                j.state, j.message
            ),
        };
        if self.n.state == Step::QuiesceCheck {
            self.n.wait_until = self.now + 60 * i64::from(plan.quiesce_grace_minutes);
            self.note(format!(
                "{why}; waiting {} min before falling back",
                plan.quiesce_grace_minutes
            ));
            self.n.state = Step::QuiesceWait;
        } else if let (Step::QuiesceRecheck, Some(cmd)) = (self.n.state, &plan.force_signoff) {
            self.note(format!(
                "{why} after the grace period; forcing sign-off (policy)"
            ));
            let text = format!("night {}: {why}; ending their jobs by policy", self.n.id);
            self.event(Level::Warn, "signoff.forced", text);
            self.probe(Role::Production, Step::Signoff, cmd);
        } else {
            self.note(format!(
                "{why}: production cannot be quiesced; FALLBACK to contingency"
            ));
            let text = format!("night {}: {why}; saving on contingency", self.n.id);
            self.event(Level::Warn, "fallback.taken", text);
            match &plan.contingency {
                Some(c) => self.probe(
                    Role::Contingency,
                    Step::ReplicationCheck,
                    &c.replication_probe,
                ),
                None => {
                    self.give_up("production cannot be quiesced and no contingency is configured")
                }
            }
        }
    }

    /// A failed step waits to be tried again: until its backoff has passed,
    /// or, when the contingency agent is away, until it is back.
    fn wait_for_retry(&mut self, obs: &Observed, what: &str) {
        self.n.retry_pending = true;
        let wait = backoff_seconds(self.n.attempts);
        self.n.wait_until = self.now + wait;
        if obs.contingency_up {
            self.note(format!("will {what} in {} min", wait / 60));
        } else {
            let who = if obs.contingency.is_empty() {
                "the contingency LPAR's agent".to_string()
            } else {
                format!("agent {}", obs.contingency)
            };
            self.note(format!(
                "{who} is not connected: will {what} when it is back"
            ));
            // Back means at once: no backoff for a job the agent never saw.
            self.n.wait_until = self.now;
        }
    }

    fn retry_due(&self, obs: &Observed) -> bool {
        obs.contingency_up && self.now >= self.n.wait_until
    }

    /// A close still open at its deadline (plus grace) is escalated, once.
    fn late(&mut self, obs: &Observed) {
        let open = self.n.close_finished.is_none()
            && matches!(self.n.state, Step::PreClose | Step::CloseWindow);
        if open && !self.n.close_late && obs.now >= self.n.deadline {
            self.n.close_late = true;
            self.escalate(
                Level::Warn,
                "the close is still running past its deadline".into(),
            );
            let text = format!(
                "night {}: the close is still running past its deadline; escalated",
                self.n.id
            );
            self.event(Level::Warn, "close.late", text);
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
