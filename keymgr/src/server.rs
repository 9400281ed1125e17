//! The KMIP server: accepts mutual-TLS connections, frames TTLV messages, checks the client's onboarding status, runs batches on the keystore and audits them.
//!
//! A message that cannot be framed (not a structure, a length over the
//! limit) closes its connection; one that frames but does not decode or parse
//! gets a KMIP error response and the connection goes on. Other connections
//! are never affected: each runs on its own task, and only keystore access is
//! shared (one SQLite connection behind a mutex, used off the async threads).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cinta_kmip::message::{answer_version, Request, Response, ResponseItem, Version};
use cinta_kmip::ttlv::{self, Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::audit::{Audit, Record};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fault::Reason;
use crate::ops::{self, Caller};
use crate::store::Store;
use crate::tls::Identity;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the rest of a message once its header has arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server waits for connections to finish their message.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares.
pub struct Shared {
    pub store: Mutex<Store>,
    pub audit: Mutex<Audit>,
    pub default_group: String,
    pub require_backup: bool,
    pub trace: bool,
    pub idle: Duration,
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
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => p.map_err(|e| Error::Tls(e.to_string()))?,
        };
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
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, acceptor, shared).await {
                tracing::info!(%peer, error = %e, "connection closed");
            }
            drop(permit);
        });
    }
    tracing::info!(
        "stopping: waiting up to {:?} for connections to finish",
        DRAIN_GRACE
    );
    let all = cfg.max_connections as u32;
    let _ = tokio::time::timeout(DRAIN_GRACE, slots.acquire_many(all)).await;
    Ok(())
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| Error::Tls(format!("{peer}: handshake timed out")))?
        .map_err(|e| Error::Tls(format!("{peer}: handshake: {e}")))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| Error::Tls(format!("{peer}: no client certificate")))?;
    let id = Identity::of(&cert);
    {
        let s = shared.clone();
        let who = id.clone();
        let c = tokio::task::spawn_blocking(move || {
            let mut store = s.store.lock().unwrap_or_else(|p| p.into_inner());
            store.client_seen(&who.fingerprint, &who.subject, &s.default_group, now())
        })
        .await
        .map_err(|e| Error::Tls(e.to_string()))??;
        tracing::info!(%peer, client = %id.fingerprint, subject = %id.subject, group = %c.group, status = %c.status, "client connected");
    }
    let mut header = [0u8; ttlv::HEADER];
    loop {
        match tokio::time::timeout(shared.idle, tls.read_exact(&mut header)).await {
            Err(_) => return Err(Error::Tls(format!("{peer}: idle for {:?}", shared.idle))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(Error::io(format!("{peer}: read"), e)),
            Ok(Ok(_)) => {}
        }
        let len = match ttlv::frame_len(&header) {
            Ok(n) => n,
            Err(e) => {
                // Cannot be framed: nothing after it can be trusted to start a message.
                audit_invalid(&shared, &id, &format!("unframeable message: {e}"));
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
        let s = shared.clone();
        let who = id.clone();
        let out = tokio::task::spawn_blocking(move || answer(&s, &who, &msg))
            .await
            .map_err(|e| Error::Tls(e.to_string()))?;
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

fn audit_invalid(shared: &Shared, id: &Identity, why: &str) {
    let r = Record {
        time: now(),
        client: id.fingerprint.clone(),
        subject: id.subject.clone(),
        group: String::new(),
        operation: "(message)".into(),
        object: None,
        result: "invalid".into(),
        reason: Some(why.to_string()),
    };
    let mut a = shared.audit.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = a.write(&[r]) {
        tracing::error!(error = %e, "audit write failed");
    }
}

/// One framed message in, one encoded response out (blocking: uses the keystore).
pub fn answer(shared: &Shared, id: &Identity, msg: &[u8]) -> Vec<u8> {
    let t = now();
    let item = match Item::decode(msg) {
        Ok(i) => i,
        Err(e) => {
            audit_invalid(shared, id, &format!("undecodable message: {e}"));
            let inv = cinta_kmip::message::Invalid {
                reason: Reason::InvalidMessage,
                message: format!("the message does not decode: {e}"),
                version: None,
            };
            return Response::to_invalid(&inv, t).to_item().to_bytes();
        }
    };
    let req = match Request::parse(&item) {
        Ok(r) => r,
        Err(inv) => {
            audit_invalid(shared, id, &inv.message);
            return Response::to_invalid(&inv, t).to_item().to_bytes();
        }
    };
    let v = answer_version(req.version);
    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let client = store.client(&id.fingerprint);
    let (items, records) = match client {
        Ok(c) if c.status == "accepted" => {
            let caller = Caller {
                group: c.group.clone(),
                require_backup: shared.require_backup,
            };
            let (items, outs) = ops::run(&mut store, &req, &caller, t);
            drop(store);
            let recs = outs
                .into_iter()
                .map(|o| Record {
                    time: t,
                    client: id.fingerprint.clone(),
                    subject: id.subject.clone(),
                    group: c.group.clone(),
                    operation: o.operation.to_string(),
                    object: o.object,
                    result: o.result.to_string(),
                    reason: o.reason,
                })
                .collect::<Vec<_>>();
            (items, recs)
        }
        other => {
            drop(store);
            let (group, why) = match other {
                Ok(c) if c.status == "pending" => (
                    c.group,
                    format!(
                        "client certificate {} ({}) is pending approval: an administrator runs `cinta-keymgr clients accept {}`",
                        id.fingerprint, id.subject, &id.fingerprint[..16]
                    ),
                ),
                Ok(c) => (c.group, format!("client certificate {} was rejected by an administrator", id.fingerprint)),
                Err(e) => (String::new(), format!("client certificate {} is not known: {e}", id.fingerprint)),
            };
            let items: Vec<ResponseItem> = req
                .items
                .iter()
                .map(|i| ResponseItem::failure(Some(i), Reason::PermissionDenied, why.clone()))
                .collect();
            let recs = req
                .items
                .iter()
                .map(|i| Record {
                    time: t,
                    client: id.fingerprint.clone(),
                    subject: id.subject.clone(),
                    group: group.clone(),
                    operation: ops::op_name(i.operation).into(),
                    object: None,
                    result: "refused".into(),
                    reason: Some(why.clone()),
                })
                .collect();
            (items, recs)
        }
    };
    {
        let mut a = shared.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = a.write(&records) {
            tracing::error!(error = %e, "audit write failed");
        }
    }
    let resp = Response {
        version: v,
        time_stamp: t,
        items,
    };
    let bytes = resp.to_item().to_bytes();
    match req.max_response_size {
        Some(max) if max >= 0 && bytes.len() > max as usize => {
            too_large(&req, v, t, bytes.len(), max)
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
