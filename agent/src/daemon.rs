//! `cinta-agent serve`: the agent's session with the controller: register, heartbeat, take assigned jobs exactly once, run them, report.
//!
//! Async lives here only. A job's saves run as child processes of this
//! binary (`cinta-agent save ... --json`, one per control-group entry), so a
//! save that fails or crashes never takes the session down, and the child
//! dies with the agent (PR_SET_PDEATHSIG). The controller offers a job until
//! this session accepts it and never again, so a reconnect does not run a
//! job twice; if the agent dies mid-job, its next registration fails the job
//! and no save set of it is in the catalog (saves record only when complete).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cinta_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::error::{Error, Result};
use crate::wire;

/// `cinta-agent serve --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This LPAR's name (the CN of `cert`).
    pub name: String,
    /// host:port of cinta-controller.
    pub controller: String,
    /// Name to check the controller's certificate against (default: the host of `controller`).
    pub server_name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Key source for saves: a key file, or a KMIP configuration (one of the two).
    pub key_file: Option<PathBuf>,
    pub kmip: Option<PathBuf>,
    #[serde(rename = "library")]
    pub libraries: Vec<LibraryRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryRef {
    pub name: String,
    pub path: PathBuf,
}

fn bad(path: &Path, m: impl std::fmt::Display) -> Error {
    Error::Key {
        key_id: String::new(),
        reason: format!("{}: {m}", path.display()),
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let mut c: AgentConfig = toml::from_str(&text).map_err(|e| bad(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut c.cert);
        fix(&mut c.key);
        fix(&mut c.ca);
        if let Some(p) = c.key_file.as_mut() {
            fix(p);
        }
        if let Some(p) = c.kmip.as_mut() {
            fix(p);
        }
        for l in &mut c.libraries {
            fix(&mut l.path);
        }
        if c.key_file.is_some() == c.kmip.is_some() {
            return Err(bad(path, "give exactly one of key_file and kmip"));
        }
        if c.libraries.is_empty() {
            return Err(bad(path, "no [[library]]"));
        }
        Ok(c)
    }
}

async fn channel(c: &AgentConfig) -> std::result::Result<Channel, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    let host = c.server_name.clone().unwrap_or_else(|| {
        c.controller
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default()
    });
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&c.ca)?))
        .identity(Identity::from_pem(read(&c.cert)?, read(&c.key)?))
        .domain_name(host);
    Channel::from_shared(format!("https://{}", c.controller))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect to {}: {e}", c.controller))
}

