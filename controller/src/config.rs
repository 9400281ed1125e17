//! The controller's TOML configuration: where it listens, its certificates, the catalog, the LPARs and their roles, control groups.
//!
//! Unknown fields are refused; relative paths are taken from the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC over mutual TLS (agents and consoles).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The catalog: an SQLite file, or a PostgreSQL URL
    /// (`postgresql://user[:password]@host[:port]/database`).
    pub catalog: PathBuf,
    /// TLS to a PostgreSQL catalog (the server's CA; a client certificate if it asks).
    pub catalog_tls: Option<crate::catalog::postgres::TlsFiles>,
    /// The key that signs the audit log (64 hex digits; made, mode 0600,
    /// when missing). Keep it apart from the catalog: whoever holds both
    /// can rewrite the log undetected.
    #[serde(default = "default_audit_key")]
    pub audit_key: PathBuf,
    /// Seconds between agent heartbeats; an agent silent for three is shown disconnected.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u32,
    /// An agent silent this long (real time) is lost: its queued and running
    /// jobs are failed, so a night waiting on them goes on (and escalates).
    /// 0: never.
    #[serde(default = "default_agent_lost")]
    pub agent_lost_seconds: u32,
    /// Time zone of schedules and the night (IANA name; default UTC).
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// Take the time from this file (seconds since 1970) instead of the
    /// system clock: for tests and demos that drive a night hour by hour.
    pub clock_file: Option<PathBuf>,
    pub tls: TlsConfig,
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<Schedule>,
    pub night: Option<NightPlan>,
    /// Webhook, Prometheus endpoint, usage threshold.
    #[serde(default)]
    pub events: crate::events::EventsConfig,
    #[serde(default, rename = "lpar")]
    pub lpars: Vec<Lpar>,
    #[serde(default, rename = "control_group")]
    pub control_groups: Vec<ControlGroup>,
    #[serde(default, rename = "media_policy")]
    pub media_policies: Vec<MediaPolicy>,
    #[serde(default, rename = "move_policy")]
    pub move_policies: Vec<MovePolicy>,
    /// Places cartridges are kept away from their library (vaults), with
    /// how long bringing one back takes.
    #[serde(default, rename = "location")]
    pub locations: Vec<Location>,
    /// How IBM i libraries are saved (command templates).
    #[serde(default)]
    pub ibmi: Ibmi,
    /// The people (and scripts) at the console, by certificate, with their
    /// roles. Any other certificate, an agent's included, is refused at the console.
    #[serde(default, rename = "operator")]
    pub operators: Vec<crate::access::Operator>,
    /// Restore requests.
    #[serde(default)]
    pub restore: RestorePolicy,
    /// Mail to requesters and the help desk (restore requests).
    pub mail: Option<crate::mail::MailConfig>,
    /// Restore drills.
    #[serde(default)]
    pub drills: DrillPolicy,
}

/// How restore drills are run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPolicy {
    /// When the drill is due (cron, in the controller's time zone), e.g.
    /// quarterly "0 3 1 1,4,7,10 *"; it runs only if the quarter had no
    /// restore request served. None: by hand only.
    pub cron: Option<String>,
    /// Servers a drill restores on, chosen at random.
    #[serde(default = "default_drill_servers")]
    pub servers: u32,
    /// Objects and bytes restored per server at most (the newest save set
    /// of every control group gives one object at least).
    #[serde(default = "default_drill_objects")]
    pub max_objects: u32,
    #[serde(default = "default_drill_bytes")]
    pub max_bytes: u64,
    /// Where on each agent the scratch copy goes (removed after).
    #[serde(default = "default_drill_scratch")]
    pub scratch: String,
}

impl Default for DrillPolicy {
    fn default() -> DrillPolicy {
        DrillPolicy {
            cron: None,
            servers: default_drill_servers(),
            max_objects: default_drill_objects(),
            max_bytes: default_drill_bytes(),
            scratch: default_drill_scratch(),
        }
    }
}

fn default_drill_servers() -> u32 {
    3
}
fn default_drill_objects() -> u32 {
    20
}
fn default_drill_bytes() -> u64 {
    256 << 20
}
fn default_drill_scratch() -> String {
    "/var/tmp/cinta-drills".into()
}

/// How restore requests are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePolicy {
    /// Attempts at a restore before the request fails (each is kept).
    #[serde(default = "default_restore_attempts")]
    pub attempts: u32,
    /// Seconds between a failed attempt and the next.
    #[serde(default = "default_restore_retry_after")]
    pub retry_after_seconds: u32,
}

impl Default for RestorePolicy {
    fn default() -> RestorePolicy {
        RestorePolicy {
            attempts: default_restore_attempts(),
            retry_after_seconds: default_restore_retry_after(),
        }
    }
}

fn default_restore_retry_after() -> u32 {
    300
}

fn default_restore_attempts() -> u32 {
    2
}

