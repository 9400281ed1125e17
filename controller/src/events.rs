//! Where events go besides the log and the catalog: an optional webhook (one JSON POST per event) and counters for the Prometheus endpoint; usage thresholds from heartbeats.
//!
//! The webhook is fire-and-forget from a bounded queue: a slow or absent
//! receiver never delays a job (events beyond the queue are counted as
//! dropped, never blocking). Plain `http://` only; put a local relay in
//! front for anything else.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[events]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `http://host:port/path` to POST each event to, as JSON.
    pub webhook: Option<String>,
    /// Address of the Prometheus text endpoint (`GET /metrics`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A heartbeat reporting usage above this (percent) raises `threshold.crossed`, once until it falls below.
    pub usage_threshold_percent: Option<f64>,
}

/// Event counters, the webhook queue and which thresholds are crossed now.
#[derive(Default)]
pub struct Events {
    pub counts: Mutex<BTreeMap<String, u64>>,
    crossed: Mutex<HashSet<(String, String)>>,
    /// Whether each (agent, watch) was up when last reported.
    watch_state: Mutex<BTreeMap<(String, String), bool>>,
    webhook: Option<tokio::sync::mpsc::Sender<String>>,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Events {
    /// Starts the webhook sender (needs a tokio runtime) if one is configured.
    pub fn new(cfg: &EventsConfig) -> Events {
        let webhook = cfg.webhook.clone().map(|url| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
            tokio::spawn(async move {
                while let Some(body) = rx.recv().await {
                    if let Err(e) = post(&url, &body).await {
                        tracing::warn!(error = %e, "webhook");
                    }
                }
            });
            tx
        });
        Events {
            webhook,
            ..Default::default()
        }
    }

    /// Counts and forwards an event.
    pub fn emit(&self, time: i64, kind: &str, text: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
        if let Some(tx) = &self.webhook {
            let body = serde_json::json!({ "time": time, "kind": kind, "text": text }).to_string();
            if tx.try_send(body).is_err() {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The usage figures that newly crossed `limit` (and forgets those back under it).
    pub fn crossings(
        &self,
        agent: &str,
        usage: &[(String, f64)],
        limit: f64,
    ) -> Vec<(String, f64)> {
        let mut crossed = self.crossed.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (what, pct) in usage {
            let key = (agent.to_string(), what.clone());
            if *pct > limit {
                if crossed.insert(key) {
                    out.push((what.clone(), *pct));
                }
            } else {
                crossed.remove(&key);
            }
        }
        out
    }
}

impl Events {
    /// The watches whose state changed: (name, up, detail). A watch first
    /// seen down counts as a change; first seen up does not.
    pub fn watch_changes(
        &self,
        agent: &str,
        watched: &[(String, bool, String)],
    ) -> Vec<(String, bool, String)> {
        let mut st = self.watch_state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (name, ok, detail) in watched {
            let before = st.insert((agent.to_string(), name.clone()), *ok);
            if before.unwrap_or(true) != *ok {
                out.push((name.clone(), *ok, detail.clone()));
            }
        }
        out
    }
}

/// POSTs `body` to an `http://` URL; Err names what failed.
async fn post(url: &str, body: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// webhooks are supported"))?;
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut status = vec![0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut status))
        .await
        .map_err(|_| format!("{url}: no answer"))?
        .map_err(|e| format!("{url}: {e}"))?;
    match &status[9..10] {
        b"2" => Ok(()),
        _ => Err(format!(
            "{url}: answered {}",
            String::from_utf8_lossy(&status).trim()
        )),
    }
}

/// Serves `GET /metrics` in the Prometheus text format; `render` makes the body.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if head.starts_with("GET /metrics ") {
                (
                    "200 OK",
                    tokio::task::spawn_blocking(move || render())
                        .await
                        .unwrap_or_default(),
                )
            } else {
                ("404 Not Found", "only GET /metrics here\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
