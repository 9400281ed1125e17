//! `cintactl`: the operations console: agents, jobs, run a control group now, cancel; `--json` for scripts.

mod audit;
mod connect;
mod drills;
mod report;
mod restore;
mod time;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use cinta_proto::v1 as pb;
use clap::{Parser, Subcommand};
use time::when;
use watch::watch;

/// cinta operations console.
#[derive(Parser)]
#[command(name = "cintactl", version, about)]
struct Cli {
    /// host:port of cinta-controller.
    #[arg(
        long,
        global = true,
        env = "CINTA_CONTROLLER",
        default_value = "127.0.0.1:7443"
    )]
    controller: String,
    /// Name to check the controller's certificate against (default: its host).
    #[arg(long, global = true, env = "CINTA_SERVER_NAME")]
    server_name: Option<String>,
    /// This console's certificate, key and the CA of the controller's certificate.
    #[arg(long, global = true, env = "CINTA_CERT")]
    cert: Option<PathBuf>,
    #[arg(long, global = true, env = "CINTA_KEY")]
    key: Option<PathBuf>,
    #[arg(long, global = true, env = "CINTA_CA")]
    ca: Option<PathBuf>,
    /// JSON output (times as seconds since 1970).
    #[arg(long, global = true)]
    json: bool,
    /// Show and read times in UTC (default: TZ if set, else the controller's time zone).
    #[arg(long, global = true)]
    utc: bool,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, global = true, env = "CINTA_TIMEOUT", default_value_t = 15)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Agents: name, role, connected, libraries, usage.
    Agents,
    /// Jobs, most recent first.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One job with its save sets.
    Job { id: String },
    /// Run a control group now on the LPAR its target names.
    Run {
        control_group: String,
        /// Wait for the job to finish; exit 0 if it succeeded, 1 if not.
        #[arg(long)]
        wait: bool,
        /// Wait, showing its progress as `watch` does.
        #[arg(long, conflicts_with = "wait")]
        watch: bool,
    },
    /// Follow a job live until it ends: a progress bar on a terminal, a line
    /// per state or entry and every 10 s otherwise, a JSON line per change
    /// with --json. Exit 0 if it succeeded, 1 if not.
    Watch { id: String },
    /// Cancel a queued or running job.
    Cancel { id: String },
    /// Save sets the jobs made, with retention (expires, state) and copies.
    SaveSets,
    /// Copy jobs now (BRMS DUPMEDBRM): for the save sets named, or every
    /// active one with fewer copies than its media policy asks for.
    Copy {
        /// Save set ids (at least 6 hex digits); none: every one short of copies.
        save_sets: Vec<String>,
    },
    /// Cartridges: where each is (its library, a vault, in transit) and its next move.
    Volumes {
        /// Only those with a move due now or under way (the move list).
        #[arg(long)]
        moves: bool,
    },
    /// Which save sets hold objects matching a glob (`*` crosses `/`), with
    /// where their cartridges are now and how to restore; --at gives the
    /// restore point (per path, the newest copy saved at or before it).
    Find {
        pattern: String,
        /// Only this agent's save sets.
        #[arg(long, default_value = "")]
        agent: String,
        /// The restore point: a local time (YYYY-MM-DD HH:MM, in the
        /// controller's time zone or TZ), an RFC 3339 time, or seconds since 1970.
        #[arg(long)]
        at: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Media moves (vault rotation): start those due, confirm arrivals.
    Moves {
        #[command(subcommand)]
        what: MovesCmd,
    },
    /// Recent events, newest first.
    Events {
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
    /// Tonight: the plan's state, what it waits for, and its timeline;
    /// `tonight ack` acknowledges an escalation so a step being retried
    /// (the contingency save, resuming apply) is not tried again.
    Tonight {
        what: Option<String>,
        /// Also the shell command each probe and hook ran.
        #[arg(long)]
        verbose: bool,
    },
    /// Signal the business close: `started` or `finished` (finished starts the post-close save).
    Close { what: String },
    /// Give an LPAR a role (failover: the contingency LPAR becomes production); control groups follow roles.
    SwitchRole { lpar: String, role: String },
    /// The audit log (auditor role): every console action and event, oldest
    /// first; `audit verify` checks the chain and its signed head.
    Audit {
        #[command(subcommand)]
        what: Option<audit::AuditCmd>,
        /// Records made at or after this time ("2026-12-01", "2026-12-01 08:00").
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Reports: `report recovery LPAR [--at TIME]`.
    Report {
        #[command(subcommand)]
        what: report::ReportCmd,
    },
    /// Restore drills: run, list, show.
    Drills {
        #[command(subcommand)]
        what: drills::DrillsCmd,
    },
    /// Restore requests: request, list, show, close.
    Restore {
        #[command(subcommand)]
        what: restore::RestoreCmd,
    },
}

#[derive(Subcommand)]
enum MovesCmd {
    /// Start the moves due now (all, or these volumes): cartridges in a
    /// library are put in its import/export port to be taken away.
    Start { volumes: Vec<String> },
    /// Confirm that these volumes (or --all in transit) have arrived; one
    /// arriving home is taken into its library from the import/export port.
    Confirm {
        volumes: Vec<String>,
        #[arg(long, conflicts_with = "volumes")]
        all: bool,
    },
}

fn volume_json(v: &pb::Volume) -> serde_json::Value {
    serde_json::json!({
        "volser": v.volser, "agent": v.agent, "library": v.library, "site": v.site,
        "location": v.location, "since": v.since, "in_transit_to": v.in_transit_to,
        "move_job": v.move_job, "move_policy": v.move_policy, "save_sets": v.save_sets,
        "expired": v.expired, "next_move_to": v.next_move_to, "next_move_at": v.next_move_at,
        "next_move_why": v.next_move_why, "last_written": v.last_written,
    })
}

/// A location as an operator reads it.
fn place(v: &pb::Volume, l: &str) -> String {
    if l == "*HOME" {
        format!("{}@{}", v.library, v.agent)
    } else {
        l.to_string()
    }
}

fn print_volumes(vols: &[pb::Volume]) {
    println!(
        "{:<8} {:<12} {:<18} {:<20} {:<5} {:<8} NEXT MOVE",
        "VOLUME", "SITE", "WHERE", "SINCE", "SETS", "EXPIRED"
    );
    for v in vols {
        let at = if v.in_transit_to.is_empty() {
            place(v, &v.location)
        } else {
            format!("-> {}", place(v, &v.in_transit_to))
        };
        let next = if !v.move_job.is_empty() {
            format!("job {} moving it", v.move_job)
        } else if v.next_move_to.is_empty() {
            "-".to_string()
        } else {
            format!(
                "to {} from {} ({})",
                place(v, &v.next_move_to),
                when(v.next_move_at),
                v.next_move_why
            )
        };
        println!(
            "{:<8} {:<12} {:<18} {:<20} {:<5} {:<8} {next}",
            v.volser,
            v.site,
            at,
            when(v.since),
            v.save_sets.len(),
            if v.expired { "yes" } else { "no" }
        );
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cintactl: {}", describe(&e));
            std::process::exit(1);
        }
    }
}

/// One line for an error: a gRPC refusal as what it means and the
/// controller's message, never the status's debug form.
fn describe(e: &anyhow::Error) -> String {
    let Some(s) = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) else {
        return format!("{e:#}");
    };
    use tonic::Code;
    let what = match s.code() {
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "not authenticated",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid request",
        Code::FailedPrecondition => "refused",
        Code::Unavailable => "the controller cannot be reached",
        Code::DeadlineExceeded | Code::Cancelled => "no answer in time (--timeout)",
        _ => "failed",
    };
    if s.message().is_empty() {
        what.to_string()
    } else {
        format!("{what}: {}", s.message())
    }
}

