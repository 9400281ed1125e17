//! ConsoleService: what operators and scripts ask and tell the controller. Every method first checks the caller is an operator holding the role it needs (viewer to read, operator to act, admin to switch roles).

use std::sync::Arc;

use cinta_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert::{drill_pb, job_pb, night_pb, restore_request_pb, volume_pb};
use super::peer;
use crate::access::Role;
use crate::state::State;

pub struct Console(pub Arc<State>);

/// A console action the caller may take: what the audit log records of it,
/// with its result once it is known ([`Console::done`]).
struct Act {
    who: String,
    role: Role,
    action: &'static str,
    args: String,
    from: String,
}

impl Console {
    fn who<T>(&self, req: &Request<T>, method: &str, need: Role) -> Result<String, Status> {
        peer::console(&self.0, req, method, need)
    }

    /// Checks the caller as [`Console::who`] does and starts the action's audit record.
    fn act<T: std::fmt::Debug>(
        &self,
        req: &Request<T>,
        method: &'static str,
        need: Role,
    ) -> Result<Act, Status> {
        Ok(Act {
            who: self.who(req, method, need)?,
            role: need,
            action: method,
            args: format!("{:?}", req.get_ref()),
            from: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
        })
    }

    /// Records an action and its result in the audit log, then answers.
    fn done<R>(&self, act: Act, r: Result<R, Status>) -> Result<R, Status> {
        self.0.audit(crate::audit::Entry {
            who: act.who,
            role: act.role.as_str().to_string(),
            action: act.action.to_string(),
            args: act.args,
            result: match &r {
                Ok(_) => "ok".to_string(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            },
            from: act.from,
        });
        r
    }

    /// The moved volumes as the console shows them (with their next moves).
    fn moves_response(
        &self,
        moved: Vec<crate::catalog::VolumeRecord>,
        refused: Vec<String>,
    ) -> Result<pb::MovesResponse, Status> {
        let names: Vec<String> = moved.into_iter().map(|v| v.volser).collect();
        let volumes = crate::media::volumes_view(&self.0)?
            .into_iter()
            .filter(|w| names.contains(&w.v.volser))
            .map(volume_pb)
            .collect();
        Ok(pb::MovesResponse { volumes, refused })
    }

    fn night(&self) -> Result<pb::Night, Status> {
        let n = self
            .0
            .night()?
            .ok_or_else(|| Status::not_found("no night has started yet"))?;
        Ok(night_pb(n))
    }
}

#[tonic::async_trait]
impl pb::console_service_server::ConsoleService for Console {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.who(&req, "ListAgents", Role::Viewer)?;
        let t = self.0.now();
        let stale = 3 * i64::from(self.0.cfg.heartbeat_seconds);
        let roles = self.0.catalog().roles()?;
        let agents = self
            .0
            .agents_live()
            .into_iter()
            .map(|a| pb::Agent {
                connected: t - a.last_seen <= stale,
                role: self.0.cfg.role_of(&a.name, &roles).unwrap_or(a.role),
                name: a.name,
                host: a.host,
                version: a.version,
                last_seen: a.last_seen,
                libraries: a
                    .libraries
                    .into_iter()
                    .map(|(name, drives, slots, scratch)| pb::Library {
                        name,
                        drives,
                        slots,
                        scratch,
                    })
                    .collect(),
                usage: a
                    .usage
                    .into_iter()
                    .map(|(what, percent_used)| pb::Usage { what, percent_used })
                    .collect(),
                watched: a
                    .watched
                    .into_iter()
                    .map(|(name, ok, detail)| pb::WatchStatus { name, ok, detail })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.who(&req, "ListJobs", Role::Viewer)?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n,
        };
        let jobs = self.0.catalog().jobs(limit)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_pb).collect(),
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        self.who(&req, "GetJob", Role::Viewer)?;
        let j = self.0.job(&req.into_inner().id)?;
        Ok(Response::new(job_pb(j)))
    }

