//! The controller's core: the shared state (configuration, catalog, clock, events, liveness) and the operations every service and the scheduler use; answers in the crate's own [`Error`], never in gRPC's terms.
//!
//! Catalog calls are short and made under one mutex, never held across
//! another call of this module. The only `impl State` of the crate is here;
//! the other rooms (night driver, retention, liveness, media, find, metrics)
//! are functions over `&State`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::access::Identity;
use crate::catalog::{AgentRow, Assignment, Catalog, JobRow, ObjectRow, SaveItem, SaveSetRow};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::night::machine::Level;
use crate::night::{Night, Step, NIGHT_KEY};

pub struct State {
    pub cfg: Config,
    clock: Box<dyn Clock>,
    /// Heartbeats, when each agent was last heard from, agents lost.
    pub liveness: Liveness,
    pub events: crate::events::Events,
    /// Mail to requesters and the help desk.
    pub mail: crate::mail::Mailer,
    pub catalog: Mutex<Box<dyn Catalog>>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    /// When the housekeeping sweeps last ran.
    pub(crate) last_sweep: Mutex<Option<std::time::Instant>>,
    /// Held while copy jobs are queued or recorded (the sweep runs from
    /// the scheduler, a job's result and the console): one at a time.
    pub(crate) copy_sweep: Mutex<()>,
    /// Refusals recorded lately, by what was refused: when, and how many
    /// more since (a caller refused in a loop must not make the catalog
    /// write, and fsync, once per call).
    denials: Mutex<HashMap<String, (std::time::Instant, u64)>>,
    /// Where the next audit record goes (locked before the catalog).
    audit: Mutex<crate::audit::Chain>,
    /// The key that signs it, for verifying without holding up appends.
    audit_key: crate::audit::AuditKey,
}

