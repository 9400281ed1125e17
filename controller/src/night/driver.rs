//! The night's driver: reads tonight's record and what happened since (the job the step waits for, the contingency agent), runs the pure machine, carries out its actions (queue probes and saves, raise events, order cartridges carried) and persists the record.

use super::machine::{self, Action, Ended, Level, Observed, Role, Slot};
use super::{Night, Step};
use crate::state::{ended, State};

/// Advances tonight; `start` is a night the schedule says begins now (its id and deadline).
pub fn advance(state: &State, start: Option<(String, i64)>, now: i64) {
    let Some(plan) = &state.cfg.night else { return };
    let mut current = match state.night() {
        Ok(n) => n,
        Err(e) => {
            // Never replaced unseen: say so, and leave the record as it is.
            tracing::error!(error = %e, "tonight's record cannot be read; the night is not advanced");
            return;
        }
    };
    if let Some((id, deadline)) = start {
        match &current {
            Some(n) if n.state != Step::Done && n.id != id => {
                let (m, actions) = machine::overlap(n, &id, now);
                current = Some(carry_out(state, m, actions, now));
            }
            Some(n) if n.id == id => {}
            _ => {
                let (m, actions) = machine::start(id, deadline, plan);
                current = Some(carry_out(state, m, actions, now));
            }
        }
    }
    let Some(n) = current.filter(|n| n.state != Step::Done) else {
        return;
    };
    let obs = observe(state, &n, now);
    let (m, actions) = machine::step(&n, plan, &obs);
    if m != n || !actions.is_empty() {
        carry_out(state, m, actions, now);
    }
}

/// What the machine needs to know this tick.
fn observe(state: &State, n: &Night, now: i64) -> Observed {
    let contingency = state
        .holder_of("contingency")
        .ok()
        .flatten()
        .unwrap_or_default();
    let contingency_up =
        !contingency.is_empty() && crate::liveness::is_connected(state, &contingency);
    let ended = n.waiting_on().and_then(|id| {
        if id.is_empty() {
            return Some(Ended {
                id: String::new(),
                state: "not run".into(),
                output: String::new(),
                message: "it could not be queued".into(),
                warnings: 0,
            });
        }
        let j = state.catalog().job(id).ok().flatten()?;
        ended(&j.state).then(|| Ended {
            warnings: j.save_sets.iter().map(|s| s.warning_count()).sum(),
            id: j.id,
            state: j.state,
            output: j.output,
            message: j.message,
        })
    });
    let contingency_volumes = if n.state == Step::CatchUp {
        state
            .catalog()
            .job(&n.contingency_job)
            .ok()
            .flatten()
            .map(|j| j.save_sets.iter().flat_map(|s| s.volumes.clone()).collect())
            .unwrap_or_default()
    } else {
        vec![]
    };
    Observed {
        now,
        ended,
        contingency,
        contingency_up,
        contingency_volumes,
    }
}

/// Carries out `actions` on night `n` and persists it; the night as saved.
fn carry_out(state: &State, mut n: Night, actions: Vec<Action>, now: i64) -> Night {
    let mut events = Vec::new();
    for a in actions {
        match a {
            Action::Probe {
                role,
                label,
                command,
                note,
            } => {
                let lpar = state.holder_of(role.as_str()).ok().flatten();
                let queued = match &lpar {
                    Some(l) => state
                        .queue_command(l, label, &command, "night")
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no LPAR holds the {} role", role.as_str())),
                };
                match queued {
                    Ok(j) => {
                        if note {
                            let probe = probe_name(label);
                            n.note(
                                now,
                                format!(
                                    "{label}: {probe} on the {} LPAR {} (job {})",
                                    role.as_str(),
                                    j.agent,
                                    j.id
                                ),
                            );
                        }
                        n.step_job = j.id;
                    }
                    Err(e) => {
                        n.note(now, format!("{label} could not be queued: {e}"));
                        // Seen as "not run" at the next tick, when the step waits on it.
                        n.step_job.clear();
                        if !note {
                            n.wait_until = now;
                        }
                    }
                }
            }
            Action::Save { slot, group, on } => {
                let what = match slot {
                    Slot::PreClose => "pre-close",
                    Slot::PostClose => "post-close",
                    Slot::Contingency => "contingency",
                };
                let lpar = on.map(|r| state.holder_of(r.as_str()).ok().flatten());
                let queued = match lpar {
                    None => state.queue(&group, "night").map_err(|e| e.to_string()),
                    Some(Some(l)) => state
                        .queue_on(&group, Some(&l), "night")
                        .map_err(|e| e.to_string()),
                    Some(None) => Err(format!(
                        "no LPAR holds the {} role",
                        on.map(Role::as_str).unwrap_or("")
                    )),
                };
                let id = match queued {
                    Ok(j) => {
                        let text = match slot {
                            Slot::Contingency => {
                                format!("contingency save {} queued ({group} on {})", j.id, j.agent)
                            }
                            _ => format!("{what} save {} queued ({group})", j.id),
                        };
                        n.note(now, text);
                        j.id
                    }
                    Err(e) => {
                        n.note(now, format!("{what} save could not be queued: {e}"));
                        String::new()
                    }
                };
                match slot {
                    Slot::PreClose => n.pre_close_job = id,
                    Slot::PostClose => n.post_close_job = id,
                    Slot::Contingency => n.contingency_job = id,
                }
            }
            Action::Event { level, kind, text } => events.push((level, kind, text)),
            Action::CarryToMain { volumes } => {
                let main = state
                    .holder_of("production")
                    .ok()
                    .flatten()
                    .and_then(|p| state.cfg.lpars.iter().find(|l| l.name == p))
                    .map(|l| l.site.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "main".into());
                let to = format!("SITE {main}");
                crate::media::order_carry(state, &volumes, &to);
                n.note(
                    now,
                    format!(
                        "MEDIA: cartridges {} were written at the contingency site and must move to the main site ({to}; `cintactl moves start`)",
                        volumes.join(", ")
                    ),
                );
                events.push((
                    Level::Info,
                    "media.move",
                    format!(
                        "night {}: move {} from the contingency site",
                        n.id,
                        volumes.join(", ")
                    ),
                ));
            }
        }
    }
    // The record first: an event's reader then finds the night as it says.
    state.save_night(&n);
    for (level, kind, text) in events {
        if kind == "night.escalated" {
            crate::metrics::count(state, crate::metrics::ESCALATIONS_KEY);
        }
        if kind == "night.done" {
            if let Some(o) = n.outcome {
                crate::metrics::count(state, &crate::metrics::outcome_key(o.as_str()));
            }
        }
        state.event_at(level, kind, &text);
    }
    n
}

/// How a probe or hook is named in the timeline: by what it is in the
/// configuration, not by its whole shell command (that stays in its job).
pub fn probe_name(label: &str) -> &'static str {
    match label {
        "quiesce-check" | "quiesce-recheck" | "quiesce-final" => "the quiesce probe",
        "signoff" => "the force_signoff command",
        "replication-check" | "catch-up" => "the replication probe",
        "suspend" => "the suspend hook",
        "resume" => "the resume hook",
        "close-probe" => "the close probe",
        _ => "the command",
    }
}