/// Runs the agent's session until the process is stopped; reconnects with backoff.
pub async fn run(c: AgentConfig) -> Result<()> {
    let mut wait = Duration::from_millis(200);
    // A job's result the controller did not take (it was away): delivered first next time.
    let mut pending: Option<pb::JobResult> = None;
    loop {
        match session(&c, &mut pending).await {
            Ok(()) => wait = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "controller session ended");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn inventory(c: &AgentConfig) -> pb::Inventory {
    let libraries = c
        .libraries
        .iter()
        .map(|l| {
            let (drives, slots, scratch) = crate::vtl::Library::open(&l.path)
                .and_then(|lib| {
                    let carts = lib.list()?;
                    let scratch = carts
                        .iter()
                        .filter(|v| v.record.state == crate::vtl::state::CartState::Scratch)
                        .count() as u32;
                    Ok((lib.config().drives, lib.config().slots, scratch))
                })
                .unwrap_or((0, 0, 0));
            pb::Library {
                name: l.name.clone(),
                drives,
                slots,
                scratch,
            }
        })
        .collect();
    pb::Inventory {
        name: c.name.clone(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        role: String::new(),
        libraries,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

async fn session(
    c: &AgentConfig,
    pending: &mut Option<pb::JobResult>,
) -> std::result::Result<(), String> {
    let ch = channel(c).await?;
    let mut client = AgentServiceClient::new(ch);
    // Before registering (which would fail the jobs of the last session):
    // the result of a job that ended while the controller was away, under
    // the session that ran it. Its save sets are on tape either way.
    if let Some(r) = pending.take() {
        match client.finish_job(r.clone()).await {
            Ok(_) => {
                tracing::info!(job = %r.job_id, "delivered the result of a job that ended while the controller was away")
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                tracing::warn!(job = %r.job_id, reason = %s.message(), "the controller no longer takes this job's result")
            }
            Err(s) => {
                *pending = Some(r);
                return Err(format!("deliver a job's result: {}", s.message()));
            }
        }
    }
    let reg = client
        .register(pb::RegisterRequest {
            inventory: Some(inventory(c)),
        })
        .await
        .map_err(|s| format!("register: {}", s.message()))?
        .into_inner();
    let session = reg.session_id.clone();
    tracing::info!(session = %session, "registered with the controller");
    // Watches on their own tasks; heartbeats carry their last results.
    let watched = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let watchers: Vec<_> = reg
        .watches
        .iter()
        .map(|w| tokio::spawn(watch(w.clone(), watched.clone())))
        .collect();
    let hb_watched = watched.clone();
    // Heartbeats on their own task.
    let mut hb = client.clone();
    let hb_session = session.clone();
    let every = Duration::from_secs(u64::from(reg.heartbeat_seconds.max(1)));
    let mut beat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let usage = disk_usage();
            let watched = hb_watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            if let Err(s) = hb
                .heartbeat(pb::HeartbeatRequest {
                    session_id: hb_session.clone(),
                    usage,
                    watched,
                })
                .await
            {
                return format!("heartbeat: {}", s.message());
            }
        }
    });
    let mut stream = client
        .assignments(pb::AssignmentsRequest {
            session_id: session.clone(),
        })
        .await
        .map_err(|s| format!("assignments: {}", s.message()))?
        .into_inner();
    let r = loop {
        tokio::select! {
            hb = &mut beat => break Err(hb.unwrap_or_else(|e| e.to_string())),
            m = stream.message() => match m {
                Ok(Some(job)) => {
                    let ok = client
                        .accept_job(pb::AcceptJobRequest { session_id: session.clone(), job_id: job.job_id.clone() })
                        .await
                        .map_err(|s| format!("accept: {}", s.message()))?
                        .into_inner();
                    if !ok.ok {
                        tracing::info!(job = %job.job_id, reason = %ok.reason, "job not taken");
                        continue;
                    }
                    let result = run_job(c, &mut client, &session, job).await;
                    if let Err(s) = client.finish_job(result.clone()).await {
                        *pending = Some(result);
                        break Err(format!("finish: {}", s.message()));
                    }
                }
                Ok(None) => break Err("the controller closed the assignment stream".to_string()),
                Err(s) => break Err(format!("assignments: {}", s.message())),
            },
        }
    };
    beat.abort();
    for w in watchers {
        w.abort();
    }
    r
}

/// Runs a watch's command every `every_seconds` (killed if it takes longer)
/// and keeps its last result in `into`.
async fn watch(
    w: pb::Watch,
    into: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, pb::WatchStatus>>>,
) {
    let every = Duration::from_secs(u64::from(w.every_seconds.max(1)));
    loop {
        let mut c = child("/bin/sh");
        c.args(["-c", &w.command]);
        let (ok, detail) =
            match tokio::time::timeout(every.max(Duration::from_secs(5)), c.output()).await {
                Err(_) => (
                    false,
                    format!(
                        "no answer within {}s",
                        every.max(Duration::from_secs(5)).as_secs()
                    ),
                ),
                Ok(Err(e)) => (false, format!("cannot run: {e}")),
                Ok(Ok(o)) => {
                    let first = |b: &[u8]| {
                        String::from_utf8_lossy(b)
                            .lines()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .chars()
                            .take(200)
                            .collect::<String>()
                    };
                    let mut d = first(&o.stdout);
                    if d.is_empty() {
                        d = first(&o.stderr);
                    }
                    if !o.status.success() && d.is_empty() {
                        d = o.status.to_string();
                    }
                    (o.status.success(), d)
                }
            };
        into.lock().unwrap_or_else(|p| p.into_inner()).insert(
            w.name.clone(),
            pb::WatchStatus {
                name: w.name.clone(),
                ok,
                detail,
            },
        );
        tokio::time::sleep(every).await;
    }
}

/// File-system usage of the library directories (what an ASP threshold watches on IBM i).
fn disk_usage() -> Vec<pb::Usage> {
    match nix::sys::statvfs::statvfs("/") {
        Ok(s) if s.blocks() > 0 => vec![pb::Usage {
            what: "/".into(),
            percent_used: 100.0 * (1.0 - s.blocks_available() as f64 / s.blocks() as f64),
        }],
        _ => vec![],
    }
}

/// Runs one exit step (`sh -c`), killed after `timeout`; Err says why it failed.
async fn step(
    cmd: &str,
    job: &pb::JobAssignment,
    timeout: Duration,
) -> std::result::Result<String, String> {
    use std::process::Stdio;
    let mut c = job_shell(cmd, job);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let group = KillGroup::of(&child);
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("still running after {}s; killed", timeout.as_secs()))?
        .map_err(|e| format!("cannot wait for it: {e}"))?;
    group.ended();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{} {}", out.status, tail(&err, 300)))
    }
}

