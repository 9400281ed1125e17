//! The KMIP server: accepts mutual-TLS connections, frames TTLV messages, checks the client's onboarding status, runs batches on the keystore and audits them.
//!
//! A message that cannot be framed (not a structure, a length over the
//! limit) closes its connection; one that frames but does not decode or parse
//! gets a KMIP error response and the connection goes on. Other connections
//! are never affected: each runs on its own task, and only keystore access is
//! shared: one keystore thread owns the SQLite connection and runs the
//! messages queued to it in groups, one transaction (one fsync) per group.

use std::sync::Arc;
use std::time::Duration;

use cinta_kmip::message::{answer_version, Request, Response, ResponseItem, Version};
use cinta_kmip::ttlv::{self, Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::admission::{Gate, Limits, Ticket};
use crate::audit::{Audit, Record};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fault::Reason;
use crate::ops::Batch;
use crate::ops::{self, Caller};
use crate::store::Store;
use crate::tls::Identity;

/// Time allowed for the rest of a message once its header has arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server waits for connections to finish their message.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares: the keystore thread's queue and settings.
pub struct Shared {
    pub keystore: mpsc::Sender<Job>,
    pub trace: bool,
    /// How long an accepted client's connection may stay idle.
    pub idle: Duration,
    /// How long a TLS handshake may take.
    pub handshake: Duration,
    /// How long a connection that is not an accepted client's may stay idle.
    pub waiting_idle: Duration,
    /// Key pair generation running at once (off the keystore thread).
    pub keygen: Arc<tokio::sync::Semaphore>,
}

/// Key pair generations at once: all cores but the keystore thread's.
pub fn keygen_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// The Operation field of a Create Key Pair batch item, as it is encoded:
/// a message holding it has its key pairs made before the keystore sees it.
const CREATE_KEY_PAIR_OPERATION: [u8; 16] =
    [0x42, 0x00, 0x5C, 0x05, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0];

/// Makes the key pairs a message asks for (RSA generation takes up to
/// seconds) on a blocking thread, a few messages at a time.
async fn pregenerate(shared: &Shared, msg: &[u8]) -> ops::Pregenerated {
    if !msg
        .windows(CREATE_KEY_PAIR_OPERATION.len())
        .any(|w| w == CREATE_KEY_PAIR_OPERATION)
    {
        return ops::Pregenerated::default();
    }
    let Ok(req) = Item::decode(msg)
        .map_err(|_| ())
        .and_then(|i| Request::parse(&i).map_err(|_| ()))
    else {
        return ops::Pregenerated::default();
    };
    let Ok(_slot) = shared.keygen.acquire().await else {
        return ops::Pregenerated::default();
    };
    tokio::task::spawn_blocking(move || ops::pregenerate(&req))
        .await
        .unwrap_or_default()
}

/// Work for the keystore thread.
pub enum Job {
    /// A client certificate connected.
    Seen {
        id: Identity,
        reply: oneshot::Sender<Result<crate::store::Client>>,
    },
    /// A framed message to answer.
    Message {
        id: Identity,
        msg: Vec<u8>,
        /// Key pairs made ahead for its Create Key Pair items.
        pre: ops::Pregenerated,
        reply: oneshot::Sender<Vec<u8>>,
    },
}

/// Request messages committed together at most (one fsync for all of them).
pub const GROUP_MAX: usize = 64;

/// The keystore side: owned by one thread that takes every waiting message,
/// runs each in a savepoint of one transaction, commits once, then answers
/// them all. Concurrent clients share fsyncs; none sees another's failure.
pub struct Keystore {
    pub store: Store,
    pub audit: Audit,
    pub default_group: String,
    pub require_backup: bool,
    /// Lease Time of new objects (None: no leases).
    pub lease_time: Option<u32>,
}

/// Starts the keystore thread; it ends when every sender is gone.
pub fn spawn_keystore(ks: Keystore) -> (mpsc::Sender<Job>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(4 * GROUP_MAX);
    let h = std::thread::Builder::new()
        .name("keystore".into())
        .spawn(move || {
            let mut ks = ks;
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                while jobs.len() < GROUP_MAX {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                ks.process(jobs);
            }
        })
        .expect("spawn the keystore thread");
    (tx, h)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Serves until `stop` resolves, then drains connections for up to [`DRAIN_GRACE`].
pub async fn serve(
    cfg: &Config,
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = crate::tls::server_config(&cfg.tls.cert, &cfg.tls.key, &cfg.tls.client_ca)?;
    let acceptor = TlsAcceptor::from(tls);
    let gate = Gate::new(Limits {
        accepted: cfg.max_connections,
        waiting: cfg.max_waiting_connections,
        per_address: cfg.max_waiting_per_address,
    });
    tokio::pin!(stop);
    loop {
        // Every connection is accepted at once: which one stays is the gate's.
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mut ticket = gate.admit(peer.ip());
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, acceptor, shared, &mut ticket).await {
                tracing::info!(%peer, error = %e, "connection closed");
            }
            drop(ticket);
        });
    }
    tracing::info!(
        "stopping: waiting up to {:?} for connections to finish",
        DRAIN_GRACE
    );
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while gate.live() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Why a connection that is not an accepted client's was closed for a newcomer.
fn gave_way(peer: &str) -> Error {
    Error::Tls(format!(
        "{peer}: closed to make room: too many connections that are not of an accepted client"
    ))
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    ticket: &mut Ticket,
) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut tls = tokio::select! {
        r = tokio::time::timeout(shared.handshake, acceptor.accept(tcp)) => r
            .map_err(|_| Error::Tls(format!("{peer}: handshake timed out")))?
            .map_err(|e| Error::Tls(format!("{peer}: handshake: {e}")))?,
        _ = ticket.evicted() => return Err(gave_way(&peer)),
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| Error::Tls(format!("{peer}: no client certificate")))?;
    let id = Identity::of(&cert);
    let (reply, answer) = oneshot::channel();
    shared
        .keystore
        .send(Job::Seen {
            id: id.clone(),
            reply,
        })
        .await
        .map_err(|_| Error::Busy("the keystore thread has stopped".into()))?;
    let c = answer
        .await
        .map_err(|_| Error::Busy("the keystore thread has stopped".into()))??;
    tracing::info!(%peer, client = %id.fingerprint, subject = %id.subject, group = %c.group, status = %c.status, "client connected");
    // Only an accepted client leaves the waiting pool (a certificate
    // accepted while connected stays there until it connects again).
    let idle = if c.status == "accepted" {
        if let Err(n) = ticket.promote() {
            return Err(Error::Busy(format!(
                "{peer}: the server holds its {n} connections of accepted clients (max_connections)"
            )));
        }
        shared.idle
    } else {
        shared.waiting_idle
    };
    let mut header = [0u8; ttlv::HEADER];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(idle, tls.read_exact(&mut header)) => r,
            _ = ticket.evicted() => return Err(gave_way(&peer)),
        };
        match read {
            Err(_) => return Err(Error::Tls(format!("{peer}: idle for {idle:?}"))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(Error::io(format!("{peer}: read"), e)),
            Ok(Ok(_)) => {}
        }
        let len = match ttlv::frame_len(&header) {
            Ok(n) => n,
            Err(e) => {
                // Cannot be framed: nothing after it can be trusted to start a message.
                // The keystore thread audits it; nothing is answered.
                let (reply, _) = oneshot::channel();
                let _ = shared
                    .keystore
                    .send(Job::Message {
                        id: id.clone(),
                        msg: unframeable_marker(&e.to_string()),
                        pre: ops::Pregenerated::default(),
                        reply,
                    })
                    .await;
                return Err(Error::Tls(format!(
                    "{peer}: closing, message cannot be framed: {e}"
                )));
            }
        };
        let mut msg = vec![0u8; len];
        msg[..ttlv::HEADER].copy_from_slice(&header);
        tokio::time::timeout(BODY_TIMEOUT, tls.read_exact(&mut msg[ttlv::HEADER..]))
            .await
            .map_err(|_| Error::Tls(format!("{peer}: message body timed out")))?
            .map_err(|e| Error::io(format!("{peer}: read"), e))?;
        if shared.trace {
            tracing::info!(client = %id.fingerprint, dir = "request", ttlv = %crate::master::hex(&msg), "trace");
        }
        let (reply, answer) = oneshot::channel();
        let pre = pregenerate(&shared, &msg).await;
        shared
            .keystore
            .send(Job::Message {
                id: id.clone(),
                msg,
                pre,
                reply,
            })
            .await
            .map_err(|_| Error::Busy("the keystore thread has stopped".into()))?;
        let out = answer
            .await
            .map_err(|_| Error::Busy("the keystore thread has stopped".into()))?;
        if shared.trace {
            tracing::info!(client = %id.fingerprint, dir = "response", ttlv = %crate::master::hex(&out), "trace");
        }
        tls.write_all(&out)
            .await
            .map_err(|e| Error::io(format!("{peer}: write"), e))?;
        tls.flush()
            .await
            .map_err(|e| Error::io(format!("{peer}: write"), e))?;
    }
}