/// The IBM i bridge: command templates the agent runs to save a library.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ibmi {
    /// Saves library `{lib}` and writes the save file's bytes to standard
    /// output (messages to standard error); `{savf}` is a save-file name,
    /// `{lpar}` the LPAR's name. Run with `sh -c` by the agent, over SSH when
    /// the LPAR has `ssh`. A non-zero exit fails the save: nothing is recorded.
    #[serde(default = "default_save_library")]
    pub save_library: String,
    /// Restores library `{lib}` as library `{to}` from the save file's
    /// bytes on standard input (a restore request); `{savf}` and `{lpar}`
    /// as above. A non-zero exit fails the restore.
    #[serde(default = "default_restore_library")]
    pub restore_library: String,
}

impl Default for Ibmi {
    fn default() -> Ibmi {
        Ibmi {
            save_library: default_save_library(),
            restore_library: default_restore_library(),
        }
    }
}

/// The save file's bytes into a stream file, copied into a save file,
/// RSTLIB from it under the library name asked for, both removed.
pub const DEFAULT_RESTORE_LIBRARY: &str = "cat > /tmp/cinta-{savf}.savf && system \"CRTSAVF FILE(CINTA/{savf})\" >&2 && system \"CPYFRMSTMF FROMSTMF('/tmp/cinta-{savf}.savf') TOMBR('/QSYS.LIB/CINTA.LIB/{savf}.FILE') MBROPT(*REPLACE) CVTDTA(*NONE)\" >&2 && system \"RSTLIB SAVLIB({lib}) DEV(*SAVF) SAVF(CINTA/{savf}) RSTLIB({to})\"; rc=$?; system \"DLTF FILE(CINTA/{savf})\" >&2; rm -f /tmp/cinta-{savf}.savf; exit $rc";

fn default_restore_library() -> String {
    DEFAULT_RESTORE_LIBRARY.into()
}

/// BRMS/CL through PASE's `system`: a save file in library CINTA, SAVLIB
/// into it (save-while-active, synchronised at library level), its bytes
/// read through the integrated file system, the save file deleted.
pub const DEFAULT_SAVE_LIBRARY: &str = "system \"CRTSAVF FILE(CINTA/{savf})\" >&2 && system \"SAVLIB LIB({lib}) DEV(*SAVF) SAVF(CINTA/{savf}) SAVACT(*SYNCLIB) SAVACTWAIT(120) DTACPR(*NO)\" >&2 && cat /QSYS.LIB/CINTA.LIB/{savf}.FILE; rc=$?; system \"DLTF FILE(CINTA/{savf})\" >&2; exit $rc";

fn default_save_library() -> String {
    DEFAULT_SAVE_LIBRARY.into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that agent and console certificates must chain to.
    pub client_ca: PathBuf,
}

/// BRMS-style media policy: how long save sets are kept and how they are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaPolicy {
    pub name: String,
    /// Expire a save set this many days after it was made.
    pub retention_days: Option<u32>,
    /// Keep only this many save sets of each source (newest first).
    pub retention_versions: Option<u32>,
    /// Compress segments (zstd) before encryption.
    #[serde(default)]
    pub compress: bool,
    /// Expire by destroying the save set's key (every copy unreadable).
    #[serde(default)]
    pub shred_on_expiry: bool,
    /// Where the cartridges go after they are written (vault rotation).
    pub move_policy: Option<String>,
    /// Write only on cartridges of this media class (e.g. "LTO9"), as the
    /// agent's library records them (`cinta-agent library add --media-class`).
    /// Without one, saves go only on cartridges without a class: a classed
    /// cartridge is never written by a policy that did not ask for it.
    pub media_class: Option<String>,
    /// Copies of every save set, the original counted (BRMS DUPMEDBRM): 2
    /// keeps a duplicate of each on cartridges of `copy_media_class`, made
    /// by a copy job on the agent right after the save.
    #[serde(default = "one")]
    pub copies: u32,
    /// Media class of the copies' cartridges: another set than the originals'.
    pub copy_media_class: Option<String>,
    /// Where the copies' cartridges go (e.g. the vault), as `move_policy`
    /// is for the originals'.
    pub copy_move_policy: Option<String>,
    /// When copies are made (cron, in the controller's time zone), e.g.
    /// "0 6 * * *" for the morning after the night's saves, when the drives
    /// are free; without it, right after each save.
    pub copy_schedule: Option<String>,
}

fn one() -> u32 {
    1
}

/// BRMS-style move policy: the locations a cartridge visits after it is
/// written, each for some days, before it comes back to its library. A
/// cartridge whose save sets have all expired comes back at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovePolicy {
    pub name: String,
    #[serde(rename = "step")]
    pub steps: Vec<MoveStep>,
}

/// A vault (or any place cartridges are kept outside their library).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub name: String,
    /// Hours a standard recall takes (the vault provider's contract).
    #[serde(default = "default_recall_hours")]
    pub recall_hours: u32,
    /// Hours an emergency recall takes (urgent restore requests).
    #[serde(default = "default_emergency_recall_hours")]
    pub emergency_recall_hours: u32,
}

