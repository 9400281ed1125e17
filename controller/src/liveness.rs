//! Which agents are alive: their last heartbeat (usage, watches), when each was last heard from in real time, and the sweep that fails the jobs of agents silent past `agent_lost_seconds`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::AgentRow;
use crate::state::State;

/// An agent's last heartbeat: when (schedule clock), the usage and the watches it reported.
type Beat = (i64, Vec<(String, f64)>, Vec<(String, bool, String)>);

pub struct Liveness {
    /// Last heartbeat per agent (not persisted: refreshed every few seconds).
    beats: Mutex<HashMap<String, Beat>>,
    /// When each agent was last heard from, in real time (not the schedule
    /// clock, which tests and demos move by hours).
    heard: Mutex<HashMap<String, Instant>>,
    /// When this controller started (agents not heard from since count from here).
    started: Instant,
    /// Agents already reported lost (one event per loss).
    lost: Mutex<HashSet<String>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            beats: Mutex::default(),
            heard: Mutex::default(),
            started: Instant::now(),
            lost: Mutex::default(),
        }
    }

    /// Notes that `agent` was heard from (registration, heartbeat).
    pub fn heard_from(&self, agent: &str) {
        lock(&self.heard).insert(agent.to_string(), Instant::now());
        lock(&self.lost).remove(agent);
    }

    /// Keeps a heartbeat's figures.
    pub fn beat(
        &self,
        agent: &str,
        at: i64,
        usage: Vec<(String, f64)>,
        watched: Vec<(String, bool, String)>,
    ) {
        lock(&self.beats).insert(agent.to_string(), (at, usage, watched));
        self.heard_from(agent);
    }

    /// Puts the last heartbeat's figures into the agents' rows.
    pub fn fill(&self, agents: &mut [AgentRow]) {
        let beats = lock(&self.beats);
        for a in agents {
            if let Some((t, usage, watched)) = beats.get(&a.name) {
                a.last_seen = a.last_seen.max(*t);
                a.usage = usage.clone();
                a.watched = watched.clone();
            }
        }
    }

    /// How long `agent` has been silent (since this controller started, if never heard).
    pub fn silent_for(&self, agent: &str) -> Duration {
        lock(&self.heard)
            .get(agent)
            .copied()
            .unwrap_or(self.started)
            .elapsed()
    }

    /// Heard from within `within` (in real time).
    pub fn connected(&self, agent: &str, within: Duration) -> bool {
        lock(&self.heard)
            .get(agent)
            .is_some_and(|t| t.elapsed() <= within)
    }

    /// Marks `agent` lost; true the first time since it was last heard from.
    fn mark_lost(&self, agent: &str) -> bool {
        lock(&self.lost).insert(agent.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `agent` is connected: heard from within three heartbeats.
pub fn is_connected(state: &State, agent: &str) -> bool {
    let within = Duration::from_secs(3 * u64::from(state.cfg.heartbeat_seconds.max(1)));
    state.liveness.connected(agent, within)
}

/// Fails the queued and running jobs of agents silent longer than
/// `agent_lost_seconds`, so nothing waits on them for ever.
pub fn sweep_lost_agents(state: &State, now: i64) {
    let limit = Duration::from_secs(u64::from(state.cfg.agent_lost_seconds));
    if limit.is_zero() {
        return;
    }
    let jobs = state.catalog().active_jobs().unwrap_or_default();
    for j in jobs
        .into_iter()
        .filter(|j| state.liveness.silent_for(&j.agent) > limit)
    {
        if state.liveness.mark_lost(&j.agent) {
            state.event(
                "agent.lost",
                &format!(
                    "agent {} silent for more than {}s: its jobs are failed",
                    j.agent,
                    limit.as_secs()
                ),
            );
        }
        let why = format!(
            "agent {} silent for more than {}s (lost); the job was {} and is given up",
            j.agent,
            limit.as_secs(),
            j.state
        );
        // (The catalog's lock is let go before the event takes it again.)
        let abandoned = state.catalog().abandon(&j.id, &why, now);
        if let Ok(true) = abandoned {
            state.forget_unfinished(&j.id);
            state.event("job.failed", &format!("job {} failed: {why}", j.id));
        }
    }
}
