//! The gRPC services: AgentService (sessions, assignments, results) and ConsoleService (agents, jobs, run, cancel), over the catalog.
//!
//! Identity comes from the client certificate: an agent may only register
//! (and act) as the LPAR named by its certificate's CN. Catalog calls are
//! short and made under one mutex.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cinta_proto::v1 as pb;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::catalog::{AgentRow, Assignment, Catalog, JobRow, Progress, SaveItem, SaveSetRow};
use crate::clock::Clock;
use crate::config::Config;
use crate::night::{Night, LAST_KEY, NIGHT_KEY};

/// An agent's last heartbeat: when, the usage and the watches it reported.
type Live = (i64, Vec<(String, f64)>, Vec<(String, bool, String)>);

pub struct State {
    pub cfg: Config,
    clock: Box<dyn Clock>,
    /// Last heartbeat time and usage per agent (not persisted: they are refreshed every few seconds).
    live: Mutex<HashMap<String, Live>>,
    /// When each agent was last heard from, in real time (not the schedule
    /// clock, which tests and demos move by hours): lost-agent detection.
    heard: Mutex<HashMap<String, std::time::Instant>>,
    /// When this controller started (agents not heard from since count from here).
    started: std::time::Instant,
    /// Agents already reported lost (one event per loss).
    lost: Mutex<std::collections::HashSet<String>>,
    /// When retention last looked at the save sets (it reads them all, so
    /// not on every scheduler tick).
    last_expiry_scan: Mutex<Option<std::time::Instant>>,
    pub events: crate::events::Events,
    pub catalog: Mutex<Box<dyn Catalog>>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
}

impl State {
    pub fn new(
        cfg: Config,
        catalog: Box<dyn Catalog>,
        clock: Box<dyn Clock>,
        events: crate::events::Events,
    ) -> Arc<State> {
        Arc::new(State {
            cfg,
            clock,
            live: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
            lost: Mutex::new(Default::default()),
            last_expiry_scan: Mutex::new(None),
            events,
            catalog: Mutex::new(catalog),
            wake: Mutex::new(HashMap::new()),
        })
    }

    /// Queues a control group's job for the LPAR its target names now.
    pub fn queue(&self, name: &str, who: &str) -> Result<JobRow, Status> {
        self.queue_on(name, None, who)
    }

    /// Queues a one-command job (a probe or a hook) on `lpar`; its output comes back with the result.
    pub fn queue_command(
        &self,
        lpar: &str,
        label: &str,
        command: &str,
        who: &str,
    ) -> Result<JobRow, Status> {
        let a = Assignment {
            pre: vec![self.cfg.on_lpar(lpar, command)],
            ..Assignment::chores(String::new())
        };
        self.queue_job(label, lpar, a, who)
    }

    /// Records a new queued job for `agent` and wakes its assignment stream.
    pub(crate) fn queue_job(
        &self,
        label: &str,
        agent: &str,
        assignment: Assignment,
        who: &str,
    ) -> Result<JobRow, Status> {
        let t = self.now();
        let job = JobRow::queued(
            format!("J{t}-{}", &random_id()[..6]),
            label,
            agent,
            assignment,
            t,
        );
        self.catalog().add_job(&job).map_err(internal)?;
        self.event(
            "job.queued",
            &format!("job {} ({label}) queued for {agent} by {who}", job.id),
        );
        self.wake(agent).notify_waiters();
        Ok(job)
    }

    /// Queues a control group on `on` (an LPAR) or, if None, on its target.
    pub fn queue_on(&self, name: &str, on: Option<&str>, who: &str) -> Result<JobRow, Status> {
        let g = self.cfg.control_group(name).ok_or_else(|| {
            Status::not_found(format!("no control group {name:?} in the configuration"))
        })?;
        let roles = self.catalog().roles().map_err(internal)?;
        let lpar = match on {
            Some(l) => l.to_string(),
            None => self.cfg.resolve(&g.target, &roles).ok_or_else(|| {
                Status::failed_precondition(format!("no LPAR holds {:?}", g.target))
            })?,
        };
        let policy = g
            .media_policy
            .as_deref()
            .and_then(|p| self.cfg.media_policy(p));
        let a = Assignment {
            library: g.library.clone(),
            level: g.level.clone(),
            compress: g.compress || policy.is_some_and(|p| p.compress),
            media_class: policy
                .and_then(|p| p.media_class.clone())
                .unwrap_or_default(),
            entries: g
                .entries
                .iter()
                .map(|e| match &e.library {
                    Some(lib) => SaveItem {
                        path: String::new(),
                        include: vec![],
                        exclude: vec![],
                        library: lib.clone(),
                        command: self.cfg.save_library_command(&lpar, lib),
                    },
                    None => SaveItem {
                        path: e.path.clone().unwrap_or_default(),
                        include: e.include.clone(),
                        exclude: e.exclude.clone(),
                        library: String::new(),
                        command: String::new(),
                    },
                })
                .collect(),
            pre: g.pre.iter().map(|c| self.cfg.on_lpar(&lpar, c)).collect(),
            post: g.post.iter().map(|c| self.cfg.on_lpar(&lpar, c)).collect(),
            step_timeout_seconds: g.step_timeout_seconds,
            expire: vec![],
            shred: false,
            eject: vec![],
            import: vec![],
        };
        self.queue_job(&g.name, &lpar, a, who)
    }