    async fn run_control_group(
        &self,
        req: Request<pb::RunControlGroupRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let act = self.act(&req, "RunControlGroup", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let job = self.0.queue(&req.into_inner().control_group, &who)?;
            Ok(Response::new(job_pb(job)))
        }
        .await;
        self.done(act, r)
    }

    async fn switch_role(
        &self,
        req: Request<pb::SwitchRoleRequest>,
    ) -> Result<Response<pb::SwitchRoleResponse>, Status> {
        let act = self.act(&req, "SwitchRole", Role::Admin)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let r = req.into_inner();
            let roles = self.0.switch_role(&r.lpar, &r.role, &who)?;
            Ok(Response::new(pb::SwitchRoleResponse {
                roles: roles.into_iter().collect(),
            }))
        }
        .await;
        self.done(act, r)
    }

    async fn signal_close(
        &self,
        req: Request<pb::SignalCloseRequest>,
    ) -> Result<Response<pb::Night>, Status> {
        let act = self.act(&req, "SignalClose", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let n = self.0.signal_close(req.into_inner().finished, &who)?;
            crate::housekeeping::tick(&self.0);
            Ok(Response::new(self.night().unwrap_or_else(|_| night_pb(n))))
        }
        .await;
        self.done(act, r)
    }

    async fn acknowledge_night(
        &self,
        req: Request<pb::AcknowledgeNightRequest>,
    ) -> Result<Response<pb::Night>, Status> {
        let act = self.act(&req, "AcknowledgeNight", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let n = self.0.acknowledge(&who)?;
            crate::housekeeping::tick(&self.0);
            Ok(Response::new(self.night().unwrap_or_else(|_| night_pb(n))))
        }
        .await;
        self.done(act, r)
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.who(&req, "ListEvents", Role::Viewer)?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n,
        };
        let events = self
            .0
            .catalog()
            .events(limit)?
            .into_iter()
            .map(|(time, kind, text)| pb::Event { time, kind, text })
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn find_objects(
        &self,
        req: Request<pb::FindObjectsRequest>,
    ) -> Result<Response<pb::FindObjectsResponse>, Status> {
        self.who(&req, "FindObjects", Role::Viewer)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let (found, truncated) =
            crate::find::find_objects(&self.0, &r.pattern, &r.agent, r.at, limit)?;
        let objects = found
            .into_iter()
            .map(|f| pb::FoundObject {
                path: f.object.path,
                kind: f.object.kind,
                size: f.object.size,
                mtime: f.object.mtime,
                save_set: f.save_set.id,
                agent: f.save_set.agent,
                library: f.save_set.library,
                created: f.save_set.created,
                key_id: f.save_set.key_id,
                volumes: f
                    .volumes
                    .into_iter()
                    .map(|v| {
                        let away = v.location != crate::moves::HOME;
                        let hours = |urgent| {
                            if away {
                                (self.0.cfg.recall_seconds(&v.location, urgent) / 3600) as u32
                            } else {
                                0
                            }
                        };
                        pb::VolumeWhere {
                            recall_hours: hours(false),
                            emergency_recall_hours: hours(true),
                            volser: v.volser,
                            location: v.location,
                            in_transit_to: v.in_transit_to,
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::FindObjectsResponse {
            objects,
            truncated,
        }))
    }

    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.who(&req, "ListVolumes", Role::Viewer)?;
        let only = req.into_inner().moves_only;
        let now = self.0.now();
        let volumes = crate::media::volumes_view(&self.0)?
            .into_iter()
            .filter(|w| {
                !only
                    || !w.v.in_transit_to.is_empty()
                    || w.due.as_ref().is_some_and(|d| d.at <= now)
            })
            .map(volume_pb)
            .collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn start_moves(
        &self,
        req: Request<pb::MovesRequest>,
    ) -> Result<Response<pb::MovesResponse>, Status> {
        let act = self.act(&req, "StartMoves", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let r = req.into_inner();
            let (moved, refused) = crate::media::start_moves(&self.0, &r.volumes, &who)?;
            Ok(Response::new(self.moves_response(moved, refused)?))
        }
        .await;
        self.done(act, r)
    }

    async fn copy_save_sets(
        &self,
        req: Request<pb::CopySaveSetsRequest>,
    ) -> Result<Response<pb::CopySaveSetsResponse>, Status> {
        let act = self.act(&req, "CopySaveSets", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let r = req.into_inner();
            let jobs = crate::copies::copy_now(&self.0, &r.save_sets, &who)?;
            Ok(Response::new(pb::CopySaveSetsResponse { jobs }))
        }
        .await;
        self.done(act, r)
    }

    async fn confirm_moves(
        &self,
        req: Request<pb::MovesRequest>,
    ) -> Result<Response<pb::MovesResponse>, Status> {
        let act = self.act(&req, "ConfirmMoves", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let r = req.into_inner();
            if r.volumes.is_empty() && !r.all {
                return Err(Status::invalid_argument(
                    "name the volumes that arrived, or confirm all",
                ));
            }
            let (moved, refused) = crate::media::confirm_moves(&self.0, &r.volumes, r.all, &who)?;
            Ok(Response::new(self.moves_response(moved, refused)?))
        }
        .await;
        self.done(act, r)
    }

    async fn list_save_sets(
        &self,
        req: Request<pb::ListSaveSetsRequest>,
    ) -> Result<Response<pb::ListSaveSetsResponse>, Status> {
        self.who(&req, "ListSaveSets", Role::Viewer)?;
        let save_sets = self
            .0
            .catalog()
            .save_sets()?
            .into_iter()
            .map(|s| pb::SaveSetInfo {
                copies_wanted: crate::copies::wanted(&self.0, &s),
                copies: s
                    .copies
                    .iter()
                    .map(|c| pb::SaveSetCopy {
                        copy: c.copy,
                        volumes: c.volumes.clone(),
                        media_class: c.media_class.clone(),
                        move_policy: c.move_policy.clone(),
                        made: c.made,
                        verified: c.verified,
                    })
                    .collect(),
                id: s.id,
                agent: s.agent,
                control_group: s.control_group,
                source: s.source,
                key_id: s.key_id,
                volumes: s.volumes,
                created: s.created,
                expires: s.expires,
                state: s.state,
                media_policy: s.media_policy,
            })
            .collect();
        Ok(Response::new(pb::ListSaveSetsResponse { save_sets }))
    }

    async fn get_info(
        &self,
        req: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::ControllerInfo>, Status> {
        let who = self.who(&req, "GetInfo", Role::Viewer)?;
        let roles = self
            .0
            .cfg
            .operators
            .iter()
            .find(|o| o.name == who)
            .map(|o| o.roles.iter().map(|r| r.as_str().to_string()).collect())
            .unwrap_or_default();
        Ok(Response::new(pb::ControllerInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            time_zone: self.0.cfg.time_zone.clone(),
            operator: who,
            roles,
        }))
    }

    async fn request_restore(
        &self,
        req: Request<pb::RestoreRequestSpec>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "RequestRestore", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let spec = super::convert::restore_spec(req.into_inner());
            let r = crate::restores::request(&self.0, spec, &who)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn list_restores(
        &self,
        req: Request<pb::ListRestoresRequest>,
    ) -> Result<Response<pb::ListRestoresResponse>, Status> {
        self.who(&req, "ListRestores", Role::Viewer)?;
        let all = req.into_inner().all;
        let restores = crate::restores::list(&self.0, all)?
            .into_iter()
            .map(restore_request_pb)
            .collect();
        Ok(Response::new(pb::ListRestoresResponse { restores }))
    }

    async fn get_restore(
        &self,
        req: Request<pb::GetRestoreRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        self.who(&req, "GetRestore", Role::Viewer)?;
        let r = crate::restores::get(&self.0, &req.into_inner().id)?;
        Ok(Response::new(restore_request_pb(r)))
    }

    async fn close_restore(
        &self,
        req: Request<pb::CloseRestoreRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "CloseRestore", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let c = req.into_inner();
            let r = crate::restores::close(&self.0, &c.id, &who, &c.note)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn run_drill(
        &self,
        req: Request<pb::RunDrillRequest>,
    ) -> Result<Response<pb::Drill>, Status> {
        let act = self.act(&req, "RunDrill", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let seed = req.into_inner().seed;
            let d = crate::drills::run(&self.0, (seed != 0).then_some(seed), &who)?;
            Ok(Response::new(drill_pb(d)))
        }
        .await;
        self.done(act, r)
    }

    async fn list_drills(
        &self,
        req: Request<pb::ListDrillsRequest>,
    ) -> Result<Response<pb::ListDrillsResponse>, Status> {
        self.who(&req, "ListDrills", Role::Viewer)?;
        let drills = crate::drills::list(&self.0)?
            .into_iter()
            .map(drill_pb)
            .collect();
        Ok(Response::new(pb::ListDrillsResponse { drills }))
    }

    async fn get_drill(
        &self,
        req: Request<pb::GetDrillRequest>,
    ) -> Result<Response<pb::Drill>, Status> {
        self.who(&req, "GetDrill", Role::Viewer)?;
        let d = crate::drills::get(&self.0, &req.into_inner().id)?;
        Ok(Response::new(drill_pb(d)))
    }

    async fn deliver_restore(
        &self,
        req: Request<pb::DecideRestoreRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "DeliverRestore", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let d = req.into_inner();
            let r = crate::restores::deliver(&self.0, &d.id, &who, &d.note)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn attach_ticket(
        &self,
        req: Request<pb::AttachTicketRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "AttachTicket", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let a = req.into_inner();
            let r = crate::restores::attach_ticket(&self.0, &a.id, &a.ticket, &who)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn approve_restore(
        &self,
        req: Request<pb::DecideRestoreRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "ApproveRestore", Role::Approver)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let d = req.into_inner();
            let r = crate::restores::approve(&self.0, &d.id, &who, &d.note)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn reject_restore(
        &self,
        req: Request<pb::DecideRestoreRequest>,
    ) -> Result<Response<pb::RestoreRequest>, Status> {
        let act = self.act(&req, "RejectRestore", Role::Approver)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let d = req.into_inner();
            let r = crate::restores::reject(&self.0, &d.id, &who, &d.note)?;
            Ok(Response::new(restore_request_pb(r)))
        }
        .await;
        self.done(act, r)
    }

    async fn get_night(
        &self,
        req: Request<pb::GetNightRequest>,
    ) -> Result<Response<pb::Night>, Status> {
        self.who(&req, "GetNight", Role::Viewer)?;
        Ok(Response::new(self.night()?))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let act = self.act(&req, "CancelJob", Role::Operator)?;
        let who = act.who.clone();
        let r: Result<_, Status> = async {
            let j = self.0.cancel_job(&req.into_inner().id, &who)?;
            Ok(Response::new(job_pb(j)))
        }
        .await;
        self.done(act, r)
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.who(&req, "ListAudit", Role::Auditor)?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 1000,
            n => n,
        };
        let records = self
            .0
            .audit_records(r.since, limit)?
            .into_iter()
            .map(|row| {
                let e = row.entry().unwrap_or(crate::audit::Entry {
                    who: String::new(),
                    role: String::new(),
                    action: String::new(),
                    args: row.body.clone(),
                    result: "unreadable record".into(),
                    from: String::new(),
                });
                pb::AuditRecord {
                    seq: row.seq,
                    time: row.at,
                    who: e.who,
                    role: e.role,
                    action: e.action,
                    args: e.args,
                    result: e.result,
                    from: e.from,
                    prev: row.prev,
                }
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { records }))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::AuditVerification>, Status> {
        self.who(&req, "VerifyAudit", Role::Auditor)?;
        let r = self.0.verify_audit()?;
        Ok(Response::new(pb::AuditVerification {
            intact: r.problem.is_none(),
            records: r.records,
            head: r.head.unwrap_or(0),
            problem: r.problem.unwrap_or_default(),
        }))
    }

    async fn recovery_report(
        &self,
        req: Request<pb::RecoveryReportRequest>,
    ) -> Result<Response<pb::RecoveryPlan>, Status> {
        self.who(&req, "RecoveryReport", Role::Viewer)?;
        let r = req.into_inner();
        let at = if r.at == 0 { self.0.now() } else { r.at };
        let p = crate::recovery::plan(&self.0, &r.lpar, at, &r.control_group)?;
        Ok(Response::new(pb::RecoveryPlan {
            lpar: p.lpar,
            at: p.at,
            control_group: p.control_group,
            steps: p
                .steps
                .into_iter()
                .map(|s| pb::RecoveryStep {
                    order: s.order,
                    save_set: s.save_set,
                    control_group: s.control_group,
                    source: s.source,
                    level: s.level,
                    created: s.created,
                    library: s.library,
                    bytes: s.bytes,
                    estimated_seconds: s.estimated_seconds,
                    volumes: s
                        .cartridges
                        .into_iter()
                        .map(|c| pb::VolumeWhere {
                            volser: c.volser,
                            location: c.location,
                            in_transit_to: c.in_transit_to,
                            recall_hours: c.recall_hours,
                            emergency_recall_hours: c.emergency_recall_hours,
                        })
                        .collect(),
                    command: s.command,
                    changed: s.changed,
                    copies: s.copies,
                })
                .collect(),
            recall_seconds: p.recall_seconds,
            restore_seconds: p.restore_seconds,
            total_seconds: p.total_seconds,
            attention: p.attention,
        }))
    }

    async fn backup_log(
        &self,
        req: Request<pb::BackupLogRequest>,
    ) -> Result<Response<pb::ReportDocument>, Status> {
        self.who(&req, "BackupLog", Role::Viewer)?;
        let r = req.into_inner();
        let tz = self.0.cfg.tz().map_err(Status::failed_precondition)?;
        let to = if r.to == 0 { self.0.now() + 1 } else { r.to };
        let log = crate::reports::backup_log(&self.0, r.from, to)?;
        let body = crate::reports::render::backup_log(&log, tz, &r.format)
            .map_err(Status::invalid_argument)?;
        let content_type = match r.format.as_str() {
            "json" => "application/json",
            "csv" => "text/csv",
            "html" => "text/html",
            _ => "text/plain",
        };
        Ok(Response::new(pb::ReportDocument {
            content_type: content_type.into(),
            body,
        }))
    }

    async fn evidence_report(
        &self,
        req: Request<pb::EvidenceRequest>,
    ) -> Result<Response<pb::ReportDocument>, Status> {
        self.who(&req, "EvidenceReport", Role::Auditor)?;
        let r = req.into_inner();
        let tz = self.0.cfg.tz().map_err(Status::failed_precondition)?;
        let e = crate::reports::evidence::evidence(&self.0, &r.quarter)?;
        let (content_type, body) = match r.format.as_str() {
            "json" => (
                "application/json",
                serde_json::to_string_pretty(&e).map_err(|e| Status::internal(e.to_string()))?,
            ),
            "html" | "" => ("text/html", crate::reports::evidence::html(&e, tz)),
            f => {
                return Err(Status::invalid_argument(format!(
                    "format {f:?}: html or json"
                )))
            }
        };
        Ok(Response::new(pb::ReportDocument {
            content_type: content_type.into(),
            body,
        }))
    }
}