/// Kills a supervised command's process group when dropped, unless the
/// command ended by itself (`ended`): a step past its time limit, a library
/// save the save stopped taking, a job given up.
struct KillGroup(Option<u32>);

impl KillGroup {
    fn of(c: &tokio::process::Child) -> KillGroup {
        KillGroup(c.id())
    }

    fn ended(mut self) {
        self.0 = None;
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) of the group the supervisor leads
            // (process_group(0)), which is this agent's child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// A child process that dies with the agent (dropped or killed with it).
fn child(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.kill_on_drop(true);
    die_with_parent(&mut c);
    c
}

/// This agent's own binary as a child (save, ls, expire, library commands).
fn this_program() -> std::result::Result<tokio::process::Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    Ok(child(exe))
}

/// `sh -c cmd` for a job (an exit step, a library save), with the job in
/// its environment, under this program's supervisor: the shell and all it
/// starts (ssh, SAVLIB) are killed when the agent goes away.
fn job_shell(cmd: &str, job: &pb::JobAssignment) -> tokio::process::Command {
    let mut c = match std::env::current_exe() {
        Ok(exe) => {
            let mut c = child(exe);
            c.arg("supervise")
                .arg("--parent")
                .arg(std::process::id().to_string())
                .arg("--")
                .arg("/bin/sh")
                .process_group(0);
            c
        }
        Err(_) => child("/bin/sh"),
    };
    c.args(["-c", cmd])
        .env("CINTA_JOB_ID", &job.job_id)
        .env("CINTA_CONTROL_GROUP", &job.control_group);
    c
}

/// This agent's key source as `save`/`ls` arguments.
fn key_args(c: &AgentConfig, cmd: &mut tokio::process::Command) {
    match (&c.key_file, &c.kmip) {
        (Some(f), _) => cmd.arg("--key-file").arg(f),
        (_, Some(k)) => cmd.arg("--kmip").arg(k),
        _ => unreachable!("checked at load"),
    };
}

