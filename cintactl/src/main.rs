//! `cintactl`: the operations console: agents, jobs, run a control group now, cancel; `--json` for scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cinta_proto::v1 as pb;
use clap::{Parser, Subcommand};
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
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
    /// Save sets the jobs made, with retention (expires, state).
    SaveSets,
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
        /// A time, as seconds since 1970 or YYYY-MM-DDTHH:MM:SSZ.
        #[arg(long, value_parser = parse_time)]
        at: Option<i64>,
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
    Tonight { what: Option<String> },
    /// Signal the business close: `started` or `finished` (finished starts the post-close save).
    Close { what: String },
    /// Give an LPAR a role (failover: the contingency LPAR becomes production); control groups follow roles.
    SwitchRole { lpar: String, role: String },
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

/// Seconds since 1970, or an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ).
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad = || format!("{s:?}: give seconds since 1970 or YYYY-MM-DDTHH:MM:SSZ");
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    // Days from civil (the inverse of `when`).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
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
        Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    if s.message().is_empty() {
        what.to_string()
    } else {
        format!("{what}: {}", s.message())
    }
}

async fn client(cli: &Cli) -> Result<ConsoleServiceClient<Channel>> {
    let (Some(cert), Some(key), Some(ca)) = (&cli.cert, &cli.key, &cli.ca) else {
        bail!("give --cert, --key and --ca (or CINTA_CERT, CINTA_KEY, CINTA_CA): the controller speaks mutual TLS only");
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let host = cli.server_name.clone().unwrap_or_else(|| {
        cli.controller
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default()
    });
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name(host);
    let ch = Channel::from_shared(format!("https://{}", cli.controller))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connect to the controller at {}", cli.controller))?;
    Ok(ConsoleServiceClient::new(ch))
}

fn when(t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    let (d, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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

/// One line of a running job: bar, bytes, rate, ETA, entry. `rate` in bytes/s (measured here).
fn progress_line(j: &pb::Job, rate: f64, width: usize) -> String {
    let frac = if j.bytes_total > 0 {
        (j.bytes as f64 / j.bytes_total as f64).min(1.0)
    } else if j.entries_total > 0 {
        f64::from(j.entries_done) / f64::from(j.entries_total)
    } else {
        0.0
    };
    let filled = (frac * width as f64).round() as usize;
    let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled));
    let mut line = format!(
        "{} {} {bar} {:>3.0}%  {}",
        j.id,
        j.state,
        frac * 100.0,
        human(j.bytes as f64)
    );
    if j.bytes_total > 0 {
        line.push_str(&format!(" of {}", human(j.bytes_total as f64)));
    }
    if rate > 0.0 {
        line.push_str(&format!("  {}/s", human(rate)));
        if j.bytes_total > j.bytes {
            let left = ((j.bytes_total - j.bytes) as f64 / rate) as u64;
            line.push_str(&format!("  ETA {}:{:02}", left / 60, left % 60));
        }
    }
    line.push_str(&format!(
        "  entry {}/{}",
        (j.entries_done + u32::from(!j.current.is_empty())).min(j.entries_total),
        j.entries_total
    ));
    if !j.current.is_empty() {
        line.push_str(&format!(": {} ({} objects)", j.current, j.objects));
    }
    line
}

/// Follows job `id` until it ends; returns it as it ended.
async fn watch(c: &mut ConsoleServiceClient<Channel>, id: &str, json: bool) -> Result<pb::Job> {
    use std::io::{IsTerminal, Write};
    let tty = !json && std::io::stdout().is_terminal();
    let mut last: Option<pb::Job> = None;
    let mut printed = std::time::Instant::now() - Duration::from_secs(60);
    // Rate from what this console saw: (when, bytes) at the first sighting while running.
    let mut first: Option<(std::time::Instant, u64)> = None;
    loop {
        let j = c
            .get_job(pb::GetJobRequest { id: id.to_string() })
            .await?
            .into_inner();
        let ended = !matches!(j.state.as_str(), "queued" | "running");
        if j.state == "running" && first.is_none() {
            first = Some((std::time::Instant::now(), j.bytes));
        }
        let rate = first
            .map(|(t, b)| {
                let s = t.elapsed().as_secs_f64();
                if s > 0.5 {
                    j.bytes.saturating_sub(b) as f64 / s
                } else {
                    0.0
                }
            })
            .unwrap_or(0.0);
        let changed = last.as_ref() != Some(&j);
        if json {
            if changed {
                println!("{}", serde_json::to_string(&job_json(&j))?);
            }
        } else if tty {
            print!("\r{}\x1b[K", progress_line(&j, rate, 30));
            std::io::stdout().flush()?;
        } else if ended
            || last
                .as_ref()
                .map(|l| (&l.state, l.entries_done, &l.current))
                != Some((&j.state, j.entries_done, &j.current))
            || printed.elapsed() >= Duration::from_secs(10)
        {
            println!("{}", progress_line(&j, rate, 20));
            printed = std::time::Instant::now();
        }
        if ended {
            if tty {
                println!();
            }
            return Ok(j);
        }
        last = Some(j);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `watch` until the job ends, then the job; exit 0 if it succeeded, 1 if not.
async fn follow(c: &mut ConsoleServiceClient<Channel>, id: &str, json: bool) -> Result<i32> {
    let j = watch(c, id, json).await?;
    if !json {
        print_job(&j);
    }
    Ok(if j.state == "succeeded" { 0 } else { 1 })
}

async fn run(cli: Cli) -> Result<i32> {
    let mut c = client(&cli).await?;
    match &cli.cmd {
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
                    at: at.unwrap_or(0),
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
                                format!("{} (at {}: recall it first)", v.volser, v.location)
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
                        "state": s.state, "media_policy": s.media_policy,
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<32}  {:<6}  {:<8}  {:<20}  {:<20}  {:<8}  SOURCE",
                    "SAVE SET", "AGENT", "STATE", "CREATED", "EXPIRES", "VOLUMES"
                );
                for s in &sets {
                    println!(
                        "{:<32}  {:<6}  {:<8}  {:<20}  {:<20}  {:<8}  {}",
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
                        s.source
                    );
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
                Cmd::Tonight { what: Some(w) } if w == "ack" => c
                    .acknowledge_night(pb::AcknowledgeNightRequest {})
                    .await?
                    .into_inner(),
                Cmd::Tonight { what: Some(w) } => {
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
                for e in &n.timeline {
                    println!("  {}  {}", when(e.time), e.text);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_they_are_printed() {
        for t in [1i64, 1_795_546_800, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_time(&when(t)).unwrap(), t, "{}", when(t));
        }
        assert_eq!(parse_time("1795546800").unwrap(), 1_795_546_800);
        for bad in ["2026-13-01T00:00:00Z", "2026-11-24 19:00:00", "tomorrow"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
