//! The ISO/IEC 27001:2022 A.8.13 evidence report of a quarter, organised by what an auditor checks: the policy applied (schedules and retention as configured against what ran), restores tested (drills and requests), media protected (every save set encrypted, key custody, copies away from the site and their moves), personal data (entries marked `personal_data` with proof they are encrypted), and the audit log's head the figures were taken under. One self-contained page (charts as inline SVG, printable) or JSON.

use std::collections::BTreeMap;

use chrono::TimeZone;
use serde::Serialize;

use super::render::{esc, when, STYLE};
use super::{backup_log, BackupLog, Event, ENCRYPTION};
use crate::error::{Error, Result};
use crate::moves::HOME;
use crate::state::State;

#[derive(Debug, Clone, Serialize)]
pub struct GroupPolicy {
    pub control_group: String,
    pub target: String,
    pub level: String,
    pub schedules: Vec<String>,
    pub media_policy: String,
    pub retention: String,
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub missed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Night {
    /// Local date the runs were queued on.
    pub date: String,
    pub runs: u64,
    pub succeeded: u64,
    pub bytes: u64,
    pub seconds: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonalSet {
    pub save_set: String,
    pub created: i64,
    pub encryption: &'static str,
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonalData {
    pub control_group: String,
    pub entry: String,
    pub save_sets: Vec<PersonalSet>,
    pub all_encrypted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditHead {
    pub head: i64,
    pub records: u64,
    pub intact: bool,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub quarter: String,
    pub from: i64,
    pub to: i64,
    pub generated: i64,
    pub time_zone: String,
    pub audit: AuditHead,
    pub groups: Vec<GroupPolicy>,
    pub save_sets: u64,
    pub retention_applied: u64,
    pub retention_not_applied: Vec<String>,
    pub drills_passed: u64,
    pub drills_failed: u64,
    pub restores_served: u64,
    pub restores_other: u64,
    pub encrypted: u64,
    pub keys_in_key_manager: u64,
    pub keys_in_local_files: u64,
    /// Save sets of the quarter with a cartridge away from its library now.
    pub away: u64,
    /// Save sets of the quarter with at least one copy besides the original.
    pub copied: u64,
    /// Active save sets with fewer copies than their media policy asks.
    pub copies_short: Vec<String>,
    pub moves: Vec<Event>,
    pub personal_data: Vec<PersonalData>,
    pub nights: Vec<Night>,
    pub log: BackupLog,
}

/// "2026Q4" -> the quarter's bounds in `tz`.
pub fn quarter_bounds(q: &str, tz: chrono_tz::Tz) -> Result<(i64, i64)> {
    let bad = || Error::Invalid(format!("quarter {q:?}: give it as 2026Q4"));
    let (y, n) = q.split_once(['Q', 'q']).ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    if !(1..=4).contains(&n) {
        return Err(bad());
    }
    let start = |y: i32, m: u32| {
        tz.with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .earliest()
            .map(|t| t.timestamp())
            .ok_or_else(bad)
    };
    let from = start(y, 3 * n - 2)?;
    let to = if n == 4 {
        start(y + 1, 1)?
    } else {
        start(y, 3 * n + 1)?
    };
    Ok((from, to))
}

fn local_date(tz: chrono_tz::Tz, t: i64) -> String {
    crate::night::local_date(tz, t)
}

/// Gathers the evidence of `quarter` ("2026Q4").
pub fn evidence(state: &State, quarter: &str) -> Result<Evidence> {
    let cfg = &state.cfg;
    let tz = cfg.tz().map_err(Error::Invalid)?;
    let (from, to) = quarter_bounds(quarter, tz)?;
    let log = backup_log(state, from, to)?;
    let report = state.verify_audit()?;
    let audit = AuditHead {
        head: report.head.unwrap_or(0),
        records: report.records,
        intact: report.problem.is_none(),
        problem: report.problem.unwrap_or_default(),
    };
    let groups = cfg
        .control_groups
        .iter()
        .map(|g| {
            let t: Vec<_> = log
                .tallies
                .iter()
                .filter(|t| t.control_group == g.name)
                .collect();
            let policy = g.media_policy.as_deref().and_then(|p| cfg.media_policy(p));
            let mut schedules: Vec<String> = cfg
                .schedules
                .iter()
                .filter(|s| s.control_group == g.name)
                .map(|s| s.cron.clone())
                .collect();
            if let Some(n) = &cfg.night {
                if n.pre_close == g.name {
                    schedules.push(format!("{} (night pre-close)", n.pre_close_at));
                }
                if n.post_close == g.name {
                    schedules.push("after the close (night post-close)".into());
                }
            }
            GroupPolicy {
                control_group: g.name.clone(),
                target: g.target.clone(),
                level: g.level.clone(),
                schedules,
                media_policy: g.media_policy.clone().unwrap_or_default(),
                retention: match policy {
                    Some(p) => match (p.retention_days, p.retention_versions) {
                        (Some(d), _) => format!("{d} days"),
                        (None, Some(v)) => format!("{v} versions"),
                        _ => "kept".into(),
                    },
                    None => "kept (no media policy)".into(),
                },
                runs: t.iter().map(|t| t.runs).sum(),
                succeeded: t.iter().map(|t| t.succeeded).sum(),
                failed: t.iter().map(|t| t.failed).sum(),
                missed: t.iter().map(|t| t.missed).sum(),
            }
        })
        .collect();
    let sets: Vec<&super::SetLine> = log.runs.iter().flat_map(|r| &r.save_sets).collect();
    let mut retention_not_applied = Vec::new();
    let mut away = 0;
    let mut copied = 0;
    let mut copies_short = Vec::new();
    for s in &sets {
        if s.copies.len() > 1 {
            copied += 1;
        }
        if s.state == "active" && (s.copies.len() as u32) < s.copies_wanted {
            copies_short.push(s.id.clone());
        }
        if !s.retention_applied {
            retention_not_applied.push(s.id.clone());
        }
        if s.copies
            .iter()
            .any(|c| c.locations.iter().any(|l| l != HOME))
        {
            away += 1;
        }
    }
    let mut nights: BTreeMap<String, Night> = BTreeMap::new();
    for r in &log.runs {
        let d = local_date(tz, r.queued);
        let n = nights.entry(d.clone()).or_insert(Night {
            date: d,
            runs: 0,
            succeeded: 0,
            bytes: 0,
            seconds: 0,
        });
        n.runs += 1;
        n.succeeded += u64::from(r.state == "succeeded");
        n.bytes += r.bytes;
        n.seconds += r.seconds;
    }
    let personal_data = cfg
        .control_groups
        .iter()
        .flat_map(|g| g.entries.iter().map(move |e| (g, e)))
        .filter(|(_, e)| e.personal_data)
        .map(|(g, e)| {
            let entry = e
                .path
                .clone()
                .or_else(|| e.library.as_ref().map(|l| format!("library {l}")))
                .unwrap_or_default();
            let save_sets: Vec<PersonalSet> = log
                .runs
                .iter()
                .filter(|r| r.control_group == g.name)
                .flat_map(|r| {
                    r.save_sets.iter().map(|s| PersonalSet {
                        save_set: s.id.clone(),
                        created: r.finished,
                        encryption: s.encryption,
                        key_id: s.key_id.clone(),
                    })
                })
                .collect();
            PersonalData {
                control_group: g.name.clone(),
                entry,
                all_encrypted: save_sets
                    .iter()
                    .all(|s| s.encryption == ENCRYPTION && !s.key_id.is_empty()),
                save_sets,
            }
        })
        .collect();
    let moves = log.media_moves.clone();
    Ok(Evidence {
        quarter: quarter.to_uppercase(),
        from,
        to,
        generated: state.now(),
        time_zone: cfg.time_zone.clone(),
        audit,
        groups,
        save_sets: sets.len() as u64,
        retention_applied: (sets.len() - retention_not_applied.len()) as u64,
        retention_not_applied,
        drills_passed: log.drills.iter().filter(|d| d.state == "passed").count() as u64,
        drills_failed: log.drills.iter().filter(|d| d.state == "failed").count() as u64,
        restores_served: log.restores.iter().filter(|r| served(r)).count() as u64,
        restores_other: log.restores.iter().filter(|r| !served(r)).count() as u64,
        encrypted: sets
            .iter()
            .filter(|s| s.encryption == ENCRYPTION && !s.key_id.is_empty())
            .count() as u64,
        keys_in_key_manager: sets
            .iter()
            .filter(|s| s.key_id.starts_with("kmip:"))
            .count() as u64,
        keys_in_local_files: sets
            .iter()
            .filter(|s| !s.key_id.starts_with("kmip:"))
            .count() as u64,
        away,
        copied,
        copies_short,
        moves,
        personal_data,
        nights: nights.into_values().collect(),
        log,
    })
}

/// A bar chart as inline SVG: one bar per label.
pub fn bars(id: &str, title: &str, labels: &[String], values: &[f64], unit: &str) -> String {
    let (w, h, left, bottom) = (900.0, 220.0, 60.0, 30.0);
    let max = values.iter().cloned().fold(0.0, f64::max).max(1e-9);
    let n = values.len().max(1) as f64;
    let bw = (w - left - 10.0) / n;
    let mut o = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = esc(title)
    );
    o += &format!(
        "<text x=\"{left}\" y=\"14\" font-size=\"13\" font-family=\"sans-serif\">{}</text>",
        esc(title)
    );
    o += &format!(
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#333\"/><line x1=\"{left}\" y1=\"24\" x2=\"{left}\" y2=\"{y}\" stroke=\"#333\"/>",
        y = h - bottom,
        x2 = w - 10.0
    );
    o += &format!(
        "<text x=\"{}\" y=\"30\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">{:.1} {}</text>",
        left - 4.0,
        max,
        esc(unit)
    );
    for (i, v) in values.iter().enumerate() {
        let bh = (h - bottom - 26.0) * v / max;
        o += &format!(
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3a6ea5\"><title>{}: {:.2} {}</title></rect>",
            left + i as f64 * bw + 1.0,
            h - bottom - bh,
            (bw - 2.0).max(1.0),
            bh,
            esc(labels.get(i).map(String::as_str).unwrap_or("")),
            v,
            esc(unit)
        );
    }
    if let (Some(a), Some(b)) = (labels.first(), labels.last()) {
        o += &format!(
            "<text x=\"{left}\" y=\"{y}\" font-size=\"10\" font-family=\"sans-serif\">{}</text><text x=\"{x}\" y=\"{y}\" font-size=\"10\" text-anchor=\"end\" font-family=\"sans-serif\">{}</text>",
            esc(a),
            esc(b),
            y = h - 12.0,
            x = w - 10.0
        );
    }
    o + "</svg>"
}

/// A request served: its restore verified (or delivered), closed or not yet.
fn served(r: &super::RestoreLine) -> bool {
    r.outcome == "served" || matches!(r.state.as_str(), "verified" | "delivered")
}

fn yes(b: bool) -> &'static str {
    if b {
        "<span class=ok>yes</span>"
    } else {
        "<span class=bad>NO</span>"
    }
}

/// The evidence as one printable page.
pub fn html(e: &Evidence, tz: chrono_tz::Tz) -> String {
    let w = |t| when(tz, t);
    let mut o = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Backup evidence {q}</title><style>{STYLE}</style></head><body>\
<h1>Backup evidence {q} (ISO/IEC 27001:2022 A.8.13, information backup)</h1>\
<p>Period {} to {} ({}). Generated {} from the catalog under audit log head <b>{}</b> ({} records, chain {}).</p>",
        esc(&w(e.from)),
        esc(&w(e.to)),
        esc(&e.time_zone),
        esc(&w(e.generated)),
        e.audit.head,
        e.audit.records,
        if e.audit.intact { "intact".to_string() } else { format!("<span class=bad>TAMPERED WITH: {}</span>", esc(&e.audit.problem)) },
        q = esc(&e.quarter)
    );
    let labels: Vec<String> = e.nights.iter().map(|n| n.date.clone()).collect();
    // 1. Policy applied.
    o += "<h2 id=\"policy\">1. The backup policy is applied</h2><p>Each control group as configured (target, level, schedule, retention) against what ran.</p>\
<table id=\"groups\"><tr><th>Control group</th><th>Target</th><th>Level</th><th>Schedule</th><th>Retention</th><th>Runs</th><th>Succeeded</th><th>Failed</th><th>Missed</th></tr>";
    for g in &e.groups {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=\"n{}\">{}</td><td class=\"n{}\">{}</td></tr>",
            esc(&g.control_group),
            esc(&g.target),
            esc(&g.level),
            esc(&if g.schedules.is_empty() { "on request".to_string() } else { g.schedules.join("; ") }),
            esc(&g.retention),
            g.runs,
            g.succeeded,
            if g.failed > 0 { " bad" } else { "" },
            g.failed,
            if g.missed > 0 { " bad" } else { "" },
            g.missed
        );
    }
    o +=
        &format!(
        "</table><p>Retention recorded as the media policy asks: <b>{} of {}</b> save sets{}.</p>",
        e.retention_applied,
        e.save_sets,
        if e.retention_not_applied.is_empty() {
            String::new()
        } else {
            format!(" (<span class=bad>not: {}</span>)", esc(&e.retention_not_applied.join(", ")))
        }
    );
    let most = e.nights.iter().map(|n| n.bytes).max().unwrap_or(0);
    let (div, unit) = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ]
    .into_iter()
    .find(|(d, _)| most >= *d)
    .unwrap_or((1, "bytes"));
    o += &bars(
        "chart-bytes",
        &format!("Data saved per night ({unit})"),
        &labels,
        &e.nights
            .iter()
            .map(|n| n.bytes as f64 / div as f64)
            .collect::<Vec<_>>(),
        unit,
    );
    o += &bars(
        "chart-duration",
        "Backup time per night (minutes)",
        &labels,
        &e.nights
            .iter()
            .map(|n| n.seconds as f64 / 60.0)
            .collect::<Vec<_>>(),
        "min",
    );
    o += &bars(
        "chart-success",
        "Runs that succeeded per night (%)",
        &labels,
        &e.nights
            .iter()
            .map(|n| {
                if n.runs == 0 {
                    0.0
                } else {
                    100.0 * n.succeeded as f64 / n.runs as f64
                }
            })
            .collect::<Vec<_>>(),
        "%",
    );
    // 2. Restore tested.
    o += &format!(
        "<h2 id=\"restore\">2. Restores are tested</h2><p>Restore drills: <b>{} passed</b>, {} failed. Restore requests: <b>{} served</b>, {} not served.</p>",
        e.drills_passed,
        if e.drills_failed > 0 { format!("<span class=bad>{}</span>", e.drills_failed) } else { "0".into() },
        e.restores_served,
        e.restores_other
    );
    o += &super::render::drills_table(&e.log.drills, tz);
    o += "<table id=\"requests\"><tr><th>Made</th><th>Request</th><th>Server</th><th>Ticket</th><th>Outcome</th></tr>";
    for r in &e.log.restores {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w(r.created)),
            esc(&r.id),
            esc(&r.server),
            esc(&r.ticket),
            esc(&r.outcome)
        );
    }
    o += "</table>";
    // 3. Media protected.
    o += &format!(
        "<h2 id=\"media\">3. Backup media are protected</h2><table id=\"protection\">\
<tr><td>Save sets made in the quarter</td><td class=n>{}</td></tr>\
<tr><td>Encrypted ({ENCRYPTION}, a key per save set)</td><td class=n>{} {}</td></tr>\
<tr><td>Keys held by the KMIP key manager</td><td class=n>{}</td></tr>\
<tr><td>Keys in local key files</td><td class=n>{}</td></tr>\
<tr><td>Save sets with a cartridge away from its library (vault) now</td><td class=n>{}</td></tr>\
<tr><td>Save sets with a copy on a second cartridge set (block for block, still encrypted)</td><td class=n>{}</td></tr>\
<tr><td>Active save sets with fewer copies than their media policy asks</td><td class=n>{} {}</td></tr>\
<tr><td>Keys destroyed (crypto-shredding) at expiry</td><td class=n>{}</td></tr></table>",
        e.save_sets,
        e.encrypted,
        yes(e.encrypted == e.save_sets),
        e.keys_in_key_manager,
        e.keys_in_local_files,
        e.away,
        e.copied,
        e.copies_short.len(),
        esc(&e.copies_short.join(", ")),
        e.log.keys_destroyed.len()
    );
    o += "<table id=\"moves\"><tr><th>When</th><th>Media movement</th></tr>";
    for m in &e.moves {
        o += &format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&w(m.time)),
            esc(&m.text)
        );
    }
    o += "</table>";
    // 4. Personal data.
    o += "<h2 id=\"personal\">4. Personal data is encrypted</h2><table id=\"personal-data\"><tr><th>Control group</th><th>Entry</th><th>Save sets</th><th>All encrypted</th><th>Keys</th></tr>";
    for p in &e.personal_data {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.control_group),
            esc(&p.entry),
            p.save_sets.len(),
            yes(p.all_encrypted),
            esc(&p
                .save_sets
                .iter()
                .map(|s| format!("{} ({})", s.save_set, s.key_id))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    o += "</table>";
    // 5. The audit log.
    o += &format!(
        "<h2 id=\"audit\">5. The audit log</h2><p>Every console action and every event is a record chained to the one before it and signed; the figures above were taken under head <b>{}</b>. Verification now: {}.</p>",
        e.audit.head,
        if e.audit.intact { "<span class=ok>intact</span>".to_string() } else { format!("<span class=bad>{}</span>", esc(&e.audit.problem)) }
    );
    o += "</body></html>\n";
    o
}