fn die_with_parent(c: &mut tokio::process::Command) {
    // SAFETY: prctl in the child between fork and exec, async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// What a job is doing now, sent to the controller at most once a second.
#[derive(Debug, Clone, Default, PartialEq)]
struct Live {
    entries_done: u32,
    entries_total: u32,
    /// The entry being saved.
    current: String,
    /// Bytes read so far, finished entries included.
    bytes: u64,
    /// Bytes expected in all (finished entries, plus the current one's estimate).
    bytes_total: u64,
    objects: u64,
}

/// Objects per message to the controller.
const OBJECT_BATCH: usize = 1000;

/// Where the controller stands with the objects of one save set.
struct Indexing {
    tx: tokio::sync::mpsc::Sender<pb::ObjectBatch>,
    send: tokio::task::JoinHandle<std::result::Result<(), String>>,
    batch: Vec<pb::ObjectInfo>,
    save_set: String,
}

/// Saves one entry as a save set with one child, `cinta-agent save
/// --wire`: its progress goes into `live` as it runs; once the save set is
/// recorded, the objects it reads back from its index go to the
/// controller's catalog in batches (one batch in memory, whatever the
/// count). Ok: the save set, and a note when its objects could not all be
/// indexed (the save set stands without them).
async fn save_entry(
    c: &AgentConfig,
    lib: &LibraryRef,
    job: &pb::JobAssignment,
    e: &pb::SaveEntry,
    live: &tokio::sync::watch::Sender<Live>,
    client: &AgentServiceClient<Channel>,
    session: &str,
) -> std::result::Result<(pb::SaveSetResult, Option<String>), String> {
    use std::process::Stdio;
    let mut cmd = this_program()?;
    cmd.arg("save").arg(&lib.path);
    key_args(c, &mut cmd);
    let producer = (!e.command.is_empty()).then_some(e.command.as_str());
    if producer.is_none() {
        cmd.args(["--source", &e.path, "--level", &job.level]);
    } else {
        // A library's save file: always whole (SAVLIB).
        let name = format!("{}.SAVF", e.library);
        cmd.args(["--stdin", &name, "--level", "full"]);
    }
    cmd.args(["--append", "--wire"]);
    if !job.media_class.is_empty() {
        cmd.args(["--media-class", &job.media_class]);
    }
    for g in &e.include {
        cmd.args(["--include", g]);
    }
    for g in &e.exclude {
        cmd.args(["--exclude", g]);
    }
    if job.compress {
        cmd.arg("--compress");
    }
    cmd.stdin(if producer.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut saver = cmd
        .spawn()
        .map_err(|err| format!("cannot start the save: {err}"))?;
    let stdout = saver.stdout.take().expect("piped");
    let (base, base_total) = {
        let l = live.borrow();
        (l.bytes, l.bytes_total)
    };
    let live_tx = live.clone();
    let (client, session, job_id) = (client.clone(), session.to_string(), job.job_id.clone());
    let out_task = tokio::spawn(async move {
        read_wire(
            stdout,
            &live_tx,
            (base, base_total),
            client,
            &session,
            &job_id,
        )
        .await
    });
    let mut stderr = saver.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut v = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut v).await;
        String::from_utf8_lossy(&v).into_owned()
    });
    if let Some(producer) = producer {
        let mut to = saver.stdin.take().expect("piped");
        let fed = feed(producer, job, &mut to).await;
        if let Err(why) = fed {
            // Killed before the end of its input: the save never completes, records nothing.
            let _ = saver.start_kill();
            let _ = saver.wait().await;
            drop(to);
            let said = err_task.await.unwrap_or_default();
            return Err(if said.trim().is_empty() {
                why
            } else {
                format!("{why}; the save: {}", tail(&said, 300))
            });
        }
        drop(to); // the end of the save file
    }
    let (saved, indexed) = out_task
        .await
        .map_err(|err| format!("the save's reader: {err}"))?;
    let status = saver
        .wait()
        .await
        .map_err(|err| format!("the save: {err}"))?;
    let said = err_task.await.unwrap_or_default();
    let Some(r) = saved else {
        return Err(match indexed {
            Err(m) if said.trim().is_empty() => m,
            _ if said.trim().is_empty() => format!("the save ended ({status}) without a save set"),
            _ => tail(&said, 600),
        });
    };
    // The save set is recorded; what follows is the catalog's object search.
    let note = match indexed {
        Err(m) => Some(m),
        Ok(_) if !status.success() => {
            Some(format!("the index read back failed: {}", tail(&said, 300)))
        }
        Ok(_) => None,
    };
    Ok((
        pb::SaveSetResult {
            id: r.save_set,
            source: r.source,
            key_id: r.key_id,
            volumes: r.volumes,
            objects: r.objects,
            bytes: r.bytes,
            warnings: r.warnings,
            changed: r.changed,
            changed_count: r.changed_count,
        },
        note,
    ))
}

/// Reads a save child's wire lines: progress into `live`; the save set
/// made; its objects, batched to the controller as they come. Returns the
/// save set (None: none was made) and how its objects were indexed.
async fn read_wire(
    stdout: tokio::process::ChildStdout,
    live: &tokio::sync::watch::Sender<Live>,
    (base, base_total): (u64, u64),
    client: AgentServiceClient<Channel>,
    session: &str,
    job_id: &str,
) -> (Option<wire::Saved>, std::result::Result<u64, String>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut saved: Option<wire::Saved> = None;
    let mut indexing: Option<Indexing> = None;
    let mut count: Option<u64> = None;
    let batch = |save_set: &str, objects: Vec<pb::ObjectInfo>| pb::ObjectBatch {
        session_id: session.to_string(),
        job_id: job_id.to_string(),
        save_set: save_set.to_string(),
        objects,
    };
    let mut refused = false;
    while let Ok(Some(l)) = lines.next_line().await {
        let line = match wire::Line::decode(&l) {
            Ok(x) => x,
            Err(m) => return (saved, Err(m)),
        };
        match line {
            wire::Line::Progress {
                bytes,
                objects,
                total,
            } => live.send_modify(|v| {
                v.bytes = base + bytes;
                // A size not known (a save file) stays unknown: 0.
                v.bytes_total = if total == 0 {
                    0
                } else {
                    base_total + total.max(bytes)
                };
                v.objects = objects;
            }),
            wire::Line::Saved(s) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<pb::ObjectBatch>(2);
                let mut sender = client.clone();
                let send = tokio::spawn(async move {
                    sender
                        .report_objects(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                        .map(|_| ())
                        .map_err(|s| s.message().to_string())
                });
                indexing = Some(Indexing {
                    tx,
                    send,
                    batch: Vec::with_capacity(OBJECT_BATCH),
                    save_set: s.save_set.clone(),
                });
                saved = Some(s);
            }
            wire::Line::Object(o) => {
                let Some(ix) = indexing.as_mut() else {
                    return (saved, Err("an object before its save set".into()));
                };
                ix.batch.push(pb::ObjectInfo {
                    path: o.path,
                    kind: o.kind,
                    size: o.size,
                    mtime: o.mtime,
                });
                if ix.batch.len() == OBJECT_BATCH {
                    let full = std::mem::replace(&mut ix.batch, Vec::with_capacity(OBJECT_BATCH));
                    if ix.tx.send(batch(&ix.save_set, full)).await.is_err() {
                        // The controller refused part-way: stop reading, so
                        // the child ends instead of blocking on a full pipe.
                        refused = true;
                        break;
                    }
                }
            }
            wire::Line::Indexed { objects } => count = Some(objects),
        }
    }
    drop(lines);
    let Some(ix) = indexing else {
        return (saved, Err("the save made no save set".into()));
    };
    if !refused && !ix.batch.is_empty() {
        let _ = ix.tx.send(batch(&ix.save_set, ix.batch)).await;
    }
    drop(ix.tx);
    let sent = ix.send.await.map_err(|e| e.to_string()).and_then(|r| r);
    let id = saved
        .as_ref()
        .map(|s| s.save_set.clone())
        .unwrap_or_default();
    // The controller's refusal is the cause when both failed.
    let indexed = match (sent, count) {
        (Err(m), _) => Err(format!("objects of {id} not indexed in the catalog ({m})")),
        (Ok(()), None) => Err(format!(
            "objects of {id} not all indexed in the catalog (the index read back stopped)"
        )),
        (Ok(()), Some(n)) => Ok(n),
    };
    (saved, indexed)
}

