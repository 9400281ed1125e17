//! `cintactl audit`: the controller's audit log (who did what, with what result, when, from where) and its verification.

use anyhow::{bail, Result};
use cinta_proto::v1 as pb;
use clap::Subcommand;
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::Channel;

use crate::time::{parse_time, when, zone};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Recompute the chain and check the signed head: names the first
    /// record changed, removed or inserted (exit 3 when the log was tampered with).
    Verify,
}

fn record_json(r: &pb::AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq, "time": r.time, "who": r.who, "role": r.role, "action": r.action,
        "args": r.args, "result": r.result, "from": r.from, "prev": r.prev,
    })
}

pub async fn run(
    c: &mut ConsoleServiceClient<Channel>,
    what: Option<&AuditCmd>,
    since: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<i32> {
    match what {
        Some(AuditCmd::Verify) => {
            let v = c
                .verify_audit(pb::VerifyAuditRequest {})
                .await?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "intact": v.intact, "records": v.records, "head": v.head, "problem": v.problem,
                    }))?
                );
            } else if v.intact {
                println!(
                    "audit log intact: {} records, chain and signed head (record {}) verified",
                    v.records, v.head
                );
            } else {
                println!("audit log TAMPERED WITH: {}", v.problem);
                println!("({} records verified before it)", v.records);
            }
            Ok(if v.intact { 0 } else { 3 })
        }
        None => {
            let since = match since {
                Some(s) => match parse_time(s, zone()) {
                    Ok(t) => t,
                    Err(e) => bail!("--since {s:?}: {e}"),
                },
                None => 0,
            };
            let rs = c
                .list_audit(pb::ListAuditRequest { since, limit })
                .await?
                .into_inner()
                .records;
            if json {
                let v: Vec<_> = rs.iter().map(record_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:>6} {:<20} {:<12} {:<9} {:<18} {:<22} ARGUMENTS / TEXT",
                    "SEQ", "TIME", "WHO", "ROLE", "ACTION", "RESULT"
                );
                for r in &rs {
                    println!(
                        "{:>6} {:<20} {:<12} {:<9} {:<18} {:<22} {}{}",
                        r.seq,
                        when(r.time),
                        r.who,
                        if r.role.is_empty() { "-" } else { &r.role },
                        r.action,
                        r.result,
                        r.args,
                        if r.from.is_empty() {
                            String::new()
                        } else {
                            format!(" (from {})", r.from)
                        }
                    );
                }
            }
            Ok(0)
        }
    }
}