fn default_recall_hours() -> u32 {
    24
}
fn default_emergency_recall_hours() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveStep {
    /// A place outside the library, e.g. "VAULT".
    pub location: String,
    pub days: u32,
}

/// A control group run at calendar times (cron: minute hour day month weekday).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub control_group: String,
    pub cron: String,
}

/// The nightly close: a pre-close save at a set time, then the close window
/// until the close-finished signal, then the post-close save; a close still
/// running at the deadline (plus grace) raises an escalation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightPlan {
    pub pre_close: String,
    /// cron, e.g. "30 20 * * *".
    pub pre_close_at: String,
    pub post_close: String,
    /// cron of the deadline, e.g. "0 23 * * *" (the first one after the pre-close).
    pub deadline: String,
    #[serde(default)]
    pub grace_minutes: u32,
    /// Run on the production LPAR during the close window: prints
    /// "finished" once the business close has ended (the operator's
    /// `cintactl close finished` does the same).
    pub close_probe: Option<String>,
    /// Minutes between two runs of the close probe.
    #[serde(default = "default_close_probe_every")]
    pub close_probe_every_minutes: u32,
    /// Run on the production LPAR after the close: prints how many users are
    /// still signed on (0: quiet). Without it the post-close save starts at once.
    pub quiesce_probe: Option<String>,
    /// How long to wait for users to leave before falling back to contingency.
    #[serde(default = "default_quiesce_grace")]
    pub quiesce_grace_minutes: u32,
    /// Policy: when users are still signed on after the grace period, run
    /// this on production (e.g. end their interactive jobs), then ask the
    /// quiesce probe once more; only if they remain, fall back to contingency.
    pub force_signoff: Option<String>,
    /// The contingency fallback, when production cannot be quiesced.
    pub contingency: Option<Contingency>,
}

/// Save on the contingency LPAR instead: check replication, suspend apply
/// (a controlled end: the data stands at a known point), save, resume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contingency {
    /// Prints "backlog=N latency=S" (and may say apply=...).
    pub replication_probe: String,
    #[serde(default = "default_backlog")]
    pub max_backlog: u64,
    #[serde(default = "default_latency")]
    pub max_latency_seconds: u64,
    /// Suspends apply; its output is recorded as the recovery point.
    pub suspend: String,
    /// Resumes apply (run even if the save failed; retried with backoff
    /// until it works or an operator acknowledges).
    pub resume: String,
    /// Attempts of the contingency save while apply is suspended (1: no retry).
    #[serde(default = "default_save_attempts")]
    pub save_attempts: u32,
}

fn default_save_attempts() -> u32 {
    2
}

fn default_close_probe_every() -> u32 {
    5
}
fn default_quiesce_grace() -> u32 {
    10
}
fn default_backlog() -> u64 {
    1000
}
fn default_latency() -> u64 {
    300
}

/// A partition (or host) and its role; its agent registers under `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lpar {
    pub name: String,
    #[serde(default)]
    pub site: String,
    /// production, contingency or server.
    pub role: String,
    /// `[user@]host` (and ssh options) to reach the LPAR: library saves run
    /// as `ssh -o BatchMode=yes SSH '<template>'`; without it, on the agent's host (PASE).
    pub ssh: Option<String>,
    /// This LPAR's own library-save template (instead of `[ibmi] save_library`).
    pub save_library: Option<String>,
    /// Subsystems or processes the agent checks and reports with its heartbeats.
    #[serde(default, rename = "watch")]
    pub watches: Vec<Watch>,
}

/// Something the agent checks on its LPAR or host (a subsystem, a process):
/// `command` exits 0 when it is up; its first line says how it is. A change
/// raises `watch.down` or `watch.up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub name: String,
    pub command: String,
    #[serde(default = "default_watch_every")]
    pub every_seconds: u32,
}

fn default_watch_every() -> u32 {
    60
}

/// BRMS-style control group: what to save, in order, and on which LPAR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlGroup {
    pub name: String,
    /// A role (production, contingency) or an LPAR name: schedules follow the role.
    pub target: String,
    /// The agent's library to write to.
    #[serde(default = "default_library")]
    pub library: String,
    /// full, incr or cuml.
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub compress: bool,
    /// Exit steps before the saves (shell commands run by the agent).
    #[serde(default)]
    pub pre: Vec<String>,
    /// Exit steps after the saves, run even if a save failed.
    #[serde(default)]
    pub post: Vec<String>,
    /// Seconds a step may run.
    #[serde(default = "default_step_timeout")]
    pub step_timeout_seconds: u32,
    /// Retention and handling of the save sets this group makes.
    pub media_policy: Option<String>,
    /// The class of data it saves (e.g. "database", "mail"): restoring
    /// data of a class needs a second person's approval.
    pub data_class: Option<String>,
    #[serde(rename = "entry")]
    pub entries: Vec<Entry>,
}