fn job_json(j: &pb::Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "control_group": j.control_group, "agent": j.agent, "state": j.state,
        "created": j.created, "started": j.started, "finished": j.finished, "message": j.message,
        "entries_done": j.entries_done, "entries_total": j.entries_total, "bytes": j.bytes,
        "bytes_total": j.bytes_total, "objects": j.objects, "current": j.current,
        "save_sets": j.save_sets.iter().map(|s| serde_json::json!({
            "id": s.id, "source": s.source, "key_id": s.key_id, "volumes": s.volumes, "objects": s.objects, "bytes": s.bytes,
            "warnings": s.warnings, "changed": s.changed, "changed_count": s.changed_count,
        })).collect::<Vec<_>>(),
        "steps": j.steps,
    })
}

fn print_job(j: &pb::Job) {
    println!(
        "job {} ({}) on {}: {} [{}/{} entries, {} bytes] created {} started {} finished {}",
        j.id,
        j.control_group,
        j.agent,
        j.state,
        j.entries_done,
        j.entries_total,
        j.bytes,
        when(j.created),
        when(j.started),
        when(j.finished)
    );
    if !j.message.is_empty() {
        println!("  {}", j.message);
    }
    for cmd in &j.steps {
        println!("  $ {cmd}");
    }
    for s in &j.save_sets {
        println!(
            "  save set {}  {}  {} objects, {} bytes, on {}  key {}",
            s.id,
            s.source,
            s.objects,
            s.bytes,
            s.volumes.join(","),
            s.key_id
        );
        for w in &s.warnings {
            println!("    warning: {w}");
        }
        if s.changed_count > 0 {
            println!(
                "    warning: {} objects changed while they were saved (kept, flagged){}",
                s.changed_count,
                if s.changed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.changed.join(", "))
                }
            );
        }
        if s.changed_count as usize > s.changed.len() {
            println!(
                "    ... and {} more changed",
                s.changed_count as usize - s.changed.len()
            );
        }
    }
}

