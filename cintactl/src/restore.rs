//! `cintactl restore`: restore requests as the datacenter's procedure has them (request, list, show, close), printed for people or as JSON.

use anyhow::Result;
use cinta_proto::v1 as pb;
use clap::Subcommand;
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::Channel;

use crate::time::{self, when};

#[derive(Subcommand)]
pub enum RestoreCmd {
    /// Ask for a restore: checked against the policy (a copy within
    /// retention at or before --at, else refused with the nearest restore
    /// points), then run on the server's agent, verified, retried.
    Request {
        /// The server whose data it is (an LPAR or agent).
        #[arg(long)]
        server: String,
        /// What to restore: globs over saved paths as `find` takes them (repeat).
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// The copy wanted: per path the newest at or before this local time
        /// (YYYY-MM-DD HH:MM), RFC 3339 time or seconds since 1970; default now.
        #[arg(long)]
        at: Option<String>,
        /// The destination directory on the server's agent.
        #[arg(long, required_unless_present_any = ["original", "into_library"])]
        to: Option<String>,
        /// Back to the original place instead (replacing what is there).
        #[arg(long, conflicts_with = "to")]
        original: bool,
        /// For an IBM i library's save file: the library to restore it into
        /// on the server's LPAR (RSTLIB through the configured template).
        #[arg(long, conflicts_with_all = ["to", "original"])]
        into_library: Option<String>,
        /// The ticket number.
        #[arg(long, required_unless_present = "urgent")]
        ticket: Option<String>,
        /// Served without a ticket, flagged until one is attached.
        #[arg(long)]
        urgent: bool,
        /// Who asked (name).
        #[arg(long)]
        requester: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Open requests (all with --all), oldest first.
    List {
        #[arg(long)]
        all: bool,
    },
    /// One request: its plan, attempts and every step with who and when.
    Show { id: String },
    /// Close a request (a restore still running is cancelled).
    Close {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Approve a request waiting for a second person (the approver role;
    /// not the operator who made it, not its requester): the restore starts.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The restored data was handed to the requester (after verified).
    Deliver {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Attach the ticket to an urgent request made without one.
    Ticket { id: String, ticket: String },
    /// Reject a request waiting for approval: it is closed.
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

impl RestoreCmd {
    /// Whether reading the command's times needs the controller's zone.
    pub fn reads_time(&self) -> bool {
        matches!(self, RestoreCmd::Request { at: Some(_), .. })
    }
}

pub fn request_json(r: &pb::RestoreRequest) -> serde_json::Value {
    let s = r.spec.clone().unwrap_or_default();
    serde_json::json!({
        "id": r.id, "state": r.state, "outcome": r.outcome, "requested_by": r.requested_by,
        "server": s.server, "paths": s.paths, "at": s.at, "to": s.to, "original": s.original,
        "ticket": s.ticket, "urgent": s.urgent, "requester": s.requester, "email": s.email,
        "reason": s.reason, "into_library": s.into_library, "agent": r.agent, "library": r.library,
        "plan": r.plan.iter().map(|p| serde_json::json!({
            "save_set": p.save_set, "created": p.created, "volumes": p.volumes, "objects": p.objects,
            "data_class": p.data_class, "bytes": p.bytes,
        })).collect::<Vec<_>>(),
        "attempts": r.attempts.iter().map(|a| serde_json::json!({
            "job": a.job, "started": a.started, "ended": a.ended, "state": a.state, "message": a.message,
            "outcomes": a.outcomes.iter().map(|o| serde_json::json!({
                "save_set": o.save_set, "to": o.to, "objects": o.objects, "bytes": o.bytes,
                "failed": o.failed, "damaged": o.damaged,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "history": r.history.iter().map(|h| serde_json::json!({
            "time": h.time, "state": h.state, "who": h.who, "note": h.note,
        })).collect::<Vec<_>>(),
        "refusal": r.refusal, "nearest": r.nearest, "objects": r.objects, "bytes": r.bytes,
        "back_by": r.back_by, "restore_seconds": r.restore_seconds,
    })
}

/// The ticket as a list shows it.
fn ticket(s: &pb::RestoreRequestSpec) -> String {
    if s.ticket.is_empty() {
        "URGENT, no ticket".into()
    } else {
        s.ticket.clone()
    }
}

fn print_request(r: &pb::RestoreRequest) {
    let s = r.spec.clone().unwrap_or_default();
    println!(
        "restore request {}: {}{} (ticket {}; for {} <{}>; asked by {})",
        r.id,
        r.state,
        if r.outcome.is_empty() {
            String::new()
        } else {
            format!(", {}", r.outcome)
        },
        ticket(&s),
        s.requester,
        s.email,
        r.requested_by
    );
    println!(
        "  {} from {} as at {} into {} on {}{}",
        s.paths.join(" "),
        s.server,
        when(s.at),
        s.to,
        r.agent,
        if s.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason)
        }
    );
    if !r.refusal.is_empty() {
        println!("  refused: {}", r.refusal);
        let near: Vec<String> = r.nearest.iter().map(|t| when(*t)).collect();
        if near.is_empty() {
            println!("  no copy of it is kept at all");
        } else {
            println!("  restore points that exist: {}", near.join(", "));
        }
    }
    if r.state == "recall" {
        println!(
            "  waiting for recalled cartridges: back by {}{}",
            when(r.back_by),
            if r.restore_seconds > 0 {
                format!(", then about {} s to restore", r.restore_seconds)
            } else {
                String::new()
            }
        );
    }
    for p in &r.plan {
        println!(
            "  save set {} of {}: {} objects, {} bytes, on {}{}",
            p.save_set,
            when(p.created),
            p.objects,
            p.bytes,
            p.volumes.join(","),
            if p.data_class.is_empty() {
                String::new()
            } else {
                format!(" ({} data)", p.data_class)
            }
        );
    }
    for (i, a) in r.attempts.iter().enumerate() {
        println!(
            "  attempt {} job {}: {} {}",
            i + 1,
            a.job,
            a.state,
            a.message
        );
        for o in &a.outcomes {
            println!(
                "    save set {}: {} objects, {} bytes verified into {}",
                o.save_set, o.objects, o.bytes, o.to
            );
            for f in o.failed.iter().chain(&o.damaged) {
                println!("      FAILED {f}");
            }
        }
    }
    for h in &r.history {
        println!(
            "  {}  {:<10} {:<12} {}",
            when(h.time),
            h.state,
            h.who,
            h.note
        );
    }
}

pub async fn run(
    c: &mut ConsoleServiceClient<Channel>,
    cmd: &RestoreCmd,
    json: bool,
) -> Result<i32> {
    let show = |r: &pb::RestoreRequest| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&request_json(r))?);
        } else {
            print_request(r);
        }
        Ok(())
    };
    match cmd {
        RestoreCmd::Request {
            server,
            paths,
            at,
            to,
            original,
            into_library,
            ticket,
            urgent,
            requester,
            email,
            reason,
        } => {
            let r = c
                .request_restore(pb::RestoreRequestSpec {
                    server: server.clone(),
                    paths: paths.clone(),
                    at: match at {
                        Some(a) => time::parse_time(a, time::zone()).map_err(anyhow::Error::msg)?,
                        None => 0,
                    },
                    to: to.clone().unwrap_or_default(),
                    original: *original,
                    ticket: ticket.clone().unwrap_or_default(),
                    urgent: *urgent,
                    requester: requester.clone(),
                    email: email.clone(),
                    reason: reason.clone(),
                    into_library: into_library.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            show(&r)?;
            // Refused by the policy: said, and not a success.
            Ok(if r.outcome == "refused" { 3 } else { 0 })
        }
        RestoreCmd::List { all } => {
            let rs = c
                .list_restores(pb::ListRestoresRequest { all: *all })
                .await?
                .into_inner()
                .restores;
            if json {
                let v: Vec<_> = rs.iter().map(request_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<20} {:<10} {:<10} {:<18} {:<10} {:<20} WHAT",
                    "REQUEST", "STATE", "OUTCOME", "TICKET", "SERVER", "ASKED"
                );
                for r in &rs {
                    let s = r.spec.clone().unwrap_or_default();
                    println!(
                        "{:<20} {:<10} {:<10} {:<18} {:<10} {:<20} {}",
                        r.id,
                        r.state,
                        r.outcome,
                        ticket(&s),
                        s.server,
                        when(r.history.first().map_or(0, |h| h.time)),
                        s.paths.join(" ")
                    );
                }
            }
            Ok(0)
        }
        RestoreCmd::Show { id } => {
            let r = c
                .get_restore(pb::GetRestoreRequest { id: id.clone() })
                .await?
                .into_inner();
            show(&r)?;
            Ok(0)
        }
        RestoreCmd::Approve { id, note }
        | RestoreCmd::Reject { id, note }
        | RestoreCmd::Deliver { id, note } => {
            let d = pb::DecideRestoreRequest {
                id: id.clone(),
                note: note.clone(),
            };
            let r = match cmd {
                RestoreCmd::Approve { .. } => c.approve_restore(d).await?,
                RestoreCmd::Reject { .. } => c.reject_restore(d).await?,
                _ => c.deliver_restore(d).await?,
            }
            .into_inner();
            show(&r)?;
            Ok(0)
        }
        RestoreCmd::Ticket { id, ticket } => {
            let r = c
                .attach_ticket(pb::AttachTicketRequest {
                    id: id.clone(),
                    ticket: ticket.clone(),
                })
                .await?
                .into_inner();
            show(&r)?;
            Ok(0)
        }
        RestoreCmd::Close { id, note } => {
            let r = c
                .close_restore(pb::CloseRestoreRequest {
                    id: id.clone(),
                    note: note.clone(),
                })
                .await?
                .into_inner();
            show(&r)?;
            Ok(0)
        }
    }
}
