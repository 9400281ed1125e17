//! The scheduler's tick, a few times a second: schedules due, tonight's night, and every few seconds the sweeps (media jobs, lost agents, retention, copies, restore requests).

use std::time::{Duration, Instant};

use crate::night::LAST_KEY;
use crate::state::State;

/// How often the sweeps run (they read every save set and volume).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// One tick (see [`crate::night`]).
pub fn tick(state: &State) {
    let now = state.now();
    let last = state
        .catalog()
        .meta(LAST_KEY)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<i64>().ok());
    let Some(last) = last else {
        let _ = state.catalog().set_meta(LAST_KEY, &now.to_string());
        return;
    };
    // Schedules and night starts look at the time passed since the last
    // tick; tonight's progress (jobs ending, signals) is looked at always.
    let d = if now > last {
        crate::night::due(&state.cfg, last, now)
    } else {
        crate::night::Decisions::default()
    };
    for g in &d.run {
        if let Err(e) = state.queue(g, "schedule") {
            state.event("schedule.failed", &format!("schedule of {g}: {e}"));
        }
    }
    crate::night::driver::advance(state, d.start_night, now);
    if now > last {
        crate::drills::due(state, last, now);
    }
    if sweep_due(state) {
        crate::media::media_jobs(state, now);
        crate::liveness::sweep_lost_agents(state, now);
        crate::retention::sweep(state, now);
        crate::copies::sweep(state);
        crate::restores::tick(state);
        crate::drills::tick(state);
    }
    if now > last {
        let _ = state.catalog().set_meta(LAST_KEY, &now.to_string());
    }
}

fn sweep_due(state: &State) -> bool {
    let mut last = state.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
        return false;
    }
    *last = Some(Instant::now());
    true
}