/// Bytes as B, KiB, MiB, GiB.
fn human(b: f64) -> String {
    let mut v = b;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!()
}

async fn run(cli: Cli) -> Result<i32> {
    let mut c = connect::client(&connect::Target {
        controller: &cli.controller,
        server_name: cli.server_name.as_deref(),
        cert: cli.cert.as_deref(),
        key: cli.key.as_deref(),
        ca: cli.ca.as_deref(),
        timeout: Duration::from_secs(cli.timeout.max(1)),
    })
    .await?;
    let needs_zone = !cli.json
        || matches!(&cli.cmd, Cmd::Find { at: Some(_), .. })
        || matches!(&cli.cmd, Cmd::Restore { what } if what.reads_time())
        || matches!(&cli.cmd, Cmd::Audit { since: Some(_), .. })
        || matches!(&cli.cmd, Cmd::Report { what } if what.reads_time());
    time::set_zone(if cli.utc {
        time::Zone::Utc
    } else if let Some(z) = time::zone_from_env() {
        z
    } else if needs_zone {
        match c.get_info(pb::GetInfoRequest {}).await {
            Ok(i) => time::zone_named(&i.into_inner().time_zone),
            Err(_) => time::Zone::Utc,
        }
    } else {
        time::Zone::Utc
    });
    match &cli.cmd {
        Cmd::Restore { what } => return restore::run(&mut c, what, cli.json).await,
        Cmd::Drills { what } => return drills::run(&mut c, what, cli.json).await,
        Cmd::Report { what } => return report::run(&mut c, what, cli.json).await,
        Cmd::Audit { what, since, limit } => {
            return audit::run(&mut c, what.as_ref(), since.as_deref(), *limit, cli.json).await
        }
        Cmd::Agents => {
            let a = c
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            if cli.json {
                let v: Vec<_> = a
                    .iter()
                    .map(|a| serde_json::json!({
                        "name": a.name, "host": a.host, "role": a.role, "version": a.version, "connected": a.connected,
                        "last_seen": a.last_seen,
                        "libraries": a.libraries.iter().map(|l| serde_json::json!({"name": l.name, "drives": l.drives, "slots": l.slots, "scratch": l.scratch})).collect::<Vec<_>>(),
                        "usage": a.usage.iter().map(|u| serde_json::json!({"what": u.what, "percent_used": u.percent_used})).collect::<Vec<_>>(),
                        "watched": a.watched.iter().map(|w| serde_json::json!({"name": w.name, "ok": w.ok, "detail": w.detail})).collect::<Vec<_>>(),
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<10} {:<12} {:<10} {:<21} LIBRARIES; WATCHED",
                    "AGENT", "ROLE", "STATE", "LAST SEEN"
                );
                for a in a {
                    let libs: Vec<String> = a
                        .libraries
                        .iter()
                        .map(|l| format!("{} ({} scratch)", l.name, l.scratch))
                        .collect();
                    let watched: Vec<String> = a
                        .watched
                        .iter()
                        .map(|w| format!("{} {}", w.name, if w.ok { "up" } else { "DOWN" }))
                        .collect();
                    println!(
                        "{:<10} {:<12} {:<10} {:<21} {}{}",
                        a.name,
                        a.role,
                        if a.connected { "connected" } else { "away" },
                        when(a.last_seen),
                        libs.join(", "),
                        if watched.is_empty() {
                            String::new()
                        } else {
                            format!("; {}", watched.join(", "))
                        }
                    );
                }
            }
        }
        Cmd::Jobs { limit } => {
            let jobs = c
                .list_jobs(pb::ListJobsRequest { limit: *limit })
                .await?
                .into_inner()
                .jobs;
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&jobs.iter().map(job_json).collect::<Vec<_>>())?
                );
            } else {
                for j in &jobs {
                    print_job(j);
                }
            }
        }
        Cmd::Job { id } => {
            let j = c
                .get_job(pb::GetJobRequest { id: id.clone() })
                .await?
                .into_inner();
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&job_json(&j))?);
            } else {
                print_job(&j);
            }
        }
        Cmd::Watch { id } => return follow(&mut c, id, cli.json).await,
        Cmd::Run {
            control_group,
            wait,
            watch: watch_it,
        } => {
            let mut j = c
                .run_control_group(pb::RunControlGroupRequest {
                    control_group: control_group.clone(),
                })
                .await?
                .into_inner();
            if !cli.json {
                println!("queued job {} ({}) for {}", j.id, j.control_group, j.agent);
            }
            if *watch_it {
                return follow(&mut c, &j.id, cli.json).await;
            }
            if *wait {
                while j.state == "queued" || j.state == "running" {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    j = c
                        .get_job(pb::GetJobRequest { id: j.id.clone() })
                        .await?
                        .into_inner();
                }
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&job_json(&j))?);
            } else if *wait {
                print_job(&j);
            }
            if *wait && j.state != "succeeded" {
                return Ok(1);
            }
        }
        Cmd::Volumes { moves } => {
            let vols = c
                .list_volumes(pb::ListVolumesRequest { moves_only: *moves })
                .await?
                .into_inner()
                .volumes;
            if cli.json {
                let v: Vec<_> = vols.iter().map(volume_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_volumes(&vols);
            }
        }
        Cmd::Find {
            pattern,
            agent,
            at,
            limit,
        } => {
            let r = c
                .find_objects(pb::FindObjectsRequest {
                    pattern: pattern.clone(),
                    agent: agent.clone(),
                    at: match at {
                        Some(a) => time::parse_time(a, time::zone()).map_err(anyhow::Error::msg)?,
                        None => 0,
                    },
                    limit: *limit,
                })
                .await?
                .into_inner();
            if cli.json {
                let v: Vec<_> = r
                    .objects
                    .iter()
                    .map(|o| serde_json::json!({
                        "path": o.path, "kind": o.kind, "size": o.size, "mtime": o.mtime,
                        "save_set": o.save_set, "agent": o.agent, "library": o.library,
                        "created": o.created, "key_id": o.key_id,
                        "volumes": o.volumes.iter().map(|v| serde_json::json!({
                            "volser": v.volser, "location": v.location, "in_transit_to": v.in_transit_to,
                            "recall_hours": v.recall_hours, "emergency_recall_hours": v.emergency_recall_hours,
                        })).collect::<Vec<_>>(),
                    }))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"objects": v, "truncated": r.truncated})
                    )?
                );
            } else {
                for o in &r.objects {
                    let away: Vec<String> = o
                        .volumes
                        .iter()
                        .map(|v| {
                            if !v.in_transit_to.is_empty() {
                                format!("{} (in transit)", v.volser)
                            } else if v.location == "*HOME" {
                                format!("{} (in library {} of {})", v.volser, o.library, o.agent)
                            } else {
                                format!(
                                    "{} (at {}: recall it first, {} h; emergency {} h)",
                                    v.volser, v.location, v.recall_hours, v.emergency_recall_hours
                                )
                            }
                        })
                        .collect();
                    println!(
                        "{}  {} bytes  saved {} in {} on {}",
                        o.path,
                        o.size,
                        when(o.created),
                        o.save_set,
                        away.join(", ")
                    );
                    println!(
                        "  restore: cinta-agent restore LIB --save-set {} --select '{}' --to DIR",
                        o.save_set, o.path
                    );
                }
                if r.truncated {
                    eprintln!("(more matched; narrow the pattern or raise --limit)");
                }
            }
        }
        Cmd::Moves { what } => {
            let r = match what {
                MovesCmd::Start { volumes } => c
                    .start_moves(pb::MovesRequest {
                        volumes: volumes.clone(),
                        all: false,
                    })
                    .await?
                    .into_inner(),
                MovesCmd::Confirm { volumes, all } => c
                    .confirm_moves(pb::MovesRequest {
                        volumes: volumes.clone(),
                        all: *all,
                    })
                    .await?
                    .into_inner(),
            };
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "volumes": r.volumes.iter().map(volume_json).collect::<Vec<_>>(),
                        "refused": r.refused,
                    }))?
                );
            } else {
                print_volumes(&r.volumes);
                for why in &r.refused {
                    eprintln!("refused: {why}");
                }
            }
            if !r.refused.is_empty() {
                return Ok(1);
            }
        }
        Cmd::Copy { save_sets } => {
            let r = c
                .copy_save_sets(pb::CopySaveSetsRequest {
                    save_sets: save_sets.clone(),
                })
                .await?
                .into_inner();
            if cli.json {
                println!("{}", serde_json::json!({ "jobs": r.jobs }));
            } else if r.jobs.is_empty() {
                println!("no save set is short of copies");
            } else {
                for j in &r.jobs {
                    println!("copy job {j} queued");
                }
            }
        }
        Cmd::SaveSets => {
            let sets = c
                .list_save_sets(pb::ListSaveSetsRequest {})
                .await?
                .into_inner()
                .save_sets;
            if cli.json {
                let v: Vec<_> = sets
                    .iter()
                    .map(|s| serde_json::json!({
                        "id": s.id, "agent": s.agent, "control_group": s.control_group, "source": s.source,
                        "key_id": s.key_id, "volumes": s.volumes, "created": s.created, "expires": s.expires,
                        "state": s.state, "media_policy": s.media_policy, "copies_wanted": s.copies_wanted,
                        "copies": s.copies.iter().map(|c| serde_json::json!({
                            "copy": c.copy, "volumes": c.volumes, "media_class": c.media_class,
                            "move_policy": c.move_policy, "made": c.made, "verified": c.verified,
                        })).collect::<Vec<_>>(),
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<32}  {:<6}  {:<8}  {:<20}  {:<20}  {:<8}  {:<6}  SOURCE",
                    "SAVE SET", "AGENT", "STATE", "CREATED", "EXPIRES", "VOLUMES", "COPIES"
                );
                for s in &sets {
                    println!(
                        "{:<32}  {:<6}  {:<8}  {:<20}  {:<20}  {:<8}  {:<6}  {}",
                        s.id,
                        s.agent,
                        s.state,
                        when(s.created),
                        if s.expires == 0 {
                            "-".into()
                        } else {
                            when(s.expires)
                        },
                        s.volumes.join(","),
                        format!("{}/{}", 1 + s.copies.len(), s.copies_wanted.max(1)),
                        s.source
                    );
                    for k in &s.copies {
                        println!(
                            "  copy {} on {} ({}, move policy {}, made {}{})",
                            k.copy,
                            k.volumes.join(","),
                            k.media_class,
                            if k.move_policy.is_empty() {
                                "-"
                            } else {
                                &k.move_policy
                            },
                            when(k.made),
                            if k.verified {
                                ", checked against the save's digest"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
        Cmd::Events { limit } => {
            let ev = c
                .list_events(pb::ListEventsRequest { limit: *limit })
                .await?
                .into_inner()
                .events;
            if cli.json {
                let v: Vec<_> = ev
                    .iter()
                    .map(|e| serde_json::json!({"time": e.time, "kind": e.kind, "text": e.text}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in &ev {
                    println!("{}  {:<18} {}", when(e.time), e.kind, e.text);
                }
            }
        }
        Cmd::Tonight { .. } | Cmd::Close { .. } => {
            let n = match &cli.cmd {
                Cmd::Tonight { what: Some(w), .. } if w == "ack" => c
                    .acknowledge_night(pb::AcknowledgeNightRequest {})
                    .await?
                    .into_inner(),
                Cmd::Tonight { what: Some(w), .. } => {
                    bail!("tonight {w:?}: say `tonight` to see it or `tonight ack` to acknowledge")
                }
                Cmd::Close { what } => {
                    let finished = match what.as_str() {
                        "started" => false,
                        "finished" => true,
                        w => bail!("close {w:?}: say started or finished"),
                    };
                    c.signal_close(pb::SignalCloseRequest { finished })
                        .await?
                        .into_inner()
                }
                _ => c.get_night(pb::GetNightRequest {}).await?.into_inner(),
            };
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "id": n.id, "state": n.state, "escalated": n.escalated, "deadline": n.deadline,
                        "outcome": n.outcome, "waiting_for": n.waiting_for,
                        "pre_close_job": n.pre_close_job, "post_close_job": n.post_close_job,
                        "timeline": n.timeline.iter().map(|e| serde_json::json!({"time": e.time, "text": e.text})).collect::<Vec<_>>(),
                    }))?
                );
            } else {
                println!(
                    "night {}: {}{}{}  (deadline {})",
                    n.id,
                    n.state,
                    if n.outcome.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", n.outcome)
                    },
                    if n.escalated { ", ESCALATED" } else { "" },
                    when(n.deadline)
                );
                if !n.waiting_for.is_empty() {
                    println!("  waiting for {}", n.waiting_for);
                }
                let verbose = matches!(&cli.cmd, Cmd::Tonight { verbose: true, .. });
                for e in &n.timeline {
                    println!("  {}  {}", when(e.time), e.text);
                    let job = e
                        .text
                        .split_once("(job ")
                        .and_then(|(_, r)| r.split_once(')'))
                        .map(|(id, _)| id.to_string());
                    if let (true, Some(id)) = (verbose, job) {
                        if let Ok(j) = c.get_job(pb::GetJobRequest { id }).await {
                            for cmd in &j.into_inner().steps {
                                println!("      $ {cmd}");
                            }
                        }
                    }
                }
            }
        }
        Cmd::SwitchRole { lpar, role } => {
            let r = c
                .switch_role(pb::SwitchRoleRequest {
                    lpar: lpar.clone(),
                    role: role.clone(),
                })
                .await?
                .into_inner();
            let mut roles: Vec<(String, String)> = r.roles.into_iter().collect();
            roles.sort();
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &roles
                            .iter()
                            .cloned()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    )?
                );
            } else {
                for (l, r) in roles {
                    println!("{l:<10} {r}");
                }
            }
        }
        Cmd::Cancel { id } => {
            let j = c
                .cancel_job(pb::CancelJobRequest { id: id.clone() })
                .await?
                .into_inner();
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&job_json(&j))?);
            } else {
                print_job(&j);
            }
        }
    }
    Ok(0)
}

/// Watches job `id` to its end; exit 0 if it succeeded, 1 if not.
async fn follow(
    c: &mut pb::console_service_client::ConsoleServiceClient<tonic::transport::Channel>,
    id: &str,
    json: bool,
) -> Result<i32> {
    let j = watch(c, id, json).await?;
    if !json {
        print_job(&j);
    }
    Ok(if j.state == "succeeded" { 0 } else { 1 })
}
