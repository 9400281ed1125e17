//! The night: calendar schedules and the nightly close, as a persisted record ([`Night`]) moved by a pure state machine ([`machine`]) that a thin driver ([`driver`]) feeds with what it observed and whose actions it carries out.
//!
//! The scheduler's tick looks at the time elapsed since the last tick
//! (stored in the catalog, so a restart neither repeats nor forgets a step):
//! a schedule with an occurrence in that span queues its control group once
//! ([`due`]); tonight's record moves pre-close -> close-window -> (quiesce
//! checks, the contingency fallback) -> post-close -> done, every step
//! persisted. [`probe`] reads what probes print.

pub mod driver;
pub mod machine;
pub mod probe;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Where tonight stands. Stored under these (kebab-case) names, the ones
/// catalogs written before the machine was typed hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The pre-close save runs.
    PreClose,
    /// Waiting for the business close to finish (operator, or the close probe).
    CloseWindow,
    /// Asking production how many users are still signed on.
    QuiesceCheck,
    /// Users were on: the grace period.
    QuiesceWait,
    /// Asking again after the grace period.
    QuiesceRecheck,
    /// The forced sign-off (policy) runs.
    Signoff,
    /// Asking once more after the sign-off.
    QuiesceFinal,
    /// Is the replica current enough to be saved instead?
    ReplicationCheck,
    /// Suspending apply on the contingency LPAR.
    Suspend,
    /// The save on the contingency LPAR.
    ContingencySave,
    /// Resuming apply (retried until it works or is acknowledged).
    Resume,
    /// Checking apply runs and replication catches up.
    CatchUp,
    /// The post-close save on production.
    PostClose,
    /// Nothing more tonight.
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::PreClose => "pre-close",
            Step::CloseWindow => "close-window",
            Step::QuiesceCheck => "quiesce-check",
            Step::QuiesceWait => "quiesce-wait",
            Step::QuiesceRecheck => "quiesce-recheck",
            Step::Signoff => "signoff",
            Step::QuiesceFinal => "quiesce-final",
            Step::ReplicationCheck => "replication-check",
            Step::Suspend => "suspend",
            Step::ContingencySave => "contingency-save",
            Step::Resume => "resume",
            Step::CatchUp => "catch-up",
            Step::PostClose => "post-close",
            Step::Done => "done",
        }
    }
}

/// How a night ended: its goal (a consistent save after the close) met
/// cleanly, met with escalations on the way, or not met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Degraded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Degraded => "degraded",
            Outcome::Failed => "failed",
        }
    }
}

/// Tonight, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Night {
    pub id: String,
    pub state: Step,
    pub escalated: bool,
    pub deadline: i64,
    pub pre_close_job: String,
    pub post_close_job: String,
    pub close_started: Option<i64>,
    pub close_finished: Option<i64>,
    pub timeline: Vec<(i64, String)>,
    /// The probe or hook job the current step waits for.
    #[serde(default)]
    pub step_job: String,
    /// When to look again (the quiesce grace, the close probe, a retry's backoff).
    #[serde(default)]
    pub wait_until: i64,
    /// The contingency save's job, and the recovery point it stands at.
    #[serde(default)]
    pub contingency_job: String,
    #[serde(default)]
    pub recovery_point: String,
    /// Set once the night is done.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Tonight's save (post-close or contingency) succeeded.
    #[serde(default)]
    pub saved: bool,
    /// Apply on the contingency LPAR is suspended (by us) and not yet seen running again.
    #[serde(default)]
    pub apply_suspended: bool,
    /// Attempts of the step being retried (the contingency save, resume).
    #[serde(default)]
    pub attempts: u32,
    /// The current step's job failed and a retry is waiting (backoff, or the agent's return).
    #[serde(default)]
    pub retry_pending: bool,
    /// The close ran past its deadline (escalated once).
    #[serde(default)]
    pub close_late: bool,
    /// An operator acknowledged the escalation: stop retrying (who).
    #[serde(default)]
    pub acknowledged_by: String,
    /// Warnings of tonight's save (objects changed while saved, files left out).
    #[serde(default)]
    pub warnings: u64,
}