    /// The clock's time.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn night(&self) -> Option<Night> {
        let v = self.catalog().meta(NIGHT_KEY).ok().flatten()?;
        serde_json::from_str(&v).ok()
    }

    fn save_night(&self, n: &Night) {
        let v = serde_json::to_string(n).expect("night serializes");
        if let Err(e) = self.catalog().set_meta(NIGHT_KEY, &v) {
            tracing::error!(error = %e, "could not record tonight's state");
        }
    }

    /// Queues a night step's control group; its job id, or "" with the reason in the timeline.
    fn queue_step(&self, n: &mut Night, what: &str, group: &str, now: i64) -> String {
        match self.queue(group, "night") {
            Ok(j) => {
                n.note(now, format!("{what} save {} queued ({group})", j.id));
                j.id
            }
            Err(e) => {
                n.note(
                    now,
                    format!("{what} save could not be queued: {}", e.message()),
                );
                String::new()
            }
        }
    }

    /// How a night step's job ended ("not run" if it could not be queued), or None while it runs.
    fn step_ended(&self, id: &str) -> Option<String> {
        if id.is_empty() {
            return Some("not run".into());
        }
        self.job_ended(id)
    }

    fn job_ended(&self, id: &str) -> Option<String> {
        let j = self.catalog().job(id).ok().flatten()?;
        matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled").then_some(j.state)
    }

    /// One step of the scheduler (see [`crate::night`]).
    pub fn tick(&self) {
        let now = self.now();
        let last = self
            .catalog()
            .meta(LAST_KEY)
            .ok()
            .flatten()
            .and_then(|v| v.parse::<i64>().ok());
        let Some(last) = last else {
            let _ = self.catalog().set_meta(LAST_KEY, &now.to_string());
            return;
        };
        // Schedules and night starts look at the time passed since the last
        // tick; tonight's progress (jobs ending, signals) is looked at always.
        let d = if now > last {
            crate::night::due(&self.cfg, last, now)
        } else {
            crate::night::Decisions::default()
        };
        for g in &d.run {
            if let Err(e) = self.queue(g, "schedule") {
                self.event(
                    "schedule.failed",
                    &format!("schedule of {g}: {}", e.message()),
                );
            }
        }
        if let (Some((id, deadline)), Some(plan)) = (d.start_night, &self.cfg.night) {
            let mut n = Night {
                id: id.clone(),
                state: "pre-close".into(),
                escalated: false,
                deadline,
                pre_close_job: String::new(),
                post_close_job: String::new(),
                close_started: None,
                close_finished: None,
                timeline: vec![],
                step_job: String::new(),
                wait_until: 0,
                contingency_job: String::new(),
                recovery_point: String::new(),
            };
            n.pre_close_job = self.queue_step(&mut n, "pre-close", &plan.pre_close, now);
            self.event("night.started", &format!("night {id} started"));
            self.save_night(&n);
        }
        if let (Some(mut n), Some(plan)) = (self.night(), &self.cfg.night) {
            let before = n.clone();
            if n.state == "pre-close" {
                if let Some(st) = self.step_ended(&n.pre_close_job) {
                    n.note(now, format!("pre-close save {st}; close window open"));
                    n.state = "close-window".into();
                }
            }
            if let (true, Some(cp)) = (
                n.state == "close-window" && n.close_finished.is_none(),
                &plan.close_probe,
            ) {
                self.close_probe(&mut n, cp, plan.close_probe_every_minutes, now);
            }
            if n.state == "close-window" && n.close_finished.is_some() {
                match &plan.quiesce_probe {
                    Some(probe) => self.probe(&mut n, "production", "quiesce-check", probe, now),
                    None => self.post_close(&mut n, plan, now),
                }
            }
            self.fallback(&mut n, plan, now);
            if n.state == "post-close" {
                if let Some(st) = self.step_ended(&n.post_close_job) {
                    n.note(now, format!("post-close save {st}; night done"));
                    n.state = "done".into();
                    self.event(
                        "night.done",
                        &format!("night {}: post-close save {st}", n.id),
                    );
                }
            }
            let open =
                n.close_finished.is_none() && (n.state == "pre-close" || n.state == "close-window");
            if open && !n.escalated && now >= n.deadline {
                n.escalated = true;
                n.note(
                    now,
                    "ESCALATION: the close is still running past its deadline",
                );
                self.event(
                    "close.late",
                    &format!(
                        "night {}: the close is still running past its deadline; escalated",
                        n.id
                    ),
                );
            }
            if n != before {
                self.save_night(&n);
            }
        }
        self.expire(now);
        if now > last {
            let _ = self.catalog().set_meta(LAST_KEY, &now.to_string());
        }
    }

    /// Records a finished job's save sets with the retention of its control group's media policy.
    fn record_save_sets(&self, job_id: &str, sets: &[SaveSetRow]) {
        let Some(job) = self.catalog().job(job_id).ok().flatten() else {
            return;
        };
        let policy = self
            .cfg
            .control_group(&job.control_group)
            .and_then(|g| g.media_policy.as_deref())
            .and_then(|p| self.cfg.media_policy(p));
        for s in sets {
            let rec = crate::catalog::SaveSetRecord {
                id: s.id.clone(),
                agent: job.agent.clone(),
                library: job.assignment.library.clone(),
                control_group: job.control_group.clone(),
                source: s.source.clone(),
                key_id: s.key_id.clone(),
                volumes: s.volumes.clone(),
                created: job.finished,
                expires: policy
                    .and_then(|p| p.retention_days)
                    .map(|d| job.finished + 86_400 * i64::from(d))
                    .unwrap_or(0),
                state: "active".into(),
                media_policy: policy.map(|p| p.name.clone()).unwrap_or_default(),
                shred: policy.is_some_and(|p| p.shred_on_expiry),
                versions: policy.and_then(|p| p.retention_versions).unwrap_or(0),
                expire_job: String::new(),
            };
            if let Err(e) = self.catalog().put_save_set(&rec) {
                tracing::error!(error = %e, "could not record a save set");
            }
            self.record_volumes(&rec, job.finished);
            if let Err(e) = self.catalog().date_objects(&rec.id, rec.created) {
                tracing::error!(error = %e, save_set = %rec.id, "could not date the objects of a save set");
            }
        }
    }

    /// Forgets the objects an ended job reported for save sets it never
    /// finished: they are on no cartridge the catalog knows of.
    fn forget_unfinished(&self, job: &str) {
        let dropped = self.catalog().drop_unrecorded_objects(job);
        match dropped {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                job,
                objects = n,
                "forgot objects of save sets the job did not finish"
            ),
            Err(e) => {
                tracing::error!(error = %e, job, "could not forget objects of save sets the job did not finish")
            }
        }
    }

    /// Retention: queues expiry jobs for save sets past their date or beyond
    /// their versions, and records the outcome of those jobs.
    fn expire(&self, now: i64) {
        {
            let mut last = self
                .last_expiry_scan
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(2)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        self.media_jobs(now);
        self.lost_agents(now);
        let all = self.catalog().save_sets().unwrap_or_default();
        // Outcomes of expiry jobs already out.
        for mut s in all.iter().filter(|s| s.state == "expiring").cloned() {
            if let Some(st) = self.job_ended(&s.expire_job) {
                s.state = if st == "succeeded" {
                    "expired"
                } else {
                    "active"
                }
                .into();
                if s.state == "expired" {
                    // Nothing of it can be restored any more: out of object searches.
                    if let Err(e) = self.catalog().drop_objects(&s.id) {
                        tracing::error!(error = %e, save_set = %s.id, "could not drop the objects of an expired save set");
                    }
                    self.event(
                        "saveset.expired",
                        &format!(
                            "save set {} of {} expired{}",
                            s.id,
                            s.agent,
                            if s.shred { " (key destroyed)" } else { "" }
                        ),
                    );
                }
                let _ = self.catalog().put_save_set(&s);
            }
        }
        let mut due: Vec<crate::catalog::SaveSetRecord> = Vec::new();
        // `all` is in the order the save sets were recorded: later is newer.
        let active: Vec<(usize, &crate::catalog::SaveSetRecord)> = all
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == "active")
            .collect();
        for &(i, s) in &active {
            let by_date = s.expires > 0 && s.expires <= now;
            let by_versions = s.versions > 0 && {
                let newer = active
                    .iter()
                    .filter(|(j, o)| {
                        *j > i
                            && o.agent == s.agent
                            && o.source == s.source
                            && o.media_policy == s.media_policy
                    })
                    .count();
                newer >= s.versions as usize
            };
            if by_date || by_versions {
                due.push(s.clone());
            }
        }
        let mut groups: std::collections::BTreeMap<
            (String, String, bool),
            Vec<crate::catalog::SaveSetRecord>,
        > = Default::default();
        for s in due {
            groups
                .entry((s.agent.clone(), s.library.clone(), s.shred))
                .or_default()
                .push(s);
        }
        for ((agent, library, shred), sets) in groups {
            let a = Assignment {
                expire: sets.iter().map(|s| s.id.clone()).collect(),
                shred,
                ..Assignment::chores(library)
            };
            let Ok(job) = self.queue_job("expire", &agent, a, "retention") else {
                continue;
            };
            for mut s in sets {
                s.state = "expiring".into();
                s.expire_job = job.id.clone();
                let _ = self.catalog().put_save_set(&s);
            }
        }
    }

    /// Notes that `agent` was heard from (registration, heartbeat).
    pub(crate) fn heard_from(&self, agent: &str) {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.to_string(), std::time::Instant::now());
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent);
    }

    /// Fails the queued and running jobs of agents silent longer than
    /// `agent_lost_seconds`, so nothing waits on them for ever.
    fn lost_agents(&self, now: i64) {
        let limit = std::time::Duration::from_secs(u64::from(self.cfg.agent_lost_seconds));
        if limit.is_zero() {
            return;
        }
        let silent = |agent: &str| {
            let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
            heard.get(agent).copied().unwrap_or(self.started).elapsed() > limit
        };
        let jobs = self.catalog().active_jobs().unwrap_or_default();
        for j in jobs.into_iter().filter(|j| silent(&j.agent)) {
            let first = self
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(j.agent.clone());
            if first {
                self.event(
                    "agent.lost",
                    &format!(
                        "agent {} silent for more than {}s: its jobs are failed",
                        j.agent,
                        limit.as_secs()
                    ),
                );
            }
            let why = format!(
                "agent {} silent for more than {}s (lost); the job was {} and is given up",
                j.agent,
                limit.as_secs(),
                j.state
            );
            // (The catalog's lock is let go before the event takes it again.)
            let abandoned = self.catalog().abandon(&j.id, &why, now);
            if let Ok(true) = abandoned {
                self.forget_unfinished(&j.id);
                self.event("job.failed", &format!("job {} failed: {why}", j.id));
            }
        }
    }

    /// Starts the post-close save on production.
    fn post_close(&self, n: &mut Night, plan: &crate::config::NightPlan, now: i64) {
        n.post_close_job = self.queue_step(n, "post-close", &plan.post_close, now);
        n.state = "post-close".into();
    }

    /// Queues a probe or hook on the LPAR holding `role` and moves to `state`.
    fn probe(&self, n: &mut Night, role: &str, state: &str, command: &str, now: i64) {
        let roles = self.catalog().roles().unwrap_or_default();
        let lpar = self
            .cfg
            .lpars
            .iter()
            .find(|l| self.cfg.role_of(&l.name, &roles).as_deref() == Some(role))
            .map(|l| l.name.clone());
        match lpar.map(|l| self.queue_command(&l, state, command, "night")) {
            Some(Ok(j)) => {
                n.note(
                    now,
                    format!(
                        "{state}: {command:?} on the {role} LPAR {} (job {})",
                        j.agent, j.id
                    ),
                );
                n.step_job = j.id;
                n.state = state.into();
            }
            Some(Err(e)) => self.give_up(
                n,
                now,
                &format!("{state} could not be queued: {}", e.message()),
            ),
            None => self.give_up(n, now, &format!("{state}: no LPAR holds the {role} role")),
        }
    }

    /// Asks production, every few minutes, whether the close has finished.
    fn close_probe(&self, n: &mut Night, cmd: &str, every: u32, now: i64) {
        if !n.step_job.is_empty() {
            if let Some(j) = self.step_done(n) {
                n.step_job.clear();
                if j.state == "succeeded" && j.output.trim() == "finished" {
                    n.close_finished = Some(now);
                    n.note(
                        now,
                        "close finished (reported by the close probe on production)",
                    );
                    self.event(
                        "close.signal",
                        &format!("night {}: close finished (probe)", n.id),
                    );
                }
            }
            return;
        }
        if now < n.wait_until {
            return;
        }
        let roles = self.catalog().roles().unwrap_or_default();
        let prod = self
            .cfg
            .lpars
            .iter()
            .find(|l| self.cfg.role_of(&l.name, &roles).as_deref() == Some("production"))
            .map(|l| l.name.clone());
        if let Some(Ok(j)) = prod.map(|l| self.queue_command(&l, "close-probe", cmd, "night")) {
            n.step_job = j.id;
            n.wait_until = now + 60 * i64::from(every.max(1));
        }
    }

    /// Ends the night without its save, escalated.
    fn give_up(&self, n: &mut Night, now: i64, why: &str) {
        n.note(
            now,
            format!("ESCALATION: {why}; no post-close save tonight"),
        );
        n.escalated = true;
        n.state = "done".into();
        self.event("night.failed", &format!("night {}: {why}", n.id));
    }

    /// The finished job of the current step, if it has finished.
    fn step_done(&self, n: &Night) -> Option<JobRow> {
        let j = self.catalog().job(&n.step_job).ok().flatten()?;
        matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled").then_some(j)
    }

    /// The quiesce check and the contingency fallback, one step per call.
    fn fallback(&self, n: &mut Night, plan: &crate::config::NightPlan, now: i64) {
        let users = |j: &JobRow| {
            (j.state == "succeeded")
                .then(|| j.output.trim().parse::<u64>().ok())
                .flatten()
        };
        match n.state.as_str() {
            "quiesce-check" | "quiesce-recheck" | "quiesce-final" => {
                let Some(j) = self.step_done(n) else { return };
                match users(&j) {
                    Some(0) => {
                        n.note(now, "production is quiet");
                        self.post_close(n, plan, now);
                    }
                    found => {
                        let why = match found {
                            Some(u) => format!("{u} users still signed on"),
                            None => format!(
                                "the quiesce probe did not answer ({}: {})",
                                j.state, j.message
                            ),
                        };
                        if n.state == "quiesce-check" {
                            n.wait_until = now + 60 * i64::from(plan.quiesce_grace_minutes);
                            n.note(
                                now,
                                format!(
                                    "{why}; waiting {} min before falling back",
                                    plan.quiesce_grace_minutes
                                ),
                            );
                            n.state = "quiesce-wait".into();
                        } else if let (true, Some(cmd)) =
                            (n.state == "quiesce-recheck", &plan.force_signoff)
                        {
                            n.note(
                                now,
                                format!("{why} after the grace period; forcing sign-off (policy)"),
                            );
                            self.event(
                                "signoff.forced",
                                &format!("night {}: {why}; ending their jobs by policy", n.id),
                            );
                            self.probe(n, "production", "signoff", cmd, now);
                        } else {
                            n.note(
                                now,
                                format!(
                                    "{why}: production cannot be quiesced; FALLBACK to contingency"
                                ),
                            );
                            self.event(
                                "fallback.taken",
                                &format!("night {}: {why}; saving on contingency", n.id),
                            );
                            match &plan.contingency {
                                Some(c) => self.probe(n, "contingency", "replication-check", &c.replication_probe, now),
                                None => self.give_up(n, now, "production cannot be quiesced and no contingency is configured"),
                            }
                        }
                    }
                }
            }
            "quiesce-wait" if now >= n.wait_until => {
                if let Some(p) = &plan.quiesce_probe {
                    self.probe(n, "production", "quiesce-recheck", p, now);
                }
            }
            "signoff" => {
                let Some(j) = self.step_done(n) else { return };
                let said = j.output.trim();
                n.note(
                    now,
                    if j.state == "succeeded" {
                        format!("sign-off ran: {said}")
                    } else {
                        format!("sign-off failed: {}", j.message)
                    },
                );
                if let Some(p) = &plan.quiesce_probe {
                    self.probe(n, "production", "quiesce-final", p, now);
                }
            }
            "replication-check" => {
                let (Some(j), Some(c)) = (self.step_done(n), &plan.contingency) else {
                    return;
                };
                match crate::night::replication(&j.output).filter(|_| j.state == "succeeded") {
                    Some((backlog, latency)) if backlog <= c.max_backlog && latency <= c.max_latency_seconds => {
                        n.note(now, format!("replication healthy (backlog {backlog}, latency {latency}s)"));
                        self.probe(n, "contingency", "suspend", &c.suspend, now);
                    }
                    Some((backlog, latency)) => self.give_up(
                        n,
                        now,
                        &format!("replication unhealthy (backlog {backlog} > {} or latency {latency}s > {}s); the contingency copy is not current", c.max_backlog, c.max_latency_seconds),
                    ),
                    None => self.give_up(n, now, &format!("the replication probe did not answer ({}: {})", j.state, j.message)),
                }
            }
            "suspend" => {
                let (Some(j), Some(c)) = (self.step_done(n), &plan.contingency) else {
                    return;
                };
                if j.state != "succeeded" {
                    n.note(now, format!("suspending apply failed: {}", j.message));
                    // Whatever state apply is in, ask for it running again.
                    self.probe(n, "contingency", "resume", &c.resume, now);
                    n.escalated = true;
                    n.note(
                        now,
                        "ESCALATION: apply could not be suspended; no contingency save",
                    );
                    return;
                }
                n.recovery_point = j.output.trim().to_string();
                n.note(now, format!("apply suspended; {}", n.recovery_point));
                let roles = self.catalog().roles().unwrap_or_default();
                let cont = self
                    .cfg
                    .lpars
                    .iter()
                    .find(|l| self.cfg.role_of(&l.name, &roles).as_deref() == Some("contingency"))
                    .map(|l| l.name.clone());
                match cont.map(|l| self.queue_on(&plan.post_close, Some(&l), "night")) {
                    Some(Ok(job)) => {
                        n.note(
                            now,
                            format!(
                                "contingency save {} queued ({} on {})",
                                job.id, plan.post_close, job.agent
                            ),
                        );
                        n.contingency_job = job.id.clone();
                        n.step_job = job.id;
                        n.state = "contingency-save".into();
                    }
                    _ => {
                        n.note(now, "the contingency save could not be queued");
                        self.probe(n, "contingency", "resume", &c.resume, now);
                    }
                }
            }
            "contingency-save" => {
                let (Some(j), Some(c)) = (self.step_done(n), &plan.contingency) else {
                    return;
                };
                n.note(now, format!("contingency save {} {}", j.id, j.state));
                if j.state != "succeeded" {
                    n.escalated = true;
                    n.note(
                        now,
                        format!("ESCALATION: the contingency save failed: {}", j.message),
                    );
                }
                self.probe(n, "contingency", "resume", &c.resume, now);
            }
            "resume" => {
                let (Some(j), Some(c)) = (self.step_done(n), &plan.contingency) else {
                    return;
                };
                if j.state != "succeeded" {
                    n.escalated = true;
                    n.note(
                        now,
                        format!("ESCALATION: apply could not be resumed: {}", j.message),
                    );
                } else {
                    n.note(now, "apply resumed");
                }
                self.probe(n, "contingency", "catch-up", &c.replication_probe, now);
            }
            "catch-up" => {
                let Some(j) = self.step_done(n) else { return };
                match crate::night::replication(&j.output) {
                    Some((backlog, latency)) => n.note(
                        now,
                        format!("replication catching up: backlog {backlog}, latency {latency}s"),
                    ),
                    None => n.note(
                        now,
                        format!("replication after resume: {}", j.output.trim()),
                    ),
                }
                let volumes: Vec<String> = self
                    .catalog()
                    .job(&n.contingency_job)
                    .ok()
                    .flatten()
                    .map(|j| j.save_sets.iter().flat_map(|s| s.volumes.clone()).collect())
                    .unwrap_or_default();
                if !volumes.is_empty() {
                    let roles = self.catalog().roles().unwrap_or_default();
                    let main = self
                        .cfg
                        .resolve("production", &roles)
                        .and_then(|p| self.cfg.lpars.iter().find(|l| l.name == p))
                        .map(|l| l.site.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "main".into());
                    let to = format!("SITE {main}");
                    self.order_carry(&volumes, &to);
                    n.note(
                        now,
                        format!(
                            "MEDIA: cartridges {} were written at the contingency site and must move to the main site ({to}; `cintactl moves start`)",
                            volumes.join(", ")
                        ),
                    );
                    self.event(
                        "media.move",
                        &format!(
                            "night {}: move {} from the contingency site",
                            n.id,
                            volumes.join(", ")
                        ),
                    );
                }
                n.state = "done".into();
                n.note(now, "night done (contingency fallback)");
                self.event(
                    "night.done",
                    &format!("night {}: done by contingency fallback", n.id),
                );
            }
            _ => {}
        }
    }

    /// The close was signalled started or finished.
    pub fn signal_close(&self, finished: bool, who: &str) -> Result<Night, Status> {
        let mut n = self.night().filter(|n| n.state != "done").ok_or_else(|| {
            Status::failed_precondition(
                "no night in progress (the pre-close save has not been run tonight)",
            )
        })?;
        let t = self.now();
        if finished {
            if n.close_finished.is_some() {
                return Err(Status::failed_precondition(
                    "the close was already signalled finished",
                ));
            }
            n.close_finished = Some(t);
            n.note(t, format!("close finished (signalled by {who})"));
        } else {
            n.close_started = Some(t);
            n.note(t, format!("close started (signalled by {who})"));
        }
        self.save_night(&n);
        self.event(
            "close.signal",
            &format!(
                "night {}: close {} by {who}",
                n.id,
                if finished { "finished" } else { "started" }
            ),
        );
        Ok(n)
    }

    /// Agents as registered, with their last heartbeat and usage.
    pub fn agents_live(&self) -> Vec<AgentRow> {
        let mut agents = self.catalog().agents().unwrap_or_default();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for a in &mut agents {
            if let Some((t, usage, watched)) = live.get(&a.name) {
                a.last_seen = a.last_seen.max(*t);
                a.usage = usage.clone();
                a.watched = watched.clone();
            }
        }
        agents
    }

    pub(crate) fn catalog(&self) -> std::sync::MutexGuard<'_, Box<dyn Catalog>> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, agent: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn event(&self, kind: &str, text: &str) {
        tracing::info!(kind, "{text}");
        let t = self.now();
        if let Err(e) = self.catalog().event(t, kind, text) {
            tracing::error!(error = %e, "could not record an event");
        }
        self.events.emit(t, kind, text);
    }

    /// The Prometheus text exposition of agents, jobs, events and tonight.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let t = self.now();
        let stale = 3 * i64::from(self.cfg.heartbeat_seconds);
        let jobs = self.catalog().job_counts().unwrap_or_default();
        let agents = self.agents_live();
        let up = agents.iter().filter(|a| t - a.last_seen <= stale).count();
        let _ = writeln!(
            out,
            "# HELP cinta_agents Agents by connection state.\n# TYPE cinta_agents gauge"
        );
        let _ = writeln!(out, "cinta_agents{{state=\"connected\"}} {up}");
        let _ = writeln!(out, "cinta_agents{{state=\"away\"}} {}", agents.len() - up);
        let _ = writeln!(out, "# HELP cinta_agent_usage_percent Usage an agent reported (ASP, file systems).\n# TYPE cinta_agent_usage_percent gauge");
        for a in &agents {
            for (what, pct) in &a.usage {
                let _ = writeln!(
                    out,
                    "cinta_agent_usage_percent{{agent=\"{}\",what=\"{}\"}} {pct}",
                    a.name,
                    what.replace('"', "'")
                );
            }
        }
        let _ = writeln!(out, "# HELP cinta_watch_up A watched subsystem or process is up (1) or down (0), as its agent last reported.\n# TYPE cinta_watch_up gauge");
        for a in &agents {
            for (name, ok, _) in &a.watched {
                let _ = writeln!(
                    out,
                    "cinta_watch_up{{agent=\"{}\",name=\"{}\"}} {}",
                    a.name,
                    name.replace(['"', '\\'], "'"),
                    u8::from(*ok)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP cinta_jobs Jobs by state.\n# TYPE cinta_jobs gauge"
        );
        for (state, n) in jobs {
            let _ = writeln!(out, "cinta_jobs{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP cinta_events_total Events since the controller started, by kind.\n# TYPE cinta_events_total counter");
        for (kind, n) in self
            .events
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "cinta_events_total{{kind=\"{kind}\"}} {n}");
        }
        let n = self.night();
        let _ = writeln!(out, "# HELP cinta_night_escalated Tonight's close is escalated.\n# TYPE cinta_night_escalated gauge");
        let _ = writeln!(
            out,
            "cinta_night_escalated {}",
            n.as_ref().is_some_and(|n| n.escalated) as u8
        );
        out
    }
}

