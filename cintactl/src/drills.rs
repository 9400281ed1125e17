//! `cintactl drills`: restore drills (run, list, show), printed for people or as JSON.

use anyhow::Result;
use cinta_proto::v1 as pb;
use clap::Subcommand;
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::Channel;

use crate::time::when;

#[derive(Subcommand)]
pub enum DrillsCmd {
    /// Run a drill now: servers chosen at random (--seed makes the same
    /// choice again), a sample of each restored to scratch, verified, removed.
    Run {
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Every drill, oldest first.
    List,
    /// One drill: its servers, objects, cartridges, times and result.
    Show { id: String },
}

fn drill_json(d: &pb::Drill) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "created": d.created, "seed": d.seed, "by": d.by, "state": d.state, "ended": d.ended,
        "servers": d.servers.iter().map(|s| serde_json::json!({
            "agent": s.agent, "library": s.library, "scratch": s.scratch, "job": s.job, "state": s.state,
            "message": s.message, "started": s.started, "ended": s.ended, "objects": s.objects, "bytes": s.bytes,
            "samples": s.samples.iter().map(|x| serde_json::json!({
                "save_set": x.save_set, "control_group": x.control_group, "created": x.created,
                "volumes": x.volumes, "objects": x.objects, "bytes": x.bytes,
            })).collect::<Vec<_>>(),
            "outcomes": s.outcomes.iter().map(|o| serde_json::json!({
                "save_set": o.save_set, "objects": o.objects, "bytes": o.bytes, "failed": o.failed, "damaged": o.damaged,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_drill(d: &pb::Drill) {
    println!(
        "drill {}: {} (seed {}, by {}, {} to {})",
        d.id,
        d.state,
        d.seed,
        d.by,
        when(d.created),
        if d.ended > 0 {
            when(d.ended)
        } else {
            "-".into()
        }
    );
    for s in &d.servers {
        println!(
            "  {} (library {}): {}, {} objects, {} bytes, job {}, {} s {}",
            s.agent,
            s.library,
            s.state,
            s.objects,
            s.bytes,
            s.job,
            (s.ended - s.started).max(0),
            s.message
        );
        for x in &s.samples {
            println!(
                "    save set {} ({}, {}) on {}: {}",
                x.save_set,
                x.control_group,
                when(x.created),
                x.volumes.join(","),
                x.objects.join(" ")
            );
        }
        for o in &s.outcomes {
            for f in o.failed.iter().chain(&o.damaged) {
                println!("    FAILED {f}");
            }
        }
    }
}

pub async fn run(
    c: &mut ConsoleServiceClient<Channel>,
    cmd: &DrillsCmd,
    json: bool,
) -> Result<i32> {
    let show = |d: &pb::Drill| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&drill_json(d))?);
        } else {
            print_drill(d);
        }
        Ok(())
    };
    match cmd {
        DrillsCmd::Run { seed } => {
            let d = c
                .run_drill(pb::RunDrillRequest {
                    seed: seed.unwrap_or(0),
                })
                .await?
                .into_inner();
            show(&d)?;
        }
        DrillsCmd::List => {
            let ds = c
                .list_drills(pb::ListDrillsRequest {})
                .await?
                .into_inner()
                .drills;
            if json {
                let v: Vec<_> = ds.iter().map(drill_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<20} {:<8} {:<20} {:<22} SERVERS",
                    "DRILL", "STATE", "STARTED", "SEED"
                );
                for d in &ds {
                    println!(
                        "{:<20} {:<8} {:<20} {:<22} {}",
                        d.id,
                        d.state,
                        when(d.created),
                        d.seed,
                        d.servers
                            .iter()
                            .map(|s| s.agent.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
            }
        }
        DrillsCmd::Show { id } => {
            let d = c
                .get_drill(pb::GetDrillRequest { id: id.clone() })
                .await?
                .into_inner();
            show(&d)?;
        }
    }
    Ok(0)
}