impl Night {
    pub fn note(&mut self, t: i64, text: impl Into<String>) {
        self.timeline.push((t, text.into()));
    }

    /// A night just started, at its pre-close step.
    pub fn new(id: String, deadline: i64) -> Night {
        Night {
            id,
            state: Step::PreClose,
            escalated: false,
            deadline,
            pre_close_job: String::new(),
            post_close_job: String::new(),
            close_started: None,
            close_finished: None,
            timeline: vec![],
            step_job: String::new(),
            wait_until: 0,
            contingency_job: String::new(),
            recovery_point: String::new(),
            outcome: None,
            saved: false,
            apply_suspended: false,
            attempts: 0,
            retry_pending: false,
            close_late: false,
            acknowledged_by: String::new(),
            warnings: 0,
        }
    }

    /// What the night waits for now, and what an operator can do about it.
    pub fn waiting_for(&self) -> String {
        let job = |what: &str, id: &str| {
            if id.is_empty() {
                format!("{what} (not queued)")
            } else {
                format!("{what} (job {id}) to end")
            }
        };
        match self.state {
            Step::PreClose => job("the pre-close save", &self.pre_close_job),
            Step::CloseWindow => "the close: `cintactl close finished` when it has finished (or the close probe says so)".into(),
            Step::QuiesceCheck | Step::QuiesceRecheck | Step::QuiesceFinal => {
                job("the quiesce probe on production", &self.step_job)
            }
            Step::QuiesceWait => "the grace period for users to sign off; then production is asked again".into(),
            Step::Signoff => job("the forced sign-off", &self.step_job),
            Step::ReplicationCheck => job("the replication check on contingency", &self.step_job),
            Step::Suspend => job("apply to be suspended on contingency", &self.step_job),
            Step::ContingencySave if self.retry_pending => format!(
                "the contingency save to be tried again (attempt {} failed; apply stays suspended): `cintactl tonight ack` gives it up",
                self.attempts
            ),
            Step::ContingencySave => job("the contingency save", &self.contingency_job),
            Step::Resume if self.retry_pending => format!(
                "resuming apply to be tried again (attempt {} failed; apply is SUSPENDED): `cintactl tonight ack` stops the retries",
                self.attempts
            ),
            Step::Resume => job("apply to be resumed on contingency", &self.step_job),
            Step::CatchUp => job("the replication catch-up check", &self.step_job),
            Step::PostClose => job("the post-close save", &self.post_close_job),
            Step::Done => String::new(),
        }
    }

    /// The job the current step waits for ("" when it could not be queued).
    pub fn waiting_on(&self) -> Option<&str> {
        match self.state {
            Step::PreClose => Some(&self.pre_close_job),
            Step::PostClose => Some(&self.post_close_job),
            Step::ContingencySave => Some(&self.contingency_job),
            Step::CloseWindow if self.step_job.is_empty() => None,
            Step::QuiesceWait | Step::Done => None,
            _ => Some(&self.step_job),
        }
    }
}

pub const NIGHT_KEY: &str = "night.current";
pub const LAST_KEY: &str = "scheduler.last";

/// The first occurrence of `cron` after `after` (exclusive), in `tz`, as seconds since 1970.
pub fn next_after(cron: &str, tz: chrono_tz::Tz, after: i64) -> Option<i64> {
    let c: croner::Cron = cron.parse().ok()?;
    let start = tz.from_utc_datetime(&Utc.timestamp_opt(after, 0).single()?.naive_utc());
    c.find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp())
}