/// Copies the standard output of `producer` (`sh -c`) into `to`, the input
/// of a `--stdin` save. Ok only once the producer has exited 0; on Err the
/// caller kills the save before closing `to`, so the save never sees the
/// end of its input and no save set of a half-written save file is recorded.
async fn feed(
    producer: &str,
    job: &pb::JobAssignment,
    to: &mut tokio::process::ChildStdin,
) -> std::result::Result<(), String> {
    use std::process::Stdio;
    let mut p = job_shell(producer, job);
    p.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = p
        .spawn()
        .map_err(|e| format!("cannot start {producer:?}: {e}"))?;
    // Dropped before the command ended (an error, the job given up): its whole group is killed.
    let group = KillGroup::of(&child);
    let mut from = child.stdout.take().expect("piped");
    let mut perr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut v = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut perr, &mut v).await;
        v
    });
    if let Err(e) = tokio::io::copy(&mut from, to).await {
        drop(group);
        let _ = child.wait().await;
        return Err(format!("the save stopped taking the data ({e})"));
    }
    let status = child.wait().await;
    group.ended();
    let stderr = err_task.await.unwrap_or_default();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "the library save command failed ({s}): {}",
            tail(&String::from_utf8_lossy(&stderr), 400)
        )),
        Err(e) => Err(format!("the library save command: {e}")),
    }
}

/// The last `n` characters of `s`, trimmed.
fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let start = s.char_indices().rev().nth(n).map_or(0, |(i, _)| i);
    s[start..].to_string()
}

/// Expires a save set (`cinta-agent expire`), destroying its key if asked.
async fn expire_save_set(
    c: &AgentConfig,
    lib: &LibraryRef,
    id: &str,
    shred: bool,
) -> std::result::Result<(), String> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "expire".into(),
        lib.path.clone().into(),
        "--save-set".into(),
        id.into(),
    ];
    if shred {
        let k = c
            .kmip
            .as_ref()
            .ok_or("crypto-shredding needs the KMIP key source; this agent uses a key file")?;
        args.extend(["--shred".into(), "--kmip".into(), k.clone().into()]);
    }
    run_self(&args).await
}