pub(crate) fn internal(e: crate::error::Error) -> Status {
    Status::internal(e.to_string())
}

/// The CN of the client certificate of a request.
fn peer_cn<T>(req: &Request<T>) -> Result<String, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let der = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .ok_or_else(|| Status::unauthenticated("the client certificate has no CN"))?;
    Ok(cn.to_string())
}

fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Agents(pub Arc<State>);

impl Agents {
    /// The calling agent's name, checked against its current session.
    fn session(&self, req_cn: &str, session: &str) -> Result<(), Status> {
        let current = self
            .0
            .catalog()
            .agent(req_cn)
            .map_err(internal)?
            .map(|a| a.session);
        if current.as_deref() != Some(session) {
            return Err(Status::failed_precondition(format!(
                "session {session} of {req_cn} has ended; register again"
            )));
        }
        Ok(())
    }

    /// Refuses a job that is not running on agent `cn`.
    fn running_on(&self, cn: &str, job: &str) -> Result<(), Status> {
        let j = self.0.catalog().job(job).map_err(internal)?;
        if j.is_some_and(|j| j.agent == cn && j.state == "running") {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "job {job} is not running on {cn}"
            )))
        }
    }

    /// A job reports only save sets it is making: one recorded already is
    /// another job's, and so is one another job named first (its objects
    /// and its record are not this agent's to write).
    fn own_save_set(&self, save_set: &str, job: &str) -> Result<(), Status> {
        // Bind first: the catalog's lock is not held across the check.
        let recorded = self.0.catalog().save_set(save_set).map_err(internal)?;
        if let Some(s) = recorded {
            return Err(Status::failed_precondition(format!(
                "save set {save_set} is recorded already (made by {}): a job reports only save sets it made",
                s.agent
            )));
        }
        let claimed = self
            .0
            .catalog()
            .claim_save_set(save_set, job)
            .map_err(internal)?;
        match claimed {
            Some(other) => Err(Status::failed_precondition(format!(
                "save set {save_set} is job {other}'s: a job reports only save sets it made"
            ))),
            None => Ok(()),
        }
    }
}