/// The local date of `t` in `tz`.
pub fn local_date(tz: chrono_tz::Tz, t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|u| u.with_timezone(&tz).format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// What a tick decided, for the caller to carry out with the catalog and queue.
#[derive(Debug, Default, PartialEq)]
pub struct Decisions {
    /// Control groups to queue now (schedules).
    pub run: Vec<String>,
    /// Start a night: the pre-close control group to queue, and the night's id and deadline.
    pub start_night: Option<(String, i64)>,
}

/// Which schedules and night starts fall in (last, now].
pub fn due(cfg: &Config, last: i64, now: i64) -> Decisions {
    let mut d = Decisions::default();
    let Ok(tz) = cfg.tz() else { return d };
    for s in &cfg.schedules {
        if next_after(&s.cron, tz, last).is_some_and(|t| t <= now) {
            d.run.push(s.control_group.clone());
        }
    }
    if let Some(n) = &cfg.night {
        let mut start = next_after(&n.pre_close_at, tz, last).filter(|t| *t <= now);
        // After a gap (the controller down, the clock moved on) tonight's
        // night starts, not the first one missed: those show as missed runs
        // in the backup log. (Bounded: ten years of daily starts.)
        for _ in 0..3660 {
            match start
                .and_then(|t| next_after(&n.pre_close_at, tz, t))
                .filter(|t| *t <= now)
            {
                Some(later) => start = Some(later),
                None => break,
            }
        }
        if let Some(t) = start {
            let deadline = next_after(&n.deadline, tz, t).unwrap_or(t + 86_400)
                + 60 * i64::from(n.grace_minutes);
            d.start_night = Some((local_date(tz, t), deadline));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_dst_correct_in_their_time_zone() {
        let tz: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
        // 2026-10-25: clocks go back at 03:00 CEST to 02:00 CET; 02:30 happens twice.
        let before = tz
            .with_ymd_and_hms(2026, 10, 25, 0, 0, 0)
            .unwrap()
            .timestamp();
        let first = next_after("30 2 * * *", tz, before).unwrap();
        let second = next_after("30 2 * * *", tz, first).unwrap();
        assert_eq!(
            second - first,
            86_400 + 3_600,
            "once that night, next on the 26th (25 h later)"
        );
        // Spring forward: 2026-03-29 02:30 does not exist; the job still runs that day.
        let before = tz
            .with_ymd_and_hms(2026, 3, 29, 0, 0, 0)
            .unwrap()
            .timestamp();
        let t = next_after("30 2 * * *", tz, before).unwrap();
        assert_eq!(local_date(tz, t), "2026-03-29");
        // 20:30 local is 19:30 UTC in winter.
        let d = tz
            .with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
            .unwrap()
            .timestamp();
        let t = next_after("30 20 * * *", tz, d).unwrap();
        assert_eq!(
            Utc.timestamp_opt(t, 0).unwrap().format("%H:%M").to_string(),
            "19:30"
        );
    }

    #[test]
    fn after_a_gap_tonights_night_starts_not_the_first_one_missed() {
        let cfg = Config::parse(
            "catalog = \"c\"\ntime_zone = \"Europe/Madrid\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n\
[night]\npre_close = \"P\"\npre_close_at = \"30 20 * * *\"\npost_close = \"Q\"\ndeadline = \"0 23 * * *\"\n\
[[control_group]]\nname = \"P\"\ntarget = \"X\"\n[[control_group.entry]]\npath = \"/d\"\n[[control_group]]\nname = \"Q\"\ntarget = \"X\"\n[[control_group.entry]]\npath = \"/d\"\n\
[[lpar]]\nname = \"X\"\nrole = \"production\"\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let tz = cfg.tz().unwrap();
        let at = |d: u32, h: u32| {
            tz.with_ymd_and_hms(2026, 11, d, h, 0, 0)
                .unwrap()
                .timestamp()
        };
        // One evening: that night.
        let d = due(&cfg, at(24, 20), at(24, 21));
        assert_eq!(d.start_night.unwrap().0, "2026-11-24");
        // Twenty days later: tonight's, with tonight's deadline.
        let (id, deadline) = due(&cfg, at(25, 22), at(15, 21) + 20 * 86_400)
            .start_night
            .unwrap();
        assert_eq!(id, "2026-12-05");
        assert_eq!(local_date(tz, deadline), "2026-12-05");
        // Before the evening's start: none.
        assert!(due(&cfg, at(24, 10), at(24, 12)).start_night.is_none());
    }
}