/// A marker message the keystore thread audits as unframeable (it is never a valid TTLV item: tag 0).
fn unframeable_marker(why: &str) -> Vec<u8> {
    let mut m = b"\0\0\0unframeable:".to_vec();
    m.extend_from_slice(why.as_bytes());
    m
}

fn record(
    t: i64,
    id: &Identity,
    group: &str,
    operation: &str,
    object: Option<String>,
    result: &str,
    reason: Option<String>,
) -> Record {
    Record {
        time: t,
        client: id.fingerprint.clone(),
        subject: id.subject.clone(),
        group: group.to_string(),
        operation: operation.to_string(),
        object,
        result: result.to_string(),
        reason,
    }
}

/// The audit record of a message that could not be read as a request.
fn invalid_record(t: i64, id: &Identity, why: String) -> Record {
    record(t, id, "", "(message)", None, "invalid", Some(why))
}

/// What the keystore thread does with one message before the commit.
enum Work {
    /// Answered already (unreadable, or the client may not be served).
    Done(Vec<u8>),
    /// Ran in the group transaction; answered after the commit.
    Ran {
        req: Request,
        batch: Batch,
        group: String,
    },
}

impl Keystore {
    fn process(&mut self, jobs: Vec<Job>) {
        let t = now();
        let mut records = Vec::new();
        let mut pending: Vec<(Identity, Work, oneshot::Sender<Vec<u8>>)> = Vec::new();
        // First sightings of certificates commit on their own, before the group.
        let mut messages = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Seen { id, reply } => {
                    let _ = reply.send(self.store.client_seen(
                        &id.fingerprint,
                        &id.subject,
                        &self.default_group,
                        t,
                    ));
                }
                Job::Message {
                    id,
                    msg,
                    pre,
                    reply,
                } => messages.push((id, msg, pre, reply)),
            }
        }
        let open = !messages.is_empty() && self.store.exec("BEGIN").is_ok();
        for (id, msg, pre, reply) in messages {
            let w = self.work(&id, &msg, pre, t, open, &mut records);
            pending.push((id, w, reply));
        }
        if open {
            if let Err(e) = self.store.exec("COMMIT") {
                let _ = self.store.exec("ROLLBACK");
                for (_, w, _) in pending.iter_mut() {
                    if let Work::Ran { batch, .. } = w {
                        ops::fail_all(batch, &e.to_string());
                    }
                }
            }
        }
        for (id, w, reply) in pending {
            let out = match w {
                Work::Done(b) => b,
                Work::Ran { req, batch, group } => {
                    for o in batch.outcomes {
                        records.push(record(
                            t,
                            &id,
                            &group,
                            o.operation,
                            o.object,
                            o.result,
                            o.reason,
                        ));
                    }
                    encode(&req, answer_version(req.version), t, batch.items)
                }
            };
            let _ = reply.send(out);
        }
        if let Err(e) = self.audit.write(&records) {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Reads a message and runs it (in a savepoint) if its client is accepted.
    fn work(
        &mut self,
        id: &Identity,
        msg: &[u8],
        pre: ops::Pregenerated,
        t: i64,
        open: bool,
        records: &mut Vec<Record>,
    ) -> Work {
        if let Some(why) = msg.strip_prefix(b"\0\0\0unframeable:") {
            records.push(invalid_record(
                t,
                id,
                format!("unframeable message: {}", String::from_utf8_lossy(why)),
            ));
            return Work::Done(Vec::new());
        }
        let invalid = |records: &mut Vec<Record>, inv: cinta_kmip::message::Invalid| {
            records.push(invalid_record(t, id, inv.message.clone()));
            Work::Done(Response::to_invalid(&inv, t).to_item().to_bytes())
        };
        let item = match Item::decode(msg) {
            Ok(i) => i,
            Err(e) => {
                return invalid(
                    records,
                    cinta_kmip::message::Invalid {
                        reason: Reason::InvalidMessage,
                        message: format!("the message does not decode: {e}"),
                        version: None,
                    },
                )
            }
        };
        let req = match Request::parse(&item) {
            Ok(r) => r,
            Err(inv) => return invalid(records, inv),
        };
        let v = answer_version(req.version);
        let client = match self.store.client_exact(&id.fingerprint) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(Error::NotFound("never seen".into())),
            Err(e) => Err(e),
        };
        match client {
            Ok(c) if c.status == "accepted" && open => {
                let caller = Caller {
                    group: c.group.clone(),
                    require_backup: self.require_backup,
                    lease_time: self.lease_time,
                };
                let batch = if self.store.exec("SAVEPOINT m").is_ok() {
                    let b = ops::run(&self.store.tx(), &req, &caller, t, pre);
                    let end = if b.undo {
                        "ROLLBACK TO m; RELEASE m"
                    } else {
                        "RELEASE m"
                    };
                    if let Err(e) = self.store.exec(end) {
                        let mut b = b;
                        ops::fail_all(&mut b, &e.to_string());
                        b
                    } else {
                        b
                    }
                } else {
                    let mut b = ops::run(
                        &self.store.tx(),
                        &Request {
                            items: vec![],
                            ..req.clone()
                        },
                        &caller,
                        t,
                        ops::Pregenerated::default(),
                    );
                    b.items = req
                        .items
                        .iter()
                        .map(|i| {
                            ResponseItem::failure(Some(i), Reason::GeneralFailure, "keystore busy")
                        })
                        .collect();
                    b
                };
                Work::Ran {
                    req,
                    batch,
                    group: c.group,
                }
            }
            other => {
                let (group, why) = match other {
                    Ok(c) if c.status == "pending" => (
                        c.group,
                        format!(
                            "client certificate {} ({}) is pending approval: an administrator runs `cinta-keymgr clients accept {}`",
                            id.fingerprint,
                            id.subject,
                            &id.fingerprint[..16]
                        ),
                    ),
                    Ok(c) if c.status == "rejected" => (c.group, format!("client certificate {} was rejected by an administrator", id.fingerprint)),
                    Ok(c) => (c.group, "the keystore could not open a transaction".to_string()),
                    Err(e) => (String::new(), format!("client certificate {} is not known: {e}", id.fingerprint)),
                };
                let items = req
                    .items
                    .iter()
                    .map(|i| ResponseItem::failure(Some(i), Reason::PermissionDenied, why.clone()))
                    .collect();
                for i in &req.items {
                    records.push(record(
                        t,
                        id,
                        &group,
                        ops::op_name(i.operation),
                        None,
                        "refused",
                        Some(why.clone()),
                    ));
                }
                Work::Done(encode(&req, v, t, items))
            }
        }
    }
}

/// Encodes a response, or a Response Too Large one if it exceeds the request's limit.
fn encode(req: &Request, v: Version, t: i64, items: Vec<ResponseItem>) -> Vec<u8> {
    let bytes = Response {
        version: v,
        time_stamp: t,
        items,
    }
    .to_item()
    .to_bytes();
    match req.max_response_size {
        Some(max) if max >= 0 && bytes.len() > max as usize => {
            too_large(req, v, t, bytes.len(), max)
        }
        _ => bytes,
    }
}

fn too_large(req: &Request, v: Version, t: i64, len: usize, max: i32) -> Vec<u8> {
    let items = req
        .items
        .iter()
        .map(|i| {
            ResponseItem::failure(
                Some(i),
                Reason::ResponseTooLarge,
                format!("the response is {len} bytes; Maximum Response Size is {max}"),
            )
        })
        .collect();
    Response {
        version: v,
        time_stamp: t,
        items,
    }
    .to_item()
    .to_bytes()
}
