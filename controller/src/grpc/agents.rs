//! AgentService: an agent's session (register, heartbeats), its assignments (offered until taken, once), progress, objects and results. Only the agent of an LPAR of the configuration may call it, as that LPAR.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cinta_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{assignment, save_set_row};
use super::peer;
use crate::catalog::{AgentRow, ObjectRow, Progress, SaveSetRow};
use crate::state::State;

pub struct Agents(pub Arc<State>);

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::JobAssignment, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Agents {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let cn = peer::agent(&self.0, &req, "Register")?;
        let inv = req
            .into_inner()
            .inventory
            .ok_or_else(|| Status::invalid_argument("no inventory"))?;
        if inv.name != cn {
            let why = format!(
                "this certificate is {cn}; it cannot register as {}",
                inv.name
            );
            return Err(self.0.refused(why).into());
        }
        let row = AgentRow {
            name: cn.clone(),
            host: inv.host,
            role: String::new(),
            version: inv.version,
            libraries: inv
                .libraries
                .into_iter()
                .map(|l| (l.name, l.drives, l.slots, l.scratch))
                .collect(),
            usage: vec![],
            watched: vec![],
            session: String::new(),
            last_seen: 0,
        };
        let session = self.0.register(row)?;
        let cfg = &self.0.cfg;
        let lpar = cfg.lpars.iter().find(|l| l.name == cn);
        Ok(Response::new(pb::RegisterResponse {
            session_id: session,
            heartbeat_seconds: cfg.heartbeat_seconds,
            watches: lpar
                .into_iter()
                .flat_map(|l| &l.watches)
                .map(|w| pb::Watch {
                    name: w.name.clone(),
                    command: cfg.on_lpar(&cn, &w.command),
                    every_seconds: w.every_seconds,
                })
                .collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let cn = peer::agent(&self.0, &req, "Heartbeat")?;
        let r = req.into_inner();
        let usage: Vec<(String, f64)> = r
            .usage
            .into_iter()
            .map(|u| (u.what, u.percent_used))
            .collect();
        let watched: Vec<(String, bool, String)> = r
            .watched
            .into_iter()
            .map(|w| (w.name, w.ok, w.detail))
            .collect();
        // Heartbeats stay in memory (last seen, usage): only the session check reads the catalog.
        self.0.check_session(&cn, &r.session_id)?;
        self.0
            .liveness
            .beat(&cn, self.0.now(), usage.clone(), watched.clone());
        for (name, up, detail) in self.0.events.watch_changes(&cn, &watched) {
            let (kind, how) = if up {
                ("watch.up", "up again")
            } else {
                ("watch.down", "DOWN")
            };
            self.0
                .event(kind, &format!("{cn}: {name} is {how}: {detail}"));
        }
        if let Some(limit) = self.0.cfg.events.usage_threshold_percent {
            for (what, pct) in self.0.events.crossings(&cn, &usage, limit) {
                self.0.event(
                    "threshold.crossed",
                    &format!("{cn}: {what} is {pct:.1}% used (threshold {limit}%)"),
                );
            }
        }
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type AssignmentsStream = AssignmentStream;

    async fn assignments(
        &self,
        req: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let cn = peer::agent(&self.0, &req, "Assignments")?;
        let session = req.into_inner().session_id;
        self.0.check_session(&cn, &session)?;
        let state = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let wake = state.wake(&cn);
            let mut offered: Vec<String> = Vec::new();
            loop {
                let notified = wake.notified();
                if state.check_session(&cn, &session).is_err() {
                    let _ = tx
                        .send(Err(Status::failed_precondition(
                            "a newer session of this agent exists",
                        )))
                        .await;
                    return;
                }
                let queued = state.catalog().queued_for(&cn);
                let queued = match queued {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for j in queued {
                    if !offered.contains(&j.id) {
                        offered.push(j.id.clone());
                        if tx.send(Ok(assignment(&j))).await.is_err() {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), notified).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn accept_job(
        &self,
        req: Request<pb::AcceptJobRequest>,
    ) -> Result<Response<pb::AcceptJobResponse>, Status> {
        let cn = peer::agent(&self.0, &req, "AcceptJob")?;
        let r = req.into_inner();
        self.0.check_session(&cn, &r.session_id)?;
        let res = self
            .0
            .catalog()
            .accept(&r.job_id, &cn, &r.session_id, self.0.now())?;
        Ok(Response::new(match res {
            Ok(()) => {
                self.0
                    .event("job.started", &format!("job {} started on {cn}", r.job_id));
                pb::AcceptJobResponse {
                    ok: true,
                    reason: String::new(),
                }
            }
            Err(reason) => pb::AcceptJobResponse { ok: false, reason },
        }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::JobProgress>,
    ) -> Result<Response<pb::Ack>, Status> {
        let cn = peer::agent(&self.0, &req, "ReportProgress")?;
        let r = req.into_inner();
        self.0.check_session(&cn, &r.session_id)?;
        self.0.catalog().progress(
            &r.job_id,
            &cn,
            &Progress {
                entries_done: r.entries_done,
                entries_total: r.entries_total,
                bytes: r.bytes,
                bytes_total: r.bytes_total,
                objects: r.objects,
                current: r.current,
            },
        )?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn report_objects(
        &self,
        req: Request<tonic::Streaming<pb::ObjectBatch>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let cn = peer::agent(&self.0, &req, "ReportObjects")?;
        let mut stream = req.into_inner();
        // Checked when they change, not per batch: the job (session, running
        // here), then the save set (this job's own).
        let mut job: Option<String> = None;
        let mut save_set: Option<String> = None;
        while let Some(b) = stream.message().await? {
            if job.as_deref() != Some(b.job_id.as_str()) {
                self.0.check_session(&cn, &b.session_id)?;
                self.0.check_running(&cn, &b.job_id)?;
                job = Some(b.job_id.clone());
                save_set = None;
            }
            if save_set.as_deref() != Some(b.save_set.as_str()) {
                self.0.own_save_set(&b.save_set, &b.job_id)?;
                save_set = Some(b.save_set.clone());
            }
            let rows: Vec<ObjectRow> = b
                .objects
                .into_iter()
                .map(|o| ObjectRow {
                    path: o.path,
                    kind: o.kind,
                    size: o.size,
                    mtime: o.mtime,
                })
                .collect();
            self.0.put_objects(&b.save_set, &rows)?;
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn finish_job(&self, req: Request<pb::JobResult>) -> Result<Response<pb::Ack>, Status> {
        let cn = peer::agent(&self.0, &req, "FinishJob")?;
        let r = req.into_inner();
        let sets: Vec<SaveSetRow> = r.save_sets.into_iter().map(save_set_row).collect();
        let restores: Vec<_> = r
            .restores
            .into_iter()
            .map(super::convert::restore_outcome)
            .collect();
        let copies: Vec<_> = r
            .copies
            .into_iter()
            .map(super::convert::copy_made)
            .collect();
        self.0.finish_job(
            &cn,
            &r.session_id,
            &r.job_id,
            r.ok,
            &r.message,
            &sets,
            &r.output,
            &restores,
            &copies,
        )?;
        Ok(Response::new(pb::Ack {}))
    }
}
