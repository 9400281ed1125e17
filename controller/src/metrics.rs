//! The Prometheus text exposition: agents, usage, watches, jobs, events, tonight, and the night counters kept in the catalog (so they survive the next night and a restart).

use std::fmt::Write;

use crate::state::State;

/// Catalog keys of the persisted counters: escalations, and nights by outcome.
pub const ESCALATIONS_KEY: &str = "metric.night_escalations";
pub fn outcome_key(outcome: &str) -> String {
    format!("metric.nights.{outcome}")
}

/// Adds one to a persisted counter.
pub fn count(state: &State, key: &str) {
    let mut cat = state.catalog();
    let n = cat
        .meta(key)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if let Err(e) = cat.set_meta(key, &(n + 1).to_string()) {
        tracing::error!(error = %e, key, "could not count");
    }
}

fn counter(state: &State, key: &str) -> u64 {
    state
        .catalog()
        .meta(key)
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn render(state: &State) -> String {
    let mut out = String::new();
    let t = state.now();
    let stale = 3 * i64::from(state.cfg.heartbeat_seconds);
    let jobs = state.catalog().job_counts().unwrap_or_default();
    let agents = state.agents_live();
    let up = agents.iter().filter(|a| t - a.last_seen <= stale).count();
    let _ = writeln!(
        out,
        "# HELP cinta_agents Agents by connection state.\n# TYPE cinta_agents gauge"
    );
    let _ = writeln!(out, "cinta_agents{{state=\"connected\"}} {up}");
    let _ = writeln!(out, "cinta_agents{{state=\"away\"}} {}", agents.len() - up);
    let _ = writeln!(out, "# HELP cinta_agent_usage_percent Usage an agent reported (ASP, file systems).\n# TYPE cinta_agent_usage_percent gauge");
    for a in &agents {
        for (what, pct) in &a.usage {
            let _ = writeln!(
                out,
                "cinta_agent_usage_percent{{agent=\"{}\",what=\"{}\"}} {pct}",
                a.name,
                label(what)
            );
        }
    }
    let _ = writeln!(out, "# HELP cinta_watch_up A watched subsystem or process is up (1) or down (0), as its agent last reported.\n# TYPE cinta_watch_up gauge");
    for a in &agents {
        for (name, ok, _) in &a.watched {
            let _ = writeln!(
                out,
                "cinta_watch_up{{agent=\"{}\",name=\"{}\"}} {}",
                a.name,
                label(name),
                u8::from(*ok)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP cinta_jobs Jobs by state.\n# TYPE cinta_jobs gauge"
    );
    for (st, n) in jobs {
        let _ = writeln!(out, "cinta_jobs{{state=\"{st}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP cinta_events_total Events since the controller started, by kind.\n# TYPE cinta_events_total counter");
    for (kind, n) in state
        .events
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let _ = writeln!(out, "cinta_events_total{{kind=\"{kind}\"}} {n}");
    }
    let n = state.night().ok().flatten();
    let _ = writeln!(out, "# HELP cinta_night_escalated Tonight's night is escalated.\n# TYPE cinta_night_escalated gauge");
    let _ = writeln!(
        out,
        "cinta_night_escalated {}",
        n.as_ref().is_some_and(|n| n.escalated) as u8
    );
    let _ = writeln!(out, "# HELP cinta_night_escalations_total Night escalations ever (kept in the catalog).\n# TYPE cinta_night_escalations_total counter");
    let _ = writeln!(
        out,
        "cinta_night_escalations_total {}",
        counter(state, ESCALATIONS_KEY)
    );
    let _ = writeln!(out, "# HELP cinta_nights_total Nights ended, by outcome (kept in the catalog).\n# TYPE cinta_nights_total counter");
    for o in ["ok", "degraded", "failed"] {
        let _ = writeln!(
            out,
            "cinta_nights_total{{outcome=\"{o}\"}} {}",
            counter(state, &outcome_key(o))
        );
    }
    out
}

fn label(s: &str) -> String {
    s.replace(['"', '\\'], "'")
}