/// Runs this program with `args` (a library or catalog command); Err is what it said.
async fn run_self(args: &[std::ffi::OsString]) -> std::result::Result<(), String> {
    let out = this_program()?
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Sends a job's progress to the controller as it changes, at most once a
/// second; the last change is always sent once `stop` is notified.
fn progress_forwarder(
    client: &AgentServiceClient<Channel>,
    session: &str,
    job: &pb::JobAssignment,
) -> (
    tokio::sync::watch::Sender<Live>,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(Live {
        entries_total: job.entries.len() as u32,
        ..Live::default()
    });
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let mut client = client.clone();
    let (session, job_id) = (session.to_string(), job.job_id.clone());
    let task = tokio::spawn(async move {
        let mut stopping = false;
        while rx.changed().await.is_ok() {
            let l = rx.borrow_and_update().clone();
            let _ = client
                .report_progress(pb::JobProgress {
                    session_id: session.clone(),
                    job_id: job_id.clone(),
                    entries_done: l.entries_done,
                    entries_total: l.entries_total,
                    bytes: l.bytes,
                    bytes_total: l.bytes_total,
                    objects: l.objects,
                    current: l.current,
                })
                .await;
            if !stopping {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopped.notified() => stopping = true,
                }
            }
        }
    });
    (tx, task, stop)
}