/// A refusal of the same thing is recorded at most once in this time; the
/// ones between are counted into the next record.
const DENIAL_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Job states in which a job has ended.
pub fn ended(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

impl State {
    /// The shared state over an open catalog; the audit log goes on from
    /// its signed head (a damaged tail is reported as an event, and stays
    /// visible to `audit verify`).
    pub fn new(
        cfg: Config,
        catalog: Box<dyn Catalog>,
        clock: Box<dyn Clock>,
        events: crate::events::Events,
        audit_key: crate::audit::AuditKey,
    ) -> Result<Arc<State>> {
        let head = catalog
            .meta(crate::audit::HEAD_META)?
            .and_then(|h| crate::audit::Head::parse(&h));
        let last = catalog.audit_last()?;
        let (chain, warning) = crate::audit::Chain::open(audit_key.clone(), head, last.as_ref());
        let state = Arc::new(State {
            mail: crate::mail::Mailer::start(cfg.mail.clone()),
            cfg,
            clock,
            liveness: Liveness::new(),
            events,
            catalog: Mutex::new(catalog),
            wake: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
            copy_sweep: Mutex::new(()),
            denials: Mutex::new(HashMap::new()),
            audit: Mutex::new(chain),
            audit_key,
        });
        if let Some(w) = warning {
            state.event(
                "audit.damaged",
                &format!("{w}; run `cintactl audit verify`"),
            );
        }
        Ok(state)
    }

    /// Appends a record to the audit log (and moves its signed head). A
    /// record that cannot be stored is logged as an error.
    pub fn audit(&self, entry: crate::audit::Entry) {
        let mut chain = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        for retry in [false, true] {
            let (row, head) = chain.next(self.now(), &entry);
            let stored = self.catalog().append_audit(&row, &head.to_text());
            let Err(e) = stored else {
                chain.advance(&head);
                return;
            };
            // Its number taken by a record stored without the key: go on
            // after that one (verify names it), once.
            let last = self.catalog().audit_last().ok().flatten();
            match last {
                Some(l) if !retry && l.seq >= row.seq => {
                    tracing::error!(seq = l.seq, "an audit record the controller did not write holds the next number; the log goes on after it");
                    chain.skip_past(l.seq);
                }
                _ => {
                    tracing::error!(error = %e, action = %entry.action, "could not record an audit record");
                    return;
                }
            }
        }
    }

    /// Every recorded save set, by id.
    pub fn save_set_map(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::catalog::SaveSetRecord>> {
        Ok(self
            .catalog()
            .save_sets()?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect())
    }

    /// Every known cartridge, by volser.
    pub fn volume_map(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::catalog::VolumeRecord>> {
        Ok(self
            .catalog()
            .volumes()?
            .into_iter()
            .map(|v| (v.volser.clone(), v))
            .collect())
    }

    /// Checks the audit log up to its last record as it is now, a page at a
    /// time (memory bounded by the page). Records appended meanwhile are the
    /// next verification's: appends are not held up while this one reads.
    pub fn verify_audit(&self) -> Result<crate::audit::Report> {
        let (head, last) = {
            // The head is written with its record: read it, and where the
            // records end, between appends. Records past the head are read
            // too: written without the key, they are what verify must name.
            let _appends = self.audit.lock().unwrap_or_else(|p| p.into_inner());
            let c = self.catalog();
            (c.meta(crate::audit::HEAD_META)?, c.audit_last()?)
        };
        let upto = last.map_or(0, |l| l.seq);
        crate::audit::verify_pages(&self.audit_key, head.as_deref(), |after| {
            let mut page = self.catalog().audit_page(after, crate::audit::PAGE)?;
            page.retain(|r| r.seq <= upto);
            Ok(page)
        })
    }

    /// Audit records made at or after `since`, oldest first, at most `limit`.
    pub fn audit_records(&self, since: i64, limit: u32) -> Result<Vec<crate::audit::AuditRow>> {
        self.catalog().audit_since(since, limit)
    }

    /// The clock's time.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn catalog(&self) -> std::sync::MutexGuard<'_, Box<dyn Catalog>> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The notifier that wakes `agent`'s assignment stream.
    pub fn wake(&self, agent: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent.to_string())
            .or_default()
            .clone()
    }

    /// An event at the level its kind implies (see [`level_of`]).
    pub fn event(&self, kind: &str, text: &str) {
        self.event_at(level_of(kind), kind, text)
    }

    /// An event: the log (at `level`), the catalog, the webhook and the counters.
    pub fn event_at(&self, level: Level, kind: &str, text: &str) {
        match level {
            Level::Info => tracing::info!(kind, "{text}"),
            Level::Warn => tracing::warn!(kind, "{text}"),
            Level::Error => tracing::error!(kind, "{text}"),
        }
        let t = self.now();
        if let Err(e) = self.catalog().event(t, kind, text) {
            tracing::error!(error = %e, "could not record an event");
        }
        self.audit(crate::audit::Entry {
            who: "controller".into(),
            role: String::new(),
            action: kind.to_string(),
            args: text.to_string(),
            result: "event".into(),
            from: String::new(),
        });
        self.events.emit(t, kind, text);
    }

    /// A refused call: PERMISSION_DENIED for the caller, an event for the
    /// operators (the same refusal at most once every ten seconds, with the
    /// count of those in between).
    pub fn refused(&self, why: String) -> Error {
        let record = {
            let mut d = self.denials.lock().unwrap_or_else(|p| p.into_inner());
            if d.len() >= 4096 {
                d.retain(|_, (t, _)| t.elapsed() < DENIAL_EVERY);
            }
            match d.get_mut(&why) {
                Some((t, more)) if t.elapsed() < DENIAL_EVERY => {
                    *more += 1;
                    None
                }
                _ => {
                    let more = d.insert(why.clone(), (std::time::Instant::now(), 0));
                    Some(more.map_or(0, |(_, n)| n))
                }
            }
        };
        match record {
            Some(0) => self.event("access.denied", &why),
            Some(n) => self.event(
                "access.denied",
                &format!("{why} (and {n} more times since it was last recorded)"),
            ),
            None => tracing::debug!("refused again: {why}"),
        }
        Error::PermissionDenied(why)
    }

    /// Queues a control group's job for the LPAR its target names now.
    pub fn queue(&self, name: &str, who: &str) -> Result<JobRow> {
        self.queue_on(name, None, who)
    }

    /// Queues a one-command job (a probe or a hook) on `lpar`; its output comes back with the result.
    pub fn queue_command(
        &self,
        lpar: &str,
        label: &str,
        command: &str,
        who: &str,
    ) -> Result<JobRow> {
        let a = Assignment {
            pre: vec![self.cfg.on_lpar(lpar, command)],
            ..Assignment::chores(String::new())
        };
        self.queue_job(label, lpar, a, who)
    }

    /// Records a new queued job for `agent` and wakes its assignment stream.
    pub fn queue_job(
        &self,
        label: &str,
        agent: &str,
        assignment: Assignment,
        who: &str,
    ) -> Result<JobRow> {
        let t = self.now();
        let job = JobRow::queued(
            format!("J{t}-{}", &random_id()[..6]),
            label,
            agent,
            assignment,
            t,
        );
        self.catalog().add_job(&job)?;
        self.event(
            "job.queued",
            &format!("job {} ({label}) queued for {agent} by {who}", job.id),
        );
        self.wake(agent).notify_waiters();
        Ok(job)
    }

    /// The LPAR holding `role` now (a switched role wins over the configured one).
    pub fn holder_of(&self, role: &str) -> Result<Option<String>> {
        let roles = self.catalog().roles()?;
        Ok(self
            .cfg
            .lpars
            .iter()
            .find(|l| self.cfg.role_of(&l.name, &roles).as_deref() == Some(role))
            .map(|l| l.name.clone()))
    }

    /// Queues a control group on `on` (an LPAR) or, if None, on its target.
    pub fn queue_on(&self, name: &str, on: Option<&str>, who: &str) -> Result<JobRow> {
        let g = self.cfg.control_group(name).ok_or_else(|| {
            Error::NotFound(format!("no control group {name:?} in the configuration"))
        })?;
        let roles = self.catalog().roles()?;
        let lpar = match on {
            Some(l) => l.to_string(),
            None => self
                .cfg
                .resolve(&g.target, &roles)
                .ok_or_else(|| Error::Precondition(format!("no LPAR holds {:?}", g.target)))?,
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
            restores: vec![],
            copy: vec![],
        };
        self.queue_job(&g.name, &lpar, a, who)
    }

    /// Tonight's record. A record that cannot be read is an error, never
    /// "no night": a night left unfinished must not be replaced unseen.
    pub fn night(&self) -> Result<Option<Night>> {
        let Some(v) = self.catalog().meta(NIGHT_KEY)? else {
            return Ok(None);
        };
        serde_json::from_str(&v).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "tonight's record in the catalog does not read: {e}"
            ))
        })
    }

    pub fn save_night(&self, n: &Night) {
        let v = serde_json::to_string(n).expect("night serializes");
        if let Err(e) = self.catalog().set_meta(NIGHT_KEY, &v) {
            tracing::error!(error = %e, "could not record tonight's state");
        }
    }

    fn night_in_progress(&self) -> Result<Night> {
        self.night()?
            .filter(|n| n.state != Step::Done)
            .ok_or_else(|| {
                Error::Precondition(
                    "no night in progress (the pre-close save has not been run tonight)".into(),
                )
            })
    }

    /// The close was signalled started or finished.
    pub fn signal_close(&self, finished: bool, who: &str) -> Result<Night> {
        let mut n = self.night_in_progress()?;
        let t = self.now();
        if finished {
            if n.close_finished.is_some() {
                return Err(Error::Precondition(
                    "the close was already signalled finished".into(),
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

    /// An operator acknowledges tonight's escalation: a step being retried
    /// (the contingency save, resuming apply) is not tried again.
    pub fn acknowledge(&self, who: &str) -> Result<Night> {
        let mut n = self.night_in_progress()?;
        if !n.retry_pending {
            return Err(Error::Precondition(format!(
                "night {} is at {} and retries nothing: there is nothing to acknowledge",
                n.id,
                n.state.as_str()
            )));
        }
        let t = self.now();
        n.acknowledged_by = who.to_string();
        n.note(t, format!("escalation acknowledged by {who}"));
        self.save_night(&n);
        self.event_at(
            Level::Warn,
            "night.acknowledged",
            &format!("night {}: {} acknowledged by {who}", n.id, n.state.as_str()),
        );
        Ok(n)
    }

    /// Agents as registered, with their last heartbeat and usage.
    pub fn agents_live(&self) -> Vec<AgentRow> {
        let mut agents = self.catalog().agents().unwrap_or_default();
        self.liveness.fill(&mut agents);
        agents
    }

    /// Forgets the objects an ended job reported for save sets it never
    /// finished: they are on no cartridge the catalog knows of.
    pub fn forget_unfinished(&self, job: &str) {
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

    /// Moves `role` to `lpar` (the LPAR holding it now takes `lpar`'s old
    /// role); the roles of every LPAR afterwards.
    pub fn switch_role(&self, lpar: &str, role: &str, who: &str) -> Result<Vec<(String, String)>> {
        if !["production", "contingency", "server"].contains(&role) {
            return Err(Error::Invalid(format!(
                "role {role:?} is not production, contingency or server"
            )));
        }
        if !self.cfg.lpars.iter().any(|l| l.name == lpar) {
            return Err(Error::NotFound(format!(
                "no LPAR {lpar:?} in the configuration"
            )));
        }
        let cfg = &self.cfg;
        let (change, now_roles) = {
            let mut cat = self.catalog();
            let roles = cat.roles()?;
            let old = cfg.role_of(lpar, &roles).unwrap_or_default();
            let mut change = vec![(lpar.to_string(), role.to_string())];
            for l in &cfg.lpars {
                if l.name != lpar && cfg.role_of(&l.name, &roles).as_deref() == Some(role) {
                    change.push((l.name.clone(), old.clone()));
                }
            }
            cat.set_roles(&change)?;
            (change, cat.roles()?)
        };
        let text = change
            .iter()
            .map(|(l, r)| format!("{l} is {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.event("role.switched", &format!("roles switched by {who}: {text}"));
        Ok(cfg
            .lpars
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    cfg.role_of(&l.name, &now_roles).unwrap_or_default(),
                )
            })
            .collect())
    }

    pub fn cancel_job(&self, id: &str, who: &str) -> Result<JobRow> {
        let j = self
            .catalog()
            .cancel(id, self.now())?
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
        self.forget_unfinished(id);
        self.event("job.cancelled", &format!("job {id} cancelled by {who}"));
        Ok(j)
    }

    pub fn job(&self, id: &str) -> Result<JobRow> {
        self.catalog()
            .job(id)?
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))
    }

    // ---- the agents' side ----

    /// Registers `row` as the agent of an LPAR of the configuration: a new
    /// session; jobs of its previous session are failed. Returns the session.
    pub fn register(&self, mut row: AgentRow) -> Result<String> {
        let cn = row.name.clone();
        let session = random_id();
        let roles = self.catalog().roles()?;
        row.role = self.cfg.role_of(&cn, &roles).unwrap_or_default();
        row.session = session.clone();
        row.last_seen = self.now();
        let failed = self.catalog().register(&row)?;
        self.liveness.heard_from(&cn);
        self.event(
            "agent.registered",
            &format!("agent {cn} registered (session {session})"),
        );
        for j in failed {
            self.forget_unfinished(&j);
            self.event(
                "job.failed",
                &format!("job {j} failed: agent {cn} restarted while it ran"),
            );
        }
        self.wake(&cn).notify_waiters();
        Ok(session)
    }

    /// Refuses a call from an ended session of `agent`.
    pub fn check_session(&self, agent: &str, session: &str) -> Result<()> {
        let current = self.catalog().agent(agent)?.map(|a| a.session);
        if current.as_deref() != Some(session) {
            return Err(Error::Precondition(format!(
                "session {session} of {agent} has ended; register again"
            )));
        }
        Ok(())
    }

    /// Refuses a job that is not running on `agent`.
    pub fn check_running(&self, agent: &str, job: &str) -> Result<()> {
        let j = self.catalog().job(job)?;
        if j.is_some_and(|j| j.agent == agent && j.state == "running") {
            Ok(())
        } else {
            Err(Error::Precondition(format!(
                "job {job} is not running on {agent}"
            )))
        }
    }

    /// A job reports only save sets it is making: one recorded already is
    /// another job's, and so is one another job named first (its objects
    /// and its record are not this agent's to write).
    pub fn own_save_set(&self, save_set: &str, job: &str) -> Result<()> {
        // Bind first: the catalog's lock is not held across the check.
        let recorded = self.catalog().save_set(save_set)?;
        if let Some(s) = recorded {
            return Err(Error::Precondition(format!(
                "save set {save_set} is recorded already (made by {}): a job reports only save sets it made",
                s.agent
            )));
        }
        let claimed = self.catalog().claim_save_set(save_set, job)?;
        match claimed {
            Some(other) => Err(Error::Precondition(format!(
                "save set {save_set} is job {other}'s: a job reports only save sets it made"
            ))),
            None => Ok(()),
        }
    }

    pub fn put_objects(&self, save_set: &str, rows: &[ObjectRow]) -> Result<()> {
        self.catalog().put_objects(save_set, rows)
    }

    /// A job's result from the agent running it: its save sets recorded
    /// (with their retention), its unfinished objects forgotten, an event.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_job(
        &self,
        agent: &str,
        session: &str,
        job: &str,
        ok: bool,
        message: &str,
        sets: &[SaveSetRow],
        output: &str,
        restores: &[crate::restores::Outcome],
        copies: &[crate::copies::Made],
    ) -> Result<()> {
        self.check_session(agent, session)?;
        self.check_running(agent, job)?;
        // A job reports the save sets it made: new ones, each once. (Else an
        // agent could rewrite another's record: its volumes, its expiry.)
        let mut seen = std::collections::BTreeSet::new();
        for s in sets {
            if !seen.insert(s.id.as_str()) {
                return Err(Error::Invalid(format!(
                    "save set {} is reported twice",
                    s.id
                )));
            }
            self.own_save_set(&s.id, job)?;
        }
        let done = self
            .catalog()
            .finish(job, agent, ok, message, sets, output, self.now())?;
        if !done {
            return Err(Error::Precondition(format!(
                "job {job} is not running on {agent}"
            )));
        }
        crate::retention::record_save_sets(self, job, sets);
        crate::copies::record(self, job, agent, copies);
        // Copies the new save sets' policies ask for go out at once.
        if !sets.is_empty() || !copies.is_empty() {
            crate::copies::sweep(self);
        }
        // A restore job is a request's or a drill's: its owner records the
        // outcomes, and goes on below (not at the next sweep).
        let request = !restores.is_empty() && crate::restores::record_outcomes(self, job, restores);
        let drill =
            !restores.is_empty() && !request && crate::drills::record_outcomes(self, job, restores);
        self.forget_unfinished(job);
        let kind = if ok { "job.succeeded" } else { "job.failed" };
        self.event(
            kind,
            &format!(
                "job {job} on {agent}: {} ({} save sets)",
                if ok { "succeeded" } else { message },
                sets.len()
            ),
        );
        let warned: Vec<String> = sets
            .iter()
            .filter(|s| s.warning_count() > 0)
            .map(|s| {
                let mut w = format!("save set {} of {}: ", s.id, s.source);
                let mut parts = Vec::new();
                if s.changed_count > 0 {
                    parts.push(format!(
                        "{} objects changed while saved ({}{})",
                        s.changed_count,
                        s.changed
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        if s.changed_count > 3 { ", ..." } else { "" }
                    ));
                }
                if !s.warnings.is_empty() {
                    parts.push(format!(
                        "{} warnings (first: {})",
                        s.warnings.len(),
                        s.warnings[0]
                    ));
                }
                w.push_str(&parts.join("; "));
                w
            })
            .collect();
        if !warned.is_empty() {
            self.event_at(
                Level::Warn,
                "job.warnings",
                &format!("job {job} on {agent}: {}", warned.join("; ")),
            );
        }
        if request {
            crate::restores::tick(self);
        }
        if drill {
            crate::drills::tick(self);
        }
        Ok(())
    }

    /// Who a certificate is (see [`crate::access::identify`]).
    pub fn identify(&self, cn: Option<&str>, fingerprint: &str) -> Identity {
        crate::access::identify(&self.cfg.operators, &self.cfg.lpars, cn, fingerprint)
    }
}

/// The level an event of `kind` is logged at.
pub fn level_of(kind: &str) -> Level {
    match kind {
        "night.failed" | "job.failed" | "agent.lost" | "schedule.failed" | "media.move_failed"
        | "restore.failed" | "drill.failed" => Level::Error,
        "close.late" | "access.denied" | "fallback.taken" | "signoff.forced" | "watch.down"
        | "threshold.crossed" | "night.escalated" | "restore.refused" | "restore.retry" => {
            Level::Warn
        }
        _ => Level::Info,
    }
}

pub fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