/// A control-group entry: a path (directory tree or file) or an IBM i library (one of the two).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: Option<String>,
    /// An IBM i library, saved with SAVLIB to a save file streamed into the save set as `{lib}.SAVF`.
    pub library: Option<String>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The class of its data (wins over the group's).
    pub data_class: Option<String>,
    /// It holds personal data (GDPR): the evidence report lists it with
    /// proof that every save set of it is encrypted.
    #[serde(default)]
    pub personal_data: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7443))
}
fn default_heartbeat() -> u32 {
    5
}
fn default_agent_lost() -> u32 {
    900
}
fn default_library() -> String {
    "default".into()
}
fn default_tz() -> String {
    "UTC".into()
}
fn default_step_timeout() -> u32 {
    3600
}
fn default_level() -> String {
    "full".into()
}

fn default_audit_key() -> PathBuf {
    PathBuf::from("audit.key")
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            what: format!("read {}", path.display()),
            source: e,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |message: String| Error::Config {
            path: path.to_owned(),
            message,
        };
        let mut c: Config = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let url = c
            .catalog
            .to_str()
            .is_some_and(crate::catalog::postgres::is_url);
        if !url && c.catalog.is_relative() {
            c.catalog = base.join(&c.catalog);
        }
        for p in [
            &mut c.tls.cert,
            &mut c.tls.key,
            &mut c.tls.client_ca,
            &mut c.audit_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = c.catalog_tls.as_mut() {
            if !url {
                return Err(bad(
                    "catalog_tls is for a PostgreSQL catalog (catalog = \"postgresql://...\")"
                        .into(),
                ));
            }
            for p in [Some(&mut t.ca), t.cert.as_mut(), t.key.as_mut()]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if let Some(p) = c.clock_file.as_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(m) = c.mail.as_mut() {
            for p in [m.ca.as_mut(), m.password_file.as_mut()]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if m.username.is_some() != m.password_file.is_some() {
                return Err(bad("[mail] username and password_file go together".into()));
            }
            if m.username.is_some() && !m.starttls {
                return Err(bad(
                    "[mail] a password is only sent over TLS: set starttls (with ca)".into(),
                ));
            }
            if m.starttls && m.ca.is_none() {
                return Err(bad(
                    "[mail] starttls needs ca, the CA of the mail server's certificate".into(),
                ));
            }
        }
        c.tz().map_err(&bad)?;
        let cron = |what: &str, e: &str| -> Result<()> {
            e.parse::<croner::Cron>()
                .map(|_| ())
                .map_err(|err| bad(format!("{what}: cron {e:?}: {err}")))
        };
        for s in &c.schedules {
            cron(&format!("schedule of {}", s.control_group), &s.cron)?;
        }
        if let Some(n) = &c.night {
            cron("night.pre_close_at", &n.pre_close_at)?;
            cron("night.deadline", &n.deadline)?;
        }
        let groups: Vec<&str> = c
            .schedules
            .iter()
            .map(|s| s.control_group.as_str())
            .chain(
                c.night
                    .iter()
                    .flat_map(|n| [n.pre_close.as_str(), n.post_close.as_str()]),
            )
            .collect();
        for m in &c.move_policies {
            if m.steps.is_empty() {
                return Err(bad(format!(
                    "move policy {}: no [[move_policy.step]]",
                    m.name
                )));
            }
            for st in &m.steps {
                if st.location.trim().is_empty()
                    || st.location == crate::moves::HOME
                    || st.days == 0
                {
                    return Err(bad(format!(
                        "move policy {}: step {:?}: a location name (not {}) and days of at least 1",
                        m.name,
                        st.location,
                        crate::moves::HOME
                    )));
                }
            }
        }
        for p in &c.media_policies {
            if !(1..=4).contains(&p.copies) {
                return Err(bad(format!(
                    "media policy {}: copies = {}: 1 (the original only) to 4",
                    p.name, p.copies
                )));
            }
            if p.copies > 1 {
                match (&p.media_class, &p.copy_media_class) {
                    (Some(a), Some(b)) if a != b => {}
                    _ => {
                        return Err(bad(format!(
                            "media policy {}: copies = {} needs media_class (the originals' cartridges) and copy_media_class (the copies'), two different classes, so no copy ever lands on an original's cartridge",
                            p.name, p.copies
                        )))
                    }
                }
            } else if p.copy_media_class.is_some()
                || p.copy_move_policy.is_some()
                || p.copy_schedule.is_some()
            {
                return Err(bad(format!(
                    "media policy {}: copy_media_class, copy_move_policy and copy_schedule need copies = 2 or more",
                    p.name
                )));
            }
            if let Some(e) = &p.copy_schedule {
                cron(&format!("media policy {}: copy_schedule", p.name), e)?;
            }
            for mc in p.media_class.iter().chain(&p.copy_media_class) {
                let ok = !mc.is_empty()
                    && mc.len() <= 10
                    && mc.chars().all(|ch| {
                        ch.is_ascii_uppercase() || ch.is_ascii_digit() || "_-".contains(ch)
                    });
                if !ok {
                    return Err(bad(format!(
                        "media policy {}: media class {mc:?}: up to 10 upper-case letters, digits, _ or -",
                        p.name
                    )));
                }
            }
            for m in p.move_policy.iter().chain(&p.copy_move_policy) {
                if c.move_policy(m).is_none() {
                    return Err(bad(format!(
                        "media policy {}: no move policy {m:?}",
                        p.name
                    )));
                }
            }
        }
        for g in &c.control_groups {
            if let Some(p) = &g.media_policy {
                if c.media_policy(p).is_none() {
                    return Err(bad(format!(
                        "control group {}: no media policy {p:?}",
                        g.name
                    )));
                }
            }
        }
        for g in groups {
            if !c.control_groups.iter().any(|x| x.name == g) {
                return Err(bad(format!(
                    "no control group {g:?} (named by a schedule or the night)"
                )));
            }
        }
        for l in &c.lpars {
            for (i, w) in l.watches.iter().enumerate() {
                if w.every_seconds == 0 || l.watches[..i].iter().any(|o| o.name == w.name) {
                    return Err(bad(format!(
                        "lpar {}: watch {:?}: names must be unique and every_seconds at least 1",
                        l.name, w.name
                    )));
                }
            }
            if !["production", "contingency", "server"].contains(&l.role.as_str()) {
                return Err(bad(format!(
                    "lpar {}: role {:?} is not production, contingency or server",
                    l.name, l.role
                )));
            }
        }
        for g in &c.control_groups {
            if !["full", "incr", "cuml"].contains(&g.level.as_str()) {
                return Err(bad(format!(
                    "control group {}: level {:?} is not full, incr or cuml",
                    g.name, g.level
                )));
            }
            if g.entries.is_empty() {
                return Err(bad(format!("control group {} has no entries", g.name)));
            }
            for e in &g.entries {
                match (&e.path, &e.library) {
                    (Some(_), None) => {}
                    (None, Some(l)) => check_library_name(l).map_err(|m| {
                        bad(format!("control group {}: library {l:?}: {m}", g.name))
                    })?,
                    _ => {
                        return Err(bad(format!(
                            "control group {}: an entry needs exactly one of path and library",
                            g.name
                        )))
                    }
                }
            }
            let known = c
                .lpars
                .iter()
                .any(|l| l.name == g.target || l.role == g.target);
            if !known {
                return Err(bad(format!(
                    "control group {}: target {:?} is neither an LPAR nor the role of one",
                    g.name, g.target
                )));
            }
        }
        c.check_night_and_names().map_err(bad)?;
        Ok(c)
    }

    /// What would only fail at night: duplicate names, a contingency plan
    /// no LPAR can carry out, empty commands, operators that would be agents.
    fn check_night_and_names(&self) -> std::result::Result<(), String> {
        if self.restore.attempts == 0 {
            return Err("restore.attempts must be at least 1".into());
        }
        let scratch = &self.drills.scratch;
        if !scratch.starts_with('/') || scratch == "/" || scratch.contains('\'') {
            return Err(format!(
                "drills.scratch {scratch:?} must be an absolute directory (not /, no quote)"
            ));
        }
        if self.drills.servers == 0 {
            return Err("drills.servers must be at least 1".into());
        }
        if let Some(c) = &self.drills.cron {
            if c.parse::<croner::Cron>().is_err() {
                return Err(format!("drills.cron {c:?} is not a cron expression"));
            }
        }
        if self.heartbeat_seconds == 0 {
            return Err("heartbeat_seconds must be at least 1".into());
        }
        let dup = |names: Vec<&str>| -> Option<String> {
            names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
                .map(|(_, n)| n.to_string())
        };
        if let Some(n) = dup(self.lpars.iter().map(|l| l.name.as_str()).collect()) {
            return Err(format!("lpar {n:?} is named twice"));
        }
        if let Some(n) = dup(self
            .control_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect())
        {
            return Err(format!("control group {n:?} is named twice"));
        }
        if let Some(n) = dup(self
            .media_policies
            .iter()
            .map(|g| g.name.as_str())
            .collect())
        {
            return Err(format!("media policy {n:?} is named twice"));
        }
        if let Some(n) = dup(self.move_policies.iter().map(|g| g.name.as_str()).collect()) {
            return Err(format!("move policy {n:?} is named twice"));
        }
        if let Some(n) = dup(self.locations.iter().map(|l| l.name.as_str()).collect()) {
            return Err(format!("location {n:?} is named twice"));
        }
        if let Some(n) = dup(self.operators.iter().map(|o| o.name.as_str()).collect()) {
            return Err(format!("operator {n:?} is named twice"));
        }
        for o in &self.operators {
            if o.cn.is_none() && o.fingerprint.is_none() {
                return Err(format!(
                    "operator {}: give its certificate's cn or fingerprint",
                    o.name
                ));
            }
            if let Some(cn) = &o.cn {
                if self.lpars.iter().any(|l| &l.name == cn) {
                    return Err(format!(
                        "operator {}: cn {cn:?} is an LPAR's name (an agent's certificate); a console certificate must not be an agent's",
                        o.name
                    ));
                }
            }
            if let Some(f) = &o.fingerprint {
                if crate::access::normalize_fingerprint(f).len() != 64 {
                    return Err(format!(
                        "operator {}: fingerprint {f:?} is not a SHA-256 (64 hex digits)",
                        o.name
                    ));
                }
            }
            if o.roles.is_empty() {
                return Err(format!("operator {}: no roles", o.name));
            }
        }
        for g in &self.control_groups {
            if g.pre.iter().chain(&g.post).any(|c| c.trim().is_empty()) {
                return Err(format!("control group {}: an exit step is empty", g.name));
            }
        }
        for l in &self.lpars {
            if l.watches.iter().any(|w| w.command.trim().is_empty()) {
                return Err(format!("lpar {}: a watch's command is empty", l.name));
            }
        }
        let Some(n) = &self.night else { return Ok(()) };
        let empty = |what: &str, c: &Option<String>| match c {
            Some(c) if c.trim().is_empty() => Err(format!("night.{what} is empty")),
            _ => Ok(()),
        };
        empty("close_probe", &n.close_probe)?;
        empty("quiesce_probe", &n.quiesce_probe)?;
        empty("force_signoff", &n.force_signoff)?;
        if !self.lpars.iter().any(|l| l.role == "production") {
            return Err("[night] needs an LPAR with role = \"production\"".into());
        }
        if let Some(c) = &n.contingency {
            for (what, cmd) in [
                ("replication_probe", &c.replication_probe),
                ("suspend", &c.suspend),
                ("resume", &c.resume),
            ] {
                if cmd.trim().is_empty() {
                    return Err(format!("night.contingency.{what} is empty"));
                }
            }
            if c.save_attempts == 0 {
                return Err("night.contingency.save_attempts must be at least 1".into());
            }
            if !self.lpars.iter().any(|l| l.role == "contingency") {
                return Err(
                    "[night.contingency] is configured but no LPAR has role = \"contingency\""
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The command that saves IBM i library `lib` on `lpar` (its save file on standard output).
    /// The command restoring library `lib` as `to` on `lpar` from a save
    /// file on standard input.
    pub fn restore_library_command(&self, lpar: &str, lib: &str, to: &str) -> String {
        self.on_lpar(
            lpar,
            &self
                .ibmi
                .restore_library
                .replace("{lib}", lib)
                .replace("{to}", to)
                .replace("{savf}", lib),
        )
    }

    /// The IBM i library that group `group` saved as `source`, if that is a library entry.
    pub fn library_of(&self, group: &str, source: &str) -> Option<String> {
        self.control_group(group)?
            .entries
            .iter()
            .filter_map(|e| e.library.clone())
            .find(|l| saved_library(l, source))
    }

    pub fn save_library_command(&self, lpar: &str, lib: &str) -> String {
        let l = self.lpars.iter().find(|l| l.name == lpar);
        let template = l
            .and_then(|l| l.save_library.as_deref())
            .unwrap_or(&self.ibmi.save_library);
        self.on_lpar(lpar, &template.replace("{lib}", lib).replace("{savf}", lib))
    }

    /// A command (probe, hook, exit step, library save) as the agent of
    /// `lpar` runs it: `{lpar}` filled in, and through `ssh` when the LPAR
    /// has it, so a probe of "production" reaches whichever LPAR holds the
    /// role tonight.
    pub fn on_lpar(&self, lpar: &str, command: &str) -> String {
        let filled = command.replace("{lpar}", lpar);
        match self
            .lpars
            .iter()
            .find(|l| l.name == lpar)
            .and_then(|l| l.ssh.as_deref())
        {
            Some(ssh) => format!("ssh -o BatchMode=yes {ssh} {}", shell_quote(&filled)),
            None => filled,
        }
    }

    /// The configured time zone.
    pub fn tz(&self) -> std::result::Result<chrono_tz::Tz, String> {
        self.time_zone
            .parse()
            .map_err(|_| format!("time_zone {:?} is not an IANA time zone", self.time_zone))
    }

    pub fn media_policy(&self, name: &str) -> Option<&MediaPolicy> {
        self.media_policies.iter().find(|p| p.name == name)
    }

    pub fn move_policy(&self, name: &str) -> Option<&MovePolicy> {
        self.move_policies.iter().find(|p| p.name == name)
    }

    /// Seconds bringing a cartridge back from `location` takes (an
    /// emergency recall when `urgent`); a location not described: a day.
    pub fn recall_seconds(&self, location: &str, urgent: bool) -> i64 {
        let hours = self.locations.iter().find(|l| l.name == location).map_or(
            default_recall_hours(),
            |l| {
                if urgent {
                    l.emergency_recall_hours
                } else {
                    l.recall_hours
                }
            },
        );
        i64::from(hours) * 3600
    }

    pub fn control_group(&self, name: &str) -> Option<&ControlGroup> {
        self.control_groups.iter().find(|g| g.name == name)
    }

    /// The data class of what group `group` saved from `source` (its
    /// entry's, else the group's), if any.
    pub fn data_class_of(&self, group: &str, source: &str) -> Option<String> {
        let g = self.control_group(group)?;
        let source = source.trim_end_matches('/');
        let entry = g.entries.iter().find(|e| {
            e.path
                .as_deref()
                .is_some_and(|p| p.trim_end_matches('/') == source)
                || e.library
                    .as_deref()
                    .is_some_and(|l| saved_library(l, source))
        });
        entry
            .and_then(|e| e.data_class.clone())
            .or_else(|| g.data_class.clone())
    }

    /// The LPAR a target names now: itself, or the first LPAR holding that
    /// role, with `roles` (LPAR, role) overriding the configured ones.
    pub fn resolve(&self, target: &str, roles: &[(String, String)]) -> Option<String> {
        if let Some(l) = self.lpars.iter().find(|l| l.name == target) {
            return Some(l.name.clone());
        }
        self.lpars
            .iter()
            .find(|l| self.role_of(&l.name, roles).as_deref() == Some(target))
            .map(|l| l.name.clone())
    }

    /// An LPAR's role now: the switched one if any, else the configured one.
    pub fn role_of(&self, lpar: &str, roles: &[(String, String)]) -> Option<String> {
        roles
            .iter()
            .find(|(l, _)| l == lpar)
            .map(|(_, r)| r.clone())
            .or_else(|| {
                self.lpars
                    .iter()
                    .find(|l| l.name == lpar)
                    .map(|l| l.role.clone())
            })
    }
}

/// Whether a save set's source is library `lib`'s save file (a
/// standard-input save: "stdin:LIB.SAVF").
fn saved_library(lib: &str, source: &str) -> bool {
    let name = format!("{lib}.SAVF");
    source == name || source.strip_prefix("stdin:") == Some(name.as_str())
}

/// An IBM i library name as SAVLIB takes it: 1-10 characters, upper case
/// letters, digits, $ # @ _ and ., not starting with a digit, _ or ..
pub fn check_library_name(l: &str) -> std::result::Result<(), String> {
    if l.starts_with('*') {
        return Err("special values are not saved to one save file; name the libraries".into());
    }
    let ok_first = |c: char| c.is_ascii_uppercase() || "$#@".contains(c);
    let ok = |c: char| ok_first(c) || c.is_ascii_digit() || "_.".contains(c);
    match l.chars().next() {
        None => Err("empty".into()),
        Some(_) if l.len() > 10 => Err("longer than 10 characters".into()),
        Some(c) if !ok_first(c) => {
            Err("must start with A-Z, $, # or @ (IBM i names are upper case)".into())
        }
        Some(_) if !l.chars().all(ok) => {
            Err("only A-Z, 0-9, $ # @ _ . (IBM i names are upper case)".into())
        }
        Some(_) => Ok(()),
    }
}

/// `s` as one word for sh (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_targets_resolve_by_role() {
        let c = Config::parse(
            include_str!("../../deploy/controller.toml"),
            Path::new("/etc/cinta/controller.toml"),
        )
        .unwrap();
        let g = c.control_group("NIGHTLY").unwrap();
        assert_eq!(c.resolve(&g.target, &[]).unwrap(), "PROD1");
        let p = c.media_policy("DAILY-30").unwrap();
        assert_eq!(
            (p.copies, p.copy_move_policy.as_deref()),
            (2, Some("OFFSITE"))
        );
        let switched = [
            ("CONT1".to_string(), "production".to_string()),
            ("PROD1".to_string(), "contingency".to_string()),
        ];
        assert_eq!(c.resolve(&g.target, &switched).unwrap(), "CONT1");
        assert_eq!(c.lpars[0].ssh.as_deref(), Some("cinta@prod1"));
        assert_eq!(c.lpars[0].watches[0].name, "subsystem QINTER");
        // Commands go to the LPAR holding the role, through its ssh.
        assert_eq!(
            c.on_lpar("CONT1", "system \"STRDG DGDFN(PAYROLL)\" # {lpar}"),
            "ssh -o BatchMode=yes cinta@cont1 'system \"STRDG DGDFN(PAYROLL)\" # CONT1'"
        );
        let cmd = c.save_library_command("PROD1", "PAYROLL");
        assert!(
            cmd.starts_with(
                "ssh -o BatchMode=yes cinta@prod1 'system \"CRTSAVF FILE(CINTA/PAYROLL)\""
            ),
            "{cmd}"
        );
        assert!(cmd.contains("SAVLIB LIB(PAYROLL) DEV(*SAVF)"), "{cmd}");
        for (bad, why) in [
            ("payroll", "upper case"),
            ("*ALLUSR", "special values"),
            ("ABCDEFGHIJK", "10"),
            ("1LIB", "start"),
        ] {
            assert!(check_library_name(bad).unwrap_err().contains(why), "{bad}");
        }
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(c.move_policy("OFFSITE").unwrap().steps[0].days, 28);
        let pg = Config::parse(
            "catalog = \"postgresql://cinta@db/cinta\"\n[catalog_tls]\nca = \"db-ca.pem\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n",
            Path::new("/etc/cinta/controller.toml"),
        )
        .unwrap();
        assert_eq!(pg.catalog, Path::new("postgresql://cinta@db/cinta"));
        assert_eq!(
            pg.catalog_tls.unwrap().ca,
            Path::new("/etc/cinta/db-ca.pem")
        );
        let base = "catalog = \"c\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n";
        for (extra, why) in [
            ("[[media_policy]]\nname = \"M\"\nmove_policy = \"NOPE\"\n", "no move policy \"NOPE\""),
            ("[[move_policy]]\nname = \"P\"\n[[move_policy.step]]\nlocation = \"VAULT\"\ndays = 0\n", "days of at least 1"),
            ("[[move_policy]]\nname = \"P\"\nstep = []\n", "no [[move_policy.step]]"),
            ("[catalog_tls]\nca = \"x\"\n", "catalog_tls is for a PostgreSQL catalog"),
            ("[[media_policy]]\nname = \"M\"\ncopies = 2\nmedia_class = \"A\"\n", "needs media_class (the originals' cartridges) and copy_media_class"),
            ("[[media_policy]]\nname = \"M\"\ncopies = 2\nmedia_class = \"A\"\ncopy_media_class = \"A\"\n", "two different classes"),
            ("[[media_policy]]\nname = \"M\"\ncopies = 5\n", "1 (the original only) to 4"),
            ("[[media_policy]]\nname = \"M\"\ncopies = 2\nmedia_class = \"A\"\ncopy_media_class = \"B\"\ncopy_schedule = \"at dawn\"\n", "copy_schedule: cron \"at dawn\""),
            ("[[media_policy]]\nname = \"M\"\ncopy_move_policy = \"X\"\n", "need copies = 2 or more"),
            ("[[media_policy]]\nname = \"M\"\ncopies = 2\nmedia_class = \"A\"\ncopy_media_class = \"B\"\ncopy_move_policy = \"NOPE\"\n", "no move policy \"NOPE\""),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(Config::parse(
            "catalog = \"c\"\ncolour = 1\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"",
            Path::new("x")
        )
        .is_err());
    }

    #[test]
    fn what_would_fail_at_night_is_refused_at_start_by_name() {
        let tls = "[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n";
        let prod = "[[lpar]]\nname = \"PROD1\"\nrole = \"production\"\n";
        let group = "[[control_group]]\nname = \"G\"\ntarget = \"production\"\n[[control_group.entry]]\npath = \"/d\"\n";
        let night = "[night]\npre_close = \"G\"\npre_close_at = \"30 20 * * *\"\npost_close = \"G\"\ndeadline = \"0 23 * * *\"\n";
        let cont =
            "[night.contingency]\nreplication_probe = \"r\"\nsuspend = \"s\"\nresume = \"x\"\n";
        let op = |extra: &str| format!("[[operator]]\nname = \"ana\"\n{extra}");
        for (top, rest, why) in [
            ("heartbeat_seconds = 0\n", String::new(), "heartbeat_seconds must be at least 1"),
            ("", format!("{prod}{prod}"), "lpar \"PROD1\" is named twice"),
            ("", format!("{prod}{group}{group}"), "control group \"G\" is named twice"),
            ("", format!("{prod}{group}{night}{cont}"), "no LPAR has role = \"contingency\""),
            ("", format!("{prod}{group}{night}close_probe = \" \"\n"), "night.close_probe is empty"),
            ("", format!("{prod}{group}{night}{}", cont.replace("\"s\"", "\"\"")), "night.contingency.suspend is empty"),
            ("", format!("{prod}[[control_group]]\nname = \"H\"\ntarget = \"PROD1\"\npre = [\"\"]\n[[control_group.entry]]\npath = \"/d\"\n"), "control group H: an exit step is empty"),
            ("", format!("{prod}{}", op("cn = \"PROD1\"\nroles = [\"viewer\"]\n")), "cn \"PROD1\" is an LPAR's name"),
            ("", op("roles = [\"viewer\"]\n"), "give its certificate's cn or fingerprint"),
            ("", op("fingerprint = \"ab:cd\"\nroles = [\"viewer\"]\n"), "is not a SHA-256"),
            ("", op("cn = \"ana\"\nroles = []\n"), "operator ana: no roles"),
            ("", op("cn = \"ana\"\nroles = [\"root\"]\n"), "unknown variant `root`"),
        ] {
            let text = format!("catalog = \"c\"\n{top}{tls}{rest}");
            let e = Config::parse(&text, Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(why), "{why:?}: {e}");
        }
        let ok = format!("catalog = \"c\"\n{tls}{prod}[[lpar]]\nname = \"CONT1\"\nrole = \"contingency\"\n{group}{night}{cont}{}", op("cn = \"ana\"\nroles = [\"operator\", \"approver\"]\n"));
        let c = Config::parse(&ok, Path::new("x")).unwrap();
        assert_eq!(c.night.unwrap().contingency.unwrap().save_attempts, 2);
        assert_eq!(c.operators[0].roles.len(), 2);
    }
}
