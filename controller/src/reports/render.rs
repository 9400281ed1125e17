//! The backup log as people and programs read it: text for the console, JSON, CSV (one line per save set of each run), and one self-contained, printable HTML page.

use chrono::TimeZone;

use super::BackupLog;

/// Formats a report can be rendered in.
pub const FORMATS: &[&str] = &["text", "json", "csv", "html"];

/// A time in the report's zone.
pub fn when(tz: chrono_tz::Tz, t: i64) -> String {
    if t <= 0 {
        return "-".into();
    }
    chrono::Utc
        .timestamp_opt(t, 0)
        .single()
        .map(|u| u.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Text made safe inside HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Renders the backup log as `format` (one of [`FORMATS`]).
pub fn backup_log(log: &BackupLog, tz: chrono_tz::Tz, format: &str) -> Result<String, String> {
    match format {
        "json" => serde_json::to_string_pretty(log).map_err(|e| e.to_string()),
        "csv" => Ok(csv(log, tz)),
        "html" => Ok(html(log, tz)),
        "text" | "" => Ok(text(log, tz)),
        f => Err(format!("format {f:?}: one of {}", FORMATS.join(", "))),
    }
}

fn text(l: &BackupLog, tz: chrono_tz::Tz) -> String {
    let mut o = String::new();
    let w = |t| when(tz, t);
    o += &format!(
        "Backup log {} to {} ({}), audit head {}\n\n",
        w(l.from),
        w(l.to),
        l.time_zone,
        l.audit_head
    );
    o += &format!(
        "{:<10} {:<14} {:>5} {:>5} {:>6} {:>6} {:>11}\n",
        "SERVER", "CONTROL GROUP", "RUNS", "OK", "FAILED", "MISSED", "BYTES"
    );
    for t in &l.tallies {
        o += &format!(
            "{:<10} {:<14} {:>5} {:>5} {:>6} {:>6} {:>11}\n",
            t.server,
            t.control_group,
            t.runs,
            t.succeeded,
            t.failed,
            t.missed,
            size(t.bytes)
        );
    }
    o += "\nRuns\n";
    for r in &l.runs {
        o += &format!(
            "  {} {} {} job {} {} ({} s, {}){}\n",
            w(r.queued),
            r.server,
            r.control_group,
            r.job,
            r.state,
            r.seconds,
            size(r.bytes),
            if r.message.is_empty() || r.state == "succeeded" {
                String::new()
            } else {
                format!(": {}", r.message)
            }
        );
        for s in &r.save_sets {
            o += &format!(
                "      save set {} {} {}: {}, key {} ({}), retention {} ({}), on {}{}\n",
                s.id,
                s.level,
                s.source,
                s.encryption,
                s.key_id,
                s.key_manager,
                if s.retention_asked.is_empty() {
                    "-"
                } else {
                    &s.retention_asked
                },
                if s.retention_applied {
                    "applied"
                } else {
                    "NOT as the policy asks"
                },
                s.copies
                    .iter()
                    .map(|c| c
                        .volumes
                        .iter()
                        .zip(&c.locations)
                        .map(|(v, at)| format!("{v}@{at}"))
                        .collect::<Vec<_>>()
                        .join(" "))
                    .collect::<Vec<_>>()
                    .join("; "),
                if s.changed > 0 {
                    format!(", {} objects changed while saved", s.changed)
                } else {
                    String::new()
                }
            );
        }
    }
    if !l.missed.is_empty() {
        o += "\nMissed runs\n";
        for m in &l.missed {
            o += &format!("  {} {} (by {})\n", w(m.due), m.control_group, m.by);
        }
    }
    o += &format!("\nRestore requests: {}\n", l.restores.len());
    for r in &l.restores {
        o += &format!(
            "  {} {} {} ticket {} by {}: {} {}\n",
            w(r.created),
            r.id,
            r.server,
            r.ticket,
            r.requester,
            r.state,
            r.outcome
        );
    }
    o += &format!("Restore drills: {}\n", l.drills.len());
    for d in &l.drills {
        o += &format!(
            "  {} {} {} ({})\n",
            w(d.created),
            d.id,
            d.state,
            d.servers.join(", ")
        );
    }
    o += &format!("Keys destroyed: {}\n", l.keys_destroyed.len());
    for e in &l.keys_destroyed {
        o += &format!("  {} {}\n", w(e.time), e.text);
    }
    o += &format!("Nights (starts, ends, fallbacks): {}\n", l.nights.len());
    for e in &l.nights {
        o += &format!("  {} {}\n", w(e.time), e.text);
    }
    o += &format!("Escalations: {}\n", l.escalations.len());
    for e in &l.escalations {
        o += &format!("  {} {}\n", w(e.time), e.text);
    }
    o
}

fn csv(l: &BackupLog, tz: chrono_tz::Tz) -> String {
    let mut o = String::from(
        "server,control_group,job,state,queued,started,finished,seconds,save_set,level,source,objects,bytes,encryption,key_id,key_manager,media_policy,retention_asked,retention_applied,expires,volumes,locations,changed,message\n",
    );
    let w = |t| when(tz, t);
    for r in &l.runs {
        let mut line = |s: Option<&super::SetLine>| {
            let f: Vec<String> = vec![
                r.server.clone(),
                r.control_group.clone(),
                r.job.clone(),
                r.state.clone(),
                w(r.queued),
                w(r.started),
                w(r.finished),
                r.seconds.to_string(),
                s.map(|s| s.id.clone()).unwrap_or_default(),
                s.map(|s| s.level.clone()).unwrap_or_default(),
                s.map(|s| s.source.clone()).unwrap_or_default(),
                s.map_or(0, |s| s.objects).to_string(),
                s.map_or(0, |s| s.bytes).to_string(),
                s.map(|s| s.encryption.to_string()).unwrap_or_default(),
                s.map(|s| s.key_id.clone()).unwrap_or_default(),
                s.map(|s| s.key_manager.to_string()).unwrap_or_default(),
                s.map(|s| s.media_policy.clone()).unwrap_or_default(),
                s.map(|s| s.retention_asked.clone()).unwrap_or_default(),
                s.map(|s| s.retention_applied.to_string())
                    .unwrap_or_default(),
                s.map(|s| w(s.expires)).unwrap_or_default(),
                s.map(|s| {
                    s.copies
                        .iter()
                        .flat_map(|c| c.volumes.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
                s.map(|s| {
                    s.copies
                        .iter()
                        .flat_map(|c| c.locations.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
                s.map_or(0, |s| s.changed).to_string(),
                r.message.clone(),
            ];
            o += &f.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(",");
            o.push('\n');
        };
        if r.save_sets.is_empty() {
            line(None);
        }
        for s in &r.save_sets {
            line(Some(s));
        }
    }
    o
}

/// The drills of a period as an HTML table (`id="drills"`).
pub fn drills_table(drills: &[super::DrillLine], tz: chrono_tz::Tz) -> String {
    let mut o = String::from(
        "<table id=\"drills\"><tr><th>Started</th><th>Drill</th><th>Result</th><th>Servers</th></tr>",
    );
    for d in drills {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&when(tz, d.created)),
            esc(&d.id),
            if d.state == "passed" { "ok" } else { "bad" },
            esc(&d.state),
            esc(&d.servers.join(", "))
        );
    }
    o + "</table>"
}

/// The page's style: plain, printable, no external resources.
pub const STYLE: &str = "body{font-family:sans-serif;font-size:11pt;margin:2em;color:#111}\
h1{font-size:16pt}h2{font-size:13pt;margin-top:1.6em;border-bottom:1px solid #999}\
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;vertical-align:top}\
th{background:#eee}td.n{text-align:right}.bad{color:#a00;font-weight:bold}.ok{color:#060}\
@media print{body{margin:0}h2{page-break-after:avoid}tr{page-break-inside:avoid}}";

fn html(l: &BackupLog, tz: chrono_tz::Tz) -> String {
    let w = |t| when(tz, t);
    let mut o = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Backup log {} to {}</title><style>{STYLE}</style></head><body>",
        esc(&w(l.from)),
        esc(&w(l.to))
    );
    o += &format!(
        "<h1>Backup log {} to {}</h1><p>Times in {}. Generated {} under audit log head {}.</p>",
        esc(&w(l.from)),
        esc(&w(l.to)),
        esc(&l.time_zone),
        esc(&w(l.generated)),
        l.audit_head
    );
    o += "<h2>Per server and control group</h2><table id=\"tallies\"><tr><th>Server</th><th>Control group</th><th>Runs</th><th>Succeeded</th><th>Failed</th><th>Missed</th><th>Bytes</th></tr>";
    for t in &l.tallies {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=\"n{}\">{}</td><td class=\"n{}\">{}</td><td class=n>{}</td></tr>",
            esc(&t.server),
            esc(&t.control_group),
            t.runs,
            t.succeeded,
            if t.failed > 0 { " bad" } else { "" },
            t.failed,
            if t.missed > 0 { " bad" } else { "" },
            t.missed,
            size(t.bytes)
        );
    }
    o += "</table><h2>Runs</h2><table id=\"runs\"><tr><th>Queued</th><th>Server</th><th>Control group</th><th>Job</th><th>Result</th><th>Duration</th><th>Bytes</th><th>Save sets (encryption, key, retention, cartridges)</th></tr>";
    for r in &l.runs {
        let sets: Vec<String> = r
            .save_sets
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}: {}, key {} ({}), retention {} <span class=\"{}\">{}</span>, {}{}",
                    esc(&s.id),
                    esc(&s.level),
                    esc(&s.source),
                    s.encryption,
                    esc(&s.key_id),
                    s.key_manager,
                    esc(if s.retention_asked.is_empty() {
                        "-"
                    } else {
                        &s.retention_asked
                    }),
                    if s.retention_applied { "ok" } else { "bad" },
                    if s.retention_applied {
                        "applied"
                    } else {
                        "not as the policy asks"
                    },
                    esc(&s
                        .copies
                        .iter()
                        .flat_map(|c| c
                            .volumes
                            .iter()
                            .zip(&c.locations)
                            .map(|(v, a)| format!("{v} at {a}")))
                        .collect::<Vec<_>>()
                        .join(", ")),
                    if s.changed > 0 {
                        format!(
                            ", <span class=bad>{} objects changed while saved</span>",
                            s.changed
                        )
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}{}</td><td class=n>{} s</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&w(r.queued)),
            esc(&r.server),
            esc(&r.control_group),
            esc(&r.job),
            if r.state == "succeeded" { "ok" } else { "bad" },
            esc(&r.state),
            if r.state == "succeeded" || r.message.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&r.message))
            },
            r.seconds,
            size(r.bytes),
            sets.join("<br>")
        );
    }
    o += "</table>";
    o += "<h2>Missed runs</h2>";
    if l.missed.is_empty() {
        o += "<p>None.</p>";
    } else {
        o += "<table id=\"missed\"><tr><th>Due</th><th>Control group</th><th>By</th></tr>";
        for m in &l.missed {
            o += &format!(
                "<tr><td>{}</td><td class=bad>{}</td><td>{}</td></tr>",
                esc(&w(m.due)),
                esc(&m.control_group),
                esc(&m.by)
            );
        }
        o += "</table>";
    }
    o += "<h2>Restore requests</h2><table id=\"restores\"><tr><th>Made</th><th>Request</th><th>Server</th><th>Ticket</th><th>Requester</th><th>State</th><th>Outcome</th></tr>";
    for r in &l.restores {
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w(r.created)),
            esc(&r.id),
            esc(&r.server),
            esc(&r.ticket),
            esc(&r.requester),
            esc(&r.state),
            esc(&r.outcome)
        );
    }
    o += "</table><h2>Restore drills</h2>";
    o += &drills_table(&l.drills, tz);
    for (title, id, evs) in [
        (
            "Keys destroyed (crypto-shredding)",
            "keys",
            &l.keys_destroyed,
        ),
        ("Escalations", "escalations", &l.escalations),
        ("Nights and fallbacks", "nights", &l.nights),
    ] {
        o += &format!("<h2>{title}</h2>");
        if evs.is_empty() {
            o += "<p>None.</p>";
            continue;
        }
        o += &format!("<table id=\"{id}\"><tr><th>When</th><th>What</th></tr>");
        for e in evs.iter() {
            o += &format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&w(e.time)),
                esc(&e.text)
            );
        }
        o += "</table>";
    }
    o += "</body></html>\n";
    o
}
