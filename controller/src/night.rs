//! The scheduler: calendar schedules and the nightly close (pre-close save, close window, post-close save, escalation when the close runs late), advanced by the clock and persisted at every step.
//!
//! `tick` is called a few times a second. It looks at the time elapsed
//! since the last tick (stored in the catalog, so a restart neither repeats
//! nor forgets a step): a schedule with an occurrence in that span queues its
//! control group once; tonight's record moves pre-close -> close-window (the
//! pre-close job ended) -> post-close (the close was signalled finished) ->
//! done (the post-close job ended). A close still open at the deadline plus
//! grace is escalated once, and the post-close still runs when it finishes.

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Tonight, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Night {
    pub id: String,
    pub state: String,
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
    /// quiesce-wait: when to look again.
    #[serde(default)]
    pub wait_until: i64,
    /// The contingency save's job, and the recovery point it stands at.
    #[serde(default)]
    pub contingency_job: String,
    #[serde(default)]
    pub recovery_point: String,
}

impl Night {
    pub fn note(&mut self, t: i64, text: impl Into<String>) {
        self.timeline.push((t, text.into()));
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
        if let Some(t) = next_after(&n.pre_close_at, tz, last).filter(|t| *t <= now) {
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
}

/// Reads "backlog=N latency=S" from a replication probe's output.
pub fn replication(output: &str) -> Option<(u64, u64)> {
    let field = |k: &str| {
        output
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    Some((field("backlog")?, field("latency")?))
}

#[cfg(test)]
mod probe_tests {
    #[test]
    fn replication_output_is_read_or_refused() {
        assert_eq!(
            super::replication("apply=active backlog=12 latency=3\n"),
            Some((12, 3))
        );
        assert_eq!(super::replication("backlog=x latency=3"), None);
        assert_eq!(super::replication(""), None);
    }
}