fn assignment(j: &JobRow) -> pb::JobAssignment {
    pb::JobAssignment {
        job_id: j.id.clone(),
        control_group: j.control_group.clone(),
        entries: j
            .assignment
            .entries
            .iter()
            .map(|e| pb::SaveEntry {
                path: e.path.clone(),
                include: e.include.clone(),
                exclude: e.exclude.clone(),
                library: e.library.clone(),
                command: e.command.clone(),
            })
            .collect(),
        library: j.assignment.library.clone(),
        level: j.assignment.level.clone(),
        compress: j.assignment.compress,
        pre: j.assignment.pre.clone(),
        post: j.assignment.post.clone(),
        step_timeout_seconds: j.assignment.step_timeout_seconds,
        expire: j.assignment.expire.clone(),
        shred: j.assignment.shred,
        eject: j.assignment.eject.clone(),
        import: j.assignment.import.clone(),
        media_class: j.assignment.media_class.clone(),
    }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::JobAssignment, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Agents {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let cn = peer_cn(&req)?;
        let inv = req
            .into_inner()
            .inventory
            .ok_or_else(|| Status::invalid_argument("no inventory"))?;
        if inv.name != cn {
            return Err(Status::permission_denied(format!(
                "this certificate is {cn}; it cannot register as {}",
                inv.name
            )));
        }
        let lpar = self
            .0
            .cfg
            .lpars
            .iter()
            .find(|l| l.name == cn)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{cn} is not an LPAR of this controller's configuration"
                ))
            })?;
        let session = random_id();
        let roles = self.0.catalog().roles().map_err(internal)?;
        let role = self.0.cfg.role_of(&lpar.name, &roles).unwrap_or_default();
        let row = AgentRow {
            name: cn.clone(),
            host: inv.host,
            role,
            version: inv.version,
            libraries: inv
                .libraries
                .into_iter()
                .map(|l| (l.name, l.drives, l.slots, l.scratch))
                .collect(),
            usage: vec![],
            watched: vec![],
            session: session.clone(),
            last_seen: self.0.now(),
        };
        let failed = self.0.catalog().register(&row).map_err(internal)?;
        self.0.heard_from(&cn);
        self.0.event(
            "agent.registered",
            &format!("agent {cn} registered (session {session})"),
        );
        for j in failed {
            self.0.forget_unfinished(&j);
            self.0.event(
                "job.failed",
                &format!("job {j} failed: agent {cn} restarted while it ran"),
            );
        }
        self.0.wake(&cn).notify_waiters();
        Ok(Response::new(pb::RegisterResponse {
            session_id: session,
            heartbeat_seconds: self.0.cfg.heartbeat_seconds,
            watches: lpar
                .watches
                .iter()
                .map(|w| pb::Watch {
                    name: w.name.clone(),
                    command: self.0.cfg.on_lpar(&lpar.name, &w.command),
                    every_seconds: w.every_seconds,
                })
                .collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let cn = peer_cn(&req)?;
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
        let current = self
            .0
            .catalog()
            .agent(&cn)
            .map_err(internal)?
            .map(|a| a.session);
        if current.as_deref() != Some(r.session_id.as_str()) {
            return Err(Status::failed_precondition(format!(
                "session {} of {cn} has ended; register again",
                r.session_id
            )));
        }
        self.0
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cn.clone(), (self.0.now(), usage.clone(), watched.clone()));
        self.0.heard_from(&cn);
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
        let cn = peer_cn(&req)?;
        let session = req.into_inner().session_id;
        self.session(&cn, &session)?;
        let state = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let wake = state.wake(&cn);
            let mut offered: Vec<String> = Vec::new();
            loop {
                let notified = wake.notified();
                let still = state
                    .catalog()
                    .agent(&cn)
                    .ok()
                    .flatten()
                    .is_some_and(|a| a.session == session);
                if !still {
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
                        let _ = tx.send(Err(internal(e))).await;
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
        let cn = peer_cn(&req)?;
        let r = req.into_inner();
        self.session(&cn, &r.session_id)?;
        let res = self
            .0
            .catalog()
            .accept(&r.job_id, &cn, &r.session_id, self.0.now())
            .map_err(internal)?;
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
        let cn = peer_cn(&req)?;
        let r = req.into_inner();
        self.session(&cn, &r.session_id)?;
        self.0
            .catalog()
            .progress(
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
            )
            .map_err(internal)?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn report_objects(
        &self,
        req: Request<tonic::Streaming<pb::ObjectBatch>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let cn = peer_cn(&req)?;
        let mut stream = req.into_inner();
        // Checked when they change, not per batch: the job (session, running
        // here), then the save set (this job's own).
        let mut job: Option<String> = None;
        let mut save_set: Option<String> = None;
        while let Some(b) = stream.message().await? {
            if job.as_deref() != Some(b.job_id.as_str()) {
                self.session(&cn, &b.session_id)?;
                self.running_on(&cn, &b.job_id)?;
                job = Some(b.job_id.clone());
                save_set = None;
            }
            if save_set.as_deref() != Some(b.save_set.as_str()) {
                self.own_save_set(&b.save_set, &b.job_id)?;
                save_set = Some(b.save_set.clone());
            }
            let rows: Vec<crate::catalog::ObjectRow> = b
                .objects
                .into_iter()
                .map(|o| crate::catalog::ObjectRow {
                    path: o.path,
                    kind: o.kind,
                    size: o.size,
                    mtime: o.mtime,
                })
                .collect();
            self.0
                .catalog()
                .put_objects(&b.save_set, &rows)
                .map_err(internal)?;
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn finish_job(&self, req: Request<pb::JobResult>) -> Result<Response<pb::Ack>, Status> {
        let cn = peer_cn(&req)?;
        let r = req.into_inner();
        self.session(&cn, &r.session_id)?;
        self.running_on(&cn, &r.job_id)?;
        // A job reports the save sets it made: new ones, each once. (Else an
        // agent could rewrite another's record: its volumes, its expiry.)
        let mut seen = std::collections::BTreeSet::new();
        for s in &r.save_sets {
            if !seen.insert(s.id.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "save set {} is reported twice",
                    s.id
                )));
            }
            self.own_save_set(&s.id, &r.job_id)?;
        }
        let sets: Vec<SaveSetRow> = r
            .save_sets
            .into_iter()
            .map(|s| SaveSetRow {
                id: s.id,
                source: s.source,
                key_id: s.key_id,
                volumes: s.volumes,
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect();
        let done = self
            .0
            .catalog()
            .finish(
                &r.job_id,
                &cn,
                r.ok,
                &r.message,
                &sets,
                &r.output,
                self.0.now(),
            )
            .map_err(internal)?;
        if !done {
            return Err(Status::failed_precondition(format!(
                "job {} is not running on {cn}",
                r.job_id
            )));
        }
        self.0.record_save_sets(&r.job_id, &sets);
        self.0.forget_unfinished(&r.job_id);
        let kind = if r.ok { "job.succeeded" } else { "job.failed" };
        self.0.event(
            kind,
            &format!(
                "job {} on {cn}: {} ({} save sets)",
                r.job_id,
                if r.ok { "succeeded" } else { &r.message },
                sets.len()
            ),
        );
        Ok(Response::new(pb::Ack {}))
    }
}

pub struct Console(pub Arc<State>);

fn volume_pb(w: crate::media::VolumeView) -> pb::Volume {
    let (next_move_to, next_move_at, next_move_why) = match w.due {
        Some(d) => (d.to, d.at, d.why.to_string()),
        None => (String::new(), 0, String::new()),
    };
    pb::Volume {
        volser: w.v.volser,
        agent: w.v.agent,
        library: w.v.library,
        site: w.v.site,
        location: w.v.location,
        since: w.v.since,
        in_transit_to: w.v.in_transit_to,
        move_job: w.v.move_job,
        move_policy: w.v.move_policy,
        save_sets: w.v.save_sets,
        expired: w.expired,
        next_move_to,
        next_move_at,
        next_move_why,
        last_written: w.v.last_written,
    }
}

impl Console {
    /// The moved volumes as the console shows them (with their next moves).
    fn moves_response(
        &self,
        moved: Vec<crate::catalog::VolumeRecord>,
        refused: Vec<String>,
    ) -> Result<pb::MovesResponse, Status> {
        let names: Vec<String> = moved.into_iter().map(|v| v.volser).collect();
        let volumes = self
            .0
            .volumes_view()?
            .into_iter()
            .filter(|w| names.contains(&w.v.volser))
            .map(volume_pb)
            .collect();
        Ok(pb::MovesResponse { volumes, refused })
    }
}

fn night_pb(n: Night) -> pb::Night {
    pb::Night {
        id: n.id,
        state: n.state,
        escalated: n.escalated,
        deadline: n.deadline,
        pre_close_job: n.pre_close_job,
        post_close_job: n.post_close_job,
        timeline: n
            .timeline
            .into_iter()
            .map(|(time, text)| pb::NightEvent { time, text })
            .collect(),
    }
}

fn job_pb(j: JobRow) -> pb::Job {
    pb::Job {
        id: j.id,
        control_group: j.control_group,
        agent: j.agent,
        state: j.state,
        created: j.created,
        started: j.started,
        finished: j.finished,
        message: j.message,
        entries_done: j.entries_done,
        entries_total: j.entries_total,
        bytes: j.bytes,
        bytes_total: j.bytes_total,
        objects: j.objects,
        current: j.current,
        output: j.output,
        save_sets: j
            .save_sets
            .into_iter()
            .map(|s| pb::SaveSetResult {
                id: s.id,
                source: s.source,
                key_id: s.key_id,
                volumes: s.volumes,
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::console_service_server::ConsoleService for Console {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        peer_cn(&req)?;
        let t = self.0.now();
        let stale = 3 * i64::from(self.0.cfg.heartbeat_seconds);
        let roles = self.0.catalog().roles().map_err(internal)?;
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
        peer_cn(&req)?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n,
        };
        let jobs = self.0.catalog().jobs(limit).map_err(internal)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_pb).collect(),
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        peer_cn(&req)?;
        let id = req.into_inner().id;
        let j = self
            .0
            .catalog()
            .job(&id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        Ok(Response::new(job_pb(j)))
    }

    async fn run_control_group(
        &self,
        req: Request<pb::RunControlGroupRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let who = peer_cn(&req)?;
        let name = req.into_inner().control_group;
        let job = self.0.queue(&name, &who)?;
        Ok(Response::new(job_pb(job)))
    }

    async fn switch_role(
        &self,
        req: Request<pb::SwitchRoleRequest>,
    ) -> Result<Response<pb::SwitchRoleResponse>, Status> {
        let who = peer_cn(&req)?;
        let r = req.into_inner();
        if !["production", "contingency", "server"].contains(&r.role.as_str()) {
            return Err(Status::invalid_argument(format!(
                "role {:?} is not production, contingency or server",
                r.role
            )));
        }
        if !self.0.cfg.lpars.iter().any(|l| l.name == r.lpar) {
            return Err(Status::not_found(format!(
                "no LPAR {:?} in the configuration",
                r.lpar
            )));
        }
        let cfg = &self.0.cfg;
        let (change, now_roles) = {
            let mut cat = self.0.catalog();
            let roles = cat.roles().map_err(internal)?;
            let old = cfg.role_of(&r.lpar, &roles).unwrap_or_default();
            let mut change = vec![(r.lpar.clone(), r.role.clone())];
            for l in &cfg.lpars {
                if l.name != r.lpar
                    && cfg.role_of(&l.name, &roles).as_deref() == Some(r.role.as_str())
                {
                    change.push((l.name.clone(), old.clone()));
                }
            }
            cat.set_roles(&change).map_err(internal)?;
            (change, cat.roles().map_err(internal)?)
        };
        let text = change
            .iter()
            .map(|(l, r)| format!("{l} is {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.0
            .event("role.switched", &format!("roles switched by {who}: {text}"));
        let roles = cfg
            .lpars
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    cfg.role_of(&l.name, &now_roles).unwrap_or_default(),
                )
            })
            .collect();
        Ok(Response::new(pb::SwitchRoleResponse { roles }))
    }

    async fn signal_close(
        &self,
        req: Request<pb::SignalCloseRequest>,
    ) -> Result<Response<pb::Night>, Status> {
        let who = peer_cn(&req)?;
        let n = self.0.signal_close(req.into_inner().finished, &who)?;
        self.0.tick();
        Ok(Response::new(night_pb(self.0.night().unwrap_or(n))))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        peer_cn(&req)?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n,
        };
        let events = self
            .0
            .catalog()
            .events(limit)
            .map_err(internal)?
            .into_iter()
            .map(|(time, kind, text)| pb::Event { time, kind, text })
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn find_objects(
        &self,
        req: Request<pb::FindObjectsRequest>,
    ) -> Result<Response<pb::FindObjectsResponse>, Status> {
        peer_cn(&req)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let (found, truncated) = self.0.find_objects(&r.pattern, &r.agent, r.at, limit)?;
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
                    .map(|v| pb::VolumeWhere {
                        volser: v.volser,
                        location: v.location,
                        in_transit_to: v.in_transit_to,
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
        peer_cn(&req)?;
        let only = req.into_inner().moves_only;
        let now = self.0.now();
        let volumes = self
            .0
            .volumes_view()?
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
        let who = peer_cn(&req)?;
        let r = req.into_inner();
        let (moved, refused) = self.0.start_moves(&r.volumes, &who)?;
        Ok(Response::new(self.moves_response(moved, refused)?))
    }

    async fn confirm_moves(
        &self,
        req: Request<pb::MovesRequest>,
    ) -> Result<Response<pb::MovesResponse>, Status> {
        let who = peer_cn(&req)?;
        let r = req.into_inner();
        if r.volumes.is_empty() && !r.all {
            return Err(Status::invalid_argument(
                "name the volumes that arrived, or confirm all",
            ));
        }
        let (moved, refused) = self.0.confirm_moves(&r.volumes, r.all, &who)?;
        Ok(Response::new(self.moves_response(moved, refused)?))
    }

    async fn list_save_sets(
        &self,
        req: Request<pb::ListSaveSetsRequest>,
    ) -> Result<Response<pb::ListSaveSetsResponse>, Status> {
        peer_cn(&req)?;
        let save_sets = self
            .0
            .catalog()
            .save_sets()
            .map_err(internal)?
            .into_iter()
            .map(|s| pb::SaveSetInfo {
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

    async fn get_night(
        &self,
        req: Request<pb::GetNightRequest>,
    ) -> Result<Response<pb::Night>, Status> {
        peer_cn(&req)?;
        let n = self
            .0
            .night()
            .ok_or_else(|| Status::not_found("no night has started yet"))?;
        Ok(Response::new(night_pb(n)))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let who = peer_cn(&req)?;
        let id = req.into_inner().id;
        let j = self
            .0
            .catalog()
            .cancel(&id, self.0.now())
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        self.0.forget_unfinished(&id);
        self.0
            .event("job.cancelled", &format!("job {id} cancelled by {who}"));
        Ok(Response::new(job_pb(j)))
    }
}
