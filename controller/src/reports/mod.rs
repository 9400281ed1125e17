//! Reports for the datacenter and its auditors, gathered from the catalog: the backup log of a period (every run and its result, missed runs, save sets with their encryption, retention and copies, restores, drills, keys destroyed, escalations), rendered by `render` as text, JSON, CSV or HTML.

pub mod evidence;
pub mod render;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{JobRow, SaveSetRecord, VolumeRecord};
use crate::error::{Error, Result};
use crate::moves::HOME;
use crate::state::State;

/// The encryption every save set has (the agent's stream format).
pub const ENCRYPTION: &str = "AES-256-GCM";

/// A copy of a save set (the original is copy 0): its cartridges and where each is.
#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    pub copy: u32,
    pub volumes: Vec<String>,
    /// Per volume: `*HOME`, a location, or "in transit to X".
    pub locations: Vec<String>,
}

/// A save set as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SetLine {
    pub id: String,
    pub source: String,
    pub level: String,
    pub objects: u64,
    pub bytes: u64,
    pub encryption: &'static str,
    pub key_id: String,
    /// Where the key is kept: the KMIP key manager, or a local key file.
    pub key_manager: &'static str,
    pub media_policy: String,
    /// When it expires (0: kept by versions or for ever).
    pub expires: i64,
    /// The retention the media policy asks ("30 days", "2 versions", "" none).
    pub retention_asked: String,
    /// Whether the recorded expiry is what the policy asks.
    pub retention_applied: bool,
    pub state: String,
    pub copies: Vec<Copy>,
    /// Copies the media policy asks for, the original counted.
    pub copies_wanted: u32,
    /// Objects that changed while they were saved.
    pub changed: u64,
}

/// A run of a control group.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub server: String,
    pub control_group: String,
    pub job: String,
    pub state: String,
    pub message: String,
    pub queued: i64,
    pub started: i64,
    pub finished: i64,
    pub seconds: i64,
    pub bytes: u64,
    pub objects: u64,
    pub save_sets: Vec<SetLine>,
    pub warnings: u64,
}

/// A run that was due and did not happen.
#[derive(Debug, Clone, Serialize)]
pub struct Missed {
    pub control_group: String,
    pub due: i64,
    /// "schedule" or "night pre-close".
    pub by: String,
}

