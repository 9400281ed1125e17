//! `cintactl report`: reports for the datacenter and its auditors; `report recovery` says how to bring an LPAR back to a time (as BRMS's STRRCYBRM).

use anyhow::Result;
use cinta_proto::v1 as pb;
use clap::Subcommand;
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::Channel;

use crate::time::{parse_time, when, zone};

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The backup log of a period: per server and control group every run
    /// and its result, missed runs, save sets with their encryption, key,
    /// retention and cartridges, restores, drills, keys destroyed, escalations.
    Backups {
        /// From this time ("2026-10-01"), inclusive.
        #[arg(long)]
        from: String,
        /// To this time, exclusive (default: now).
        #[arg(long)]
        to: Option<String>,
        /// text (default), json, csv or html (--json without --format means json).
        #[arg(long)]
        format: Option<String>,
        /// Write it to this file instead of the standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// The ISO/IEC 27001 A.8.13 evidence of a quarter (auditor role): one
    /// printable HTML page with charts, or JSON.
    Evidence {
        /// "2026Q4".
        #[arg(long)]
        quarter: String,
        /// html (default) or json (--json without --format means json).
        #[arg(long)]
        format: Option<String>,
        /// Write it to this file instead of the standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// How to restore LPAR (or one control group) to a time: the save sets
    /// in order, their cartridges with where they are and their recall
    /// times, the commands, the estimated time and the risks.
    Recovery {
        lpar: String,
        /// The time to restore to (default: now).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        control_group: Option<String>,
    },
}

impl ReportCmd {
    /// Whether reading the command's times needs the controller's zone.
    pub fn reads_time(&self) -> bool {
        matches!(
            self,
            ReportCmd::Recovery { at: Some(_), .. } | ReportCmd::Backups { .. }
        )
    }
}

fn volume_json(v: &pb::VolumeWhere) -> serde_json::Value {
    serde_json::json!({
        "volser": v.volser, "location": v.location, "in_transit_to": v.in_transit_to,
        "recall_hours": v.recall_hours, "emergency_recall_hours": v.emergency_recall_hours,
    })
}

/// Where a cartridge is, as a person reads it.
pub fn where_is(v: &pb::VolumeWhere) -> String {
    if !v.in_transit_to.is_empty() {
        format!("{} in transit to {}", v.volser, v.in_transit_to)
    } else if v.location == "*HOME" {
        format!("{} in its library", v.volser)
    } else {
        format!(
            "{} at {} (recall {} h, emergency {} h)",
            v.volser, v.location, v.recall_hours, v.emergency_recall_hours
        )
    }
}

/// A report to its file, or the standard output.
fn write_out(output: Option<&std::path::Path>, doc: &pb::ReportDocument) -> Result<()> {
    match output {
        Some(p) => {
            std::fs::write(p, doc.body.as_bytes())
                .map_err(|e| anyhow::anyhow!("write {}: {e}", p.display()))?;
            eprintln!("wrote {} ({})", p.display(), doc.content_type);
        }
        None => print!("{}", doc.body),
    }
    Ok(())
}

fn hours(s: i64) -> String {
    if s < 3600 {
        format!("{} min", (s + 59) / 60)
    } else {
        format!("{:.1} h", s as f64 / 3600.0)
    }
}

pub async fn run(
    c: &mut ConsoleServiceClient<Channel>,
    cmd: &ReportCmd,
    json: bool,
) -> Result<i32> {
    match cmd {
        ReportCmd::Evidence {
            quarter,
            format,
            output,
        } => {
            let format = match format {
                Some(f) => f.clone(),
                None if json => "json".into(),
                None => "html".into(),
            };
            let doc = c
                .evidence_report(pb::EvidenceRequest {
                    quarter: quarter.clone(),
                    format,
                })
                .await?
                .into_inner();
            write_out(output.as_deref(), &doc)?;
            Ok(0)
        }
        ReportCmd::Backups {
            from,
            to,
            format,
            output,
        } => {
            let from = parse_time(from, zone()).map_err(anyhow::Error::msg)?;
            let to = match to {
                Some(t) => parse_time(t, zone()).map_err(anyhow::Error::msg)?,
                None => 0,
            };
            let format = match format {
                Some(f) => f.clone(),
                None if json => "json".into(),
                None => "text".into(),
            };
            let doc = c
                .backup_log(pb::BackupLogRequest { from, to, format })
                .await?
                .into_inner();
            write_out(output.as_deref(), &doc)?;
            Ok(0)
        }
        ReportCmd::Recovery {
            lpar,
            at,
            control_group,
        } => {
            let at = match at {
                Some(a) => parse_time(a, zone()).map_err(anyhow::Error::msg)?,
                None => 0,
            };
            let p = c
                .recovery_report(pb::RecoveryReportRequest {
                    lpar: lpar.clone(),
                    at,
                    control_group: control_group.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                let v = serde_json::json!({
                    "lpar": p.lpar, "at": p.at, "control_group": p.control_group,
                    "recall_seconds": p.recall_seconds, "restore_seconds": p.restore_seconds,
                    "total_seconds": p.total_seconds, "attention": p.attention,
                    "steps": p.steps.iter().map(|s| serde_json::json!({
                        "order": s.order, "save_set": s.save_set, "control_group": s.control_group,
                        "source": s.source, "level": s.level, "created": s.created, "library": s.library,
                        "bytes": s.bytes, "estimated_seconds": s.estimated_seconds, "command": s.command,
                        "changed": s.changed, "copies": s.copies,
                        "volumes": s.volumes.iter().map(volume_json).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!(
                "Recovery of {}{} to {}",
                p.lpar,
                if p.control_group.is_empty() {
                    String::new()
                } else {
                    format!(" (control group {})", p.control_group)
                },
                when(p.at)
            );
            println!();
            for s in &p.steps {
                println!(
                    "{:>2}. {} {} of {} ({}), saved {}, {} bytes, about {}",
                    s.order,
                    s.level,
                    s.save_set,
                    s.control_group,
                    s.source,
                    when(s.created),
                    s.bytes,
                    hours(s.estimated_seconds)
                );
                for v in &s.volumes {
                    println!("      cartridge {}", where_is(v));
                }
                println!("      $ {}", s.command);
            }
            println!();
            println!(
                "Estimated: recall {}, restore {}, in all {}",
                hours(p.recall_seconds),
                hours(p.restore_seconds),
                hours(p.total_seconds)
            );
            if !p.attention.is_empty() {
                println!();
                println!("Attention:");
                for a in &p.attention {
                    println!("  - {a}");
                }
            }
            Ok(0)
        }
    }
}