/// A job: pre steps, one save per entry (in order), post steps even after a failure.
async fn run_job(
    c: &AgentConfig,
    client: &mut AgentServiceClient<Channel>,
    session: &str,
    job: pb::JobAssignment,
) -> pb::JobResult {
    let mut problems: Vec<String> = Vec::new();
    // Said with a success: what worked but not entirely.
    let mut notes: Vec<String> = Vec::new();
    let mut sets = Vec::new();
    let timeout = Duration::from_secs(u64::from(job.step_timeout_seconds.max(1)));
    tracing::info!(job = %job.job_id, group = %job.control_group, entries = job.entries.len(), "job started");
    let mut output = String::new();
    let lib = c.libraries.iter().find(|l| l.name == job.library);
    let needs_library = !(job.entries.is_empty()
        && job.expire.is_empty()
        && job.eject.is_empty()
        && job.import.is_empty()
        && job.restores.is_empty()
        && job.copy.is_empty());
    if lib.is_none() && needs_library {
        problems.push(format!("this agent has no library named {:?}", job.library));
    }
    let mut go = problems.is_empty();
    for cmd in &job.pre {
        if !go {
            break;
        }
        match step(cmd, &job, timeout).await {
            Ok(o) => output.push_str(&o),
            Err(e) => {
                problems.push(format!("pre step {cmd:?} failed ({e}); saves skipped"));
                go = false;
            }
        }
    }
    if let (true, Some(lib)) = (go && !job.entries.is_empty(), lib) {
        let (live, forwarder, stop) = progress_forwarder(client, session, &job);
        for (i, e) in job.entries.iter().enumerate() {
            live.send_modify(|l| {
                l.current = if e.library.is_empty() {
                    e.path.clone()
                } else {
                    format!("library {}", e.library)
                };
            });
            match save_entry(c, lib, &job, e, &live, client, session).await {
                Ok((r, note)) => {
                    // The catalog's object search; the save set stands without it.
                    if let Some(m) = note {
                        tracing::warn!(save_set = %r.id, error = %m, "objects not indexed in the catalog");
                        notes.push(m);
                    }
                    if r.changed_count > 0 || !r.warnings.is_empty() {
                        notes.push(format!(
                            "save set {}: {} objects changed while saved, {} warnings",
                            r.id,
                            r.changed_count,
                            r.warnings.len()
                        ));
                    }
                    live.send_modify(|l| {
                        let before = l.bytes_total;
                        l.entries_done = i as u32 + 1;
                        l.bytes = sets
                            .iter()
                            .map(|s: &pb::SaveSetResult| s.bytes)
                            .sum::<u64>()
                            + r.bytes;
                        l.bytes_total = before.max(l.bytes);
                        l.current.clear();
                    });
                    sets.push(r);
                }
                Err(m) => {
                    let what = if e.library.is_empty() {
                        &e.path
                    } else {
                        &e.library
                    };
                    problems.push(format!("entry {what}: {m}"));
                    break;
                }
            }
        }
        drop(live);
        stop.notify_one();
        let _ = forwarder.await;
    }
    let mut restores = Vec::new();
    if let (true, Some(lib)) = (go && !job.restores.is_empty(), lib) {
        // Watched like a save: a step per save set restored.
        let (live, forwarder, stop) = progress_forwarder(client, session, &job);
        live.send_modify(|l| l.entries_total = job.restores.len() as u32);
        for (i, r) in job.restores.iter().enumerate() {
            live.send_modify(|l| {
                l.current = format!("restore of save set {}", r.save_set);
                l.entries_done = i as u32;
            });
            let done = if r.command.is_empty() {
                restore_save_set(c, lib, r).await
            } else {
                restore_library(c, lib, r, &job, timeout, &mut output).await
            };
            match done {
                Ok(o) => {
                    if !o.failed.is_empty() || (!o.damaged.is_empty() && o.from_copies.is_empty()) {
                        problems.push(format!(
                            "restore of save set {} into {}: {} objects failed, {} damaged blocks (first: {})",
                            r.save_set,
                            r.to,
                            o.failed.len(),
                            o.damaged.len(),
                            o.failed.first().or(o.damaged.first()).cloned().unwrap_or_default()
                        ));
                    } else {
                        notes.push(format!(
                            "save set {}: {} objects restored into {}, digests verified",
                            r.save_set, o.objects, r.to
                        ));
                        for c in &o.from_copies {
                            notes.push(format!("save set {}: {c}", r.save_set));
                        }
                        if !o.damaged.is_empty() {
                            notes.push(format!(
                                "save set {}: {} damaged blocks on the place read first (first: {})",
                                r.save_set,
                                o.damaged.len(),
                                o.damaged[0]
                            ));
                        }
                    }
                    restores.push(o);
                }
                Err(m) => {
                    problems.push(format!(
                        "restore of save set {} into {}: {m}",
                        r.save_set, r.to
                    ));
                    break;
                }
            }
            live.send_modify(|l| {
                l.entries_done = i as u32 + 1;
                l.bytes = restores.iter().map(|o: &pb::RestoreOutcome| o.bytes).sum();
                l.objects = restores.iter().map(|o| o.objects).sum();
            });
        }
        drop(live);
        stop.notify_one();
        let _ = forwarder.await;
    }
    let mut copies = Vec::new();
    if let (true, Some(lib)) = (go && !job.copy.is_empty(), lib) {
        let (live, forwarder, stop) = progress_forwarder(client, session, &job);
        live.send_modify(|l| l.entries_total = job.copy.len() as u32);
        for (i, id) in job.copy.iter().enumerate() {
            live.send_modify(|l| {
                l.current = format!("copy of save set {id}");
                l.entries_done = i as u32;
            });
            match copy_save_set(lib, id, &job.media_class).await {
                Ok(c) => {
                    if !c.verified {
                        notes.push(format!(
                            "save set {id}: copied without a recorded digest to check against"
                        ));
                    }
                    copies.push(c);
                }
                Err(m) => problems.push(format!("copy of save set {id}: {m}")),
            }
            live.send_modify(|l| {
                l.entries_done = i as u32 + 1;
                l.bytes = copies.iter().map(|c: &pb::CopyOutcome| c.bytes).sum();
            });
        }
        drop(live);
        stop.notify_one();
        let _ = forwarder.await;
    }
    if let (true, Some(lib)) = (go && !job.expire.is_empty(), lib) {
        for id in &job.expire {
            if let Err(m) = expire_save_set(c, lib, id, job.shred).await {
                problems.push(format!("expire {id}: {m}"));
            }
        }
    }
    // Media moves: out through the import/export port, or in from it.
    if let (true, Some(lib)) = (go, lib) {
        for (verb, vols) in [("export", &job.eject), ("import", &job.import)] {
            for v in vols {
                let args = [
                    "library".into(),
                    verb.into(),
                    lib.path.clone().into(),
                    v.into(),
                ];
                match run_self(&args).await {
                    Ok(()) => output.push_str(&format!("{verb} {v}: done\n")),
                    Err(m) => problems.push(format!("{verb} {v}: {m}")),
                }
            }
        }
    }
    for cmd in &job.post {
        match step(cmd, &job, timeout).await {
            Ok(o) => output.push_str(&o),
            Err(e) => problems.push(format!("post step {cmd:?} failed ({e})")),
        }
    }
    // The last 4 KiB of what the steps printed (a probe's answer).
    if output.len() > 4096 {
        let mut cut = output.len() - 4096;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = output[cut..].to_string();
    }
    tracing::info!(job = %job.job_id, save_sets = sets.len(), problems = problems.len(), "job finished");
    let bytes: u64 = sets.iter().map(|s| s.bytes).sum();
    pb::JobResult {
        session_id: session.to_string(),
        ok: problems.is_empty(),
        message: if problems.is_empty() {
            let mut m = format!("{} save sets, {bytes} bytes", sets.len());
            for n in &notes {
                m.push_str("; ");
                m.push_str(n);
            }
            m
        } else {
            problems.join("; ")
        },
        job_id: job.job_id,
        save_sets: sets,
        output,
        restores,
        copies,
    }
}