/// Per server and control group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub server: String,
    pub control_group: String,
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub missed: u64,
    pub bytes: u64,
    pub seconds: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreLine {
    pub id: String,
    pub created: i64,
    pub server: String,
    pub ticket: String,
    pub requester: String,
    pub state: String,
    pub outcome: String,
    pub objects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillLine {
    pub id: String,
    pub created: i64,
    pub ended: i64,
    pub state: String,
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: i64,
    pub kind: String,
    pub text: String,
}

/// The backup log of [from, to).
#[derive(Debug, Clone, Serialize)]
pub struct BackupLog {
    pub from: i64,
    pub to: i64,
    pub generated: i64,
    pub time_zone: String,
    /// The audit log's signed head when the figures were taken.
    pub audit_head: i64,
    pub tallies: Vec<Tally>,
    pub runs: Vec<Run>,
    pub missed: Vec<Missed>,
    pub restores: Vec<RestoreLine>,
    pub drills: Vec<DrillLine>,
    /// Save sets whose keys were destroyed (crypto-shredded) in the period.
    pub keys_destroyed: Vec<Event>,
    pub escalations: Vec<Event>,
    /// The nights: how each started and ended, and fallbacks to the contingency LPAR.
    pub nights: Vec<Event>,
    /// Cartridges moved (to and from the vault, between sites).
    pub media_moves: Vec<Event>,
}

/// A run due at `due` counts as run if a job of its group was queued this long after.
const WINDOW: i64 = 6 * 3600;

/// The original and every copy of `s`, with where each cartridge is now.
fn copies_of(s: &SaveSetRecord, vols: &BTreeMap<String, VolumeRecord>) -> Vec<Copy> {
    s.places()
        .into_iter()
        .enumerate()
        .map(|(i, volumes)| Copy {
            copy: i as u32,
            volumes: volumes.to_vec(),
            locations: volumes
                .iter()
                .map(|v| match vols.get(v) {
                    Some(r) if !r.in_transit_to.is_empty() => {
                        format!("in transit to {}", r.in_transit_to)
                    }
                    Some(r) => r.location.clone(),
                    None => HOME.to_string(),
                })
                .collect(),
        })
        .collect()
}

/// Gathers the backup log of [from, to).
pub fn backup_log(state: &State, from: i64, to: i64) -> Result<BackupLog> {
    if to <= from {
        return Err(Error::Invalid("--to must be after --from".into()));
    }
    let cfg = &state.cfg;
    let tz = cfg.tz().map_err(Error::Invalid)?;
    let sets = state.save_set_map()?;
    let vols = state.volume_map()?;
    let jobs: Vec<JobRow> = state
        .catalog()
        .jobs(u32::MAX)?
        .into_iter()
        .filter(|j| {
            j.created >= from && j.created < to && cfg.control_group(&j.control_group).is_some()
        })
        .collect();
    let mut runs: Vec<Run> = jobs
        .iter()
        .map(|j| {
            let lines: Vec<SetLine> = j
                .save_sets
                .iter()
                .map(|row| {
                    let rec = sets.get(&row.id);
                    let policy =
                        rec.and_then(|r| cfg.media_policy(&r.media_policy))
                            .or_else(|| {
                                cfg.control_group(&j.control_group)
                                    .and_then(|g| g.media_policy.as_deref())
                                    .and_then(|p| cfg.media_policy(p))
                            });
                    let asked = match policy {
                        Some(p) => match (p.retention_days, p.retention_versions) {
                            (Some(d), _) => format!("{d} days"),
                            (None, Some(v)) => format!("{v} versions"),
                            _ => "kept".to_string(),
                        },
                        None => String::new(),
                    };
                    let applied = match (policy, rec) {
                        (Some(p), Some(r)) => match p.retention_days {
                            Some(d) => r.expires == r.created + 86_400 * i64::from(d),
                            None => {
                                r.expires == 0 && r.versions == p.retention_versions.unwrap_or(0)
                            }
                        },
                        (None, Some(r)) => r.expires == 0,
                        (_, None) => false,
                    };
                    SetLine {
                        id: row.id.clone(),
                        source: row.source.clone(),
                        level: rec
                            .map(|r| r.level.clone())
                            .filter(|l| !l.is_empty())
                            .unwrap_or_else(|| j.assignment.level.clone()),
                        objects: row.objects,
                        bytes: row.bytes,
                        encryption: ENCRYPTION,
                        key_manager: if row.key_id.starts_with("kmip:") {
                            "KMIP key manager"
                        } else {
                            "local key file"
                        },
                        key_id: row.key_id.clone(),
                        media_policy: rec.map(|r| r.media_policy.clone()).unwrap_or_default(),
                        expires: rec.map(|r| r.expires).unwrap_or(0),
                        retention_asked: asked,
                        retention_applied: applied,
                        state: rec
                            .map(|r| r.state.clone())
                            .unwrap_or_else(|| "not recorded".into()),
                        copies: rec.map(|r| copies_of(r, &vols)).unwrap_or_default(),
                        copies_wanted: rec.map_or(1, |r| crate::copies::wanted(state, r)),
                        changed: row.changed_count,
                    }
                })
                .collect();
            Run {
                server: j.agent.clone(),
                control_group: j.control_group.clone(),
                job: j.id.clone(),
                state: j.state.clone(),
                message: j.message.clone(),
                queued: j.created,
                started: j.started,
                finished: j.finished,
                seconds: if j.finished > 0 && j.started > 0 {
                    j.finished - j.started
                } else {
                    0
                },
                bytes: j.save_sets.iter().map(|s| s.bytes).sum(),
                objects: j.save_sets.iter().map(|s| s.objects).sum(),
                warnings: j.save_sets.iter().map(|s| s.warning_count()).sum(),
                save_sets: lines,
            }
        })
        .collect();
    runs.sort_by(|a, b| {
        (&a.server, &a.control_group, a.queued).cmp(&(&b.server, &b.control_group, b.queued))
    });

    // Runs that were due and did not happen.
    let mut due: Vec<(String, String, i64)> = Vec::new();
    for s in &cfg.schedules {
        let mut t = from - 1;
        while let Some(n) = crate::night::next_after(&s.cron, tz, t).filter(|n| *n < to) {
            due.push((s.control_group.clone(), "schedule".into(), n));
            t = n;
        }
    }
    if let Some(n) = &cfg.night {
        let mut t = from - 1;
        while let Some(x) = crate::night::next_after(&n.pre_close_at, tz, t).filter(|x| *x < to) {
            due.push((n.pre_close.clone(), "night pre-close".into(), x));
            t = x;
        }
    }
    let now = state.now();
    // When each group's jobs were queued, sorted: one search per due run.
    let mut queued: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for j in &jobs {
        queued
            .entry(j.control_group.as_str())
            .or_default()
            .push(j.created);
    }
    for v in queued.values_mut() {
        v.sort_unstable();
    }
    let mut missed = Vec::new();
    for (group, by, at) in due {
        if at + WINDOW > now {
            continue; // not yet known
        }
        let ran = queued.get(group.as_str()).is_some_and(|v| {
            let i = v.partition_point(|&t| t < at - 60);
            v.get(i).is_some_and(|&t| t <= at + WINDOW)
        });
        if !ran {
            missed.push(Missed {
                control_group: group,
                due: at,
                by,
            });
        }
    }
    missed.sort_by_key(|m| m.due);

    let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for r in &runs {
        let t = tallies
            .entry((r.server.clone(), r.control_group.clone()))
            .or_insert_with(|| Tally {
                server: r.server.clone(),
                control_group: r.control_group.clone(),
                ..Tally::default()
            });
        t.runs += 1;
        t.succeeded += u64::from(r.state == "succeeded");
        t.failed += u64::from(r.state == "failed");
        t.bytes += r.bytes;
        t.seconds += r.seconds;
    }
    let roles = state.catalog().roles()?;
    for m in &missed {
        let server = cfg
            .resolve(
                &cfg.control_group(&m.control_group)
                    .map(|g| g.target.clone())
                    .unwrap_or_default(),
                &roles,
            )
            .unwrap_or_default();
        tallies
            .entry((server.clone(), m.control_group.clone()))
            .or_insert_with(|| Tally {
                server,
                control_group: m.control_group.clone(),
                ..Tally::default()
            })
            .missed += 1;
    }

    let restores = crate::restores::list(state, true)?
        .into_iter()
        .filter(|r| r.created >= from && r.created < to)
        .map(|r| RestoreLine {
            id: r.id,
            created: r.created,
            server: r.spec.server,
            ticket: r.spec.ticket,
            requester: r.spec.requester,
            state: r.state,
            outcome: r.outcome,
            objects: r.objects,
        })
        .collect();
    let drills = crate::drills::list(state)?
        .into_iter()
        .filter(|d| d.created >= from && d.created < to)
        .map(|d| DrillLine {
            id: d.id,
            created: d.created,
            ended: d.ended,
            state: d.state,
            servers: d.servers.iter().map(|s| s.agent.clone()).collect(),
        })
        .collect();
    // Oldest first (the catalog gives the newest first), so events of the
    // same second keep the order they happened in.
    let events: Vec<Event> = state
        .catalog()
        .events(u32::MAX)?
        .into_iter()
        .rev()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .map(|(time, kind, text)| Event { time, kind, text })
        .collect();
    let keys_destroyed: Vec<Event> = events
        .iter()
        .filter(|e| e.kind == "saveset.expired" && e.text.contains("key destroyed"))
        .cloned()
        .collect();
    let escalations: Vec<Event> = events
        .iter()
        .filter(|e| e.kind == "night.escalated")
        .cloned()
        .collect();
    let nights: Vec<Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "night.started" | "night.done" | "night.failed" | "fallback.taken"
            )
        })
        .cloned()
        .collect();
    let media_moves: Vec<Event> = events
        .iter()
        .filter(|e| e.kind.starts_with("media."))
        .cloned()
        .collect();
    let audit_head = state
        .catalog()
        .meta(crate::audit::HEAD_META)?
        .and_then(|h| crate::audit::Head::parse(&h))
        .map(|h| h.seq)
        .unwrap_or(0);
    Ok(BackupLog {
        from,
        to,
        generated: now,
        time_zone: cfg.time_zone.clone(),
        audit_head,
        tallies: tallies.into_values().collect(),
        runs,
        missed,
        restores,
        drills,
        keys_destroyed,
        escalations,
        nights,
        media_moves,
    })
}