/// Duplicates a save set (`cinta-agent copy`) and says where the copy went.
async fn copy_save_set(
    lib: &LibraryRef,
    id: &str,
    media_class: &str,
) -> std::result::Result<pb::CopyOutcome, String> {
    let out = this_program()?
        .arg("copy")
        .arg(&lib.path)
        .arg("--save-set")
        .arg(id)
        .arg("--media-class")
        .arg(media_class)
        .arg("--json")
        .output()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the copy's report does not read: {e}"))?;
    let c = &v["copy"];
    Ok(pb::CopyOutcome {
        save_set: c["save_set"].as_str().unwrap_or(id).to_string(),
        copy: c["copy"].as_u64().unwrap_or(0) as u32,
        volumes: c["volumes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        sequence: c["sequence"].as_u64().unwrap_or(0) as u32,
        bytes: c["bytes"].as_u64().unwrap_or(0),
        digest: c["digest"].as_str().unwrap_or_default().to_string(),
        verified: c["verified"].as_bool().unwrap_or(false),
    })
}

/// Restores an IBM i library: its save file out of the save set into a
/// scratch directory (named only once its digest matched), then its bytes
/// into the restore command (RSTLIB through the template) on its LPAR.
async fn restore_library(
    c: &AgentConfig,
    lib: &LibraryRef,
    r: &pb::RestoreItem,
    job: &pb::JobAssignment,
    timeout: Duration,
    output: &mut String,
) -> std::result::Result<pb::RestoreOutcome, String> {
    let [name] = r.select.as_slice() else {
        return Err("a library restore names its one save file".into());
    };
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let item = pb::RestoreItem {
        to: scratch.path().display().to_string(),
        command: String::new(),
        ..r.clone()
    };
    let mut o = restore_save_set(c, lib, &item).await?;
    if !o.failed.is_empty() || (!o.damaged.is_empty() && o.from_copies.is_empty()) {
        return Ok(o);
    }
    let file = std::fs::File::open(scratch.path().join(name))
        .map_err(|e| format!("the restored save file {name}: {e}"))?;
    let mut cmd = job_shell(&r.command, job);
    cmd.stdin(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("the library restore command: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("the library restore command ran past {timeout:?}"))?
        .map_err(|e| format!("the library restore command: {e}"))?;
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!(
            "the library restore command failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 300)
        ));
    }
    o.to = r.command.clone();
    Ok(o)
}

/// Restores objects of a save set (`cinta-agent restore`, the names
/// handed over in a file), and says what came of it. Every object written
/// had its digest checked against the save set's index on the way.
async fn restore_save_set(
    c: &AgentConfig,
    lib: &LibraryRef,
    r: &pb::RestoreItem,
) -> std::result::Result<pb::RestoreOutcome, String> {
    let mut names = tempfile::NamedTempFile::new().map_err(|e| format!("a temporary file: {e}"))?;
    {
        use std::io::Write;
        for s in &r.select {
            writeln!(names, "{s}").map_err(|e| format!("a temporary file: {e}"))?;
        }
    }
    let mut cmd = this_program()?;
    cmd.arg("restore")
        .arg(&lib.path)
        .arg("--save-set")
        .arg(&r.save_set)
        .arg("--to")
        .arg(&r.to)
        .arg("--json")
        .arg("--existing")
        .arg(if r.replace { "replace" } else { "keep" });
    if !r.select.is_empty() {
        cmd.arg("--select-from").arg(names.path());
    }
    key_args(c, &mut cmd);
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    };
    let report = &v["report"];
    let texts = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .map(|i| match i {
                        serde_json::Value::Array(p) => format!(
                            "{}: {}",
                            p.first().and_then(|s| s.as_str()).unwrap_or(""),
                            p.get(1).and_then(|s| s.as_str()).unwrap_or("")
                        ),
                        other => other.as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(pb::RestoreOutcome {
        save_set: r.save_set.clone(),
        to: r.to.clone(),
        objects: report["ok"].as_u64().unwrap_or(0),
        bytes: report["bytes"].as_u64().unwrap_or(0),
        failed: texts(&report["failed"]),
        damaged: texts(&report["damaged"]),
        from_copies: texts(&report["from_copies"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.toml");
        std::fs::write(&p, include_str!("../../deploy/agent.toml")).unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.name, "PROD1");
        assert_eq!(c.libraries[0].name, "default");
        std::fs::write(&p, "name = \"x\"\ncontroller = \"a:1\"\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\n[[library]]\nname = \"d\"\npath = \"l\"\n").unwrap();
        assert!(AgentConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("exactly one of key_file and kmip"));
    }
}
